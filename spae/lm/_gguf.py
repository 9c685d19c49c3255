"""llama.cpp GGUF files as a `GemmaLM`: `spae.lm.load("gguf:PATH")`, `gguf:gemma3-270m`, `gguf:smollm2-135m`.

Architectures: `gemma2`, `gemma3` and `llama` (LLaMA, Mistral, SmolLM, ... without biases or experts). Tensor
types: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, dequantized once at load (see
`spae._tensors`). What the mapping has to undo or supply, as llama.cpp's converter and runtime do:

- ggml lists dimensions innermost first; `spae._tensors` reverses them, so `blk.{i}.attn_q.weight` is
  [heads * head_dim, d] like transformers' `q_proj.weight`.
- LLaMA q/k rows are permuted for ggml's interleaved RoPE; GemmaLM rotates halves (as transformers does), so
  they are un-permuted: `w.reshape(heads, head_dim / 2, 2, d).swapaxes(1, 2)`.
- Gemma RMSNorm weights are stored as 1 + w already, which is what GemmaLM keeps (effective scales).
- No `output.weight`: the head is tied to `token_embd` (both released models).
- Not in Gemma files, taken from llama.cpp's fixed values: the layer pattern (Gemma 2: alternate sliding/global
  from layer 0; Gemma 3: 5 sliding then 1 global), Gemma 3's local RoPE base (10,000), and the query scale
  (head_dim^-1/2, or (d / heads)^-1/2 for the 27B sizes, as in `PRESETS`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from spae._io import SpaeInputError
from spae._gguf_file import resolve_gguf
from spae._tensors import GGUF_TYPES, Tensors, open_tensors
from spae.lm._gemma import GemmaConfig, GemmaLM
from spae.lm._loaders import PRESETS, family_defaults, gemma_layer_types

__all__ = ["load_gguf", "config_from_gguf", "params_from_gguf", "ARCHITECTURES"]

ARCHITECTURES = ("gemma2", "gemma3", "llama")


def config_from_gguf(t: Tensors) -> GemmaConfig:
  """The architecture from GGUF metadata (and the tensors' shapes), with llama.cpp's fixed values filled in."""
  arch = t.metadata.get("general.architecture")
  if arch not in ARCHITECTURES:
    raise SpaeInputError(f"{t.where}: architecture {arch!r} is not supported; spae reads GGUF models of "
                         f"architecture {', '.join(ARCHITECTURES)}.")

  def meta(key: str, default: Any = None) -> Any:
    v = t.metadata.get(f"{arch}.{key}", default)
    if v is None:
      raise SpaeInputError(f"{t.where}: metadata {arch}.{key} is missing; the file is incomplete.")
    return v

  for bad, what in (("blk.0.ffn_gate_inp.weight", "mixture-of-experts layers"),
                    ("blk.0.attn_q.bias", "attention biases")):
    if bad in t:
      raise SpaeInputError(f"{t.where}: {what} are not supported; spae reads dense gemma2, gemma3 and llama "
                           "decoders without biases.")
  d, n, layers = int(meta("embedding_length")), int(meta("attention.head_count")), int(meta("block_count"))
  n_kv = meta("attention.head_count_kv", n)
  if np.ndim(n_kv) > 0:
    raise SpaeInputError(f"{t.where}: per-layer head counts are not supported.")
  head_dim = int(meta("attention.key_length", d // n))
  if int(meta("attention.value_length", head_dim)) != head_dim:
    raise SpaeInputError(f"{t.where}: key and value head sizes differ; GemmaLM needs them equal.")
  family = arch
  fields = {**family_defaults(family), "family": family, "vocab_size": t.shape("token_embd.weight")[0],
            "embed_dim": d, "hidden_dim": int(meta("feed_forward_length")), "num_layers": layers, "num_heads": n,
            "num_kv_heads": int(n_kv), "head_dim": head_dim,
            "norm_eps": _f32(meta("attention.layer_norm_rms_epsilon", 1e-6)),
            "max_length": int(meta("context_length", 8192)), "tied_embeddings": "output.weight" not in t,
            "layer_types": gemma_layer_types(family, layers)}
  base = _f32(meta("rope.freq_base", 10_000.0))
  fields["rope_global_base"] = base
  scaling = _rope_scaling(t, arch)
  if family != "gemma3":  # Gemma 3's sliding layers keep base 10,000 (family default); the others share one base
    fields["rope_local_base"] = base
  if family == "llama":
    if int(meta("rope.dimension_count", head_dim)) != head_dim:
      raise SpaeInputError(f"{t.where}: partial rotary embeddings (rope.dimension_count != head size) are not "
                           "supported.")
    if "rope_freqs.weight" in t:  # llama 3.x: per-frequency divisors stored as a tensor
      factors = t.get("rope_freqs.weight", (head_dim // 2,), np.float32)
      scaling = {"rope_type": "freq_factors", "factors": tuple(float(f) for f in factors)}
  else:
    fields["sliding_window"] = int(meta("attention.sliding_window"))
    preset = next((p for p in PRESETS.values() if (p["family"], p["embed_dim"], p["num_layers"]) ==
                   (family, d, layers)), None)
    fields["query_pre_attn_scalar"] = float(preset["query_pre_attn_scalar"] if preset else head_dim)
    if family == "gemma2":
      fields["attn_softcap"] = _f32(meta("attn_logit_softcapping", 50.0))
      fields["final_softcap"] = _f32(meta("final_logit_softcapping", 30.0))
  fields["rope_global_scaling"] = scaling
  return GemmaConfig.from_dict(fields)


def _rope_scaling(t: Tensors, arch: str) -> dict[str, Any] | None:
  kind = t.metadata.get(f"{arch}.rope.scaling.type")
  factor = t.metadata.get(f"{arch}.rope.scaling.factor")
  if kind in (None, "none") or (kind == "linear" and factor in (None, 1.0)):
    return None
  if kind != "linear":
    raise SpaeInputError(f"{t.where}: RoPE scaling {kind!r} is not supported (none, linear, llama3 rope_freqs).")
  return {"rope_type": "linear", "factor": _f32(factor)}


def _f32(v: Any) -> float:
  """A float32 metadata value as the shortest float that rounds to it (1e-6, not 9.99999997e-07)."""
  return float(np.format_float_positional(np.float32(v), unique=True, trim="-"))


def _unpermute(w: np.ndarray, heads: int) -> np.ndarray:
  """Undoes convert_hf_to_gguf's LLaMA q/k row permutation (interleaved -> half-split RoPE pairs)."""
  rows, d = w.shape
  return w.reshape(heads, rows // heads // 2, 2, d).swapaxes(1, 2).reshape(rows, d)


def params_from_gguf(t: Tensors, cfg: GemmaConfig, *, dtype: Any = np.float32) -> dict[str, Any]:
  """GGUF tensors -> canonical params (layers stacked), dequantized to `dtype`."""
  for name in t:
    kind = t.stored_dtype(name)
    if kind not in ("float32", "float16", "bfloat16") and kind not in GGUF_TYPES:
      raise SpaeInputError(f"{t.where}: tensor {name!r} is stored as GGML type {kind}, which spae does not read; "
                           f"supported: {', '.join(GGUF_TYPES)}. Re-quantize the model with llama-quantize.")
  d, f, n, k, h = cfg.embed_dim, cfg.hidden_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  llama = cfg.family == "llama"

  def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
    return t.get(name, shape, np.float32)

  def cast(a: np.ndarray) -> np.ndarray:
    return a.astype(dtype, copy=False)

  names = {"pre_attn_norm": "attn_norm", "pre_ffw_norm": "ffn_norm"}
  if not llama:
    names.update(post_attn_norm="post_attention_norm", post_ffw_norm="post_ffw_norm")
  if cfg.qk_norm:
    names.update(q_norm="attn_q_norm", k_norm="attn_k_norm")
  layers: dict[str, np.ndarray] = {}

  def put(key: str, i: int, val: np.ndarray) -> None:  # straight into the stacked [L, ...] array
    if key not in layers:
      layers[key] = np.empty((cfg.num_layers, *val.shape), val.dtype)
    layers[key][i] = val

  for i in range(cfg.num_layers):
    p = f"blk.{i}."
    q, kk = get(p + "attn_q.weight", (n * h, d)), get(p + "attn_k.weight", (k * h, d))
    if llama:
      q, kk = _unpermute(q, n), _unpermute(kk, k)
    mats = {"wq": q.T.reshape(d, n, h), "wk": kk.T.reshape(d, k, h),
            "wv": get(p + "attn_v.weight", (k * h, d)).T.reshape(d, k, h),
            "wo": get(p + "attn_output.weight", (d, n * h)).T.reshape(n, h, d),
            "w_gate": get(p + "ffn_gate.weight", (f, d)).T, "w_up": get(p + "ffn_up.weight", (f, d)).T,
            "w_down": get(p + "ffn_down.weight", (d, f)).T}
    for key, val in mats.items():
      put(key, i, cast(val))
    for key, gname in names.items():
      size = h if key in ("q_norm", "k_norm") else d
      put(key, i, get(p + gname + ".weight", (size,)))
  out = {"embed": cast(get("token_embd.weight", (cfg.vocab_size, d))),
         "final_norm": get("output_norm.weight", (d,)),
         "layers": layers}
  if not cfg.tied_embeddings:
    out["lm_head"] = cast(get("output.weight", (cfg.vocab_size, d)))
  return out


def load_gguf(path: str | os.PathLike, *, tokenizer: Any = None, max_length: int | None = None,
              dtype: str = "float32") -> GemmaLM:
  """A GGUF file (or shorthand, see `spae._gguf_file.SHORTHANDS`) as a `GemmaLM`.

  Args:
    path: the .gguf file, `gemma3-270m` or `smollm2-135m`.
    tokenizer: a TextTokenizer or a sentencepiece model path; default: the file's own (`spae.lm.GGUFTokenizer`,
      ids as llama.cpp's).
    max_length: context limit (default: the file's context_length).
    dtype: 'float32' or 'bfloat16' storage of the weight matrices (computation is float32 either way;
      bfloat16 halves the memory and rounds the dequantized weights once more), or 'auto' (bfloat16 only for a
      file that stores BF16 weights).
  """
  from spae.lm._gemma_config import DTYPES

  if dtype not in (*DTYPES, "auto"):
    raise SpaeInputError(f"dtype {dtype!r} is not supported; use one of {', '.join(DTYPES)} or 'auto'.")
  file = resolve_gguf(str(path))
  t = open_tensors(file, format="gguf")
  if dtype == "auto":
    dtype = "bfloat16" if t.stored_dtype("token_embd.weight") == "bfloat16" else "float32"
  cfg = config_from_gguf(t)
  params = params_from_gguf(t, cfg, dtype=DTYPES[dtype])
  tok = tokenizer if tokenizer is not None else _file_tokenizer(t)
  if isinstance(tok, (str, os.PathLike)):
    from spae.lm._sp import SentencePieceTokenizer
    tok = SentencePieceTokenizer(tok)
  if int(tok.vocab_size) > cfg.vocab_size:
    raise SpaeInputError(f"{file}: the tokenizer has {tok.vocab_size} pieces but token_embd has {cfg.vocab_size} "
                         "rows; tokens beyond the table would have no embedding.")
  return GemmaLM(cfg, params, tok, max_length=max_length, source=f"gguf:{file}", dtype=dtype)


def _file_tokenizer(t: Tensors) -> Any:
  from spae.lm._gguf_tokenizer import GGUFTokenizer

  return GGUFTokenizer(t.metadata, name=t.where)  # the metadata already parsed with the tensor table
