"""Fake language models that read the scene-task prompts (`spae caption`, `spae vqa`) by their markers.

A prompt is a run of examples, each "<in_marker> input \\n [middle] <out_marker> output \\n"; the last one is the
query, whose output is what the model has written so far. The model puts all its mass on the next id of a target
output, then on the newline:

  'nearest'    the output of the support example whose input ids overlap the query's most (Jaccard; ties ->
               the earliest), i.e. the nearest-support baseline done by the "LLM";
  'input'      the query's own input (its description) copied as the output;
  'attribute'  the first candidate answer (earliest start, then longest) found in the query's input, where the
               candidates are chosen by the example's middle ids (its question).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from spae.prompting.testing import WordTokenizer


def _examples(ids: Sequence[int], inp: int, outp: int, nl: int) -> list[tuple[list[int], tuple[int, ...], list | None]]:
  starts = [i for i, t in enumerate(ids) if t == inp]
  out = []
  for a, b in zip(starts, starts[1:] + [len(ids)]):
    seg = list(ids[a + 1:b])
    cut = seg.index(nl) if nl in seg else len(seg)
    o = seg.index(outp) if outp in seg else None
    output = None
    if o is not None:
      rest = seg[o + 1:]
      output = rest[:rest.index(nl)] if nl in rest else rest
    out.append((seg[:cut], tuple(seg[cut + 1:o] if o is not None else ()), output))
  return out


def _find(haystack: Sequence[int], candidates: Sequence[Sequence[int]]) -> list[int] | None:
  for start in range(len(haystack)):
    for c in sorted(candidates, key=len, reverse=True):
      if list(haystack[start:start + len(c)]) == list(c):
        return list(c)
  return None


def scene_model(tok: WordTokenizer, rule: str, in_marker: str = "Image:", out_marker: str = "Caption:",
                answers: Mapping[tuple[int, ...], Sequence[Sequence[int]]] | None = None, bonus: float = 20.0):
  inp, outp, nl = tok.index[in_marker], tok.index[out_marker], tok.newline_id

  def fn(ids: Sequence[int]) -> np.ndarray:
    out = np.zeros(tok.vocab_size, np.float32)
    ex = _examples(ids, inp, outp, nl)
    if not ex or ex[-1][2] is None:
      return out
    *support, (q_in, q_mid, q_out) = ex
    if rule == "nearest":
      q = set(q_in)
      sims = [len(q & set(s)) / max(1, len(q | set(s))) for s, _, _ in support]
      target = support[int(np.argmax(sims))][2]
    elif rule == "input":
      target = q_in
    else:
      target = _find(q_in, answers[q_mid]) or []
    out[target[len(q_out)] if len(q_out) < len(target) else nl] += bonus
    return out

  return fn
