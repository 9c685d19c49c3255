"""Dilated token pyramid and Streaming Average Quantization (SAQ) against a frozen codebook.

Every formula here is stated in docs/method.md. Shapes: B batch, H×W latent grid, d codebook dim,
V vocabulary size, s_l the grid side of layer l.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from spae._head import place_words
from spae._io import SpaeInputError

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class PyramidSpec:
  """Grid sides s_1..s_L of the token layers, top (semantic) first.

  The default (1, 2, 4, 8, 16, 16) gives 1+4+16+64+256+256 = 597 tokens on a 16×16 latent.
  `subsample` picks the value a block's token is computed from: 'dilation' (the latent at the block
  centre, the paper's dilated subsampler) or 'pool' (the block mean).
  `semantic_vocab` / `semantic_layers`: the top `semantic_layers` layers search only these codebook rows (a
  semantic sub-vocabulary, e.g. the words a teacher names most often: `spae.train` SemanticConfig.vocab_size);
  the other layers search the whole vocabulary. 0 layers (the default): every layer searches everything.
  `pooled_layers`: the top `pooled_layers` layers quantize a learned attention pooling of each block
  (`attention_pool`, weights from the autoencoder's `SemanticPool`) instead of `subsample`'s value, so a one-word
  layer can carry the object rather than the image's average; `pool_hidden` is that scorer's width and
  `pool_contrast` the initial weight of its contrast term (0: start from the block mean).
  `layer_weights`: SAQ's weight w_l of each layer in the streaming average r_l = Σ_{i≤l} w_i q_i / W_l, with
  W_l = Σ_{i≤l} w_i, so layer l targets t_l = (W_l·z(c) − Σ_{i<l} w_i q_i(c)) / w_l (docs/method.md, "Weighted
  SAQ"). Empty (the default): every w_l = 1, the paper's plain average. The residual-sum ablation ignores them.
  """

  grids: tuple[int, ...] = (1, 2, 4, 8, 16, 16)
  subsample: Literal["dilation", "pool"] = "dilation"
  semantic_layers: int = 0
  semantic_vocab: tuple[int, ...] = ()
  pooled_layers: int = 0
  pool_hidden: int = 32
  pool_contrast: float = 1.0
  layer_weights: tuple[float, ...] = ()

  def __post_init__(self):
    object.__setattr__(self, "grids", tuple(int(s) for s in self.grids))
    w = self.layer_weights
    if w and (isinstance(w, (str, bytes)) or len(w) != len(self.grids)
              or any(isinstance(x, bool) or not isinstance(x, (int, float)) or not np.isfinite(x) or x <= 0
                     for x in w)):
      raise SpaeInputError(f"layer_weights must be empty or one positive number per layer ({len(self.grids)} for "
                           f"grids {self.grids}), got {w!r}.")
    object.__setattr__(self, "layer_weights", tuple(float(x) for x in w))
    object.__setattr__(self, "semantic_vocab", tuple(int(k) for k in self.semantic_vocab))
    if not self.grids or any(s < 1 for s in self.grids):
      raise SpaeInputError(f"pyramid grids must be positive integers, got {self.grids}.")
    if self.subsample not in ("dilation", "pool"):
      raise SpaeInputError(f"subsample must be 'dilation' or 'pool', got {self.subsample!r}.")
    if isinstance(self.semantic_layers, bool) or not isinstance(self.semantic_layers, int) \
        or self.semantic_layers < 0:
      raise SpaeInputError(f"semantic_layers must be an integer >= 0, got {self.semantic_layers!r}.")
    v = self.semantic_vocab
    if bool(self.semantic_layers) != bool(v):
      raise SpaeInputError(f"semantic_layers ({self.semantic_layers}) and semantic_vocab ({len(v)} ids) must be "
                           f"set together: layers > 0 with a non-empty list of codebook rows, or neither.")
    if any(k < 0 for k in v) or len(set(v)) != len(v):
      raise SpaeInputError("semantic_vocab must list distinct codebook rows >= 0.")
    for name in ("pooled_layers", "pool_hidden"):
      n = getattr(self, name)
      if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise SpaeInputError(f"{name} must be an integer >= 0, got {n!r}.")
    if self.pooled_layers > len(self.grids):
      raise SpaeInputError(f"pooled_layers ({self.pooled_layers}) exceeds the pyramid's {len(self.grids)} layers.")
    if isinstance(self.pool_contrast, bool) or not isinstance(self.pool_contrast, (int, float)) \
        or not np.isfinite(self.pool_contrast):
      raise SpaeInputError(f"pool_contrast must be a finite number, got {self.pool_contrast!r}.")
    if self.pooled_layers and self.pool_hidden < 1:
      raise SpaeInputError("pool_hidden must be >= 1 when pooled_layers > 0.")

  def check_vocab(self, vocab_size: int) -> None:
    """Refuses a semantic sub-vocabulary with rows outside a vocabulary of `vocab_size`."""
    if self.semantic_vocab and max(self.semantic_vocab) >= vocab_size:
      raise SpaeInputError(f"semantic_vocab holds row {max(self.semantic_vocab)}, outside this vocabulary of "
                           f"{vocab_size} words; it was made for another vocabulary.")

  def is_pooled(self, layer: int) -> bool:
    """Whether layer `layer` (1-based) quantizes a learned attention pooling of its blocks."""
    return layer <= self.pooled_layers

  def searches_subset(self, layer: int) -> bool:
    """Whether layer `layer` (1-based) searches only `semantic_vocab`."""
    return layer <= self.semantic_layers

  @property
  def num_layers(self) -> int:
    return len(self.grids)

  @property
  def weighted(self) -> bool:
    """Whether SAQ averages the layers with unequal weights (`layer_weights` other than all 1)."""
    return any(x != 1.0 for x in self.layer_weights)

  def saq_weight(self, layer: int) -> tuple[float, float] | None:
    """(w_l, W_l) of layer `layer` (1-based) for a weighted pyramid; None when every weight is 1 (SAQ's plain
    average, whose ops stay exactly the unweighted ones)."""
    if not self.weighted:
      return None
    return self.layer_weights[layer - 1], float(sum(self.layer_weights[:layer]))

  def prefix(self, k: int) -> "PyramidSpec":
    """The pyramid of the first k layers (what encoding only k layers quantizes)."""
    return dataclasses.replace(self, grids=self.grids[:k], pooled_layers=min(self.pooled_layers, k),
                               layer_weights=self.layer_weights[:k])

  def tokens_per_layer(self) -> list[int]:
    return [s * s for s in self.grids]

  def cumulative_tokens(self) -> list[int]:
    return [int(c) for c in np.cumsum(self.tokens_per_layer())]

  def check_latent(self, h: int, w: int) -> None:
    for s in self.grids:
      if h % s or w % s:
        raise SpaeInputError(f"latent grid {h}×{w} is not divisible by pyramid grid {s}; "
                             f"pick grids that divide the latent size (grids={self.grids}).")


# ------------------------------------------------------------------------------------------ search
def _dot(a: Array, b: Array) -> Array:
  # HIGHEST keeps f32 products exact enough for argmin parity on GPUs/TPUs (no TF32 / bf16 passes).
  return jnp.einsum("nd,vd->nv", a, b, precision=jax.lax.Precision.HIGHEST)


def _pad_rows(x: Array, multiple: int) -> Array:
  pad = (-x.shape[0]) % multiple
  return jnp.pad(x, ((0, pad), (0, 0))) if pad else x


@functools.partial(jax.jit, static_argnames=("vocab_chunk", "query_chunk"))
def nearest_tokens(x: Array, codebook: Array, *, vocab_chunk: int = 8192, query_chunk: int = 4096) -> Array:
  """Exact nearest codebook row (squared L2) for each query, ties to the lowest index.

  Never builds the [N, V] distance matrix: it scans the vocabulary in chunks of `vocab_chunk` rows
  with a running (min, argmin), over blocks of `query_chunk` queries, so peak extra memory is
  `query_chunk * vocab_chunk` floats whatever V is.

  Args:
    x: [N, d] queries.
    codebook: [V, d] rows.
  Returns:
    int32 [N] ids.
  """
  x = jax.lax.stop_gradient(jnp.asarray(x, jnp.float32))
  e = jax.lax.stop_gradient(jnp.asarray(codebook, jnp.float32))
  n, v = x.shape[0], e.shape[0]
  vc = min(vocab_chunk, v)
  qc = min(query_chunk, max(n, 1))
  e_norm = jnp.sum(e * e, axis=-1)
  # Padded rows get +inf norm so they never win.
  e_p = _pad_rows(e, vc).reshape(-1, vc, e.shape[1])
  n_p = jnp.pad(e_norm, (0, (-v) % vc), constant_values=jnp.inf).reshape(-1, vc)
  offsets = jnp.arange(e_p.shape[0], dtype=jnp.int32) * vc

  def one_block(xb):  # [qc, d] -> [qc]
    def step(carry, chunk):
      best_d, best_i = carry
      rows, norms, off = chunk
      # ||x||^2 is constant per query, so it is left out of the comparison.
      d = norms[None, :] - 2.0 * _dot(xb, rows)
      j = jnp.argmin(d, axis=1)  # first minimum within the chunk
      dj = jnp.take_along_axis(d, j[:, None], axis=1)[:, 0]
      better = dj < best_d  # strict: an equal distance in a later chunk keeps the lower index
      return (jnp.where(better, dj, best_d), jnp.where(better, j.astype(jnp.int32) + off, best_i)), None

    init = (jnp.full((xb.shape[0],), jnp.inf, jnp.float32), jnp.zeros((xb.shape[0],), jnp.int32))
    (_, ids), _ = jax.lax.scan(step, init, (e_p, n_p, offsets))
    return ids

  xp = _pad_rows(x, qc).reshape(-1, qc, x.shape[1])
  ids = jax.lax.map(one_block, xp).reshape(-1)
  return ids[:n]


def neg_dist_logsumexp(x: Array, codebook: Array, tau: float, *, vocab_chunk: int = 8192,
                       codebook_grad: bool = False) -> Array:
  """logsumexp_k(-||x - E_k||² / tau) per query, chunked over V with an online max (differentiable in x, and
  in the codebook when `codebook_grad`).

  The body is rematerialised so the backward pass also never holds [N, V].
  Returns [N].
  """
  e = jnp.asarray(codebook, jnp.float32)
  e = e if codebook_grad else jax.lax.stop_gradient(e)
  v = e.shape[0]
  vc = min(vocab_chunk, v)
  e_norm = jnp.sum(e * e, axis=-1)
  e_p = _pad_rows(e, vc).reshape(-1, vc, e.shape[1])
  n_p = jnp.pad(e_norm, (0, (-v) % vc), constant_values=jnp.inf).reshape(-1, vc)
  x_norm = jnp.sum(x * x, axis=-1)

  @jax.checkpoint
  def step(carry, chunk):
    m, s = carry
    rows, norms = chunk
    logits = -(x_norm[:, None] + norms[None, :] - 2.0 * _dot(x, rows)) / tau
    m_new = jnp.maximum(m, jnp.max(logits, axis=1))
    s = s * jnp.exp(m - m_new) + jnp.sum(jnp.exp(logits - m_new[:, None]), axis=1)
    return (m_new, s), None

  n = x.shape[0]
  (m, s), _ = jax.lax.scan(step, (jnp.full((n,), -jnp.inf, x.dtype), jnp.zeros((n,), x.dtype)), (e_p, n_p))
  return m + jnp.log(s)


# ------------------------------------------------------------------------------------------ pyramid
def block_centres(size: int, grid: int) -> np.ndarray:
  """Dilated sample positions i·b + b//2 of a grid with b = size/grid."""
  b = size // grid
  return np.arange(grid) * b + b // 2


def subsample(z: Array, grid: int, mode: str = "dilation") -> Array:
  """[B, H, W, d] -> [B, grid, grid, d] values at the block centres (or block means)."""
  b_, h, w, d = z.shape
  if mode == "pool":
    return z.reshape(b_, grid, h // grid, grid, w // grid, d).mean(axis=(2, 4))
  return z[:, block_centres(h, grid)][:, :, block_centres(w, grid)]


def attention_pool(x: Array, grid: int, weights: Array) -> Array:
  """[B, H, W, d] -> [B, grid, grid, d]: Σ_{p in block} a_p x_p, with `weights` a [B, H, W] that sums to 1 over
  every block of the grid (`spae._nets.SemanticPool`). Uniform weights give the block mean."""
  b_, h, w, d = x.shape
  y = (x * weights[..., None]).reshape(b_, grid, h // grid, grid, w // grid, d)
  return y.sum(axis=(2, 4))


def upsample(q: Array, h: int, w: int) -> Array:
  """Nearest-neighbour [B, s, s, d] -> [B, H, W, d]: every position takes its block's code."""
  s = q.shape[1]
  return jnp.repeat(jnp.repeat(q, h // s, axis=1), w // q.shape[2], axis=2)


def layer_target(z: Array, previous: Array | None, layer: int, grid: int, mode: str = "dilation",
                 quantizer: str = "saq", weights: Array | None = None,
                 saq_weight: tuple[float, float] | None = None) -> Array:
  """Layer l's quantization target at its grid×grid sample positions c:

    SAQ: t_l = l·z(c) − Σ_{i<l} q_i(c)        RQ: t_l = z(c) − Σ_{i<l} q_i(c)
    weighted SAQ (`saq_weight` = (w_l, W_l), `PyramidSpec.saq_weight`): t_l = (W_l·z(c) − Σ_{i<l} w_i q_i(c)) / w_l

  where x(c) is `subsample`'s value of block c, or, with `weights` (a pooled layer), the attention pooling
  Σ_{p in c} a_p x_p. Either way the map is linear, so the SAQ algebra holds unchanged.

  Args:
    z: [B, H, W, d] latents.
    previous: Σ_{i<l} q_i at full resolution, [B, H, W, d] (SAQ: (l−1)·r_{l−1}; RQ: r_{l−1}; weighted SAQ:
      Σ_{i<l} w_i q_i = W_{l−1}·r_{l−1}); None for layer 1.
    layer: l, 1-based. grid: s_l. mode: the pyramid's subsampler ('dilation' or 'pool').
    quantizer: 'saq' or 'rq'.
    weights: [B, H, W] attention weights summing to 1 per block (pooled layers), or None.
  Returns:
    [B, grid, grid, d]. Differentiable in every input (the quantizer passes stopped values).
  """
  sub = (lambda x: attention_pool(x, grid, weights)) if weights is not None else (lambda x: subsample(x, grid, mode))
  t = sub(z)
  if quantizer == "saq" and saq_weight is not None:
    w_l, total = saq_weight
    t = (total / w_l) * t
    return t if previous is None else t - sub(previous) / w_l
  t = layer * t if quantizer == "saq" else t
  return t if previous is None else t - sub(previous)


def saq_quantize(z: Array, codebook: Array, spec: PyramidSpec = PyramidSpec(), *,
                 vocab_chunk: int = 8192, pool_weights: Sequence[Array] | None = None,
                 semantic_codebook: Array | None = None,
                 semantic_ranked: Array | None = None) -> tuple[list[Array], list[Array]]:
  """Streaming Average Quantization of z over the pyramid.

  Layer l (1-based) targets t_l = l·z(c) − Σ_{i<l} q_i(c) at its sample positions c and picks
  ids_l = argmin_k ||t_l − E_k||² (k over `spec.semantic_vocab` for the top `spec.semantic_layers` layers, over
  the whole codebook otherwise); the reconstruction from the first l layers is
  r_l = (1/l) Σ_{i≤l} q_i, with q_i the nearest-neighbour upsampling of layer i's codes.

  Args:
    z: [B, H, W, d] latents.
    codebook: [V, d] frozen rows.
    spec: the pyramid.
    pool_weights: one [B, H, W] weight map per pooled layer (`spec.pooled_layers`; the model's
      `pool_weights(z)`), None when none is pooled.
    semantic_codebook: [V, d] codes the layers that search `spec.semantic_vocab` search and add instead of
      `codebook`'s (a semantic map of their own, `CodebookConfig.semantic_map`); None: they use `codebook`.
    semantic_ranked: [B, S] a semantic head's ranking of `spec.semantic_vocab`'s positions, best first: those layers
      then take its words in turn (`pyramid_quantize`); None: their nearest codes.
  Returns:
    ids: one int32 [B, s_l, s_l] per layer; recon: one [B, H, W, d] per prefix l = 1..L.
  """
  return _pyramid_quantize(z, codebook, spec, "saq", vocab_chunk, pool_weights, semantic_codebook, semantic_ranked)


def rq_quantize(z: Array, codebook: Array, spec: PyramidSpec = PyramidSpec(), *,
                vocab_chunk: int = 8192, pool_weights: Sequence[Array] | None = None,
                semantic_codebook: Array | None = None,
                semantic_ranked: Array | None = None) -> tuple[list[Array], list[Array]]:
  """Residual-sum ablation: t_l = z(c) − Σ_{i<l} q_i(c) and r_l = Σ_{i≤l} q_i (same token budget as SAQ)."""
  return _pyramid_quantize(z, codebook, spec, "rq", vocab_chunk, pool_weights, semantic_codebook, semantic_ranked)


def pyramid_quantize(z: Array, codebook: Array, spec: PyramidSpec, quantizer: str = "saq", *,
                     vocab_chunk: int = 8192, pool_weights: Sequence[Array] | None = None,
                     semantic_codebook: Array | None = None,
                     semantic_ranked: Array | None = None) -> tuple[list[Array], list[Array]]:
  """`saq_quantize` (quantizer='saq') or `rq_quantize` (quantizer='rq').

  semantic_ranked: [B, S] int32, a semantic head's ranking of the sub-vocabulary's positions, best first (None:
  no head). The layers that search the sub-vocabulary then take the next s_l² words of it in turn instead of
  their nearest codes, each layer's words placed on its blocks by `spae._head.place_words` (docs/method.md,
  "The semantic head").
  """
  if quantizer not in ("saq", "rq"):
    raise SpaeInputError(f"quantizer must be 'saq' or 'rq', got {quantizer!r}.")
  return _pyramid_quantize(z, codebook, spec, quantizer, vocab_chunk, pool_weights, semantic_codebook,
                           semantic_ranked)


def layer_codebooks(codebook: Array, semantic_codebook: Array | None, spec: PyramidSpec, num_layers: int
                    ) -> list[Array]:
  """The [V, d] codes each of the first `num_layers` layers searches and adds: `semantic_codebook` for the layers
  that search the semantic sub-vocabulary when it is given, `codebook` otherwise."""
  codebook = jnp.asarray(codebook, jnp.float32)
  if semantic_codebook is None:
    return [codebook] * num_layers
  semantic_codebook = jnp.asarray(semantic_codebook, jnp.float32)
  if semantic_codebook.shape != codebook.shape:
    raise SpaeInputError(f"the semantic codebook has shape {tuple(semantic_codebook.shape)}, the codebook "
                         f"{tuple(codebook.shape)}; they must be equal.")
  if not spec.semantic_layers:
    raise SpaeInputError("a semantic codebook was given but the pyramid has no semantic sub-vocabulary "
                         "(PyramidSpec.semantic_vocab).")
  return [semantic_codebook if spec.searches_subset(l) else codebook for l in range(1, num_layers + 1)]


def check_pool_weights(spec: PyramidSpec, pool_weights: Sequence[Array] | None) -> list:
  """One weight map per pooled layer, as a list (empty when the pyramid pools none)."""
  got = list(pool_weights) if pool_weights is not None else []
  if len(got) != spec.pooled_layers:
    raise SpaeInputError(f"the pyramid pools its top {spec.pooled_layers} layers but {len(got)} attention weight "
                         f"maps were given; pass the model's pool_weights(z).")
  return got


def _pyramid_quantize(z, codebook, spec, mode, vocab_chunk, pool_weights=None, semantic_codebook=None,
                      semantic_ranked=None):
  z = jnp.asarray(z, jnp.float32)
  if z.ndim != 4:
    raise SpaeInputError(f"latents must be [B, H, W, d], got shape {z.shape}.")
  # The search sees no gradients; the reconstructions are differentiable in the codes, so a trainable code
  # map (spae._codebook 'projected' / 'learned') learns through the codebook loss. A frozen table passed
  # in directly gets no gradient from anything the trainer differentiates.
  codebook = jnp.asarray(codebook, jnp.float32)
  if z.shape[-1] != codebook.shape[-1]:
    raise SpaeInputError(f"latent dim {z.shape[-1]} != codebook dim {codebook.shape[-1]}.")
  b_, h, w, d = z.shape
  spec.check_latent(h, w)
  spec.check_vocab(codebook.shape[0])
  per_layer = layer_codebooks(codebook, semantic_codebook, spec, spec.num_layers)
  weights = [jax.lax.stop_gradient(jnp.asarray(a, jnp.float32)) for a in check_pool_weights(spec, pool_weights)]
  if any(a.shape != (b_, h, w) for a in weights):
    raise SpaeInputError(f"attention weight maps must be [B, H, W] = {(b_, h, w)}, got "
                         f"{[tuple(a.shape) for a in weights]}.")
  zs = jax.lax.stop_gradient(z)
  running = jnp.zeros_like(zs)  # Σ_{i<l} q_i at full resolution (weighted SAQ: Σ_{i<l} w_i q_i)
  ids_out, recon_out = [], []
  sub_rows = jnp.asarray(spec.semantic_vocab, jnp.int32)
  taken = 0  # with a semantic head: how many of each image's ranked words the layers above took
  if semantic_ranked is not None:
    need = sum(g * g for l, g in enumerate(spec.grids, start=1) if spec.searches_subset(l))
    got = tuple(jnp.shape(semantic_ranked))
    if got != (b_, len(spec.semantic_vocab)) or need > got[1] or any(g > 2 for l, g in enumerate(spec.grids, 1)
                                                                      if spec.searches_subset(l)):
      raise SpaeInputError(f"semantic_ranked must be [B, S] = {(b_, len(spec.semantic_vocab))}, the ranking of a "
                           f"sub-vocabulary of at least the semantic layers' {need} words, on grids of at most 2×2; "
                           f"got shape {got} for grids {spec.grids[:spec.semantic_layers]}.")
  for layer, s in enumerate(spec.grids, start=1):
    codes = per_layer[layer - 1]
    search_codes = jax.lax.stop_gradient(codes)
    a = weights[layer - 1] if spec.is_pooled(layer) else None
    wl = spec.saq_weight(layer) if mode == "saq" else None
    target = layer_target(zs, running, layer, s, spec.subsample, mode, a, wl).reshape(-1, d)
    if semantic_ranked is not None and spec.searches_subset(layer):  # the head's next s² words, best placed
      words = jnp.asarray(semantic_ranked)[:, taken:taken + s * s]
      taken += s * s
      placed = place_words(words, target.reshape(b_, s * s, d), search_codes[sub_rows])
      ids = sub_rows[placed].reshape(b_, s, s)
    elif spec.searches_subset(layer):  # the nearest of the sub-vocabulary, as a row of the whole codebook
      ids = sub_rows[nearest_tokens(target, search_codes[sub_rows], vocab_chunk=vocab_chunk)].reshape(b_, s, s)
    else:
      ids = nearest_tokens(target, search_codes, vocab_chunk=vocab_chunk).reshape(b_, s, s)
    running, r = _stream(running, upsample(codes[ids], h, w), layer, wl, mode)
    ids_out.append(ids)
    recon_out.append(r)
  return ids_out, recon_out


def _stream(running: Array | None, q: Array, layer: int, wl: tuple[float, float] | None, mode: str
            ) -> tuple[Array, Array]:
  """Adds layer l's upsampled codes q to the running sum Σ_{i<l} q_i (weighted SAQ: Σ w_i q_i; None before layer 1)
  and returns it with r_l: the sum itself for RQ, over l for SAQ, over W_l for weighted SAQ (`wl` = (w_l, W_l))."""
  q = q if wl is None else wl[0] * q
  running = q if running is None else running + q
  return running, running if mode != "saq" else running / layer if wl is None else running / wl[1]


def reconstruct_from_ids(ids: Sequence[Array], codebook: Array, latent_hw: tuple[int, int],
                         mode: str = "saq", *, semantic_codebook: Array | None = None,
                         spec: PyramidSpec | None = None) -> list[Array]:
  """Latent reconstructions r_1..r_k from the first k layers of ids ([B, s_l, s_l] each).

  semantic_codebook (with the `spec` that says which layers search the semantic sub-vocabulary): those layers'
  codes, as in `saq_quantize`. spec: also the SAQ layer weights (`PyramidSpec.layer_weights`); None: plain SAQ.
  """
  h, w = latent_hw
  if semantic_codebook is not None and spec is None:
    raise SpaeInputError("reconstruct_from_ids: a semantic_codebook needs the PyramidSpec (spec=) that says which "
                         "layers use it.")
  spec = spec or PyramidSpec()
  per_layer = layer_codebooks(codebook, semantic_codebook, spec, len(ids))
  running, out = None, []
  for layer, lid in enumerate(ids, start=1):
    q = upsample(per_layer[layer - 1][jnp.asarray(lid)], h, w)
    wl = spec.saq_weight(layer) if mode == "saq" and layer <= spec.num_layers else None
    running, r = _stream(running, q, layer, wl, mode)
    out.append(r)
  return out


def straight_through(z: Array, recon: Array) -> Array:
  """Forward value `recon`, gradient of identity to z."""
  return z + jax.lax.stop_gradient(recon - z)


def commitment_loss(z: Array, recons: Sequence[Array]) -> Array:
  """mean_l mean ||z − sg(r_l)||²: pulls the encoder output toward its own quantized averages."""
  return jnp.mean(jnp.stack([jnp.mean(jnp.square(z - jax.lax.stop_gradient(r))) for r in recons]))


def codebook_loss(z: Array, recons: Sequence[Array]) -> Array:
  """mean_l mean ||sg(z) − r_l||²: VQ-VAE's codebook term, pulling trainable codes toward the encoder output."""
  z = jax.lax.stop_gradient(z)
  return jnp.mean(jnp.stack([jnp.mean(jnp.square(z - r)) for r in recons]))
