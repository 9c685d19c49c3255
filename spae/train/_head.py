"""The semantic head added to a trained tokenizer (docs/method.md, "The semantic head"): `add_semantic_head`.

Why: the semantic layers' words were the sub-vocabulary word whose class-mean code is nearest the pooled latent; on
held-out scenes their five words probe at 0.30 where a perfect teacher's would at 0.80, because a 12-dim latent made
for reconstruction carries little of what a scene shows. A small network that reads the pixels and is trained on
what the teacher's text tower reads in each training image's caption names the main object far more often. Nothing
else of the tokenizer is retrained: the encoder, the lower layers' codes and the decoder stay as they are, and the
semantic words' codes become the class means of the images the head names them for (the refit's rule).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from spae._head import SemanticHead
from spae._io import SpaeInputError
from spae._tokenizer import Tokenizer
from spae.train._refit import refit_class_means, set_semantic_codes
from spae.train._semantic import caption_words

__all__ = ["HeadConfig", "add_semantic_head", "caption_candidates", "caption_relevance", "caption_targets"]


@dataclasses.dataclass(frozen=True)
class HeadConfig:
  """How the head is trained.

  width: the head's base width (`SemanticHead`). steps, batch, lr, warmup, weight_decay: AdamW with a linear warmup
  and a cosine to 0; each batch is drawn uniformly from the captioned images, half of them mirrored.
  top_k, temperature: each image's target is the softmax at `temperature` of the k words its caption reads highest.
  caption_words: the sub-vocabulary is the codebook words of the first this many captions. centre: the images and
  captions whose mean the scores are centred on (the first this many). refit_images: the images whose class means
  the words' codes become (the first this many of the refit data). seed: initialisation and batch order.
  """

  width: int = 32
  steps: int = 4000
  batch: int = 128
  lr: float = 2e-3
  warmup: int = 100
  weight_decay: float = 1e-4
  top_k: int = 5
  temperature: float = 0.05
  caption_words: int = 1024
  centre: int = 256
  refit_images: int = 6400
  seed: int = 0


def caption_candidates(captions: Sequence[str], vocab: Any) -> np.ndarray:
  """[S] sorted codebook rows whose shown word (`vocab.words`) is a run of letters a-z of one of `captions` (lower
  case): the rule of `semantic.vocab_from_captions`."""
  rows = np.flatnonzero(caption_words(vocab, list(captions))).astype(np.int64)
  if not len(rows):
    raise SpaeInputError("no word of the training captions is a codebook word; the semantic head needs some.")
  return rows


def caption_relevance(teacher: Any, vocab: Any, captions: Sequence[str], reference: Sequence[str],
                      rows: np.ndarray | None = None) -> np.ndarray:
  """[N, S] the teacher's text embedding of each caption against each word's (the prompt-ensembled word table) of
  `rows` (all words when None), centred on the `reference` captions' mean: what a perfect image tower would score."""
  table = np.asarray(teacher.vocabulary_embeddings(vocab))
  table = table if rows is None else table[rows]
  emb = lambda texts: np.concatenate([np.asarray(teacher.text_embeddings(list(texts[i:i + 256])))
                                      for i in range(0, len(texts), 256)])
  return emb(captions) @ table.T - (emb(reference) @ table.T).mean(0)


def caption_targets(teacher: Any, vocab: Any, rows: np.ndarray, captions: Sequence[str],
                    reference: Sequence[str], top_k: int, temperature: float) -> np.ndarray:
  """[N, S] each caption's target distribution over the words `rows`: the teacher's text embedding of the caption
  against each word's (the prompt-ensembled word table), centred on the `reference` captions' mean, then the
  softmax at `temperature` of the top_k (0 elsewhere; ties to the lower position)."""
  rel = caption_relevance(teacher, vocab, captions, reference, rows)
  k = min(top_k, rel.shape[1])
  top = np.argsort(-rel, axis=1, kind="stable")[:, :k]
  v = np.take_along_axis(rel, top, 1) / temperature
  v = np.exp(v - v.max(1, keepdims=True))
  p = np.zeros_like(rel, dtype=np.float32)
  np.put_along_axis(p, top, (v / v.sum(1, keepdims=True)).astype(np.float32), 1)
  return p


