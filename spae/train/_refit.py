"""Class-mean semantic codes: running sums while training (`semantic.code_means`) and the exact means of the
trained encoder after it (`semantic.refit_images`; docs/method.md, "The refit after training").

During training the 24-odd semantic words' codes follow a γ-EMA of their class means (about 1/(1-γ) batches: with
γ = 0.98 and 16 images a step, some 800 images spread over the words, while the encoder still moves). The refit
replaces them, once, by the class means of the final encoder's layer-1 inputs over many training images.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from spae._codebook import unit_rows
from spae._pyramid import PyramidSpec, layer_target


def class_sums(inputs: jax.Array, word_pos: jax.Array, probs: jax.Array, num_words: int) -> dict[str, jax.Array]:
  """Each image's layer-1 input added to the semantic words its teacher names, weighted by their probabilities.

  inputs [B, d]; word_pos [B, k] the named words' positions in the semantic sub-vocabulary; probs [B, k].
  Returns {'sum': [S, d], 'count': [S]} with S = num_words (a word nobody named has count 0).
  """
  named = jnp.sum(jax.nn.one_hot(word_pos, num_words) * probs[..., None], axis=1)  # [B, S]
  return {"sum": named.T @ inputs, "count": jnp.sum(named, 0)}


def layer1_inputs_fn(spec: PyramidSpec, quantizer: str) -> Callable[[Any, jax.Array], jax.Array]:
  """(autoencoder, images [B, H, W, 3] in [0, 1]) -> [B, d]: what layer 1 quantizes (its first position), the input
  whose class means the semantic codes are."""
  def fn(model, images):
    z = model.encoder(images * 2.0 - 1.0)
    pool = model.pool_weights(z)
    weights = pool[0] if pool else None
    t = layer_target(z, None, 1, spec.grids[0], spec.subsample, quantizer, weights)
    return t.reshape(z.shape[0], -1, z.shape[-1])[:, 0]
  return fn


def set_semantic_codes(g_params: dict, table: jax.Array, rows: np.ndarray, means: dict[str, jax.Array]) -> dict:
  """`g_params` with W_s solved so that the semantic words' codes are their running class means.

  codes = U W_s with U the unit rows of `table[rows]` [S, D]; W_s = U⁺ M, the minimum-norm solution: with S ≤ D
  distinct words U has full row rank and the codes equal M exactly (else M's least-squares fit). A word no image
  has been named for yet keeps its current code.
  """
  u = unit_rows(table[rows])
  w = g_params["codebook"]["semantic_weight"]
  hi = jax.lax.Precision.HIGHEST
  seen = means["count"] > 1e-6
  m = jnp.where(seen[:, None], means["sum"] / jnp.maximum(means["count"], 1e-6)[:, None], jnp.dot(u, w, precision=hi))
  codebook = dict(g_params["codebook"], semantic_weight=jnp.dot(jnp.linalg.pinv(u), m, precision=hi))
  return dict(g_params, codebook=codebook)


def refit_class_means(model: Any, spec: PyramidSpec, quantizer: str, images: np.ndarray, word_pos: np.ndarray,
                      probs: np.ndarray, batch: int = 64) -> dict[str, jax.Array]:
  """The class sums of `model`'s layer-1 inputs over `images` [N, H, W, 3] (floats in [0, 1]) whose teacher named
  `word_pos` [N, k] with `probs` [N, k]: {'sum': [S, d], 'count': [S]}, S = len(spec.semantic_vocab).

  Fixed-size batches (the last one padded with weight 0), so one program serves every batch.
  """
  from flax import nnx

  graphdef, state = nnx.split(model)
  inputs = layer1_inputs_fn(spec, quantizer)
  num_words = len(spec.semantic_vocab)

  @jax.jit
  def sums(state, x, pos, p):
    return class_sums(inputs(nnx.merge(graphdef, state), x), pos, p, num_words)

  total = None
  for start in range(0, len(images), batch):
    x, pos, p = (np.asarray(a[start:start + batch]) for a in (images, word_pos, probs))
    pad = batch - len(x)
    if pad:
      x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
      pos = np.concatenate([pos, np.repeat(pos[-1:], pad, axis=0)])
      p = np.concatenate([p, np.zeros((pad,) + p.shape[1:], p.dtype)])
    s = sums(state, jnp.asarray(x, jnp.float32), jnp.asarray(pos), jnp.asarray(p, jnp.float32))
    total = s if total is None else jax.tree.map(jnp.add, total, s)
  return total


def refit_state(state: dict, models: Any, codebook: jax.Array, images: np.ndarray, named: np.ndarray,
                probs: np.ndarray, sharding: Any) -> dict:
  """`state` with the semantic words' codes of the trained and averaged weights alike set to the exact class means
  of each one's own layer-1 inputs over `images` [N, H, W, 3], whose teacher named the vocabulary rows `named`
  [N, k] with `probs` [N, k] (`spae.train._semantic.label_images`). The new weights are placed with `sharding`."""
  spec, quantizer = models.tokenizer_config.pyramid, models.tokenizer_config.quantizer
  rows = np.asarray(spec.semantic_vocab, np.int64)
  pos = np.full(codebook.shape[0], -1, np.int32)
  pos[rows] = np.arange(len(rows), dtype=np.int32)
  new = dict(state)
  for key in ("g_params", "ema_params"):
    params = jax.device_get(state[key])
    means = refit_class_means(models.autoencoder(jax.tree.map(jnp.asarray, params)), spec, quantizer, images,
                              pos[named], probs)
    new[key] = jax.device_put(set_semantic_codes(params, codebook, rows, means), sharding)
  return new
