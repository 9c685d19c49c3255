"""How the frozen vocabulary table is scored against the encoder's output.

The tokens are always rows of the frozen LLM embedding table E [V, D] (so they are always words the LLM
reads); what varies is the latent-space *code* c_k each word k stands for when the quantizer searches
for the nearest word and the decoder reads it back:

  'raw'        c_k = E_k                          the paper's setting; the latent dim must equal D
  'normalized' c_k = E_k / ||E_k||                unit rows; the latent dim must equal D
  'projected'  c_k = (E_k / ||E_k||) W            W [D, d] learned with the autoencoder (V2L, VQGAN-LC
                                                  style): the table stays frozen, its geometry is
                                                  mapped into a d-dim space the encoder can follow
  'learned'    c_k = C_k                          a free [V, d] table: the learned-codebook VQGAN baseline
                                                  (ablation only: its ids do not mean their words)

With `semantic_map` ('projected' only), the layers that search the semantic sub-vocabulary score its words
through a projection W_s of their own, c^s_k = (E_k / ||E_k||) W_s: the semantic words' codes then sit where those
layers' inputs and the semantic loss put them, apart from the codes the same words have in the appearance layers.

Every formula is in docs/method.md ("Codebook scoring").
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import jax
import jax.numpy as jnp
from flax import nnx

from spae._io import SpaeInputError

CodebookMode = Literal["raw", "normalized", "projected", "learned"]
_MODES = ("raw", "normalized", "projected", "learned")


@dataclasses.dataclass(frozen=True)
class CodebookConfig:
  """Codebook scoring (see the module docstring).

  Attributes:
    mode: 'raw', 'normalized', 'projected' or 'learned'.
    dim: the latent dimension d of 'projected' / 'learned' codes (ignored otherwise: d = D).
    semantic_map: 'projected' only: a second projection W_s for the layers that search the pyramid's semantic
      sub-vocabulary (see the module docstring).
  """

  mode: CodebookMode = "raw"
  dim: int = 64
  semantic_map: bool = False

  def __post_init__(self):
    if self.mode not in _MODES:
      raise SpaeInputError(f"codebook.mode must be one of {', '.join(_MODES)}; got {self.mode!r}.")
    if not isinstance(self.dim, int) or isinstance(self.dim, bool) or self.dim < 1:
      raise SpaeInputError(f"codebook.dim must be a positive integer, got {self.dim!r}.")
    if self.semantic_map is not False and self.semantic_map is not True:
      raise SpaeInputError(f"codebook.semantic_map must be true or false, got {self.semantic_map!r}.")
    if self.semantic_map and self.mode != "projected":
      raise SpaeInputError(f"codebook.semantic_map needs codebook.mode 'projected', got {self.mode!r}.")

  @property
  def trainable(self) -> bool:
    return self.mode in ("projected", "learned")

  def latent_dim(self, vocab_dim: int) -> int:
    """The dimension d of the codes (and of the encoder's output) for a table of width `vocab_dim`."""
    return self.dim if self.trainable else vocab_dim


def unit_rows(table: jax.Array) -> jax.Array:
  """[V, D] -> rows scaled to length 1 (an all-zero row stays zero)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(table), axis=-1, keepdims=True))
  return table / jnp.maximum(norm, 1e-12)


class Codebook(nnx.Module):
  """Maps the frozen table E [V, D] to the codes [V, d] the quantizer searches (no parameters for
  'raw' / 'normalized')."""

  def __init__(self, config: CodebookConfig, vocab_size: int, vocab_dim: int, *, rngs: nnx.Rngs):
    self.mode = config.mode
    d = config.latent_dim(vocab_dim)
    if config.mode == "projected":
      # Orthonormal columns times sqrt(D): the codes start as a scaled orthogonal projection of the unit rows,
      # about unit spread per dimension like the encoder's fresh outputs. Codes much smaller than the encoder's
      # outputs put every SAQ target l·z − Σq far outside their hull, where only its few vertices ever win
      # (measured: layer-6 perplexity fell from 414 to 11 in 30 steps at scale 1).
      init = nnx.initializers.orthogonal(scale=float(vocab_dim) ** 0.5)
      self.weight = nnx.Param(init(rngs.params(), (vocab_dim, d)))
      if config.semantic_map:  # only when asked for, so other bundles keep their parameter tree
        self.semantic_weight = nnx.Param(init(rngs.params(), (vocab_dim, d)))
    elif config.mode == "learned":
      self.weight = nnx.Param(jax.random.uniform(rngs.params(), (vocab_size, d), minval=-1.0, maxval=1.0)
                              / jnp.sqrt(d).astype(jnp.float32))

  def __call__(self, table: jax.Array) -> jax.Array:
    """Frozen table [V, D] -> codes [V, d]; gradients reach only this module's parameters."""
    table = jax.lax.stop_gradient(jnp.asarray(table, jnp.float32))
    if self.mode == "raw":
      return table
    if self.mode == "normalized":
      return unit_rows(table)
    if self.mode == "projected":
      return jnp.dot(unit_rows(table), self.weight.value, precision=jax.lax.Precision.HIGHEST)
    return self.weight.value

  def semantic(self, table: jax.Array) -> jax.Array | None:
    """Frozen table [V, D] -> the semantic layers' codes [V, d] through W_s, or None without a semantic map."""
    if not hasattr(self, "semantic_weight"):
      return None
    table = jax.lax.stop_gradient(jnp.asarray(table, jnp.float32))
    return jnp.dot(unit_rows(table), self.semantic_weight.value, precision=jax.lax.Precision.HIGHEST)
