"""One template engine and one renderer for every prompt (few-shot classification and generation).

A prompt is a list of segments: `Text`, `Tokens` (codebook ids of image tokens) and `Label` (a class name the
LLM is asked to write). `fill(template, slots)` turns a template string with `{placeholders}` into segments;
`render(segments, tmap)` turns segments into the LM id sequence and the readable text side by side.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence, Union

from spae._io import SpaeInputError
from spae.lm import TextTokenizer
from spae.prompting._tokenmap import TokenMap


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


def tokens(ids: Sequence[int]) -> Tokens:
  return Tokens(tuple(int(i) for i in ids))


def fill(template: str, slots: Mapping[str, str | Segment]) -> list[Segment]:
  """Splits `template` at the placeholders named in `slots` (e.g. '{tokens}'); a str value becomes Text."""
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
    val = slots[key]
    out.append(Text(val) if isinstance(val, str) else val)
    rest = rest[pos + len(key):]
  return out


@dataclasses.dataclass(frozen=True)
class Rendered:
  """A prompt as LM ids (BOS first when the tokenizer has one) and as readable text (tokens as words)."""
  ids: list[int]
  text: str


def render(segments: Sequence[Segment], tmap: TokenMap, *, bos: bool = True) -> Rendered:
  """LM ids and readable text of a prompt: each text piece and label encoded on its own, tokens spliced."""
  tok = tmap.tokenizer
  ids: list[int] = [int(tok.bos_id)] if bos and tok.bos_id is not None else []
  for s in segments:
    if isinstance(s, Tokens):
      ids += tmap.encode_tokens(s.ids)
    elif isinstance(s, Label):
      ids += encode_label(tok, s.text)
    elif s.text:
      ids += tmap.encode_text(s.text)
  return Rendered(ids, readable(segments, tmap.words))


def readable(segments: Sequence[Segment], words: Sequence[str]) -> str:
  """The prompt as text, image tokens written as their words (joined by spaces)."""
  return "".join(" ".join(words[i] for i in s.ids) if isinstance(s, Tokens) else s.text for s in segments)


def encode_label(lm_tokenizer: TextTokenizer, label: str) -> list[int]:
  """A label's LM ids, encoded on its own (so support labels and candidates tokenize identically)."""
  ids = list(lm_tokenizer.encode(label))
  if not ids:
    raise SpaeInputError(f"label {label!r} encodes to no tokens with this LM tokenizer; use a non-empty name.")
  return [int(i) for i in ids]
