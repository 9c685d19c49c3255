"""Tiny GGUF vocabularies (SentencePiece-style and byte-level BPE) for hermetic tokenizer tests.

Imports only `gguf` and numpy: tools/make_gguf_tokenizer_fixtures.py loads this file too, to record llama.cpp's ids
for the same vocabularies (tests/fixtures/gguf_tok/tiny.json).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, BYTE = 1, 2, 3, 4, 6

# name -> (kind, options). "spm" vocabularies differ in the dummy prefix; "bpe" ones in the pre-tokenizer.
TINY_VOCABS = {
    "spm": ("spm", {"add_space_prefix": False}),
    "spm-prefix": ("spm", {"add_space_prefix": True}),
    "bpe-smollm": ("bpe", {"pre": "smollm"}),
    "bpe-gpt-2": ("bpe", {"pre": "gpt-2"}),
    "bpe-llama-bpe": ("bpe", {"pre": "llama-bpe"}),
    "bpe-qwen2": ("bpe", {"pre": "qwen2"}),
    "bpe-default": ("bpe", {"pre": "default"}),
}

# Text the tiny vocabularies are tested on (the fixture tool adds seeded random strings over the same alphabet).
TINY_TEXTS = [
    "hello world", " hello world", "hello  world", "hello   world!", "hello\nworld\n\nthe end", "123 12 1234567",
    "don't 'll", "<start_of_turn>hello<end_of_turn>", "<|im_start|>hello<|im_end|>", "<b>bold</s>", "<tool>x",
    "zebra zebras", "héllo wörld 🙂", "\t tab", "  ", "", "a<unused0>b", "wor<b>ld", "hello.world,the!",
]
ALPHABET = list("helowrdtn12345 '\n\t!.,zebraé") + ["🙂", "日", "<b>", "</s>", "<start_of_turn>", "<|im_end|>",
                                                   "<tool>", "  ", "\n\n"]


def _spm_vocab() -> tuple[list[str], list[float], list[int]]:
  tokens = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<unused0>",
            "\n", "\n\n", "  ", "<b>", "</s>"]
  types = [CONTROL] * 7 + [USER_DEFINED] * 5  # "<unk>" is typed control, as in Gemma 3's file
  tokens += [f"<0x{b:02X}>" for b in range(256)]
  types += [BYTE] * 256
  scores = [0.0] * len(tokens)
  # Merged pieces: a higher score merges first (llama.cpp's SPM loop), so "▁h" beats "he" in " hello".
  merged = ["▁h", "he", "ll", "hell", "hello", "▁w", "or", "▁wor", "ld", "▁world", "12", "123", "▁the", "▁t",
            "th", "▁th", "en", "▁en", "end", "▁end", "zebra", "▁zebra", "é"]
  chars = ["▁", "a", "b", "d", "e", "h", "l", "o", "r", "t", "w", "z", "n", "1", "2", "3", "!", ".", ","]
  for k, p in enumerate(merged):
    tokens.append(p)
    scores.append(-float(k))
    types.append(NORMAL)
  for k, p in enumerate(chars):
    tokens.append(p)
    scores.append(-100.0 - k)
    types.append(NORMAL)
  return tokens, scores, types


def _bytes_to_unicode() -> list[str]:
  bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
  cs, extra = list(bs), 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + extra)
      extra += 1
  order = sorted(range(256), key=lambda i: bs[i])
  return [chr(cs[i]) for i in order]


def _bpe_vocab() -> tuple[list[str], list[int], list[str]]:
  tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool>"]
  types = [CONTROL, CONTROL, CONTROL, USER_DEFINED]
  tokens += _bytes_to_unicode()
  merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "o r", "Ġw or", "l d", "Ġwor ld", "Ġ t", "Ġt h", "Ġth e",
            "1 2", "12 3", "' t", "d o", "do n", "Ġ Ġ", "Ċ Ċ", "e n", "Ġ en", "Ġen d", "Ġ h", "Ġh ello"]
  for m in merges:
    a, b = m.split(" ")
    tokens.append(a + b)
  tokens.append("zebra")  # reachable by no merge: only a pre-tokenizer that ignores merges emits it whole
  types += [NORMAL] * (len(tokens) - len(types))
  return tokens, types, merges


def write_tiny_gguf(path: str | os.PathLike, name: str) -> Path:
  """Writes the tiny vocabulary `name` (a key of TINY_VOCABS) as a vocabulary-only LLaMA GGUF file."""
  import gguf

  kind, opts = TINY_VOCABS[name]
  path = Path(path)
  w = gguf.GGUFWriter(str(path), arch="llama")
  # The few hyperparameters llama.cpp reads before the vocabulary (it loads no tensors with vocab_only).
  w.add_context_length(64)
  w.add_embedding_length(8)
  w.add_block_count(1)
  w.add_feed_forward_length(16)
  w.add_head_count(1)
  w.add_layer_norm_rms_eps(1e-6)
  if kind == "spm":
    tokens, scores, types = _spm_vocab()
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(2)
    w.add_eos_token_id(1)
    w.add_unk_token_id(3)
    w.add_pad_token_id(0)
    w.add_add_bos_token(True)
    w.add_bool("tokenizer.ggml.add_space_prefix", opts["add_space_prefix"])
  else:
    tokens, types, merges = _bpe_vocab()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(opts["pre"])
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
  w.write_header_to_file()
  w.write_kv_data_to_file()
  w.write_tensors_to_file()
  w.close()
  return path
