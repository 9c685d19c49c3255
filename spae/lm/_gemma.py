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

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from spae._io import SpaeInputError
from spae.lm._base import LanguageModelBase, TextTokenizer
from spae.lm._gemma_config import DTYPES, GemmaConfig, Params, prepare_params
from spae.lm import _gemma_forward as forward

__all__ = ["GemmaConfig", "GemmaLM"]


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
    self.params = prepare_params(config, params, DTYPES[dtype])
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
    out = np.asarray(forward.logits_fn(self.config, self.params, padded, valid))[:, :t]
    return out[0] if squeeze else out

  def next_logprobs(self, ids: Sequence[int], among: np.ndarray | None = None) -> np.ndarray:
    """float32 [V] log p(next | ids) over the tokenizer's ids (padded embedding rows are not tokens); reuses the
    cached K/V of the longest prefix shared with the previous call, so decoding runs one new token per step."""
    seq = self._as_ids(ids, "ids")
    if not seq:
      raise SpaeInputError("ids is empty; start the prompt with BOS (tokenizer.bos_id) at least.")
    self._check_length(len(seq), "len(ids)")
    n_tok = min(int(self.tokenizer.vocab_size), self.config.vocab_size)
    return np.asarray(forward.next_logp_fn(self.config, self.params, self._prefill(seq)))[:n_tok]

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
    logp = np.asarray(forward.token_logp_fn(self.config, self.params, x, rows_arr, toks_arr), np.float64)[:n]
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
    x, buf_k, buf_v = forward.branches_fn(self.config, self.params, buf_k, buf_v, common, chunk, p, sg, len(ids),
                                          rows)
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
    """The last token's final hidden state [d] (`forward.next_logp_fn` gives log p(next | ids)), reusing the cached
    K/V of the longest common prefix with the previous call."""
    common = self._common(ids)
    new = ids[common:]
    tb = _bucket(len(new), self.max_length, smallest=1 if len(new) == 1 else 16)
    buf_k, buf_v = self._buffers(common, tb)
    chunk = np.zeros((1, tb), np.int32)
    chunk[0, :len(new)] = new
    last, buf_k, buf_v = forward.extend_fn(self.config, self.params, buf_k, buf_v, common, chunk, len(new))
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
