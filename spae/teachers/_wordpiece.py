"""BERT's BasicTokenizer + WordPiece for uncased models, read from `vocab.txt` (stdlib only)."""

from __future__ import annotations

import os
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np

from spae._io import SpaeInputError


def _is_control(ch: str) -> bool:
  return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _is_whitespace(ch: str) -> bool:
  return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_punctuation(ch: str) -> bool:
  cp = ord(ch)
  # All non-alphanumeric ASCII counts as punctuation for BERT (e.g. '$', '^', '`').
  if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
    return True
  return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
  return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or
          0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or
          0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def basic_tokenize(text: str, lowercase: bool = True) -> list[str]:
  """BERT BasicTokenizer: clean, isolate CJK chars, lowercase + strip accents, split on punctuation."""
  chars = []
  for ch in text:
    cp = ord(ch)
    if cp == 0 or cp == 0xFFFD or _is_control(ch):
      continue
    if _is_cjk(cp):
      chars.append(f" {ch} ")
    else:
      chars.append(" " if _is_whitespace(ch) else ch)
  words = []
  for token in "".join(chars).split():
    if lowercase:
      token = "".join(c for c in unicodedata.normalize("NFD", token.lower()) if unicodedata.category(c) != "Mn")
    current = ""
    for ch in token:
      if _is_punctuation(ch):
        if current:
          words.append(current)
        words.append(ch)
        current = ""
      else:
        current += ch
    if current:
      words.append(current)
  return words


class WordPieceTokenizer:
  """Uncased BERT tokenization. `__call__` returns (ids, mask), both [T, L] int32, [CLS] ... [SEP] [PAD]..."""

  def __init__(self, pieces: Sequence[str], *, lowercase: bool = True, max_length: int = 512,
               max_chars_per_word: int = 100, where: str = "vocab.txt"):
    self.pieces = list(pieces)
    self.vocab = {p: i for i, p in enumerate(self.pieces)}
    for special in ("[CLS]", "[SEP]", "[PAD]", "[UNK]"):
      if special not in self.vocab:
        raise SpaeInputError(f"{where}: WordPiece vocabulary has no {special} token.")
    self.cls_id, self.sep_id = self.vocab["[CLS]"], self.vocab["[SEP]"]
    self.pad_id, self.unk_id = self.vocab["[PAD]"], self.vocab["[UNK]"]
    self.lowercase = lowercase
    self.max_length = int(max_length)
    self.max_chars_per_word = max_chars_per_word

  @classmethod
  def from_file(cls, vocab_txt: str | os.PathLike, **kw) -> "WordPieceTokenizer":
    vocab_txt = Path(vocab_txt)
    if not vocab_txt.is_file():
      raise SpaeInputError(f"WordPiece vocabulary {str(vocab_txt)!r} does not exist.")
    lines = vocab_txt.read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
      lines = lines[:-1]
    return cls([line.rstrip("\r") for line in lines], where=str(vocab_txt), **kw)

  def wordpiece(self, word: str) -> list[str]:
    """Greedy longest-match-first; a word with any unmatched remainder becomes a single [UNK]."""
    if len(word) > self.max_chars_per_word:
      return ["[UNK]"]
    out, start = [], 0
    while start < len(word):
      end = len(word)
      while end > start:
        piece = word[start:end] if start == 0 else "##" + word[start:end]
        if piece in self.vocab:
          break
        end -= 1
      if end == start:
        return ["[UNK]"]
      out.append(piece)
      start = end
    return out

  def tokenize(self, text: str) -> list[str]:
    return [p for w in basic_tokenize(text, self.lowercase) for p in self.wordpiece(w)]

  def encode(self, text: str, max_length: int | None = None) -> list[int]:
    """[CLS] ids [SEP], content truncated to fit `max_length`."""
    length = max_length or self.max_length
    ids = [self.vocab[p] for p in self.tokenize(text)][:length - 2]
    return [self.cls_id] + ids + [self.sep_id]

  def __call__(self, texts: Sequence[str], max_length: int | None = None,
               pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) [T, L]. L = `pad_to` or the longest sequence rounded up to a power of two (>= 8, <=
    max_length), so batches of similar texts share one compiled shape."""
    if isinstance(texts, str):
      raise SpaeInputError("pass a list of strings, not a single string.")
    seqs = [self.encode(t, max_length) for t in texts]
    longest = max((len(s) for s in seqs), default=2)
    if pad_to is None:
      pad_to = 8
      while pad_to < longest:
        pad_to *= 2
      pad_to = max(longest, min(pad_to, max_length or self.max_length))
    ids = np.full((len(seqs), pad_to), self.pad_id, np.int32)
    mask = np.zeros((len(seqs), pad_to), np.int32)
    for i, s in enumerate(seqs):
      ids[i, :len(s)] = s
      mask[i, :len(s)] = 1
    return ids, mask
