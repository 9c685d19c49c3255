"""The few-shot prompt layout: task induction, support examples and the query, as template strings."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from spae._io import SpaeInputError
from spae.prompting._render import Answer, Segment, Text, fill, tokens


@dataclasses.dataclass(frozen=True)
class PromptTemplate:
  """The few-shot prompt layout (`{...}` are placeholders).

  Attributes:
    instruction: task-induction text, used when induction is on; `{labels}` = the labels joined by `label_join`.
    example: one support example; `{tokens}` = the image's tokens, then `{label}` = its label. The query is the
      example cut where the LLM starts writing: before the whitespace that precedes `{label}`. The rest (the
      answer, " {label}\\n" by default) is what a label is scored as, and how it appears in the support examples.
    label_join: separator of the labels inside `{labels}`.
  With the defaults a 2-way 1-shot prompt with induction reads:
    For each of the following input output pairs, output is one of [dax, blicket].
    Input: sky red ... Output: dax
    Input: tree dog ... Output: blicket
    Input: sky rain ... Output:
  A newline-separated layout is `example="Input: {tokens}\\nOutput: {label}\\n"` (query "Input: ...\\nOutput:").
  """

  instruction: str = "For each of the following input output pairs, output is one of [{labels}].\n"
  example: str = "Input: {tokens} Output: {label}\n"
  label_join: str = ", "

  def validate(self) -> None:
    for n in ("{tokens}", "{label}"):
      if self.example.count(n) != 1:
        raise SpaeInputError(f"the example template must contain {n} exactly once, got {self.example!r}.")
    if self.example.index("{tokens}") > self.example.index("{label}"):
      raise SpaeInputError(f"the example template must show {{tokens}} before {{label}} (the query is the example "
                           f"cut before the label), got {self.example!r}.")

  @property
  def _cut(self) -> int:
    head = self.example[:self.example.index("{label}")]
    return len(head.rstrip())

  @property
  def query(self) -> str:
    """The query template: the example up to where the LLM writes the label."""
    return self.example[:self._cut]

  @property
  def example_start(self) -> str:
    """The example text before the image tokens (e.g. "Input:"): what follows every answer in a prompt."""
    return self.query.split("{tokens}", 1)[0].rstrip(" ")

  @property
  def query_tail(self) -> str:
    """The query text after the image tokens (e.g. " Output:"): what precedes every answer."""
    return self.query.split("{tokens}", 1)[1]

  def answer(self, label: str) -> str:
    """The text the LLM writes after the query for `label`: " dax\\n" by default (the label and what ends it)."""
    return self.example[self._cut:].replace("{label}", label)

  def label_text(self, label: str) -> str:
    """The answer up to the end of the label (" dax"); the rest of the answer ends the label."""
    rest = self.example[self._cut:]
    return rest[:rest.index("{label}")] + label

  def example_segments(self, image_tokens: Sequence[int], answer: Answer) -> list[Segment]:
    return self.query_segments(image_tokens) + [answer]

  def query_segments(self, image_tokens: Sequence[int]) -> list[Segment]:
    return fill(self.query, {"{tokens}": tokens(image_tokens)})

  def instruction_segments(self, labels: Sequence[str]) -> list[Segment]:
    return [Text(self.instruction.replace("{labels}", self.label_join.join(labels)))]
