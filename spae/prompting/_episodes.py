"""Few-shot episodes: deterministic sampling from a labelled source, and episode files for replaying splits.

Episode file format (JSONL, one episode per line; `write_episodes` writes it, `read_episodes` reads it):

  {"id": "5w1s-0", "classes": ["red circle", "blue star", ...],
   "labels": ["dax", "blicket", ...],                # optional; default = classes (the names the LLM sees)
   "support": [["red circle", 17], ["blue star", 4], ...],  # [class, image] in prompt order
   "query": [["blue star", 29]],                      # one or more [class, image]
   "captions": ["This is a dax.", ...],               # optional: a text after each support image (see below)
   "question": "Q: What is this? A: This is a"}       # optional, with captions: the text after the query image

`image` is whatever the labelled source (a `spae.data.LabelledSource`) loads (an int index, or a key string),
or, when no source is given, a path to an image file (relative paths are relative to the episode file). A CSV
form is also read: a header `episode,role,class,image` (role = support | query), one row per image, rows in
prompt order; `labels` then default to the class names.

Episodes with captions (Frozen's published mini-ImageNet files, `spae.prompting.read_frozen`) carry their own
texts: each support image is followed by its caption verbatim and the query image by the question, instead of the
`PromptTemplate`'s. A caption must read "<this is a|an|the> <label><ending>" (`split_caption`), its label one of
the episode's labels, the ending ("." or nothing) the same for every caption of the episode.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from spae._io import SpaeInputError, write_text_atomic
from spae.data import LabelledSource

# Open-ended nonsense names, as in Frozen's open-ended mini-ImageNet ("dax", "blicket", ...).
NONSENSE_NAMES: tuple[str, ...] = ("dax", "blicket", "slation", "perpo", "shously", "wug", "toma", "fep", "zorb",
                                   "kiki", "bouba", "glorp", "tufa", "mipo", "rell", "snerd", "vexo", "plim",
                                   "quabe", "jorn")


@dataclasses.dataclass(frozen=True)
class Episode:
  """One N-way K-shot episode.

  Attributes:
    id: unique within a run (it keys resumable results).
    classes: the N true class names; class index i is `classes[i]`.
    labels: the N names shown to the LLM (`classes` or nonsense names), aligned with `classes`.
    support: (class index, image key) pairs in prompt order.
    query: (class index, image key) pairs; each is classified separately with the same support.
    captions: () or one text per support image, shown verbatim after it (Frozen's layout).
    question: with captions, the text after the query image (it ends where the LLM writes the label).
  """

  id: str
  classes: tuple[str, ...]
  labels: tuple[str, ...]
  support: tuple[tuple[int, Any], ...]
  query: tuple[tuple[int, Any], ...]
  captions: tuple[str, ...] = ()
  question: str = ""

  @property
  def ways(self) -> int:
    return len(self.classes)

  @property
  def shots(self) -> int:
    return min(sum(1 for c, _ in self.support if c == k) for k in range(self.ways))

  def image_keys(self) -> list[Any]:
    return [k for _, k in self.support] + [k for _, k in self.query]

  @property
  def ending(self) -> str:
    """What follows the label in every caption ("." or ""); "" without captions."""
    return split_caption(self.captions[0])[2] if self.captions else ""

  def caption_prefixes(self) -> dict[Any, str]:
    """Support image key -> its caption's text before the label (e.g. "This is a"); {} without captions."""
    return {k: split_caption(c)[0] for (_, k), c in zip(self.support, self.captions)}

  def to_json(self) -> dict[str, Any]:
    out = {"id": self.id, "classes": list(self.classes), "labels": list(self.labels),
           "support": [[self.classes[c], k] for c, k in self.support],
           "query": [[self.classes[c], k] for c, k in self.query]}
    if self.captions:
      out.update(captions=list(self.captions), question=self.question)
    return out

  @classmethod
  def from_json(cls, obj: dict[str, Any], where: str = "episode") -> "Episode":
    try:
      classes = tuple(str(c) for c in obj["classes"])
      labels = tuple(str(c) for c in obj.get("labels") or classes)
      index = {c: i for i, c in enumerate(classes)}
      support = tuple((index[str(c)], _key(k)) for c, k in obj["support"])
      query = tuple((index[str(c)], _key(k)) for c, k in obj["query"])
      eid = str(obj["id"])
      captions = tuple(str(c) for c in obj.get("captions") or ())
      question = str(obj.get("question") or "")
    except KeyError as e:
      raise SpaeInputError(f"{where}: missing field or unknown class {e} (fields: id, classes, support, query; "
                           "every support/query class must be listed in 'classes').") from None
    except (TypeError, ValueError) as e:
      raise SpaeInputError(f"{where}: malformed episode ({e}); support/query are lists of [class, image].") from None
    return make_episode(eid, classes, labels, support, query, where, captions, question)


def _key(k: Any) -> Any:
  return int(k) if isinstance(k, (int, np.integer)) else str(k)


def make_episode(eid: str, classes: Sequence[str], labels: Sequence[str], support: Sequence[tuple[int, Any]],
                 query: Sequence[tuple[int, Any]], where: str = "episode", captions: Sequence[str] = (),
                 question: str = "") -> Episode:
  """Validates and builds an Episode (distinct classes and labels, non-empty support/query, captions that name
  their image's label)."""
  if len(set(classes)) != len(classes):
    raise SpaeInputError(f"{where}: classes repeat ({list(classes)}).")
  if len(labels) != len(classes):
    raise SpaeInputError(f"{where}: {len(labels)} labels for {len(classes)} classes.")
  if len({normalize_label(l) for l in labels}) != len(labels):
    raise SpaeInputError(f"{where}: labels {list(labels)} are not distinct after normalisation.")
  if not support or not query:
    raise SpaeInputError(f"{where}: needs at least one support and one query image.")
  if captions or question:
    _check_captions(captions, question, labels, support, where)
  return Episode(eid, tuple(classes), tuple(labels), tuple(support), tuple(query), tuple(captions),
                 question.rstrip())


_CAPTION = re.compile(r"^\s*(this is (?:an?|the))\s+(\S.*?)\s*([.!]?)\s*$", re.IGNORECASE | re.DOTALL)


def split_caption(caption: str) -> tuple[str, str, str]:
  """"This is a dax." -> ("This is a", "dax", "."): the text before the label, the label, its ending.

  The rule: the caption starts with "this is a", "this is an" or "this is the" (any case); the label is the rest
  up to an optional final "." or "!". Raises SpaeInputError for a caption that does not read so.
  """
  m = _CAPTION.match(caption)
  if not m:
    raise SpaeInputError(f"caption {caption!r} does not read 'This is a <label>.'")
  return m.group(1), m.group(2), m.group(3)


def _check_captions(captions: Sequence[str], question: str, labels: Sequence[str],
                    support: Sequence[tuple[int, Any]], where: str) -> None:
  if len(captions) != len(support) or not question.strip():
    raise SpaeInputError(f"{where}: captions need one text per support image ({len(captions)} for "
                         f"{len(support)}) and a non-empty question.")
  endings = set()
  for (c, _), caption in zip(support, captions):
    try:
      _, label, ending = split_caption(caption)
    except SpaeInputError as e:
      raise SpaeInputError(f"{where}: {e}") from None
    if normalize_label(label) != normalize_label(labels[c]):
      raise SpaeInputError(f"{where}: caption {caption!r} names {label!r} but its image is labelled {labels[c]!r}.")
    endings.add(ending)
  if len(endings) > 1:
    raise SpaeInputError(f"{where}: captions end differently ({sorted(endings)}); one ending per episode.")


def normalize_label(text: str) -> str:
  """Lower case, first line only, surrounding whitespace and punctuation removed, inner spaces collapsed."""
  text = text.strip().split("\n")[0]
  text = " ".join(text.lower().split())
  return text.strip(" .,;:!?\"'`()[]{}<>")


def check_source(source: LabelledSource, ways: int, shots: int, queries: int = 1) -> list[str]:
  """Class names usable for N-way K-shot episodes; raises naming the class that lacks images."""
  classes = list(source.classes)
  if len(classes) < ways:
    raise SpaeInputError(f"the data has {len(classes)} classes ({', '.join(map(str, classes[:10]))}) but "
                         f"{ways}-way episodes need at least {ways}; lower --ways or add classes.")
  need = shots + 1
  for c in classes:
    n = len(source.images_of(c))
    if n < need:
      raise SpaeInputError(f"class {c!r} has {n} images but {shots}-shot episodes need at least {need} per class "
                           "(K support + 1 query); lower --shots or add images.")
  return classes


def sample_episodes(source: LabelledSource, ways: int, shots: int, num: int, *, seed: int = 0,
                    queries: int = 1, names: str = "real", start: int = 0) -> list[Episode]:
  """`num` N-way K-shot episodes; episode i depends only on (seed, ways, shots, queries, i).

  Support and query images of an episode are disjoint. Support order is shuffled (classes interleaved at
  random); the query classes are drawn uniformly from the N. `names`: 'real' (class names) or 'nonsense'
  (random distinct names from NONSENSE_NAMES per episode, as Frozen's open-ended protocol).
  """
  if ways < 1 or shots < 1 or queries < 1:
    raise SpaeInputError(f"ways, shots and queries must be >= 1, got {ways}, {shots}, {queries}.")
  if names not in ("real", "nonsense"):
    raise SpaeInputError(f"names must be 'real' or 'nonsense', got {names!r}.")
  if names == "nonsense" and ways > len(NONSENSE_NAMES):
    raise SpaeInputError(f"only {len(NONSENSE_NAMES)} nonsense names exist; use --names real for {ways}-way.")
  classes = check_source(source, ways, shots, queries)
  keys_of = {c: list(source.images_of(c)) for c in classes}
  out = []
  for i in range(start, start + num):
    rng = np.random.default_rng([seed, ways, shots, queries, i])
    chosen = [classes[j] for j in rng.choice(len(classes), ways, replace=False)]
    qcls = [int(c) for c in rng.integers(0, ways, size=queries)]
    support, query = [], []
    for ci, c in enumerate(chosen):
      nq = qcls.count(ci)
      keys = keys_of[c]
      if len(keys) < shots + nq:
        raise SpaeInputError(f"class {c!r} has {len(keys)} images; this episode needs {shots + nq} of it.")
      pick = rng.choice(len(keys), shots + nq, replace=False)
      support += [(ci, _key(keys[j])) for j in pick[:shots]]
      query += [(ci, _key(keys[j])) for j in pick[shots:]]
    support = [support[j] for j in rng.permutation(len(support))]
    query_sorted = []  # keep the drawn query order
    remaining = {ci: [q for q in query if q[0] == ci] for ci in range(ways)}
    for ci in qcls:
      query_sorted.append(remaining[ci].pop(0))
    labels = chosen if names == "real" else [NONSENSE_NAMES[j] for j in
                                             rng.choice(len(NONSENSE_NAMES), ways, replace=False)]
    out.append(make_episode(f"{ways}w{shots}s-{i}", chosen, labels, support, query_sorted))
  return out


def sample_nested_episodes(source: LabelledSource, ways: int, shots: Sequence[int], num: int, *, seed: int = 0,
                           queries: int = 1, names: str = "real", start: int = 0) -> dict[int, list[Episode]]:
  """shots -> `num` N-way episodes per shot count, nested: episode i of every shot count has the same classes,
  labels and queries, and the K-shot support is the first K rounds of one support sequence (each round shows every
  class once, in its own random order), so a smaller-K prompt is a prefix of a larger-K one.

  This pairs the shot counts (differences between them are not episode noise) and lets an LM with a prefix cache
  run only the added rounds. Episode i depends only on (seed, ways, max(shots), queries, i); ids read "5w3s-n7".
  """
  shots = sorted(set(int(k) for k in shots))
  if not shots or ways < 1 or shots[0] < 1 or queries < 1:
    raise SpaeInputError(f"ways, shots and queries must be >= 1, got {ways}, {shots}, {queries}.")
  if names not in ("real", "nonsense"):
    raise SpaeInputError(f"names must be 'real' or 'nonsense', got {names!r}.")
  if names == "nonsense" and ways > len(NONSENSE_NAMES):
    raise SpaeInputError(f"only {len(NONSENSE_NAMES)} nonsense names exist; use --names real for {ways}-way.")
  most = shots[-1]
  classes = check_source(source, ways, most, queries)
  keys_of = {c: list(source.images_of(c)) for c in classes}
  out: dict[int, list[Episode]] = {k: [] for k in shots}
  for i in range(start, start + num):
    rng = np.random.default_rng([seed, ways, most, queries, i, 1])  # the trailing 1: not sample_episodes' stream
    chosen = [classes[j] for j in rng.choice(len(classes), ways, replace=False)]
    qcls = [int(c) for c in rng.integers(0, ways, size=queries)]
    picks, pools = [], {}
    for ci, c in enumerate(chosen):
      nq = qcls.count(ci)
      if len(keys_of[c]) < most + nq:
        raise SpaeInputError(f"class {c!r} has {len(keys_of[c])} images; this episode needs {most + nq} of it.")
      pick = [_key(keys_of[c][j]) for j in rng.choice(len(keys_of[c]), most + nq, replace=False)]
      picks.append(pick[:most])
      pools[ci] = pick[most:]
    rounds = [rng.permutation(ways) for _ in range(most)]
    query = [(ci, pools[ci].pop(0)) for ci in qcls]
    labels = chosen if names == "real" else [NONSENSE_NAMES[j] for j in
                                             rng.choice(len(NONSENSE_NAMES), ways, replace=False)]
    for k in shots:
      support = [(int(ci), picks[ci][r]) for r in range(k) for ci in rounds[r]]
      out[k].append(make_episode(f"{ways}w{k}s-n{i}", chosen, labels, support, query))
  return out


def repeated_support(episode: Episode, repeats: int, seed: int = 0) -> list[tuple[int, Any]]:
  """The support set shown `repeats` times (inner-shot repeats); each repeat after the first is reshuffled.

  Deterministic in (episode id, repeats, seed), and repeats=1 is the episode's own support order.
  """
  if repeats < 1:
    raise SpaeInputError(f"repeats must be >= 1, got {repeats}.")
  out = list(episode.support)
  rng = np.random.default_rng([seed, repeats, *episode.id.encode()])
  for _ in range(repeats - 1):
    out += [episode.support[j] for j in rng.permutation(len(episode.support))]
  return out


# ------------------------------------------------------------------------------------ files
def write_episodes(path: str | os.PathLike, episodes: Iterable[Episode]) -> None:
  """Writes the JSONL episode format (atomically)."""
  write_text_atomic(path, "".join(json.dumps(e.to_json()) + "\n" for e in episodes))


def read_episodes(path: str | os.PathLike) -> list[Episode]:
  """Reads a JSONL (or `.csv`) episode file; see the module docstring for the format."""
  path = Path(path)
  if not path.is_file():
    raise SpaeInputError(f"episode file {str(path)!r} does not exist.")
  if path.suffix.lower() == ".csv":
    return _read_csv(path)
  out = []
  for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
    if not line.strip():
      continue
    try:
      obj = json.loads(line)
    except json.JSONDecodeError as e:
      raise SpaeInputError(f"{path}:{n} is not valid JSON ({e}).") from None
    out.append(Episode.from_json(obj, f"{path}:{n}"))
  _check_unique(out, path)
  return out


def _read_csv(path: Path) -> list[Episode]:
  with open(path, newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))
  if not rows or not {"episode", "role", "class", "image"} <= set(rows[0]):
    raise SpaeInputError(f"{path}: a CSV episode file needs the header episode,role,class,image.")
  grouped: dict[str, list[dict[str, str]]] = {}
  for r in rows:
    grouped.setdefault(r["episode"], []).append(r)
  out = []
  for eid, rs in grouped.items():
    classes = list(dict.fromkeys(r["class"] for r in rs))
    bad = [r["role"] for r in rs if r["role"] not in ("support", "query")]
    if bad:
      raise SpaeInputError(f"{path}: episode {eid} has role {bad[0]!r}; use 'support' or 'query'.")
    obj = {"id": eid, "classes": classes,
           "support": [[r["class"], r["image"]] for r in rs if r["role"] == "support"],
           "query": [[r["class"], r["image"]] for r in rs if r["role"] == "query"]}
    out.append(Episode.from_json(obj, f"{path} episode {eid}"))
  _check_unique(out, path)
  return out


