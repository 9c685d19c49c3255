"""`GemmaLM`: a JAX decoder-only transformer for Gemma 2, Gemma 3 (text) and LLaMA-style checkpoints.

One forward covers the three families; the config switches the differences:

| | Gemma 2 | Gemma 3 | LLaMA |
|---|---|---|---|
| RMSNorm weight | (1 + w) | (1 + w) | w |
| norms per layer | 4 (pre+post attn, pre+post ffw) | 4 | 2 |
| q/k RMSNorm | no | yes | no |
| embedding | x sqrt(d) | x sqrt(d) | raw |
| MLP | gelu-tanh gated | gelu-tanh gated | silu gated |
| attention scale | query_pre_attn_scalar^-1/2 | same | head_dim^-1/2 |
| soft caps | attention 50, final 30 | none | none |
| sliding window | alternate layers | 5 local : 1 global | none |
| RoPE base | 10k | local 10k, global 1M (+ scaling) | rope_theta (+ llama3 scaling) |

Parameters are a plain pytree of arrays (matrices float32, or bfloat16 with `dtype='bfloat16'`; computation is
float32) with the layers stacked on a leading axis, so the forward is a
`lax.scan` and its compile time does not grow with depth. Norm weights are stored as effective scales (the
"1 +" of Gemma is applied at load time).

Raw versus scaled embedding rows: Gemma's `Embedder.encode` multiplies the looked-up row by sqrt(d) (rounded to
the checkpoint's dtype, as the reference does); LLaMA does not. `GemmaLM.vocabulary(scaled=...)` exposes either.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from spae._io import SpaeInputError
from spae.lm._base import LanguageModelBase, TextTokenizer

Params = dict[str, Any]

FAMILIES = ("gemma2", "gemma3", "llama")
# Storage dtypes of the weight matrices (GemmaLM computes in float32).
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class GemmaConfig:
  """Architecture of a Gemma 2 / Gemma 3 / LLaMA-style decoder.

  Attributes:
    family: 'gemma2' | 'gemma3' | 'llama' (documentation and defaults only; the flags below decide).
    vocab_size: rows of the embedding table.
    embed_dim, hidden_dim: model width d and MLP width.
    num_layers, num_heads, num_kv_heads, head_dim: transformer shape (GQA when num_kv_heads < num_heads).
    layer_types: per layer 'global' or 'sliding'.
    sliding_window: tokens a sliding layer sees, itself included (key pos > query pos - window).
    norm_eps: RMSNorm epsilon.
    norm_plus_one: Gemma stores RMSNorm weights as w and scales by (1 + w).
    post_norms: Gemma 2/3 also normalise the attention and MLP outputs (4 norms per layer).
    qk_norm: Gemma 3 RMS-normalises queries and keys per head.
    embed_scale: multiply embeddings by sqrt(embed_dim) (Gemma).
    activation: 'gelu_tanh' (Gemma) or 'silu' (LLaMA) for the gated MLP.
    query_pre_attn_scalar: queries are scaled by this**-0.5 (None: head_dim).
    attn_softcap, final_softcap: tanh soft caps on attention and output logits (None: off).
    rope_global_base, rope_local_base: RoPE base frequency of global and sliding layers.
    rope_global_scaling, rope_local_scaling: None, or a dict with 'rope_type' 'linear' ({'factor'}) or 'llama3'
      ({'factor', 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings'}).
    tied_embeddings: the output head is the embedding table (otherwise a separate lm_head).
    max_length: context length; longer inputs are rejected.
  """

  family: str
  vocab_size: int
  embed_dim: int
  hidden_dim: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  layer_types: tuple[str, ...] = ()
  sliding_window: int | None = None
  norm_eps: float = 1e-6
  norm_plus_one: bool = True
  post_norms: bool = True
  qk_norm: bool = False
  embed_scale: bool = True
  activation: str = "gelu_tanh"
  query_pre_attn_scalar: float | None = None
  attn_softcap: float | None = None
  final_softcap: float | None = None
  rope_global_base: float = 10_000.0
  rope_local_base: float = 10_000.0
  rope_global_scaling: Any = None
  rope_local_scaling: Any = None
  tied_embeddings: bool = True
  max_length: int = 8192

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise SpaeInputError(f"GemmaConfig.family must be one of {FAMILIES}, got {self.family!r}.")
    lt = tuple(self.layer_types) or ("global",) * self.num_layers
    object.__setattr__(self, "layer_types", lt)
    for name in ("rope_global_scaling", "rope_local_scaling"):
      v = getattr(self, name)
      if isinstance(v, dict):  # frozen + hashable (jit static argument)
        object.__setattr__(self, name, tuple(sorted(v.items())))
    if len(lt) != self.num_layers or any(t not in ("global", "sliding") for t in lt):
      raise SpaeInputError(f"layer_types must list 'global'/'sliding' for each of the {self.num_layers} layers, "
                           f"got {lt}.")
    if "sliding" in lt and not self.sliding_window:
      raise SpaeInputError("layer_types has sliding layers but sliding_window is not set.")
    if self.num_heads % self.num_kv_heads:
      raise SpaeInputError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                           f"({self.num_kv_heads}).")
    if self.head_dim % 2:
      raise SpaeInputError(f"head_dim must be even for RoPE, got {self.head_dim}.")
    if self.activation not in ("gelu_tanh", "silu"):
      raise SpaeInputError(f"activation must be 'gelu_tanh' or 'silu', got {self.activation!r}.")
    for s in (self.rope_global_scaling, self.rope_local_scaling):
      if s is not None and dict(s).get("rope_type") not in ("linear", "llama3", "freq_factors", "default"):
        raise SpaeInputError(f"unsupported RoPE scaling {dict(s)}; supported: 'linear', 'llama3', 'freq_factors'.")

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["layer_types"] = list(self.layer_types)
    for k in ("rope_global_scaling", "rope_local_scaling"):
      d[k] = None if d[k] is None else dict(d[k])
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "GemmaConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise SpaeInputError(f"unknown GemmaConfig fields {unknown}; known fields: {sorted(names)}.")
    d = dict(d)
    if "layer_types" in d:
      d["layer_types"] = tuple(d["layer_types"])
    return cls(**d)


# ------------------------------------------------------------------------------------------------ math
def _inv_freq(head_dim: int, base: float, scaling: Any) -> np.ndarray:
  """RoPE inverse frequencies [head_dim/2], with linear, llama3 or per-frequency scaling folded in."""
  inv = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
  s = dict(scaling) if scaling is not None else {}
  kind = s.get("rope_type", "default")
  if kind == "linear":
    inv = inv / float(s["factor"])
  elif kind == "freq_factors":  # llama.cpp's rope_freqs tensor (llama 3.x GGUF files): theta_i / factor_i
    inv = inv / np.asarray(s["factors"], np.float64)
  elif kind == "llama3":
    factor, lo, hi = float(s["factor"]), float(s["low_freq_factor"]), float(s["high_freq_factor"])
    old = float(s["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > old / lo, inv / factor, inv)
    smooth = (old / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old / hi) & ~(wavelen > old / lo)
    inv = np.where(medium, smoothed, scaled)
  return inv.astype(np.float32)


def _rms(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
  var = jnp.mean(jnp.square(x), axis=-1, keepdims=True)
  return x * jax.lax.rsqrt(var + eps) * scale


def _rope(x: jax.Array, pos: jax.Array, inv_freq: jax.Array) -> jax.Array:
  """x: [B, T, N, H]; pos: [B, T]; half-split rotation (HF `rotate_half`, gemma `apply_rope`)."""
  ang = pos[..., None].astype(jnp.float32) * inv_freq  # [B, T, H/2]
  sin, cos = jnp.sin(ang)[:, :, None, :], jnp.cos(ang)[:, :, None, :]
  x1, x2 = jnp.split(x, 2, axis=-1)
  return jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)


def _softcap(x: jax.Array, cap: float | None) -> jax.Array:
  return x if cap is None else jnp.tanh(x / cap) * cap


def _attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array, cap: float | None) -> jax.Array:
  """Grouped-query attention: q [B, T, K, G, H] (scaled), k/v [B, S, K, H], mask [B, T, S] -> [B, T, K, G, H].

  The products run as GEMMs batched over (B, K) with the T x G queries as rows, so the cache needs no transpose
  when K = 1. Against einsums with (B, K) in the middle: equal bit for bit on random inputs, 12.2 instead of
  14.8 ms per layer at T = 336, S = 1024 (Gemma 3 270M's heads, the 2-core EPYC)."""
  b, t, kh, g, h = q.shape
  qq = q.transpose(0, 2, 1, 3, 4).reshape(b, kh, t * g, h)
  kk, vv = k.transpose(0, 2, 1, 3), v.transpose(0, 2, 1, 3)
  lg = _softcap(jnp.einsum("bkqh,bksh->bkqs", qq, kk), cap).reshape(b, kh, t, g, -1)
  lg = jnp.where(mask[:, None, :, None, :], lg, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(lg, axis=-1).reshape(b, kh, t * g, -1)
  return jnp.einsum("bkqs,bksh->bkqh", probs, vv).reshape(b, kh, t, g, h).transpose(0, 2, 1, 3, 4)


def _forward(cfg: GemmaConfig, params: Params, ids: jax.Array, pos: jax.Array, valid: jax.Array,
             past_k: jax.Array, past_v: jax.Array, past_valid: jax.Array, write_at: jax.Array | None = None,
             seg: jax.Array | None = None):
  """One pass over new tokens attending to a past K/V cache.

  Args:
    ids, pos, valid: [B, T] token ids, absolute positions and a padding mask of the new tokens.
    past_k, past_v: [L, Bp, S, K, H] cached keys/values (Bp is 1, shared by the batch, or B); positions 0..S-1.
    past_valid: [Bp, S] which cached slots hold tokens.
    write_at: if given (B == Bp == 1), the new keys/values are written into the cache at this slot first and
      attention runs over the cache alone (S keys instead of S + T); `past_valid` must then cover the new slots.
    seg: with `write_at`, [1, T] segment ids of the new tokens: 0 is the shared sequence, k > 0 a branch that sees
      the shared tokens and its own but no other branch (several continuations of one prefix in one pass; a
      branch's positions restart after the shared ones, so slots and positions differ).
  Returns:
    (final hidden states [B, T, d], keys, values): the new tokens' [L, B, T, K, H], or with `write_at` the
    updated caches [L, 1, S, K, H].
  """
  n_kv, group, hd = cfg.num_kv_heads, cfg.num_heads // cfg.num_kv_heads, cfg.head_dim
  b, t = ids.shape
  x = params["embed"][ids].astype(jnp.float32)
  if cfg.embed_scale:
    x = x * params["embed_scale"]
  scaling = (cfg.query_pre_attn_scalar or hd) ** -0.5
  shared = past_k.shape[1] == 1 and b > 1
  s = past_k.shape[2]
  past_pos = jnp.arange(s)
  neg = jnp.finfo(jnp.float32).min
  if write_at is not None:  # the new tokens' slots hold their positions (which differ from the slot for branches)
    past_pos = jax.lax.dynamic_update_slice(past_pos, pos[0].astype(past_pos.dtype), (write_at,))
  # Masks for the two key blocks (past, new): causal by position, padding, and the sliding window.
  m_past = past_valid[:, None, :] & (past_pos[None, None, :] <= pos[:, :, None])  # [B|1, T, S]
  if seg is not None:
    slot_seg = jax.lax.dynamic_update_slice(jnp.zeros((s,), seg.dtype), seg[0], (write_at,))
    m_past = m_past & ((slot_seg[None, None, :] == 0) | (slot_seg[None, None, :] == seg[:, :, None]))
  m_new = valid[:, None, :] & (pos[:, None, :] <= pos[:, :, None])  # [B, T, T]
  if cfg.sliding_window:
    w = cfg.sliding_window
    w_past = past_pos[None, None, :] > pos[:, :, None] - w
    w_new = pos[:, None, :] > pos[:, :, None] - w
  else:
    w_past = w_new = jnp.ones((), bool)

  def layer(x, xs):
    lp, sliding, inv_freq, pk, pv = xs
    lp = {key: val.astype(jnp.float32) for key, val in lp.items()}  # bfloat16 storage: widen one layer at a time
    h = _rms(x, lp["pre_attn_norm"], cfg.norm_eps)
    q = jnp.einsum("btd,dnh->btnh", h, lp["wq"])
    k = jnp.einsum("btd,dkh->btkh", h, lp["wk"])
    v = jnp.einsum("btd,dkh->btkh", h, lp["wv"])
    if cfg.qk_norm:
      q = _rms(q, lp["q_norm"], cfg.norm_eps)
      k = _rms(k, lp["k_norm"], cfg.norm_eps)
    q = _rope(q, pos, inv_freq) * scaling
    k = _rope(k, pos, inv_freq)
    q = q.reshape(b, t, n_kv, group, hd)
    if write_at is not None:  # insert, then attend over the cache only
      pk = jax.lax.dynamic_update_slice(pk, k, (0, write_at, 0, 0))
      pv = jax.lax.dynamic_update_slice(pv, v, (0, write_at, 0, 0))
      o = _attend(q, pk, pv, jnp.where(sliding, m_past & w_past, m_past), cfg.attn_softcap)
      return _block_out(x, o, lp), (pk, pv)
    if shared:
      lg_past = jnp.einsum("btkgh,skh->btkgs", q, pk[0])
    else:
      lg_past = jnp.einsum("btkgh,bskh->btkgs", q, pk)
    lg_new = jnp.einsum("btkgh,bskh->btkgs", q, k)
    lg_past = _softcap(lg_past, cfg.attn_softcap)
    lg_new = _softcap(lg_new, cfg.attn_softcap)
    mp = jnp.where(sliding, m_past & w_past, m_past)[:, :, None, None, :]
    mn = jnp.where(sliding, m_new & w_new, m_new)[:, :, None, None, :]
    lg = jnp.concatenate([jnp.where(mp, lg_past, neg), jnp.where(mn, lg_new, neg)], axis=-1)
    probs = jax.nn.softmax(lg, axis=-1)
    p_past, p_new = probs[..., :s], probs[..., s:]
    if shared:
      o = jnp.einsum("btkgs,skh->btkgh", p_past, pv[0])
    else:
      o = jnp.einsum("btkgs,bskh->btkgh", p_past, pv)
    o = o + jnp.einsum("btkgs,bskh->btkgh", p_new, v)
    return _block_out(x, o, lp), (k, v)

  def _block_out(x, o, lp):
    attn = jnp.einsum("btnh,nhd->btd", o.reshape(b, t, cfg.num_heads, hd), lp["wo"])
    if cfg.post_norms:
      attn = _rms(attn, lp["post_attn_norm"], cfg.norm_eps)
    x = x + attn
    h = _rms(x, lp["pre_ffw_norm"], cfg.norm_eps)
    gate = h @ lp["w_gate"]
    act = jax.nn.gelu(gate, approximate=True) if cfg.activation == "gelu_tanh" else jax.nn.silu(gate)
    m = (act * (h @ lp["w_up"])) @ lp["w_down"]
    if cfg.post_norms:
      m = _rms(m, lp["post_ffw_norm"], cfg.norm_eps)
    return x + m

  xs = (params["layers"], params["sliding"], params["inv_freq"], past_k, past_v)
  x, (new_k, new_v) = jax.lax.scan(layer, x, xs)
  return _rms(x, params["final_norm"], cfg.norm_eps), new_k, new_v


def _head(cfg: GemmaConfig, params: Params, x: jax.Array) -> jax.Array:
  w = params["embed"] if cfg.tied_embeddings else params["lm_head"]
  return _softcap(x @ w.astype(jnp.float32).T, cfg.final_softcap)


@functools.partial(jax.jit, static_argnums=0)
def _logits_fn(cfg, params, ids, valid):
  b, t = ids.shape
  shape = (cfg.num_layers, 1, 0, cfg.num_kv_heads, cfg.head_dim)
  pos = jnp.broadcast_to(jnp.arange(t), (b, t))
  x, _, _ = _forward(cfg, params, ids, pos, valid, jnp.zeros(shape), jnp.zeros(shape), jnp.zeros((1, 0), bool))
  return _head(cfg, params, x)


@functools.partial(jax.jit, static_argnums=0, donate_argnums=(2, 3))
def _extend_fn(cfg, params, buf_k, buf_v, n_past, ids, n_new):
  """Appends up to T tokens (n_new real) to a single-sequence cache; returns the last one's final hidden state [d].

  buf_k/buf_v: [L, 1, S, K, H] with slots < n_past filled; ids: [1, T]. Needs S >= n_past + T. The head is left
  to the caller: it reads the whole V x d table, so `score` runs it once for the prefix and its candidates.
  """
  t = ids.shape[1]
  s = buf_k.shape[2]
  pos = (n_past + jnp.arange(t))[None]
  valid = (jnp.arange(t) < n_new)[None]
  filled = (jnp.arange(s) < n_past + n_new)[None]  # the new tokens are written before attention
  x, buf_k, buf_v = _forward(cfg, params, ids, pos, valid, buf_k, buf_v, filled, write_at=n_past)
  return jax.lax.dynamic_index_in_dim(x[0], n_new - 1, axis=0, keepdims=False), buf_k, buf_v


@functools.partial(jax.jit, static_argnums=0)
def _next_logp_fn(cfg, params, last):
  """log p(next) [V] from a final hidden state [d]."""
  return jax.nn.log_softmax(_head(cfg, params, last))


@functools.partial(jax.jit, static_argnums=0, donate_argnums=(2, 3))
def _branches_fn(cfg, params, buf_k, buf_v, n_past, ids, pos, seg, n_new, rows):
  """Runs a prefix's uncached tail and its continuations through the cache in one pass.

  The chunk ids [1, T] (n_new real) holds the prefix's uncached tail (segment 0) followed by every continuation
  as its own branch (segment k); it is written into the cache at slot n_past. Returns (the final hidden states
  [R, d] of the chunk positions `rows` [R], the caches). The head is left to `_token_logp_fn`, which runs it
  once for many calls.
  """
  s = buf_k.shape[2]
  valid = (jnp.arange(ids.shape[1]) < n_new)[None]
  filled = (jnp.arange(s) < n_past + n_new)[None]
  x, buf_k, buf_v = _forward(cfg, params, ids, pos, valid, buf_k, buf_v, filled, write_at=n_past, seg=seg)
  return x[0][rows], buf_k, buf_v


@functools.partial(jax.jit, static_argnums=0)
def _token_logp_fn(cfg, params, x, rows, toks):
  """log p(toks[n] | final hidden state x[rows[n]]) [N]; x [R, d].

  One multiply of all R rows by the V x d head gives their log-normalisers (the head is read once, not once
  per row group); each scored token's logit is its own row of the head.
  """
  w = params["embed"] if cfg.tied_embeddings else params["lm_head"]
  lse = jax.nn.logsumexp(_head(cfg, params, x), axis=-1)
  logit = _softcap(jnp.einsum("nd,nd->n", x[rows], w[toks].astype(jnp.float32)), cfg.final_softcap)
  return logit - lse[rows]


# The most scored tokens whose head rows `score_many` runs in one pass: its logits are rows x V floats (0.5 GB at
# Gemma 3's 262,144 words). A 16-prompt batch of the standard few-shot sweep scores at most 240 tokens (5 labels
# of up to 3 tokens each per prompt), so it stays one pass.
HEAD_ROWS = 512


def _bucket(n: int, cap: int, smallest: int = 16) -> int:
  """The smallest size >= n (at least `smallest`, at most `cap` unless n is larger) among the quarter-octave
  steps {4, 5, 6, 7} x 2^e: padding wastes at most 25% of a call's compute (power-of-two sizes wasted up to
  half: a 752-token few-shot prompt ran as 1024), and the number of compiled shapes still grows only
  logarithmically with length."""
  b = max(int(smallest), 1)
  if b >= n:
    return min(b, cap) if n <= cap else n
  step = 1
  while (step << 3) <= n:  # sizes between 4*step and 8*step go in steps of `step`
    step <<= 1
  b = max(b, -(-n // step) * step)
  return max(min(b, cap), n)


# ------------------------------------------------------------------------------------------------ model
class GemmaLM(LanguageModelBase):
  """A frozen Gemma 2 / Gemma 3 / LLaMA-style model in JAX with a KV cache and length buckets.

  Context rule: inputs longer than `max_length` are rejected with `SpaeInputError` (never silently truncated):
  `score` needs len(prefix) + longest continuation <= max_length, `generate` len(ids) + max_new <= max_length.

  Prefix cache: `score` and `generate` keep the K/V of the last prefix; a later call whose prefix shares its
  beginning (e.g. the same few-shot context with a new query) only runs the new tokens.
  """

  def __init__(self, config: GemmaConfig, params: Params, tokenizer: TextTokenizer, *,
               max_length: int | None = None, source: str = "", dtype: str = "float32"):
    """dtype: storage of the weight matrices, 'float32' or 'bfloat16' (half the memory; computation stays
    float32, the weights are widened layer by layer)."""
    if dtype not in DTYPES:
      raise SpaeInputError(f"dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)}.")
    self.config = config
    self.tokenizer = tokenizer
    self.max_length = int(max_length or config.max_length)
    self.source = source
    self.dtype = dtype
    self.params = _prepare_params(config, params, DTYPES[dtype])
    self._cache: tuple[list[int], jax.Array, jax.Array] | None = None

  # ------------------------------------------------------------------ id-level API
  def logits(self, ids: Any) -> np.ndarray:
    """ids: int [B, T] (or [T]) -> float32 logits [B, T, V] (after the final soft cap, if any)."""
    arr = np.asarray(ids)
    squeeze = arr.ndim == 1
    arr = np.atleast_2d(arr)
    self._check_ids(arr, "ids")
    b, t = arr.shape
    if t > self.max_length:
      raise SpaeInputError(f"ids have length {t} > max_length {self.max_length}; shorten the input.")
    tb = _bucket(t, self.max_length)
    padded = np.zeros((b, tb), np.int32)
    padded[:, :t] = arr
    valid = np.zeros((b, tb), bool)
    valid[:, :t] = True
    out = np.asarray(_logits_fn(self.config, self.params, padded, valid))[:, :t]
    return out[0] if squeeze else out

  def next_logprobs(self, ids: Sequence[int], among: np.ndarray | None = None) -> np.ndarray:
    """float32 [V] log p(next | ids) over the tokenizer's ids (padded embedding rows are not tokens); reuses the
    cached K/V of the longest prefix shared with the previous call, so decoding runs one new token per step."""
    seq = self._as_ids(ids, "ids")
    if not seq:
      raise SpaeInputError("ids is empty; start the prompt with BOS (tokenizer.bos_id) at least.")
    self._check_length(len(seq), "len(ids)")
    n_tok = min(int(self.tokenizer.vocab_size), self.config.vocab_size)
    return np.asarray(_next_logp_fn(self.config, self.params, self._prefill(seq)))[:n_tok]

  def score(self, prefix_ids: Sequence[int], continuations: Sequence[Sequence[int]]) -> np.ndarray:
    """[C] float32: sum_j log p(cont_j | prefix, cont_<j) for each continuation.

    One forward pass: the prefix's uncached tail and every continuation, each continuation a branch that attends
    to the prefix and to itself only; the prefix's K/V stay cached for the next call."""
    return self.score_many([(prefix_ids, continuations)])[0]

  def score_many(self, requests: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]]) -> list[np.ndarray]:
    """`score` for each (prefix_ids, continuations) request, in order, with the output head run once for all.

    Each request is one forward pass through the prefix cache (consecutive requests that share a prefix reuse
    it); the head, which reads the whole V x d table (a 262k-word table is 0.7 GB in float32), then runs on
    every request's scored positions at once. Positions with the same context (every continuation's first
    token follows the prefix's last) are computed once. The head's logits are rows x V floats, so requests go
    to it in groups of at most HEAD_ROWS scored tokens (a request with more is a group of its own).
    """
    out: list[np.ndarray] = []
    group: list[tuple[Sequence[int], Sequence[Sequence[int]]]] = []
    size = 0
    for request in requests:
      n = sum(np.size(c) for c in request[1])  # its scored tokens (>= its head rows); _branches checks them
      if group and size + n > HEAD_ROWS:
        out += self._score_group(group)
        group, size = [], 0
      group.append(request)
      size += n
    return out + (self._score_group(group) if group else [])

  def _score_group(self, requests: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]]) -> list[np.ndarray]:
    """`score_many` of requests whose head rows fit one head pass."""
    hidden, rows, toks, owner, sizes = [], [], [], [], []
    offset = 0
    for r, (prefix_ids, continuations) in enumerate(requests):
      x, n_rows, cont_rows, conts = self._branches(prefix_ids, continuations)
      hidden.append((x, n_rows))
      for k, (c, cr) in enumerate(zip(conts, cont_rows)):
        rows += [offset + i for i in cr]
        toks += c
        owner += [(r, k)] * len(c)
      offset += n_rows
      sizes.append(len(conts))
    n, rb = len(rows), _bucket(offset, 1 << 30, smallest=8)
    x = np.zeros((rb, self.config.embed_dim), np.float32)
    at = 0
    for h, u in hidden:  # each request's padded rows are dropped here
      x[at:at + u] = np.asarray(h)[:u]
      at += u
    nb = _bucket(n, 1 << 30, smallest=8)
    rows_arr, toks_arr = np.zeros((nb,), np.int32), np.zeros((nb,), np.int32)
    rows_arr[:n], toks_arr[:n] = rows, toks
    logp = np.asarray(_token_logp_fn(self.config, self.params, x, rows_arr, toks_arr), np.float64)[:n]
    out = [np.zeros((c,), np.float64) for c in sizes]
    for (r, k), lp in zip(owner, logp):
      out[r][k] += lp
    return [o.astype(np.float32) for o in out]

  def _branches(self, prefix_ids: Sequence[int], continuations: Sequence[Sequence[int]]
                ) -> tuple[jax.Array, int, list[list[int]], list[list[int]]]:
    """One request's forward pass. -> (final hidden states [U', d] of its scored positions (the first U real),
    U, per continuation the row in them of the state predicting each of its tokens, the continuations)."""
    prefix = self._as_ids(prefix_ids, "prefix_ids")
    if len(prefix) == 0:
      raise SpaeInputError("prefix_ids is empty; start it with BOS (tokenizer.bos_id) at least.")
    conts = self._check_continuations(prefix, continuations)
    common = self._common(prefix)
    new = prefix[common:]
    n = len(prefix)
    ids, pos, seg = list(new), list(range(common, n)), [0] * len(new)
    # A scored position is identified by its context after the prefix; equal contexts share a row.
    row_of: dict[tuple[int, ...], int] = {}
    gather: list[int] = []
    cont_rows = []
    for k, c in enumerate(conts):
      start = len(ids)
      cr = []
      for j in range(len(c)):
        ctx = tuple(c[:j])
        if ctx not in row_of:
          row_of[ctx] = len(gather)
          gather.append(len(new) - 1 if j == 0 else start + j - 1)  # token j is predicted by token j-1
        cr.append(row_of[ctx])
      cont_rows.append(cr)
      ids += c
      pos += range(n, n + len(c))
      seg += [k + 1] * len(c)
    tb = _bucket(len(ids), 1 << 30, smallest=16)
    buf_k, buf_v = self._buffers(common, tb)
    chunk, p, sg = (np.zeros((1, tb), np.int32) for _ in range(3))
    chunk[0, :len(ids)], p[0, :len(ids)], sg[0, :len(ids)] = ids, pos, seg
    # Few row counts, few compiled shapes: padded rows repeat the last one and are dropped by score_many.
    rows = np.full((_bucket(len(gather), 1 << 30, smallest=2),), gather[-1], np.int32)
    rows[:len(gather)] = gather
    x, buf_k, buf_v = _branches_fn(self.config, self.params, buf_k, buf_v, common, chunk, p, sg, len(ids), rows)
    self._cache = (list(prefix), buf_k, buf_v)  # slots past the prefix hold the branches: overwritten next time
    return x, len(gather), cont_rows, conts

  # ------------------------------------------------------------------ cache
  def _common(self, ids: list[int]) -> int:
    """How many leading ids are cached already (at most len(ids) - 1: the last token always reruns, for its
    logits)."""
    common = 0
    if self._cache is not None:
      old = self._cache[0]
      m = min(len(old), len(ids) - 1)
      while common < m and old[common] == ids[common]:
        common += 1
    return common

  def _buffers(self, common: int, tb: int) -> tuple[jax.Array, jax.Array]:
    """K/V buffers with the first `common` slots cached and room for `tb` more (taken from the cache, which is
    donated to the next call)."""
    cfg = self.config
    need = common + tb
    s = 64
    while s < need:  # powers of two: every call attends over all S slots, and few sizes mean few compilations
      s *= 2
    if self._cache is not None and common > 0:
      buf_k, buf_v = self._cache[1], self._cache[2]
      if buf_k.shape[2] < s:  # grow, keeping what is cached
        pad = [(0, 0), (0, 0), (0, s - buf_k.shape[2]), (0, 0), (0, 0)]
        buf_k, buf_v = jnp.pad(buf_k, pad), jnp.pad(buf_v, pad)
      elif buf_k.shape[2] > s:  # shrink after a long prompt: a short one should not pay for its slots
        buf_k, buf_v = buf_k[:, :, :s], buf_v[:, :, :s]
    else:
      shape = (cfg.num_layers, 1, s, cfg.num_kv_heads, cfg.head_dim)
      buf_k, buf_v = jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.float32)
    self._cache = None  # the buffers are donated to the call that uses them
    return buf_k, buf_v

  def _prefill(self, ids: list[int]) -> jax.Array:
    """The last token's final hidden state [d] (`_next_logp_fn` gives log p(next | ids)), reusing the cached
    K/V of the longest common prefix with the previous call."""
    common = self._common(ids)
    new = ids[common:]
    tb = _bucket(len(new), self.max_length, smallest=1 if len(new) == 1 else 16)
    buf_k, buf_v = self._buffers(common, tb)
    chunk = np.zeros((1, tb), np.int32)
    chunk[0, :len(new)] = new
    last, buf_k, buf_v = _extend_fn(self.config, self.params, buf_k, buf_v, common, chunk, len(new))
    self._cache = (list(ids), buf_k, buf_v)
    return last

  def clear_cache(self) -> None:
    """Drops the cached prefix K/V (frees its memory)."""
    self._cache = None

  # ------------------------------------------------------------------ vocabulary
  def vocabulary(self, scaled: bool = False):
    """The embedding table as a `spae.Vocabulary` (pieces and kinds from the tokenizer).

    scaled=False gives the raw rows (what the checkpoint stores, and what the output head uses); scaled=True
    multiplies by sqrt(d) the way Gemma's `Embedder.encode` does before the first layer (LLaMA: no scaling,
    so both are the raw rows). Rows beyond the tokenizer's pieces (padding) are dropped.
    """
    from spae._vocab import Vocabulary

    tok = self.tokenizer
    n = min(int(tok.vocab_size), self.config.vocab_size)
    table = np.asarray(self.params["embed"][:n], np.float32)
    scale = float(self.params["embed_scale"]) if (scaled and self.config.embed_scale) else 1.0
    pieces = [tok.id_to_piece(i) for i in range(n)]
    kinds = [tok.kind(i) for i in range(n)] if hasattr(tok, "kind") else None
    meta = {"source": f"spae.lm.GemmaLM:{self.config.family}", "lm": self.source, "row_scale": scale,
            "scaled": bool(scaled and self.config.embed_scale)}
    return Vocabulary(pieces, table * scale, np.arange(n), kinds, meta)

  # ------------------------------------------------------------------ checks
  def _id_limit(self) -> int:
    return self.config.vocab_size

  def _check_ids(self, arr: np.ndarray, what: str) -> None:
    if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or
                     arr.max() >= self.config.vocab_size):
      raise SpaeInputError(f"{what} must be integer token ids in [0, {self.config.vocab_size}).")

  def __repr__(self) -> str:
    c = self.config
    return (f"GemmaLM({c.family}, layers={c.num_layers}, d={c.embed_dim}, vocab={c.vocab_size}, "
            f"max_length={self.max_length})")


