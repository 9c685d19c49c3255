"""Text tokenizers rebuilt from a GGUF file's metadata, giving the ids llama.cpp gives.

Two vocabulary kinds, as llama.cpp names them in `tokenizer.ggml.model`:

- "llama" (SentencePiece-style, e.g. Gemma 2/3, LLaMA 2): the pieces, scores and types become a sentencepiece BPE
  `ModelProto`, which runs llama.cpp's merge loop (highest score first, byte fallback) in C++.
- "gpt2" (byte-level BPE, e.g. SmolLM2, LLaMA 3, Qwen 2): an HF `tokenizers` BPE model from the pieces and
  `tokenizer.ggml.merges`, behind the split regexes llama.cpp uses for the file's `tokenizer.ggml.pre`.

Around either backend this module does what llama.cpp's `llama_tokenize(..., parse_special=true)` does, since
neither library does it the same way: special and user-defined pieces are cut out of the text first (longest piece
first, over the whole text), a space is prepended to a fragment that follows a special piece only if the file asks
for it (`tokenizer.ggml.add_space_prefix`; Gemma 3 does not), and the token attributes llama.cpp patches by piece
text (end-of-generation and fill-in-the-middle pieces become control, e.g. Gemma 3's user-defined "</s>") are
patched the same way. `decode` is llama.cpp's detokenizer: control and unknown pieces render as nothing.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from spae._gguf_vocab import BYTE, EOG_TEXTS, UNDEFINED, UNKNOWN, UNUSED, USER_DEFINED, read_pieces
from spae._io import SpaeInputError
from spae.lm._gguf_metadata import metadata_from_reader, read_gguf_metadata

if TYPE_CHECKING:
  import gguf

__all__ = ["GGUFTokenizer", "gguf_tokenizer"]

# Split regexes per `tokenizer.ggml.pre`, as llama.cpp applies them (each splits the previous pieces, keeping the
# matches as their own pieces), and whether a whole pre-token found in the vocabulary skips the merges.
_GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_PRE_TOKENIZERS: dict[str, tuple[tuple[str, ...], bool]] = {}
for _names, _regexes, _ignore_merges in [
    (("default",), (r"[\p{P}\$\+<=>\^~\|]+", _GPT2_RE, r"\p{N}+", r"[0-9][0-9][0-9]"), False),
    (("gpt-2", "phi-2", "jina-es", "jina-de", "jina-v2-es", "jina-v2-de", "jina-v1-en", "jina-v2-code",
      "roberta-bpe", "gigachat", "mpt", "olmo", "exaone4", "mellum", "modern-bert", "a.x-4.0", "trillion",
      "granite-docling"), (_GPT2_RE,), False),
    (("smollm", "starcoder", "refact", "command-r", "codeshell", "exaone", "minerva-7b", "mellum2"),
     (r"\p{N}", _GPT2_RE), False),
    (("llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"),
     (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
      r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",), True),
    (("qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "stablelm2", "megrez", "hunyuan", "solar-open"),
     (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
      r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",), False),
]:
  for _name in _names:
    _PRE_TOKENIZERS[_name] = (_regexes, _ignore_merges)


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer


def gguf_tokenizer(source: str | os.PathLike | gguf.GGUFReader) -> GGUFTokenizer:
  """The text tokenizer of a GGUF model: `source` is a path or an open `gguf.GGUFReader`.

  Raises SpaeInputError (one line, naming the file) for a missing, truncated or non-GGUF file, or a tokenizer kind
  other than "llama" (SentencePiece-style) and "gpt2" (byte-level BPE).
  """
  if hasattr(source, "fields"):  # a gguf.GGUFReader: its fields are already parsed
    return GGUFTokenizer(metadata_from_reader(source), name=str(getattr(source, "path", None) or "GGUF reader"))
  return GGUFTokenizer(read_gguf_metadata(source), name=str(source))


class GGUFTokenizer:
  """A GGUF file's tokenizer with llama.cpp's ids (`TextTokenizer` protocol).

  `encode` parses special-piece text ("<start_of_turn>", "<|im_end|>") into its id, as llama.cpp does for prompts.
  `bos_id` is the BOS id only when the file asks for BOS (`tokenizer.ggml.add_bos_token`, llama.cpp's default
  otherwise), so prompts get BOS exactly when llama.cpp would add it; the file's own ids are in `special_ids`.
  `pieces` are the vocabulary as stored ("▁cat", "Ġcat").
  """

  def __init__(self, meta: dict[str, Any], *, name: str = "GGUF file"):
    self.name = name
    vocab = read_pieces(meta, name)
    self.model: str = vocab.model
    self.pre: str = meta.get("tokenizer.ggml.pre", "default") or "default"
    self.pieces: list[str] = vocab.pieces
    self.vocab_size = len(self.pieces)
    self._ids = {t: i for i, t in enumerate(self.pieces)}
    spm = self.model == "llama"
    self.special_ids: dict[str, int] = vocab.special_ids
    pre_add_bos = not spm and self.pre in _PRE_TOKENIZERS and _PRE_TOKENIZERS[self.pre][1]  # llama3 family
    self.add_bos: bool = bool(meta.get("tokenizer.ggml.add_bos_token", spm or pre_add_bos))
    self.add_space_prefix: bool = spm and bool(meta.get("tokenizer.ggml.add_space_prefix", True))
    self.bos_id: int | None = self.special_ids.get("bos") if self.add_bos else None
    self.eos_id: int | None = self.special_ids.get("eos")
    self.pad_id: int | None = self.special_ids.get("padding")
    self.unk_id: int | None = self.special_ids.get("unknown")
    self._types, control = vocab.types, vocab.control
    self.eog_ids: tuple[int, ...] = tuple(sorted(
        {self._ids[t] for t in EOG_TEXTS if t in self._ids} |
        {self.special_ids[k] for k in ("eos", "eot", "eom", "fim_pad", "fim_rep", "fim_sep") if k in self.special_ids}))
    self._control = control  # rendered as nothing by `decode` (llama.cpp without `special`)
    # Pieces cut out of the text before the backend runs: control, user-defined, unknown (llama.cpp's cache),
    # indexed by first character -> the lengths to try there.
    special = np.flatnonzero(control | (self._types == USER_DEFINED) | (self._types == UNKNOWN))
    self._special = {self.pieces[i]: int(i) for i in special}
    lengths: dict[str, set[int]] = {}
    for s in self._special:
      lengths.setdefault(s[0], set()).add(len(s))
    self._lengths = {c: sorted(v) for c, v in lengths.items()}
    self._vocab = vocab
    self._kinds: list[str] | None = None
    if spm:
      self._encode_fragments = _spm_backend(self, vocab.scores)
    else:
      self._encode_fragments = _bpe_backend(self, meta.get("tokenizer.ggml.merges") or [])

  # -- TextTokenizer -------------------------------------------------------------------------------------------

  def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
    if not isinstance(text, str):
      raise SpaeInputError(f"encode takes a str, got {type(text).__name__}.")
    parts = self._split_special(text)
    texts, prev_special = [], True
    for p in parts:
      if isinstance(p, str):
        texts.append(" " + p if self.add_space_prefix and prev_special else p)
      prev_special = not isinstance(p, str)
    encoded = iter(self._encode_fragments(texts)) if texts else iter(())
    ids = [self.bos_id] if add_bos and self.bos_id is not None else []
    for p in parts:
      if isinstance(p, str):
        ids.extend(next(encoded))
      else:
        ids.append(p)
    return ids

  def decode(self, ids: Sequence[int]) -> str:
    out = bytearray()
    for k, i in enumerate(ids):
      piece = self._piece_bytes(int(i))
      if k == 0 and self.add_space_prefix and piece.startswith(b" "):
        piece = piece[1:]  # the space encode prepended (llama_detokenize removes it too)
      out += piece
    return out.decode("utf-8", errors="replace")

  def id_to_piece(self, i: int) -> str:
    return self.pieces[self._check_id(i)]

  # -- extras --------------------------------------------------------------------------------------------------

  def kind(self, i: int) -> str:
    """'control' | 'unknown' | 'byte' | 'unused' | 'normal' (as `spae.Vocabulary` kinds); see `kinds`."""
    return self.kinds()[self._check_id(i)]

  def kinds(self) -> list[str]:
    """The kind of every piece, by id (`spae._gguf_vocab.GGUFPieces.kinds`)."""
    if self._kinds is None:
      self._kinds = self._vocab.kinds()
    return self._kinds

  def _check_id(self, i: int) -> int:
    i = int(i)
    if not 0 <= i < self.vocab_size:
      raise SpaeInputError(f"token id {i} is outside [0, {self.vocab_size}) for {self.name}.")
    return i

  def _piece_bytes(self, i: int) -> bytes:
    i = self._check_id(i)
    t, text = self._types[i], self.pieces[i]
    if self._control[i] or t in (UNKNOWN, UNUSED, UNDEFINED):
      return b""
    if t == USER_DEFINED:
      return text.encode("utf-8")
    if t == BYTE:
      return bytes([int(text[3:5], 16)]) if _is_byte_piece(text) else b""
    if self.model == "llama":
      return text.replace("▁", " ").encode("utf-8")
    return bytes(_BYTE_DECODER[c] for c in text if c in _BYTE_DECODER)

  def _split_special(self, text: str) -> list[str | int]:
    """Text fragments and special ids, cut as llama.cpp does: longest special piece first, over all fragments."""
    found: set[str] = set()
    for p, c in enumerate(text):
      lengths = self._lengths.get(c)
      if lengths:
        for n in lengths:
          if text[p:p + n] in self._special:
            found.add(text[p:p + n])
    parts: list[str | int] = [text] if text else []
    for s in sorted(found, key=lambda s: (-len(s), self._special[s])):
      tid, new = self._special[s], []
      for f in parts:
        if isinstance(f, int) or s not in f:
          new.append(f)
          continue
        for k, piece in enumerate(f.split(s)):
          if k:
            new.append(tid)
          if piece:
            new.append(piece)
      parts = new
    return parts

  def __repr__(self) -> str:
    return f"GGUFTokenizer({Path(self.name).name!r}, model={self.model!r}, vocab_size={self.vocab_size})"


def _is_byte_piece(text: str) -> bool:
  return len(text) == 6 and text.startswith("<0x") and text.endswith(">") and all(
      c in "0123456789ABCDEFabcdef" for c in text[3:5])


def _bytes_to_unicode() -> dict[int, str]:
  """GPT-2's byte -> printable character table (byte-level BPE pieces are written in it)."""
  bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
  cs, extra = list(bs), 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + extra)
      extra += 1
  return {b: chr(c) for b, c in zip(bs, cs)}