def _check_unique(episodes: list[Episode], path: Path) -> None:
  ids = [e.id for e in episodes]
  if len(set(ids)) != len(ids):
    dup = next(i for i in ids if ids.count(i) > 1)
    raise SpaeInputError(f"{path}: episode id {dup!r} appears more than once; ids must be unique.")
  if not episodes:
    raise SpaeInputError(f"{path} holds no episodes.")


class FileImages:
  """A `LabelledSource` without classes: episode images given as file paths (relative to `root`), for episode
  files used without --data."""

  classes: Sequence[str] = ()

  def __init__(self, root: str | os.PathLike):
    self.root = Path(root)

  def images_of(self, name: str) -> Sequence[Any]:
    raise SpaeInputError("episodes read from a file with image paths cannot be re-sampled; pass --data.")

  def load(self, key: Any) -> np.ndarray:
    from spae._images import load_image

    p = Path(str(key))
    return load_image(p if p.is_absolute() else self.root / p)


def load_image_from(source: LabelledSource, key: Any) -> Any:
  """source.load(key), unwrapping (image, label) tuples and {"image": ...} dicts."""
  item = source.load(key)
  if isinstance(item, dict):
    item = item["image"]
  elif isinstance(item, tuple):
    item = item[0]
  return item


def scene_attributes(source: Any, key: Any) -> dict[str, Any] | None:
  """The generated-scene attributes of image `key` (`SceneSource.attributes`, through class subsets), or None
  when the source does not know them."""
  while not callable(getattr(source, "attributes", None)):
    base, indices = getattr(source, "base", None), getattr(source, "indices", None)
    if base is None or indices is None:
      return None
    source, key = base, int(indices[int(key)])
  return source.attributes(int(key))
