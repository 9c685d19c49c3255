"""Frozen's mini-ImageNet few-shot files as published (Tsimpoukelli et al. 2021), read as spae episodes.

A task folder (`open_ended_mi`: nonsense names such as "dax"; `real_name_mi`: ImageNet class names) holds, for
each (inner shots n, ways m):

  {task}_shots_{n}_ways_{m}_all_questions.json          (the authors' page writes it without the ways number,
                                                        `{task}_shots_{n}_ways_all_questions.json`: read too)
  {task}_shots_{n}_ways_{m}_id_{x}_image_{i}.jpg        support image i = 1..n*m of question x
  {task}_shots_{n}_ways_{m}_id_{x}_question.jpg         the query image of question x

The JSON is a list with one dict per question: `question_id`, `image_1`..`image_{n*m}` and `caption_1`..
`caption_{n*m}` (support file names and their texts, e.g. "This is a dax."), `question_image`, `question` (the
query's text, e.g. "Q: What is this? A: This is a") and `answer` (e.g. "dax").

Each question becomes one `Episode` with captions: its labels are the names its captions give
(`split_caption`: "This is a <label>." ), in order of first appearance; the answer must be one of them. The
prompt is the published Frozen text with spae tokens in place of the images (see `spae.prompting.fewshot`).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

from spae._io import SpaeInputError
from spae.prompting._episodes import Episode, make_episode, normalize_label, split_caption

__all__ = ["FROZEN_TABLE", "TASKS", "format_frozen_table", "frozen_induction", "questions_file",
           "read_frozen"]

TASKS = ("open_ended_mi", "real_name_mi")
# The seven columns of the Frozen / LQAE / SPAE mini-ImageNet table: (task induction, inner shots, times the
# support is shown). The paper's "repeats r" shows every support example r more times: spae's repeats r + 1.
FROZEN_TABLE: tuple[tuple[bool, int, int], ...] = ((False, 1, 1), (True, 1, 1), (True, 3, 1), (True, 5, 1),
                                                   (True, 1, 2), (True, 1, 4), (True, 1, 6))
_JSON = re.compile(r"^(?P<task>.+)_shots_(?P<n>\d+)_ways(?:_(?P<m>\d+))?_all_questions\.json$")
_FIXED_KEYS = ("question_id", "question_image", "question", "answer")


def frozen_induction(labels: Sequence[str]) -> str:
  """Frozen's task-induction line: "Answer with dax or blicket." (the 5-way list's commas are our choice)."""
  names = list(labels)
  joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
  return f"Answer with {joined}.\n"


def _task_of(root: Path) -> str:
  tasks = sorted({m.group("task") for f in os.listdir(root) if (m := _JSON.match(f))})
  if not tasks:
    inside = [t for t in TASKS if (root / t).is_dir()]
    hint = f"; pass one of its task folders: {', '.join(str(root / t) for t in inside)}" if inside else ""
    raise SpaeInputError(f"frozen data {str(root)!r} holds no {{task}}_shots_N_ways_M_all_questions.json file (the "
                         f"open_ended_mi / real_name_mi folders of Frozen's mini-ImageNet hold them){hint}.")
  if len(tasks) > 1:
    raise SpaeInputError(f"frozen data {str(root)!r} mixes tasks {tasks}; keep one task per folder.")
  return tasks[0]


def questions_file(root: str | os.PathLike, shots: int, ways: int) -> tuple[Path, bool]:
  """(the questions JSON for `shots` and `ways`, whether its name gives the ways), or a one-line error."""
  root = Path(root)
  if not root.is_dir():
    raise SpaeInputError(f"frozen data folder {str(root)!r} does not exist; pass the extracted open_ended_mi or "
                         "real_name_mi folder.")
  task = _task_of(root)
  for name, named_ways in ((f"{task}_shots_{shots}_ways_{ways}_all_questions.json", True),
                           (f"{task}_shots_{shots}_ways_all_questions.json", False)):
    if (root / name).is_file():
      return root / name, named_ways
  have = sorted(f for f in os.listdir(root) if _JSON.match(f))
  raise SpaeInputError(f"{str(root)!r} has no {task}_shots_{shots}_ways_{ways}_all_questions.json for {ways}-way "
                       f"{shots}-shot; it has {', '.join(have)}. Choose --ways / --shots among these.")


def read_frozen(root: str | os.PathLike, ways: Sequence[int], shots: Sequence[int], limit: int | None = None
                ) -> list[Episode]:
  """Episodes of a Frozen task folder: the first `limit` questions (None: all) of every (ways, shots) file.

  Raises SpaeInputError, in one line naming the file and question, for a missing file or image, an unknown key,
  a caption that does not read "This is a <label>." or an answer that no caption names.
  """
  root = Path(root)
  out: list[Episode] = []
  for m in ways:
    for n in shots:
      path, named_ways = questions_file(root, n, m)
      try:
        entries = json.loads(path.read_text(encoding="utf-8"))
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SpaeInputError(f"{path} is not valid JSON ({e}).") from None
      if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise SpaeInputError(f"{path}: expected a JSON list with one object per question.")
      kept = 0
      for entry in entries:
        ep = _episode(root, path, entry, n, m, path.name[:path.name.index("_shots_")], named_ways)
        if ep is None:  # a file without the ways in its name: another ways' question
          continue
        out.append(ep)
        kept += 1
        if limit is not None and kept == limit:
          break
      if not kept:
        raise SpaeInputError(f"{path} holds no {m}-way {n}-shot question.")
  return out


def _episode(root: Path, path: Path, entry: dict[str, Any], shots: int, ways: int, task: str, named_ways: bool
             ) -> Episode | None:
  qid = entry.get("question_id")
  where = f"{path.name} question {qid}"
  k = sum(1 for key in entry if re.fullmatch(r"image_\d+", key))
  allowed = set(_FIXED_KEYS) | {f"image_{i}" for i in range(1, k + 1)} | {f"caption_{i}" for i in range(1, k + 1)}
  unknown = sorted(set(entry) - allowed)
  if unknown:
    raise SpaeInputError(f"{where}: unknown key {unknown[0]!r} (a question has {', '.join(_FIXED_KEYS)}, image_1.. "
                         "and caption_1..).")
  missing = [key for key in sorted(allowed, key=_key_order) if key not in entry]
  if missing:
    raise SpaeInputError(f"{where}: missing key {missing[0]!r}.")
  captions = [str(entry[f"caption_{i}"]) for i in range(1, k + 1)]
  labels: list[str] = []
  support = []
  for i, caption in enumerate(captions, 1):
    try:
      label = split_caption(caption)[1]
    except SpaeInputError as e:
      raise SpaeInputError(f"{where}: caption_{i} {e}") from None
    norm = [normalize_label(l) for l in labels]
    if normalize_label(label) not in norm:
      labels.append(label)
      norm.append(normalize_label(label))
    support.append((norm.index(normalize_label(label)), _image(root, entry[f"image_{i}"], where, f"image_{i}")))
  counts = {sum(1 for c, _ in support if c == j) for j in range(len(labels))}
  if len(labels) != ways or counts != {shots}:
    if named_ways or len(labels) == ways:
      raise SpaeInputError(f"{where}: {k} support images naming {len(labels)} labels ({', '.join(labels)}), but "
                           f"{ways}-way {shots}-shot needs {shots} images of each of {ways} labels.")
    return None
  answer = normalize_label(str(entry["answer"]))
  norm = [normalize_label(l) for l in labels]
  if answer not in norm:
    raise SpaeInputError(f"{where}: answer {entry['answer']!r} is none of the captions' labels "
                         f"({', '.join(labels)}).")
  query = [(norm.index(answer), _image(root, entry["question_image"], where, "question_image"))]
  return make_episode(f"{task}/{ways}w{shots}s/{qid}", labels, labels, support, query, where, captions,
                      str(entry["question"]))


def _key_order(key: str) -> tuple[int, str]:
  head, _, num = key.rpartition("_")
  return (int(num), head) if num.isdigit() else (0, key)


def _image(root: Path, name: Any, where: str, key: str) -> str:
  name = str(name)
  if not (root / name).is_file():
    raise SpaeInputError(f"{where}: {key} {name!r} is not in {str(root)!r}.")
  return name


def format_frozen_table(summary: Sequence[dict[str, Any]], ways: Sequence[int]) -> str:
  """The summary laid out as the published mini-ImageNet table: accuracy (%) per method and layers (rows) in
  the seven `FROZEN_TABLE` columns per ways, then their mean; "-" where a cell was not run."""
  acc = {(s["method"], s["layers"], s["ways"], s["induction"], s["shots"], s["repeats"]): 100 * s["accuracy"]
         for s in summary}
  rows = list(dict.fromkeys((s["method"], s["layers"]) for s in summary))
  cell = lambda text: f"{text:>7}"
  lines = []
  for w in ways:
    lines += [f"{w}-way",
              f"  {'task induction':<20}" + "".join(cell("on" if c[0] else "off") for c in FROZEN_TABLE),
              f"  {'inner shots':<20}" + "".join(cell(c[1]) for c in FROZEN_TABLE),
              f"  {'repeats':<20}" + "".join(cell(c[2] - 1) for c in FROZEN_TABLE) + cell("mean")]
    for method, layers in rows:
      vals = [acc.get((method, layers, w, *c)) for c in FROZEN_TABLE]
      if all(v is None for v in vals):
        continue
      mean = cell(f"{sum(vals) / len(vals):.1f}") if None not in vals else cell("-")
      name = f"{method} ({'words' if layers is None else f'{layers} layers'})"
      lines.append(f"  {name:<20}" + "".join(cell("-" if v is None else f"{v:.1f}") for v in vals) + mean)
  return "\n".join(lines)