_BYTE_DECODER = {c: b for b, c in _bytes_to_unicode().items()}


# ---------------------------------------------------------------------------------------------------------------
# Backends: text fragment (no special pieces in it) -> ids


def _spm_backend(tok: GGUFTokenizer, scores: np.ndarray) -> Callable[[list[str]], list[list[int]]]:
  """sentencepiece BPE over the GGUF pieces: llama.cpp's SPM merge loop (best score first, then leftmost).

  Every special piece is cut out of the text before sentencepiece sees it, so in the model they are plain control
  pieces that it never matches; byte pieces drive byte fallback; all else merges by score. Whitespace is escaped
  here (" " -> "▁", nothing else), as llama.cpp does, so the normalizer is the identity with no dummy prefix.
  """
  import sentencepiece as spm
  from sentencepiece import sentencepiece_model_pb2 as pb  # sentencepiece ships its own proto module

  types, special = tok._types, set(tok._special.values())
  unk = tok.unk_id if tok.unk_id is not None and types[tok.unk_id] != BYTE else None
  if unk is None:
    cands = np.flatnonzero(types == UNKNOWN)
    if not cands.size:
      raise SpaeInputError(f"{tok.name} has no unknown piece (tokenizer.ggml.unknown_token_id); a SentencePiece-style "
                           "vocabulary needs one.")
    unk = int(cands[0])
  is_byte = np.array([types[i] == BYTE and _is_byte_piece(p) for i, p in enumerate(tok.pieces)])
  byte_texts = {tok.pieces[i].upper() for i in np.flatnonzero(is_byte)}
  m = pb.ModelProto()
  ts = m.trainer_spec
  ts.model_type = pb.TrainerSpec.BPE
  ts.vocab_size = tok.vocab_size
  ts.byte_fallback = len(byte_texts) == 256
  ts.unk_id, ts.bos_id, ts.eos_id, ts.pad_id = unk, -1, -1, -1
  ts.unk_piece = tok.pieces[unk]
  ns = m.normalizer_spec
  ns.name = "identity"
  ns.add_dummy_prefix = ns.remove_extra_whitespaces = ns.escape_whitespaces = False
  kind = pb.ModelProto.SentencePiece
  sp_types = np.full(tok.vocab_size, kind.NORMAL)
  sp_types[sorted(special)] = kind.CONTROL
  sp_types[(types == BYTE) & ~is_byte] = kind.CONTROL  # typed byte but not "<0xXX>": never produced
  sp_types[is_byte] = kind.BYTE
  sp_types[unk] = kind.UNKNOWN
  add = m.pieces.add
  for text, score, t in zip(tok.pieces, scores.tolist(), sp_types.tolist()):
    add(piece=text, score=score, type=t)
  sp = spm.SentencePieceProcessor()
  try:
    sp.LoadFromSerializedProto(m.SerializeToString())
  except Exception as e:  # sentencepiece raises RuntimeError with its own check's message
    raise SpaeInputError(f"{tok.name}: its SentencePiece-style vocabulary is inconsistent ({e}).") from None

  def encode(texts: list[str]) -> list[list[int]]:
    return sp.Encode([t.replace(" ", "▁") for t in texts], out_type=int)

  return encode


