"""Writes a GGUF file the way llama.cpp's convert_hf_to_gguf.py lays one out, for hermetic tests.

From transformers-named tensors (`spae.lm.testing.random_hf_tensors`): ggml tensor names, LLaMA q/k rows permuted
for ggml's RoPE, Gemma norm weights stored as 1 + w, norms kept F32 and 2-D weights in `qtype`, and a
SentencePiece tokenizer's pieces, scores and types as `tokenizer.ggml.*` metadata.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from spae._io import SpaeInputError, atomic_path
from spae.lm._gemma_config import GemmaConfig

__all__ = ["write_gguf", "WRITABLE_TYPES"]

# spae's GGUF tensor types that gguf-py can also write (k-quants have no numpy quantizer).
WRITABLE_TYPES = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")

# llama.cpp token types.
_NORMAL, _UNKNOWN, _CONTROL, _BYTE, _UNUSED = 1, 2, 3, 6, 5


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
  """convert_hf_to_gguf's LLaMA q/k permutation (half-split RoPE pairs -> interleaved)."""
  rows, d = w.shape
  return w.reshape(heads, 2, rows // heads // 2, d).swapaxes(1, 2).reshape(rows, d)


def write_gguf(path: str | os.PathLike, cfg: GemmaConfig, tensors: dict[str, np.ndarray], *, qtype: str = "F32",
               tokenizer_model: str | os.PathLike | None = None, arch: str | None = None) -> Path:
  """A GGUF file for `cfg` with `tensors` (HF names) stored in `qtype` (see WRITABLE_TYPES); atomic.

  arch: override `general.architecture` (tests of unsupported architectures)."""
  import gguf

  if qtype not in WRITABLE_TYPES:
    raise SpaeInputError(f"qtype {qtype!r} cannot be written; use one of {', '.join(WRITABLE_TYPES)}.")
  arch = arch or cfg.family
  w = gguf.GGUFWriter(None, arch=arch)
  k = f"{arch}."
  w.add_uint32(k + "block_count", cfg.num_layers)
  w.add_uint32(k + "context_length", cfg.max_length)
  w.add_uint32(k + "embedding_length", cfg.embed_dim)
  w.add_uint32(k + "feed_forward_length", cfg.hidden_dim)
  w.add_uint32(k + "attention.head_count", cfg.num_heads)
  w.add_uint32(k + "attention.head_count_kv", cfg.num_kv_heads)
  w.add_uint32(k + "attention.key_length", cfg.head_dim)
  w.add_uint32(k + "attention.value_length", cfg.head_dim)
  w.add_float32(k + "attention.layer_norm_rms_epsilon", cfg.norm_eps)
  w.add_float32(k + "rope.freq_base", cfg.rope_global_base)
  if cfg.rope_global_scaling:
    s = dict(cfg.rope_global_scaling)
    w.add_string(k + "rope.scaling.type", s["rope_type"])
    w.add_float32(k + "rope.scaling.factor", float(s["factor"]))
  if cfg.family != "llama":
    w.add_uint32(k + "attention.sliding_window", cfg.sliding_window)
  if cfg.family == "gemma2":
    w.add_float32(k + "attn_logit_softcapping", cfg.attn_softcap)
    w.add_float32(k + "final_logit_softcapping", cfg.final_softcap)
  if tokenizer_model is not None:
    _add_sentencepiece(w, tokenizer_model)

  def add(name: str, arr: np.ndarray) -> None:
    arr = np.ascontiguousarray(arr, np.float32)
    if arr.ndim == 1 or qtype == "F32":
      w.add_tensor(name, arr)
    elif qtype == "F16":
      w.add_tensor(name, arr.astype(np.float16))
    else:
      q = gguf.GGMLQuantizationType[qtype]
      w.add_tensor(name, gguf.quants.quantize(arr, q), raw_dtype=q)

  plus = 1.0 if cfg.norm_plus_one else 0.0
  add("token_embd.weight", tensors["model.embed_tokens.weight"])
  add("output_norm.weight", tensors["model.norm.weight"] + plus)
  if not cfg.tied_embeddings:
    add("output.weight", tensors["lm_head.weight"])
  names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
           "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
           "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm"}
  if cfg.post_norms:
    names.update({"post_attention_layernorm": "post_attention_norm", "pre_feedforward_layernorm": "ffn_norm",
                  "post_feedforward_layernorm": "post_ffw_norm"})
  else:
    names["post_attention_layernorm"] = "ffn_norm"  # LLaMA's norm before the MLP
  if cfg.qk_norm:
    names.update({"self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm"})
  for i in range(cfg.num_layers):
    for hf, gg in names.items():
      t = tensors[f"model.layers.{i}.{hf}.weight"]
      if cfg.family == "llama" and hf in ("self_attn.q_proj", "self_attn.k_proj"):
        t = _permute(t, cfg.num_heads if hf == "self_attn.q_proj" else cfg.num_kv_heads)
      if t.ndim == 1:
        t = t + plus
      add(f"blk.{i}.{gg}.weight", t)
  path = Path(path)
  with atomic_path(path) as tmp:
    w.write_header_to_file(tmp)
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
  return path


def _add_sentencepiece(w: Any, model_file: str | os.PathLike) -> None:
  """A SentencePiece model as llama.cpp's "llama" tokenizer metadata (what convert_hf_to_gguf writes)."""
  import sentencepiece as spm

  sp = spm.SentencePieceProcessor(model_file=str(model_file))
  n = sp.GetPieceSize()
  types = [_CONTROL if sp.IsControl(i) else _UNKNOWN if sp.IsUnknown(i) else _BYTE if sp.IsByte(i) else
           _UNUSED if sp.IsUnused(i) else _NORMAL for i in range(n)]
  w.add_tokenizer_model("llama")
  w.add_token_list([sp.IdToPiece(i) for i in range(n)])
  w.add_token_scores([float(sp.GetScore(i)) for i in range(n)])
  w.add_token_types(types)
  w.add_bos_token_id(sp.bos_id())
  w.add_eos_token_id(sp.eos_id())
  w.add_unk_token_id(sp.unk_id())
  if sp.pad_id() >= 0:
    w.add_pad_token_id(sp.pad_id())
  w.add_add_bos_token(True)
  w.add_add_space_prefix(True)  # spae's tiny models keep sentencepiece's dummy prefix
