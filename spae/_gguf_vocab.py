"""The vocabulary in a GGUF file's tokenizer metadata as llama.cpp reads it: its pieces, their token types after
llama.cpp's by-text patches, the special ids and each piece's kind.

One definition serves the codebook (`spae.Vocabulary.from_gguf`, which needs the pieces and their kinds) and the
text tokenizer (`spae.lm.GGUFTokenizer`, which also needs the types, control pieces and scores), so the two never
disagree on which pieces are words.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from spae._io import SpaeInputError

__all__ = ["GGUFPieces", "read_pieces"]

SUPPORTED_MODELS = ("llama", "gpt2")

# llama.cpp token types (`tokenizer.ggml.token_type`).
UNDEFINED, NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = range(7)

# Pieces llama.cpp turns into control tokens by their text (llama-vocab.cpp, "auto-detect special tokens by text"):
# every end-of-generation piece, and the end-of-turn / fill-in-the-middle pieces when the file does not name that id.
EOG_TEXTS = frozenset([
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<｜end▁of▁sentence｜>", "[e~["])
AUTO_CONTROL_TEXTS = {
    "eot": ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "<EOT>",
            "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"),
    "eom": ("<|eom_id|>",),
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
                "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
                "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
                "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}


@dataclasses.dataclass(frozen=True)
class GGUFPieces:
  """A GGUF vocabulary as llama.cpp reads it.

  model: `tokenizer.ggml.model` ('llama' or 'gpt2'); pieces: as stored, by id (empty ones renamed as llama.cpp
  does); types: [V] llama.cpp token types after its by-text patches; control: [V] bool, the pieces rendered as
  nothing; scores: [V] float32; special_ids: {'bos': 2, 'eos': 1, ...}.
  """

  model: str
  pieces: list[str]
  types: np.ndarray
  control: np.ndarray
  scores: np.ndarray
  special_ids: dict[str, int]

  @property
  def unk_id(self) -> int | None:
    return self.special_ids.get("unknown")

  def kinds(self) -> list[str]:
    """'control' | 'unknown' | 'byte' | 'unused' | 'normal' per piece (as `spae.Vocabulary` kinds). User-defined
    pieces ("<table>", runs of spaces) count as normal; control pieces whose text says "unused" count as unused, as
    llama.cpp marks them."""
    t = self.types
    kinds = np.where(self.control, "control", "normal").astype(object)
    kinds[self.control & np.array(["unused" in p for p in self.pieces])] = "unused"
    kinds[(t == UNUSED) | (t == UNDEFINED)] = "unused"
    kinds[t == BYTE] = "byte"
    kinds[t == UNKNOWN] = "unknown"
    if self.unk_id is not None:
      kinds[self.unk_id] = "unknown"
    return kinds.tolist()


def read_pieces(meta: dict[str, Any], name: str = "GGUF file") -> GGUFPieces:
  """The vocabulary of a GGUF file's metadata (`tokenizer.ggml.*`); a file llama.cpp would refuse, or whose
  tokenizer kind spae does not read, is a SpaeInputError naming `name`."""
  model = meta.get("tokenizer.ggml.model", "")
  if model not in SUPPORTED_MODELS:
    raise SpaeInputError(f"{name}: tokenizer.ggml.model {model!r} is not supported; supported kinds: "
                         "'llama' (SentencePiece-style) and 'gpt2' (byte-level BPE).")
  tokens = meta.get("tokenizer.ggml.tokens")
  if not tokens:
    raise SpaeInputError(f"{name} has no tokenizer.ggml.tokens; it is not a complete GGUF model file.")
  # llama.cpp renames empty pieces the same way (they could never be matched).
  pieces = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
  n = len(pieces)
  if len(set(pieces)) != n:
    raise SpaeInputError(f"{name} lists a vocabulary piece twice; llama.cpp refuses such files too.")
  types = np.asarray(meta.get("tokenizer.ggml.token_type", np.full(n, NORMAL)), np.int64)
  scores = np.asarray(meta.get("tokenizer.ggml.scores", np.zeros(n)), np.float32)
  if types.shape != (n,) or scores.shape != (n,):
    raise SpaeInputError(f"{name}: tokenizer.ggml.token_type/scores do not have one entry per piece ({n}).")
  ids = {t: i for i, t in enumerate(pieces)}
  types, control = _patched_types(pieces, types, ids, meta)
  return GGUFPieces(model, pieces, types, control, scores, _special_ids(meta, n, model == "llama"))


def _special_ids(meta: dict[str, Any], n: int, spm: bool) -> dict[str, int]:
  """{"bos": 2, "eos": 1, "unknown": 3, "padding": 0, ...} from the `tokenizer.ggml.*_token_id` keys in range."""
  out = {k[len("tokenizer.ggml."):-len("_token_id")]: int(v) for k, v in meta.items()
         if k.startswith("tokenizer.ggml.") and k.endswith("_token_id") and 0 <= int(v) < n}
  if spm:  # llama.cpp's defaults for SentencePiece-style files
    for key, default in (("bos", 1), ("eos", 2), ("unknown", 0)):
      if default < n:
        out.setdefault(key, default)
  return out


def _patched_types(pieces: list[str], types: np.ndarray, ids: dict[str, int],
                   meta: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
  """(types, control mask) after llama.cpp's by-text patches of token attributes."""
  types = types.copy()
  control = types == CONTROL
  forced = {ids[t] for t in EOG_TEXTS if t in ids}
  for cat, texts in AUTO_CONTROL_TEXTS.items():
    if f"tokenizer.ggml.{cat}_token_id" not in meta:
      forced |= {ids[t] for t in texts if t in ids}
  # A file with these markers has a plain "</s>" piece (Gemma 4, PLaMo): llama.cpp makes it normal again.
  if "</s>" in ids and ("<|tool_response>" in ids or "<|plamo:eos|>" in ids):
    forced.discard(ids["</s>"])
    control[ids["</s>"]] = False
    types[ids["</s>"]] = NORMAL
  control[sorted(forced)] = True
  for t in ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"):  # gpt-oss: always rendered
    if t in ids:
      control[ids[t]] = False
      types[ids[t]] = USER_DEFINED
  return types, control