def param_shapes(cfg: GemmaConfig) -> dict[str, tuple[int, ...]]:
  """Expected shape of every canonical tensor (layers stacked on axis 0)."""
  l, d, f = cfg.num_layers, cfg.embed_dim, cfg.hidden_dim
  n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  shapes = {"embed": (cfg.vocab_size, d), "final_norm": (d,),
            "layers/wq": (l, d, n, h), "layers/wk": (l, d, k, h), "layers/wv": (l, d, k, h),
            "layers/wo": (l, n, h, d), "layers/pre_attn_norm": (l, d), "layers/pre_ffw_norm": (l, d),
            "layers/w_gate": (l, d, f), "layers/w_up": (l, d, f), "layers/w_down": (l, f, d)}
  if cfg.post_norms:
    shapes.update({"layers/post_attn_norm": (l, d), "layers/post_ffw_norm": (l, d)})
  if cfg.qk_norm:
    shapes.update({"layers/q_norm": (l, h), "layers/k_norm": (l, h)})
  if not cfg.tied_embeddings:
    shapes["lm_head"] = (cfg.vocab_size, d)
  return shapes


def _prepare_params(cfg: GemmaConfig, params: Params, dtype: Any = jnp.float32) -> Params:
  """Validates canonical params against the config and adds the derived constants (RoPE, sliding flags)."""
  shapes = param_shapes(cfg)
  flat = {"embed": params.get("embed"), "final_norm": params.get("final_norm"), "lm_head": params.get("lm_head")}
  for k, v in (params.get("layers") or {}).items():
    flat[f"layers/{k}"] = v
  for name, shape in shapes.items():
    if flat.get(name) is None:
      raise SpaeInputError(f"checkpoint is missing tensor {name!r} (expected shape {shape}).")
    got = tuple(np.shape(flat[name]))
    if got != shape:
      raise SpaeInputError(f"tensor {name!r} has shape {got} but the config needs {shape}; the checkpoint does "
                           "not match its config.")
  def put(k: str) -> jax.Array:  # matrices in `dtype`, norm scales in float32
    return jnp.asarray(flat[k], dtype if np.ndim(flat[k]) >= 2 + k.startswith("layers/") else jnp.float32)

  out: Params = {"embed": put("embed"), "final_norm": put("final_norm"),
                 "layers": {k[7:]: put(k) for k in shapes if k.startswith("layers/")}}
  if not cfg.tied_embeddings:
    out["lm_head"] = put("lm_head")
  # The references cast sqrt(d) to the dtype they compute in (gemma: `.astype(x.dtype)`; transformers: the
  # hidden-state / weight dtype at run time). GemmaLM computes in float32, so the factor is float32 too.
  out["embed_scale"] = jnp.asarray(np.sqrt(cfg.embed_dim), jnp.float32)
  out["sliding"] = jnp.asarray([t == "sliding" for t in cfg.layer_types])
  out["inv_freq"] = jnp.asarray(np.stack([
      _inv_freq(cfg.head_dim, cfg.rope_local_base, cfg.rope_local_scaling) if t == "sliding" else
      _inv_freq(cfg.head_dim, cfg.rope_global_base, cfg.rope_global_scaling) for t in cfg.layer_types]))
  return out
