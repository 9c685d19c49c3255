"""Prompt assembly: template text encoded with the LM's tokenizer, image tokens spliced in as LM ids.

A prompt is a list of segments (text, image tokens, label). `render_ids` turns it into the LM id sequence and
`render_text` into readable text (for logs and for text-only backends). Image tokens reach the LM in one of two
ways (`TokenMap`):
  'ids'  the codebook shares the LM's vocabulary: codebook entry k is LM id `vocabulary.llm_ids[k]`;
  'text' the tokens are written as words ("red sky ...") and encoded by the LM tokenizer like any text.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence, Union

import numpy as np

from spae._io import SpaeInputError
from spae._vocab import Vocabulary, display_piece


@dataclasses.dataclass(frozen=True)
class Text:
  text: str


@dataclasses.dataclass(frozen=True)
class Tokens:
  """Codebook ids of (part of) a pyramid, in reading order."""
  ids: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Label:
  """A class label, encoded exactly like a scored / generated candidate continuation."""
  text: str


Segment = Union[Text, Tokens, Label]


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
  """The few-shot prompt layout (overridable; `{...}` are placeholders).

  Attributes:
    instruction: task-induction line, used when induction is on; `{labels}` = the labels joined by `label_join`.
    example: one support example; `{tokens}` = the image's words / ids, `{label}` = its label.
    query: the query, ending where the label would start.
    label_join: separator of the labels inside `{labels}`.
  With the defaults a 2-way 1-shot prompt with induction reads:
    For each of the following input output pairs, output is one of [dax, blicket].
    Input: sky red ... Output: dax
    Input: tree dog ... Output: blicket
    Input: sky rain ... Output:
  """

  instruction: str = "For each of the following input output pairs, output is one of [{labels}].\n"
  example: str = "Input: {tokens} Output: {label}\n"
  query: str = "Input: {tokens} Output:"
  label_join: str = ", "

  def validate(self) -> None:
    for name, s, need in (("example", self.example, ("{tokens}", "{label}")), ("query", self.query, ("{tokens}",))):
      for n in need:
        if s.count(n) != 1:
          raise SpaeInputError(f"template {name} must contain {n} exactly once, got {s!r}.")
    if "{label}" in self.query:
      raise SpaeInputError("the query template must not contain {label}: the LLM writes the label.")

  def example_segments(self, tokens: Sequence[int], label: str) -> list[Segment]:
    return _fill(self.example, {"{tokens}": Tokens(tuple(int(t) for t in tokens)), "{label}": Label(label)})

  def query_segments(self, tokens: Sequence[int]) -> list[Segment]:
    return _fill(self.query, {"{tokens}": Tokens(tuple(int(t) for t in tokens))})

  def instruction_segments(self, labels: Sequence[str]) -> list[Segment]:
    return [Text(self.instruction.replace("{labels}", self.label_join.join(labels)))]

  def after_label(self) -> str:
    """The template text that follows a label (its first line break ends free generation)."""
    return self.example.split("{label}", 1)[1]


def _fill(template: str, slots: dict[str, Segment]) -> list[Segment]:
  out: list[Segment] = []
  rest = template
  while rest:
    hits = [(rest.find(k), k) for k in slots if rest.find(k) >= 0]
    if not hits:
      out.append(Text(rest))
      break
    pos, key = min(hits)
    if pos:
      out.append(Text(rest[:pos]))
    out.append(slots[key])
    rest = rest[pos + len(key):]
  return out


class TokenMap:
  """Maps codebook entries to LM ids and back.

  mode 'ids': entry k <-> LM id `vocabulary.llm_ids[k]` (the codebook is a subset of the LM's vocabulary).
  mode 'text': entries are written as words; `encode_tokens` encodes the space-joined words with the LM
  tokenizer. For generation, an entry can be produced only if its word is a single LM token
  (`allowed_lm_ids`); other entries can still appear in prompts.
  """

  def __init__(self, vocabulary: Vocabulary, lm_tokenizer: Any, mode: str = "auto"):
    if mode == "auto":
      mode = "ids" if shares_vocabulary(vocabulary, lm_tokenizer) else "text"
    if mode not in ("ids", "text"):
      raise SpaeInputError(f"token mode must be 'auto', 'ids' or 'text', got {mode!r}.")
    self.mode = mode
    self.vocabulary = vocabulary
    self.tokenizer = lm_tokenizer
    self.words = [display_piece(p) for p in vocabulary.pieces]
    if mode == "ids":
      if lm_tokenizer.vocab_size is not None and int(vocabulary.llm_ids.max()) >= lm_tokenizer.vocab_size:
        raise SpaeInputError(f"the tokenizer's vocabulary has LM ids up to {int(vocabulary.llm_ids.max())} but the "
                             f"LM has only {lm_tokenizer.vocab_size} ids: they do not share a vocabulary; "
                             "use token mode 'text'.")
      self._entry_ids = [[int(i)] for i in vocabulary.llm_ids]
    else:
      self._entry_ids = [list(lm_tokenizer.encode(w)) if w else [] for w in self.words]
    inverse: dict[int, int] = {}
    for k, ids in enumerate(self._entry_ids):
      if len(ids) == 1:
        inverse.setdefault(ids[0], k)
    self._inverse = inverse
    self.allowed_lm_ids = np.asarray(sorted(inverse), np.int64)
    if self.allowed_lm_ids.size == 0:
      raise SpaeInputError("no codebook entry is a single token of this LM; images cannot be generated with it.")

  def encode_tokens(self, codebook_ids: Sequence[int]) -> list[int]:
    """LM ids for a run of image tokens (mode 'text': the words joined by spaces, encoded as text)."""
    ids = [int(i) for i in codebook_ids]
    if self.mode == "ids":
      return [int(x) for x in self.vocabulary.llm_ids[ids]]
    return list(self.tokenizer.encode(" ".join(self.words[i] for i in ids)))

  def encode_tokens_aligned(self, codebook_ids: Sequence[int]) -> list[int]:
    """LM ids, entry by entry (each entry's own encoding concatenated), so generated positions line up."""
    out: list[int] = []
    for i in codebook_ids:
      out += self._entry_ids[int(i)]
    return out

  def to_codebook(self, lm_ids: Sequence[int]) -> np.ndarray:
    """int [n] codebook indices of generated LM ids; -1 where an id is not a codebook entry."""
    return np.asarray([self._inverse.get(int(i), -1) for i in lm_ids], np.int64)

  def text_of(self, codebook_ids: Sequence[int]) -> str:
    return " ".join(self.words[int(i)] for i in codebook_ids)


def shares_vocabulary(vocabulary: Vocabulary, lm_tokenizer: Any, sample: int = 64) -> bool:
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
    except (KeyError, IndexError, ValueError, NotImplementedError):
      return False  # the LM has no such id / exposes no pieces: nothing proves a shared vocabulary
    if display_piece(piece) != display_piece(vocabulary.pieces[k]):
      return False
  return True


def render_ids(segments: Sequence[Segment], tmap: TokenMap, *, bos: bool = True) -> list[int]:
  """The LM id sequence of a prompt: each text piece and label encoded on its own (no BOS), tokens spliced."""
  tok = tmap.tokenizer
  out: list[int] = [int(tok.bos_id)] if bos and tok.bos_id is not None else []
  for s in segments:
    if isinstance(s, Text):
      if s.text:
        out += list(tok.encode(s.text))
    elif isinstance(s, Label):
      out += encode_label(tok, s.text)
    else:
      out += tmap.encode_tokens(s.ids)
  return out


def render_text(segments: Sequence[Segment], words: Sequence[str]) -> str:
  """Readable prompt text: image tokens written as their words."""
  parts = []
  for s in segments:
    if isinstance(s, Tokens):
      parts.append(" ".join(words[i] for i in s.ids))
    else:
      parts.append(s.text)
  return "".join(parts)


def encode_label(lm_tokenizer: Any, label: str) -> list[int]:
  """A label's LM ids, encoded on its own (so support labels and candidates tokenize identically)."""
  ids = list(lm_tokenizer.encode(label))
  if not ids:
    raise SpaeInputError(f"label {label!r} encodes to no tokens with this LM tokenizer; use a non-empty name.")
  return [int(i) for i in ids]
