"""CLIP's byte-level BPE tokenizer, read from HF `vocab.json` + `merges.txt` (stdlib only).

Matches transformers' `CLIPTokenizer` on ordinary text: NFC, whitespace collapsed, lowercased, split by CLIP's
pre-tokenizer pattern, bytes mapped to printable characters, and BPE with a `</w>` end-of-word marker. The
pattern's Unicode classes (\\p{L}, \\p{N}) are approximated with the stdlib `re` classes, which agree on ASCII
and on common accented letters; ftfy-style text repair is not done.
"""

from __future__ import annotations

import functools
import json
import os
import re
import unicodedata
from pathlib import Path
from typing import Sequence

import numpy as np

from spae._io import SpaeInputError

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
_PATTERN = re.compile(r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+")


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
  """GPT-2's reversible byte -> printable character table (bytes that print as themselves keep their char)."""
  keep = [*range(ord("!"), ord("~") + 1), *range(ord("\xa1"), ord("\xac") + 1), *range(ord("\xae"), ord("\xff") + 1)]
  table, extra = {}, 0
  for b in range(256):
    if b in keep:
      table[b] = chr(b)
    else:
      table[b] = chr(256 + extra)
      extra += 1
  return table


class CLIPTokenizer:
  """Byte-level BPE as in CLIP. `__call__` returns [T, max_length] int32 ids: BOS, pieces, EOS, EOS padding."""

  def __init__(self, vocab: dict[str, int], merges: Sequence[tuple[str, str]], *, max_length: int = 77,
               where: str = "CLIP tokenizer"):
    for special in (BOS, EOS):
      if special not in vocab:
        raise SpaeInputError(f"{where}: vocabulary has no {special!r} token; is this a CLIP vocab.json?")
    if max_length < 2:
      raise SpaeInputError(f"{where}: max_length must be >= 2, got {max_length}.")
    self.vocab = dict(vocab)
    self.ranks = {tuple(m): i for i, m in enumerate(merges)}
    self.max_length = int(max_length)
    self.bos_id, self.eos_id = self.vocab[BOS], self.vocab[EOS]
    self.pad_id = self.unk_id = self.eos_id  # CLIP pads with, and maps unknowns to, <|endoftext|>
    self._byte = bytes_to_unicode()
    self._cache: dict[str, tuple[str, ...]] = {}

  @classmethod
  def from_files(cls, vocab_json: str | os.PathLike, merges_txt: str | os.PathLike, **kw) -> "CLIPTokenizer":
    vocab_json, merges_txt = Path(vocab_json), Path(merges_txt)
    for f in (vocab_json, merges_txt):
      if not f.is_file():
        raise SpaeInputError(f"CLIP tokenizer file {str(f)!r} does not exist.")
    try:
      vocab = json.loads(vocab_json.read_text(encoding="utf-8"))
    except ValueError as e:
      raise SpaeInputError(f"{vocab_json} is not valid JSON ({e}).") from e
    merges = []
    for n, line in enumerate(merges_txt.read_text(encoding="utf-8").split("\n")):
      if not line.strip() or (n == 0 and line.startswith("#version")):
        continue
      parts = line.split(" ")
      if len(parts) != 2:
        raise SpaeInputError(f"{merges_txt}:{n + 1}: expected two space-separated symbols, got {line!r}.")
      merges.append((parts[0], parts[1]))
    return cls(vocab, merges, where=str(vocab_json.parent), **kw)

  @classmethod
  def from_tokenizer_json(cls, path: str | os.PathLike, **kw) -> "CLIPTokenizer":
    """The BPE model inside a `tokenizers` `tokenizer.json` (when vocab.json/merges.txt are absent)."""
    path = Path(path)
    try:
      model = json.loads(path.read_text(encoding="utf-8"))["model"]
    except (OSError, ValueError, KeyError) as e:
      raise SpaeInputError(f"{path} is not a readable tokenizers JSON file ({e}).") from e
    if model.get("type") != "BPE":
      raise SpaeInputError(f"{path}: expected a BPE model, found {model.get('type')!r}.")
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return cls(model["vocab"], merges, where=str(path), **kw)

  # ---------------------------------------------------------------- encoding
  def _bpe(self, token: str) -> tuple[str, ...]:
    if token in self._cache:
      return self._cache[token]
    word = tuple(token[:-1]) + (token[-1] + "</w>",)
    while len(word) > 1:
      pair = min(zip(word, word[1:]), key=lambda p: self.ranks.get(p, float("inf")))
      if pair not in self.ranks:
        break
      merged, i = [], 0
      while i < len(word):
        if i + 1 < len(word) and (word[i], word[i + 1]) == pair:
          merged.append(word[i] + word[i + 1])
          i += 2
        else:
          merged.append(word[i])
          i += 1
      word = tuple(merged)
    self._cache[token] = word
    return word

  def tokenize(self, text: str) -> list[str]:
    """BPE pieces of `text` (no BOS/EOS)."""
    text = re.sub(r"\s+", " ", unicodedata.normalize("NFC", text)).lower()
    pieces: list[str] = []
    for chunk in _PATTERN.findall(text):
      if chunk in (BOS, EOS):
        pieces.append(chunk)
        continue
      pieces.extend(self._bpe("".join(self._byte[b] for b in chunk.encode("utf-8"))))
    return pieces

  def encode(self, text: str) -> list[int]:
    """Ids with BOS and EOS, untruncated."""
    return [self.bos_id] + [self.vocab.get(p, self.unk_id) for p in self.tokenize(text)] + [self.eos_id]

  def __call__(self, texts: Sequence[str], max_length: int | None = None) -> np.ndarray:
    """[T, L] int32: truncated to L (EOS kept last) and padded with EOS; L defaults to `max_length`."""
    return pad_batch(texts, self.encode, max_length or self.max_length, self.pad_id, self.eos_id)


def pad_batch(texts: Sequence[str], encode, length: int, pad_id: int, eos_id: int) -> np.ndarray:
  """[T, length] int32 ids: each text's ids end with EOS (added if `encode` omits it), are truncated to
  `length` keeping EOS last, and padded with `pad_id`."""
  if isinstance(texts, str):
    raise SpaeInputError("pass a list of strings, not a single string.")
  out = np.full((len(texts), length), pad_id, np.int32)
  for i, text in enumerate(texts):
    ids = list(encode(text))
    if not ids or ids[-1] != eos_id:
      ids.append(eos_id)
    if len(ids) > length:
      ids = ids[:length - 1] + [eos_id]
    out[i, :len(ids)] = ids
  return out
