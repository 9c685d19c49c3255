"""The few-shot prompt layout: task induction, support examples and the query, as template strings."""

from __future__ import annotations

import dataclasses
from typing import Sequence

from spae._io import SpaeInputError
from spae.prompting._render import Label, Segment, Text, fill, tokens


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

  def example_segments(self, image_tokens: Sequence[int], label: str) -> list[Segment]:
    return fill(self.example, {"{tokens}": tokens(image_tokens), "{label}": Label(label)})

  def query_segments(self, image_tokens: Sequence[int]) -> list[Segment]:
    return fill(self.query, {"{tokens}": tokens(image_tokens)})

  def instruction_segments(self, labels: Sequence[str]) -> list[Segment]:
    return [Text(self.instruction.replace("{labels}", self.label_join.join(labels)))]

  def after_label(self) -> str:
    """The template text that follows a label (its first line break ends free generation)."""
    return self.example.split("{label}", 1)[1]
