"""The semantic head: a small image network that chooses the words of the semantic layers (docs/method.md, "The
semantic head").

Without it, layers 1-2 take the semantic word whose code is nearest their pooled 12-dim latent, which is made for
reconstruction and carries little of what an image shows. The head reads the pixels instead and ranks the semantic
sub-vocabulary; layer 1 takes its first word and layer 2 its next four, each placed on the block whose target its
code fits best, so the words stay the head's and their placement serves the reconstruction.
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

__all__ = ["SemanticHead", "place_words"]


class SemanticHead(nnx.Module):
  """[B, H, W, 3] images in [0, 1] -> [B, S] scores of the semantic sub-vocabulary's words.

  Six 3×3 convolutions (widths w, w, 2w, 2w, 4w, 4w; the first with stride 2, a 2×2 average pool after the second
  and fourth), GroupNorm and swish after each, then the mean and the maximum over positions, and a linear map to S
  log-probabilities. `offset` [S] is subtracted from them: the mean log-probability over training images, set after
  training (`spae.train.add_semantic_head`), so that a word every image makes likely does not head every list
  (the centring of the teacher's relevance, docs/method.md).
  """

  def __init__(self, width: int, num_words: int, *, rngs: nnx.Rngs):
    widths = (width, width, 2 * width, 2 * width, 4 * width, 4 * width)
    cin = (3,) + widths[:-1]
    self.convs = nnx.List([nnx.Conv(i, o, (3, 3), strides=2 if n == 0 else 1, rngs=rngs)
                           for n, (i, o) in enumerate(zip(cin, widths))])
    self.norms = nnx.List([nnx.GroupNorm(o, num_groups=8 if o % 8 == 0 else 1, rngs=rngs) for o in widths])
    self.out = nnx.Linear(2 * widths[-1], num_words, rngs=rngs)
    self.offset = nnx.Param(jnp.zeros((num_words,), jnp.float32))

  def log_probs(self, images: jax.Array) -> jax.Array:
    """[B, H, W, 3] in [0, 1] -> [B, S] log-probabilities (uncentred: what training fits)."""
    h = images * 2.0 - 1.0
    for n, (conv, norm) in enumerate(zip(self.convs, self.norms)):
      h = nnx.swish(norm(conv(h)))
      if n in (1, 3):
        h = nnx.avg_pool(h, (2, 2), strides=(2, 2))
    return jax.nn.log_softmax(self.out(jnp.concatenate([h.mean((1, 2)), h.max((1, 2))], axis=-1)), axis=-1)

  def __call__(self, images: jax.Array) -> jax.Array:
    """[B, S] centred scores: log-probabilities less `offset`."""
    return self.log_probs(images) - self.offset.value

  def ranked(self, images: jax.Array) -> jax.Array:
    """[B, S] int32: each image's sub-vocabulary positions, best first (ties to the lower position)."""
    return jnp.argsort(-jax.lax.stop_gradient(self(images)), axis=-1, stable=True).astype(jnp.int32)


def place_words(words: jax.Array, targets: jax.Array, codes: jax.Array) -> jax.Array:
  """Which block gets which of a layer's words: the assignment of `words` [B, m] (positions in the sub-vocabulary) to
  the layer's m blocks that minimises Σ ‖target − code‖² over blocks, among all m! orders (m ≤ 4, so at most 24).

  targets [B, m, d] the layer's SAQ targets in block order; codes [S, d] the sub-vocabulary's codes.
  Returns [B, m] positions in block order (ties to the first order in `itertools.permutations`).
  """
  m = words.shape[1]
  perms = jnp.asarray(np.array(list(itertools.permutations(range(m))), np.int32))  # [P, m]
  c = codes[words]  # [B, m (word), d]
  cost = jnp.sum(jnp.square(targets[:, :, None, :] - c[:, None, :, :]), axis=-1)  # [B, m (block), m (word)]
  total = jnp.sum(cost[:, jnp.arange(m)[None, :], perms], axis=-1)  # [B, P]
  best = perms[jnp.argmin(total, axis=-1)]  # [B, m]: word index for each block
  return jnp.take_along_axis(words, best, axis=1)
