"""A sentencepiece `tokenizer.model` as a `TextTokenizer`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from spae._io import SpaeInputError


class SentencePieceTokenizer:
  """Wraps `sentencepiece.SentencePieceProcessor`; ids are the model's own ids.

  `bos_id` / `eos_id` are None when the model has none (sentencepiece reports -1).
  """

  def __init__(self, model_file: str | os.PathLike):
    import sentencepiece as spm

    self.model_file = Path(model_file)
    if not self.model_file.is_file():
      raise SpaeInputError(f"tokenizer model {str(self.model_file)!r} does not exist; pass a sentencepiece "
                           "tokenizer.model file.")
    self._sp = spm.SentencePieceProcessor()
    try:
      self._sp.Load(str(self.model_file))
    except Exception as e:  # sentencepiece raises OSError/RuntimeError for non-models
      raise SpaeInputError(f"{self.model_file} is not a sentencepiece model ({e}).") from e
    self.vocab_size: int = int(self._sp.GetPieceSize())
    self.bos_id: int | None = self._sp.bos_id() if self._sp.bos_id() >= 0 else None
    self.eos_id: int | None = self._sp.eos_id() if self._sp.eos_id() >= 0 else None
    self.pad_id: int | None = self._sp.pad_id() if self._sp.pad_id() >= 0 else None

  def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
    ids = list(self._sp.EncodeAsIds(text))
    if add_bos and self.bos_id is not None:
      ids = [self.bos_id] + ids
    return ids

  def decode(self, ids: Sequence[int]) -> str:
    return self._sp.DecodeIds([int(i) for i in ids])

  def id_to_piece(self, i: int) -> str:
    return self._sp.IdToPiece(int(i))

  def kind(self, i: int) -> str:
    """'control' | 'unknown' | 'byte' | 'unused' | 'normal' (as `spae.Vocabulary` kinds)."""
    sp = self._sp
    return ("control" if sp.IsControl(i) else "unknown" if sp.IsUnknown(i) else "byte" if sp.IsByte(i) else
            "unused" if sp.IsUnused(i) else "normal")

  def __repr__(self) -> str:
    return f"SentencePieceTokenizer({self.model_file.name!r}, vocab_size={self.vocab_size})"