def _train_head(images: np.ndarray, targets: np.ndarray, cfg: HeadConfig) -> tuple[SemanticHead, list[float]]:
  """The head fitted to `targets` [N, S] of `images` [N, H, W, 3] (floats in [0, 1]) by cross-entropy; returns it
  and the loss every 100 steps (and the last)."""
  head = SemanticHead(cfg.width, targets.shape[1], rngs=nnx.Rngs(cfg.seed))
  warm = min(cfg.warmup, max(cfg.steps - 1, 0))
  sched = optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warm, max(cfg.steps, warm + 1))
  # The offset is set after training, never fitted.
  opt = nnx.Optimizer(head, optax.adamw(sched, weight_decay=cfg.weight_decay),
                      wrt=nnx.All(nnx.Param, nnx.Not(nnx.PathContains("offset"))))

  @nnx.jit
  def step(head, opt, x, y):
    loss, grads = nnx.value_and_grad(lambda h: -jnp.mean(jnp.sum(y * h.log_probs(x), -1)))(head)
    opt.update(head, grads)
    return loss

  rng = np.random.default_rng(cfg.seed)
  losses, pending = [], []
  for s in range(cfg.steps):
    b = rng.integers(0, len(images), cfg.batch)
    x = np.array(images[b], np.float32)
    flip = rng.random(cfg.batch) < 0.5
    x[flip] = x[flip, :, ::-1]
    loss = step(head, opt, jnp.asarray(x), jnp.asarray(targets[b]))
    if s % 100 == 0 or s == cfg.steps - 1:
      pending.append(loss)
  losses = [float(v) for v in jax.device_get(pending)]  # one wait, at the end
  return head, losses


def _mean_log_probs(head: SemanticHead, images: np.ndarray, batch: int = 128) -> np.ndarray:
  fn = nnx.jit(lambda h, x: h.log_probs(x))
  return np.concatenate([np.asarray(fn(head, jnp.asarray(images[i:i + batch], jnp.float32)))
                         for i in range(0, len(images), batch)]).mean(0)


def add_semantic_head(tok: Tokenizer, teacher: Any, images: np.ndarray, captions: Sequence[str],
                      refit_images: np.ndarray, cfg: HeadConfig = HeadConfig()) -> tuple[Tokenizer, dict]:
  """A copy of `tok` whose semantic layers' words a trained `SemanticHead` chooses.

  images [N, H, W, 3] floats in [0, 1] with their `captions` (training data); refit_images [M, H, W, 3] the training
  images (captioned or not) whose class means the semantic words' codes become. The sub-vocabulary becomes the
  codebook words of the first `cfg.caption_words` captions; the head learns each image's `caption_targets`; its
  offset is its mean log-probability over the first `cfg.centre` images; the codes are the class means of the
  layer-1 inputs over the refit images, each image counted for the words of its layers 1-2 (docs/method.md, "The
  semantic head"). Returns (tokenizer, info: sub-vocabulary words, loss curve).
  """
  config, vocab = tok.config, tok.vocabulary
  spec = config.pyramid
  if not spec.semantic_layers:
    raise SpaeInputError("the tokenizer has no semantic layers (pyramid.semantic_vocab) for a head to choose.")
  if getattr(teacher, "text_tower", None) is None:
    raise SpaeInputError("the semantic head learns from the teacher's text tower reading the captions; the teacher "
                         "has none (give a LiT teacher with #text_tower=MINILM_FOLDER).")
  if len(images) != len(captions) or not len(images):
    raise SpaeInputError(f"the semantic head needs captioned images: got {len(images)} images, {len(captions)} "
                         "captions.")
  rows = caption_candidates(captions[:cfg.caption_words], vocab)
  targets = caption_targets(teacher, vocab, rows, captions, captions[:cfg.centre], cfg.top_k, cfg.temperature)
  head, losses = _train_head(images, targets, cfg)
  head.offset.value = jnp.asarray(_mean_log_probs(head, images[:cfg.centre]))

  new_spec = dataclasses.replace(spec, semantic_vocab=tuple(int(r) for r in rows))
  new_config = dataclasses.replace(config, pyramid=new_spec, autoencoder=dataclasses.replace(
      config.autoencoder, semantic_head=cfg.width))
  new_config.validate(vocab.dim)
  model = new_config.make_autoencoder(vocab.embeddings.shape, nnx.Rngs(cfg.seed))
  params = nnx.state(tok.model, nnx.Param).to_pure_dict()
  params["head"] = nnx.state(head, nnx.Param).to_pure_dict()
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, params)
  nnx.update(model, state)

  info = {"words": vocab.words(rows), "losses": losses, "named": None}
  if not config.codebook.semantic_map:  # the words' codes are the codebook's own; nothing to refit
    return Tokenizer(new_config, vocab, model), info
  # The codes: class means of the layer-1 inputs over the images each word is among the layers-1-2 words of.
  used = sum(g * g for g in spec.grids[:spec.semantic_layers])
  rank = nnx.jit(lambda h, x: h.ranked(x))
  ranked = np.concatenate([np.asarray(rank(head, jnp.asarray(refit_images[i:i + 128], jnp.float32)))
                           for i in range(0, len(refit_images), 128)])[:, :used]
  means = refit_class_means(model, new_spec, config.quantizer, refit_images, ranked,
                            np.full(ranked.shape, 1.0 / used, np.float32))
  params = set_semantic_codes(nnx.state(model, nnx.Param).to_pure_dict(), tok.table, rows, means)
  state = nnx.state(model, nnx.Param)
  nnx.replace_by_pure_dict(state, params)
  nnx.update(model, state)
  info["named"] = np.asarray(means["count"]).tolist()
  return Tokenizer(new_config, vocab, model), info
