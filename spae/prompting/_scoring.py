"""Scoring answers with a frozen LLM: every candidate's log-likelihood after a shared prompt prefix, their
contextual calibration, and an episode's labels as the exact LM ids they have in context (shared by few-shot
classification and VQA)."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from spae._io import SpaeInputError
from spae.lm import LanguageModel, LogitsModel
from spae.prompting._prompt import PromptTemplate
from spae.prompting._render import Answer
from spae.prompting._tokenmap import TokenMap

__all__ = ["LabelIds", "calibrated_scores", "score_candidates"]


def score_candidates(lm: LanguageModel, prefix: Sequence[int], candidates: Sequence[Sequence[int]], *,
                     prefix_cache: bool = True) -> np.ndarray:
  """float [C]: sum of log p(candidate tokens | prefix) per candidate.

  prefix_cache=True uses `lm.score` (the backend encodes the prefix once); False runs `lm.logits` on each
  full sequence independently (a `LogitsModel` only), which must give the same numbers.
  """
  if prefix_cache:
    return np.asarray(lm.score(list(prefix), [list(c) for c in candidates]), np.float64)
  if not isinstance(lm, LogitsModel):
    raise SpaeInputError(f"scoring without the prefix cache needs full logits, which {type(lm).__name__} does not "
                         "give (a completions server); drop --no-prefix-cache.")
  out = []
  for c in candidates:
    seq = list(prefix) + list(c)
    logp = _log_softmax(np.asarray(lm.logits(np.asarray([seq], np.int32)), np.float64)[0])
    n = len(prefix)
    out.append(sum(logp[n + j - 1, t] for j, t in enumerate(c)))
  return np.asarray(out, np.float64)


def calibrated_scores(scores: Sequence[float], content_free: Sequence[Sequence[float]]) -> np.ndarray:
  """Contextual calibration (Zhao et al. 2021, "Calibrate Before Use"): float [C] log-scores whose argmax is the
  calibrated answer.

    p = softmax(scores),  p̂_cf = mean_i softmax(content_free[i]),  calibrated = log p − log p̂_cf

  scores: the answers' summed log-probabilities [C] after the query; content_free: the same after each
  content-free input in the query's place [n, C]. The diagonal W = diag(p̂_cf)⁻¹ of the paper with b = 0: a label
  the prompt alone makes likely must earn it from the query."""
  p_cf = np.exp(_log_softmax(np.atleast_2d(np.asarray(content_free, np.float64)))).mean(0)
  return _log_softmax(np.asarray(scores, np.float64)) - np.log(p_cf)


def _log_softmax(x: np.ndarray) -> np.ndarray:
  """log softmax over the last axis, float64."""
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


@dataclasses.dataclass(frozen=True)
class LabelIds:
  """An episode's labels as LM ids, each exactly as it reads after the query and inside the support examples.

  `answers[k]`: the answer for label k (" dax\n": the label and the text that ends it) with the ids it has
  between the query's text and the next example's (a tokenizer may split trailing whitespace by what follows);
  support examples splice these ids and score mode ranks them. `candidates[k]`: its first ids, up to the end of
  the label (generate mode writes these, then a `stop` id).
  """

  labels: tuple[str, ...]
  answers: tuple[Answer, ...]
  candidates: tuple[tuple[int, ...], ...]
  stop: tuple[int, ...]

  @classmethod
  def of(cls, tmap: TokenMap, labels: Sequence[str], template: PromptTemplate) -> "LabelIds":
    context = template.query_tail or "x"  # what precedes every answer ("x" stands for an image token)
    follow = template.example_start or "x"  # what follows it
    answers, cands, stop = [], [], set()
    for label in labels:
      text = template.answer(label)
      joint, after = tmap.encode_after(context, text + follow), tmap.encode_after(context + text, follow)
      if after and len(joint) > len(after) and joint[len(joint) - len(after):] == after:
        full = tuple(joint[:len(joint) - len(after)])
      else:
        full = tuple(tmap.encode_after(context, text))
      head = tuple(tmap.encode_after(context, template.label_text(label)))
      if not head:
        raise SpaeInputError(f"label {label!r} encodes to no tokens with this LM tokenizer; use a non-empty name.")
      if full[:len(head)] != head:  # the label merges with what ends it: the whole answer is the candidate
        head = full
      answers.append(Answer(text, full))
      cands.append(head)
      if len(full) > len(head):
        stop.add(full[len(head)])
    if len({a.ids for a in answers}) != len(answers):
      raise SpaeInputError(f"labels {list(labels)} encode to identical LM token sequences; use distinct names.")
    eos = tmap.tokenizer.eos_id
    return cls(tuple(labels), tuple(answers), tuple(cands), tuple(sorted(stop | ({int(eos)} if eos is not None
                                                                                   else set()))))

  @classmethod
  def text_only(cls, labels: Sequence[str], template: PromptTemplate) -> "LabelIds":
    """Answers without ids, for the readable prompt of an LLM-free (probes only) run."""
    return cls(tuple(labels), tuple(Answer(template.answer(l), ()) for l in labels), (), ())

  @property
  def longest(self) -> int:
    """Tokens of the longest scored answer."""
    return max(len(a.ids) for a in self.answers)
