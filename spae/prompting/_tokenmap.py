"""How image tokens reach a language model: as its own ids (a shared vocabulary) or as words encoded as text."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from spae._io import SpaeInputError
from spae._vocab import Vocabulary, display_piece
from spae.lm import LMServerError, TextTokenizer


_SPACE_MARKERS = ("\u2581", "\u0120")  # SentencePiece '▁' and byte-level BPE 'Ġ' start a word after a space
_CONTEXT_CHARS = 16  # enough preceding text to decide how the next piece of text splits into tokens


class TokenMap:
  """Maps codebook entries to LM ids and back.

  mode 'ids': entry k <-> LM id `vocabulary.llm_ids[k]` (the codebook is a subset of the LM's vocabulary).
  mode 'text': entry k is its word as it reads after a space (" cat": '▁cat' for SentencePiece with or without a
  dummy prefix, 'Ġcat' for byte-level BPE). For generation, an entry can be produced only if that is a single LM
  token (`allowed_lm_ids`); other entries can still appear in prompts.
  A run of entries is the concatenation of the entries' ids, so generated positions line up with entries.
  """

  def __init__(self, vocabulary: Vocabulary, lm_tokenizer: TextTokenizer, mode: str = "auto"):
    if mode == "auto":
      mode = "ids" if shares_vocabulary(vocabulary, lm_tokenizer) else "text"
    if mode not in ("ids", "text"):
      raise SpaeInputError(f"token mode must be 'auto', 'ids' or 'text', got {mode!r}.")
    self.mode = mode
    self.vocabulary = vocabulary
    self.tokenizer = lm_tokenizer
    self.words = [display_piece(p) for p in vocabulary.pieces]
    self._encoded: dict[str, list[int]] = {}
    if mode == "ids":
      if lm_tokenizer.vocab_size is not None and int(vocabulary.llm_ids.max()) >= lm_tokenizer.vocab_size:
        raise SpaeInputError(f"the tokenizer's vocabulary has LM ids up to {int(vocabulary.llm_ids.max())} but the "
                             f"LM has only {lm_tokenizer.vocab_size} ids: they do not share a vocabulary; "
                             "use token mode 'text'.")
      self._entry_ids = [[int(i)] for i in vocabulary.llm_ids]
      self._spaced = [p.startswith(_SPACE_MARKERS) for p in vocabulary.pieces]
    else:
      self._entry_ids = [self.encode_text(" " + w) if w else [] for w in self.words]
      self._spaced = [True] * len(self.words)
    inverse: dict[int, int] = {}
    for k, ids in enumerate(self._entry_ids):
      if len(ids) == 1:
        inverse.setdefault(ids[0], k)
    self._inverse = inverse
    self.allowed_lm_ids = np.asarray(sorted(inverse), np.int64)
    if self.allowed_lm_ids.size == 0:
      raise SpaeInputError("no codebook entry is a single token of this LM; images cannot be generated with it.")

  def encode_text(self, text: str) -> list[int]:
    """`tokenizer.encode(text)` (no BOS), remembered: prompts repeat the same template pieces many times, and a
    server's tokenizer is a network request."""
    ids = self._encoded.get(text)
    if ids is None:
      if len(self._encoded) >= 65536:
        self._encoded.clear()
      ids = self._encoded[text] = [int(i) for i in self.tokenizer.encode(text)]
    return list(ids)

  def encode_after(self, context: str, text: str) -> list[int]:
    """The ids `text` gets when it follows `context` in one encoded text (`context` '' = start of a text).

    Encodes the end of the context with and without `text` and keeps what `text` adds, so a tokenizer's
    start-of-text rule (SentencePiece's dummy prefix) does not apply in the middle of a prompt. If the
    tokenizer merges across the boundary, `text` is encoded on its own.
    """
    if not context:
      return self.encode_text(text)
    tail = context[-_CONTEXT_CHARS:]
    before, joint = self.encode_text(tail), self.encode_text(tail + text)
    if joint[:len(before)] == before:
      return joint[len(before):]
    return self.encode_text(text)

  def carries_space(self, entry: int) -> bool:
    """Whether an entry's ids include the space before its word (a '▁' / 'Ġ' piece, or any entry in 'text' mode)."""
    return self._spaced[int(entry)]

  def encode_tokens(self, codebook_ids: Sequence[int]) -> list[int]:
    """LM ids of a run of image tokens: each entry's ids, concatenated."""
    out: list[int] = []
    for i in codebook_ids:
      out += self._entry_ids[int(i)]
    return out

  def to_codebook(self, lm_ids: Sequence[int]) -> np.ndarray:
    """int [n] codebook indices of generated LM ids; -1 where an id is not a codebook entry."""
    return np.asarray([self._inverse.get(int(i), -1) for i in lm_ids], np.int64)

  def text_of(self, codebook_ids: Sequence[int]) -> str:
    return " ".join(self.words[int(i)] for i in codebook_ids)


def shares_vocabulary(vocabulary: Vocabulary, lm_tokenizer: TextTokenizer, sample: int = 64) -> bool:
  """True when codebook entries are the LM's own pieces at `llm_ids` (checked on an even sample of entries).

  A tokenizer that does not report its size (a server's) is judged by its pieces alone.
  """
  ids = vocabulary.llm_ids
  if lm_tokenizer.vocab_size is not None and int(ids.max()) >= int(lm_tokenizer.vocab_size):
    return False
  picks = np.unique(np.linspace(0, len(ids) - 1, min(sample, len(ids))).astype(int))
  for k in picks:
    try:
      piece = lm_tokenizer.id_to_piece(int(ids[k]))
    except LMServerError:
      raise  # the server did not answer: that says nothing about the vocabulary
    except (KeyError, IndexError, ValueError):
      return False  # the LM has no such id: nothing proves a shared vocabulary
    if display_piece(piece) != display_piece(vocabulary.pieces[k]):
      return False
  return True