def _bpe_backend(tok: GGUFTokenizer, merges: Sequence[str]) -> Callable[[list[str]], list[list[int]]]:
  """HF `tokenizers` byte-level BPE with the file's merge ranks, split as llama.cpp splits for `tokenizer.ggml.pre`."""
  try:
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
  except ImportError:
    raise SpaeInputError(f"{tok.name} has a byte-level BPE vocabulary, which needs the tokenizers package "
                         "(pip install 'spae[models]').") from None

  if tok.pre not in _PRE_TOKENIZERS:
    raise SpaeInputError(f"{tok.name}: byte-level BPE pre-tokenizer {tok.pre!r} is not supported; supported: "
                         f"{', '.join(sorted(_PRE_TOKENIZERS))}.")
  if not merges:
    raise SpaeInputError(f"{tok.name} has no tokenizer.ggml.merges; a byte-level BPE vocabulary needs them.")
  regexes, ignore_merges = _PRE_TOKENIZERS[tok.pre]
  ids = tok._ids
  pairs = []
  for m in merges:  # llama.cpp splits at the first space after the first character
    cut = m.find(" ", 1)
    a, b = m[:cut], m[cut + 1:]
    if cut > 0 and a in ids and b in ids and a + b in ids:  # tokenizers refuses merges outside the vocabulary
      pairs.append((a, b))
  model = models.BPE(vocab=dict(ids), merges=pairs, ignore_merges=ignore_merges)
  hf = Tokenizer(model)
  hf.pre_tokenizer = pre_tokenizers.Sequence(
      [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes] +
      [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])

  def encode(texts: list[str]) -> list[list[int]]:
    return [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]

  return encode
