"""One template engine and one renderer for every prompt (few-shot classification and generation).

A prompt is a list of segments: `Text`, `Tokens` (codebook ids of image tokens) and `Answer` (text whose LM ids
were fixed in advance, e.g. a label as the LLM is asked to write it). `fill(template, slots)` turns a template
string with `{placeholders}` into segments; `render(segments, tmap)` turns segments into LM ids and readable
text side by side.

Rendering follows the prompt's text, as if it were encoded in one piece (image tokens spliced in as ids):
  - adjacent text is merged and encoded as a continuation of the text before it (`TokenMap.encode_after`), so
    a tokenizer's start-of-text rule (SentencePiece's dummy prefix) applies once, at the start of the prompt;
  - a space before a run of image tokens is carried by the run when its first entry starts with a space
    marker ('▁cat', 'Ġcat', or any word in token mode 'text'), and is never a lone space token; a prompt never
    ends with a space (the next token carries it);
  - an `Answer`'s ids are spliced as given, so a label in a support example has exactly the ids it is scored
    with after the query.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence, Union

from spae.prompting._tokenmap import TokenMap


@dataclasses.dataclass(frozen=True)
class Text:
  text: str


@dataclasses.dataclass(frozen=True)
class Tokens:
  """Codebook ids of (part of) a pyramid, in reading order."""
  ids: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class Answer:
  """Text with fixed LM ids (e.g. " dax\\n": a label and what ends it, as scored after the query)."""
  text: str
  ids: tuple[int, ...]


Segment = Union[Text, Tokens, Answer]


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
  """LM ids and readable text of a prompt (see the module docstring for the rules)."""
  tok = tmap.tokenizer
  ids: list[int] = [int(tok.bos_id)] if bos and tok.bos_id is not None else []
  start = len(ids)
  text = ""  # readable text so far (including `pending`): the context later text is encoded after
  pending = ""  # text not yet encoded

  def flush(before: Segment | None) -> None:
    nonlocal pending
    body = pending
    if isinstance(before, Tokens) and before.ids and tmap.carries_space(before.ids[0]) and body.endswith(" "):
      body = body[:-1]  # the run's first entry carries this space
    elif before is None:
      body = body.rstrip(" ")  # the next (generated) token carries it
    if body:
      before_text = text[:len(text) - len(pending)] if len(ids) > start else ""
      ids.extend(tmap.encode_after(before_text, body))
    pending = ""

  for s in segments:
    if isinstance(s, Tokens) and not s.ids:
      continue  # an empty run (no layer generated yet) is no boundary
    if isinstance(s, Text):
      pending += s.text
      text += s.text
      continue
    flush(s)
    if isinstance(s, Tokens):
      ids.extend(tmap.encode_tokens(s.ids))
      text += tmap.text_of(s.ids)
    else:
      ids.extend(s.ids)
      text += s.text
  flush(None)
  return Rendered(ids, text)


def readable(segments: Sequence[Segment], words: Sequence[str]) -> str:
  """The prompt as text, image tokens written as their words (joined by spaces)."""
  return "".join(" ".join(words[i] for i in s.ids) if isinstance(s, Tokens) else s.text for s in segments)
