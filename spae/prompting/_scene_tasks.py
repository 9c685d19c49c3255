"""What `spae caption` and `spae vqa` share: scene episodes, image descriptions (tokens or oracle words), one
resumable run loop with progress bars, shares with Wilson intervals, and the command-line plumbing.

An episode is a query scene (held-out classes of the test split by default) and K support scenes (the train
split by default), each support scene shown as (image, its caption / answer) before the query. Episode i's
support is drawn from `default_rng([seed, i])` one index at a time, so the K=1 support is the first example of
the K=5 support and every method, layer count and question type of a run sees the same episodes.

An image is described either by its codebook tokens (the top `layers` pyramid layers, as in `spae fewshot`) or,
for the oracle, by its true attribute words (`oracle_words`): the same LLM, episodes and template, with the best
words a tokenizer could give in place of the tokens.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
from typing import Any, Callable, Hashable, Iterable, Sequence

import numpy as np
from tqdm.auto import tqdm

from spae._io import SpaeInputError, check_output_file, write_json_atomic
from spae.data import _scenes
from spae.prompting import _cli
from spae.prompting._jsonl import JsonlLog
from spae.prompting._prompt import PromptTemplate
from spae.prompting._render import Answer, Segment, Text, fill, tokens
from spae.prompting._stats import confidence_interval
from spae.prompting._tokencache import TokenCache
from spae.prompting._tokenmap import TokenMap

log = logging.getLogger(__name__)

QUERY_CLASSES = ("heldout", "train", "all")
COUNT_WORDS: tuple[str, ...] = ("one", "two", "three", "four")  # scenes hold 1..MAX_OBJECTS objects
REGIONS: tuple[str, ...] = ("top left", "top", "top right", "left", "center", "right", "bottom left", "bottom",
                            "bottom right")
DEFAULT_QUERIES = "scenes:test:2000"  # ~500 of them lead with one of the 39 held-out classes
DEFAULT_SUPPORT = "scenes:2000"  # the train split: never leads with a held-out class
assert len(COUNT_WORDS) == _scenes.MAX_OBJECTS


def oracle_words(attrs: dict[str, Any]) -> str:
  """The oracle's description of a scene: its main object's size, tone, colour, shape, region and the object
  count, e.g. "large light blue heart top left three" (our choice of words: every attribute that is scored)."""
  colour = f"{attrs['tone']} {attrs['colour']}".strip()
  return f"{attrs['size']} {colour} {attrs['shape']} {attrs['region']} {COUNT_WORDS[attrs['count'] - 1]}"


@dataclasses.dataclass(frozen=True)
class SceneTaskConfig:
  """What captioning and VQA runs share; the tuple fields are swept (every combination is evaluated).

  Attributes:
    shots: support examples per prompt (K).
    layers: top pyramid layers describing each image (1 -> 1 token, 2 -> 1+4, 3 -> 1+4+16, ...).
    episodes: query scenes (one episode each).
    seed: support sampling seed (episode i depends only on seed and i).
    instruction: text before the examples ('' = none).
    token_mode: how image tokens reach the LM: 'auto', 'ids' (shared vocabulary) or 'text' (words).
    oracle: also run the LM on the images' true attribute words (`oracle_words`) in place of the tokens.
    baselines: also run the LLM-free baselines.
  """

  shots: tuple[int, ...] = (5,)
  layers: tuple[int, ...] = (2,)
  episodes: int = 100
  seed: int = 0
  instruction: str = ""
  token_mode: str = "auto"
  oracle: bool = True
  baselines: bool = True

  def validate(self) -> None:
    for name in ("shots", "layers"):
      vals = getattr(self, name)
      if not vals or min(vals) < 1:
        raise SpaeInputError(f"{name} must be one or more integers >= 1, got {vals}.")
    if self.episodes < 1:
      raise SpaeInputError(f"episodes must be >= 1, got {self.episodes}.")
    if self.token_mode not in ("auto", "ids", "text"):
      raise SpaeInputError(f"token mode must be 'auto', 'ids' or 'text', got {self.token_mode!r}.")


# ------------------------------------------------------------------------------------ scenes and episodes
class ScenePools:
  """Query and support scenes: attributes (remembered), captions and images by key ("q", i) / ("s", i).

  `queries` / `support` are `spae.data.SceneSource`s (anything with `attributes(i)`, `load(i)` and `len`);
  queries are restricted to `query_classes` ('heldout': `SCENE_HELDOUT_CLASSES`, 'train', or 'all').
  """

  def __init__(self, queries: Any, support: Any, query_classes: str = "heldout"):
    for what, src in (("--data", queries), ("--support-data", support)):
      if not callable(getattr(src, "attributes", None)):
        raise SpaeInputError(f"{what} {getattr(src, 'name', src)!r} has no scene attributes; captions and "
                             "questions are made from them: use a scenes spec (e.g. scenes:test:2000).")
    if query_classes not in QUERY_CLASSES:
      raise SpaeInputError(f"query classes must be one of {QUERY_CLASSES}, got {query_classes!r}.")
    self.queries, self.support, self.query_classes = queries, support, query_classes
    # The same source on both sides: a query must never be its own support example.
    self.same = getattr(queries, "name", None) == getattr(support, "name", None)
    self._attrs: dict[tuple[str, int], dict[str, Any]] = {}

  def attributes(self, key: tuple[str, int]) -> dict[str, Any]:
    a = self._attrs.get(key)
    if a is None:
      role, i = key
      a = self._attrs[key] = (self.queries if role == "q" else self.support).attributes(int(i))
    return a

  def caption(self, key: tuple[str, int]) -> str:
    return _scenes.caption_for(self.attributes(key))

  def load(self, key: tuple[str, int]) -> np.ndarray:
    """The image of a key (the `LabelledSource.load` that `TokenCache` calls)."""
    role, i = key
    return (self.queries if role == "q" else self.support).load(int(i))

  def query_indices(self, num: int) -> list[int]:
    """The first `num` query indices whose main object is of `query_classes`."""
    keep = {"heldout": set(_scenes.HELDOUT_CLASSES), "train": set(_scenes.TRAIN_CLASSES),
            "all": set(_scenes.CLASSES)}[self.query_classes]
    out = []
    for i in range(len(self.queries)):
      if self.attributes(("q", i))["label"] in keep:
        out.append(i)
        if len(out) == num:
          return out
    name = getattr(self.queries, "name", "the query data")
    hint = (" (the train split never leads with a held-out class: use scenes:test:N)"
            if self.query_classes == "heldout" and getattr(self.queries, "split", "") == "train" else "")
    raise SpaeInputError(f"{name} holds {len(out)} scenes of the {self.query_classes} classes but {num} episodes "
                         f"were asked for{hint}; lower --episodes or use more scenes in --data.")


@dataclasses.dataclass(frozen=True)
class SceneEpisode:
  """Episode `id`: query scene index and support scene indices (prompt order; K-shot uses the first K)."""

  id: str
  query: int
  support: tuple[int, ...]


def scene_episodes(pools: ScenePools, num: int, max_shots: int, seed: int = 0) -> list[SceneEpisode]:
  """`num` episodes with `max_shots` support scenes each; episode i depends only on (seed, i, the data)."""
  if num < 1 or max_shots < 1:
    raise SpaeInputError(f"episodes and shots must be >= 1, got {num} and {max_shots}.")
  n = len(pools.support)
  avail = n - 1 if pools.same else n
  if max_shots > avail:
    raise SpaeInputError(f"{max_shots}-shot episodes need {max_shots} support scenes but "
                         f"{getattr(pools.support, 'name', '--support-data')} offers {avail}; lower --shots or use "
                         "more support scenes.")
  out = []
  for i, q in enumerate(pools.query_indices(num)):
    rng = np.random.default_rng([seed, i])
    support: list[int] = []
    while len(support) < max_shots:  # sequential draws: the first K are the K-shot support for every K
      j = int(rng.integers(n))
      if j not in support and not (pools.same and j == q):
        support.append(j)
    out.append(SceneEpisode(f"e{i}", q, tuple(support)))
  return out


# ------------------------------------------------------------------------------------ prompts
def template_of(example: str, instruction: str, answer_slot: str, fixed: dict[str, str] | None = None
                ) -> PromptTemplate:
  """A `PromptTemplate` from a task's example template: `answer_slot` (e.g. '{caption}') plays the label.

  `fixed` fills other placeholders first (the question of a VQA episode).
  """
  for slot in ("{tokens}", answer_slot, *(fixed or {})):
    if example.count(slot) != 1:
      raise SpaeInputError(f"the example template must contain {slot} exactly once, got {example!r}.")
  if "{label}" in example:
    raise SpaeInputError(f"the example template names its answer {answer_slot}, not {{label}}: {example!r}.")
  for slot, value in (fixed or {}).items():
    example = example.replace(slot, value)
  t = PromptTemplate(instruction=instruction, example=example.replace(answer_slot, "{label}"))
  t.validate()
  return t


def answer_of(tmap: TokenMap | None, template: PromptTemplate, text: str) -> tuple[Answer, int | None]:
  """(`text` as an Answer with the ids it gets right after the query, the id that ends it or None).

  Without an LM (`tmap` None) the answer has no ids.
  """
  if tmap is None:
    return Answer(template.answer(text), ()), None
  context = template.query_tail or "x"  # what precedes every answer ("x" stands for an image token)
  full = tuple(tmap.encode_after(context, template.answer(text)))
  head = tuple(tmap.encode_after(context, template.label_text(text)))
  end = full[len(head)] if full[:len(head)] == head and len(full) > len(head) else None
  return Answer(template.answer(text), full), end


def describe(description: str | Sequence[int]) -> Segment:
  """An image in a prompt: its oracle words (a str) or its codebook ids."""
  return Text(description) if isinstance(description, str) else tokens(description)


def build_prompt(template: PromptTemplate, support: Sequence[tuple[str | Sequence[int], Answer]],
                 query: str | Sequence[int]) -> list[Segment]:
  """[instruction] then one example per (image description, answer), then the query cut where the LLM writes."""
  segs: list[Segment] = [Text(template.instruction)] if template.instruction else []
  for image, ans in support:
    segs += fill(template.query, {"{tokens}": describe(image)}) + [ans]
  return segs + fill(template.query, {"{tokens}": describe(query)})


def first_line(text: str) -> str:
  return text.split("\n", 1)[0].strip()


def check_length(lm: Any, n: int, extra: int, where: str) -> None:
  if n + extra > lm.max_length:
    raise SpaeInputError(f"{where}: the prompt is {n} LM tokens (+{extra} to write), over the LM's max_length "
                         f"{lm.max_length}; use fewer --layers or --shots.")


# ------------------------------------------------------------------------------------ running
@dataclasses.dataclass
class Prepared:
  """What every row of a run needs: the episodes, the token cache, the LM's view of image tokens."""

  episodes: list[SceneEpisode]
  cache: TokenCache  # over the pools: each image encoded once for the whole run
  tmap: TokenMap | None
  lm_name: str
  setup: dict[str, Any]  # fields of the setup hash common to both tasks

  @property
  def token_mode(self) -> str:
    return self.tmap.mode if self.tmap is not None else "none"


def prepare(config: SceneTaskConfig, tokenizer: Any, lm: Any, pools: ScenePools, lm_name: str | None) -> Prepared:
  """Validates a run and samples its episodes (cheap checks first, nothing encoded yet)."""
  config.validate()
  if lm is None and not config.baselines:
    raise SpaeInputError("nothing to evaluate: no LM and the baselines are off.")
  max_layers = tokenizer.config.pyramid.num_layers
  if max(config.layers) > max_layers:
    raise SpaeInputError(f"layers {max(config.layers)} exceeds this tokenizer's {max_layers} pyramid layers.")
  tmap = TokenMap(tokenizer.vocabulary, lm.tokenizer, config.token_mode) if lm is not None else None
  episodes = scene_episodes(pools, config.episodes, max(config.shots), config.seed)
  lm_name = lm_name or ("none" if lm is None else type(lm).__name__)
  setup = {"lm": lm_name, "vocab": tokenizer.vocabulary.fingerprint(), "seed": config.seed,
           "token_mode": tmap.mode if tmap is not None else "none", "instruction": config.instruction,
           "queries": getattr(pools.queries, "name", None), "support": getattr(pools.support, "name", None),
           "query_classes": pools.query_classes}
  cache = TokenCache(tokenizer, pools)
  # The vocabulary's fingerprint does not change when the tokenizer is retrained: the tokens of one query do.
  setup["probe"] = cache.ids(("q", episodes[0].query), max_layers)
  return Prepared(episodes, cache, tmap, lm_name, setup)


@dataclasses.dataclass(frozen=True)
class Job:
  """One JSONL row to compute: its unique key, the image keys whose tokens it reads, and how to compute it."""

  key: str
  images: tuple[Hashable, ...]
  run: Callable[[], dict[str, Any]]


def setup_id(fields: dict[str, Any]) -> str:
  """Hash of everything that changes a row's outcome besides its own key fields."""
  return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]


def run_jobs(jobs: Sequence[Job], cache: Any, out: str | os.PathLike | None, *, setup: str, desc: str,
             progress: bool = True, layers: int | None = None) -> tuple[list[dict[str, Any]], int]:
  """Rows of `jobs` in order; rows already in `out` are reused (resume), new ones appended as they finish.

  The tokens of every image the remaining jobs read are encoded first, once each, to the first `layers` layers
  (default all; `cache`: a `TokenCache`). Returns (rows, number resumed).
  """
  results = JsonlLog(out) if out is not None else None
  done = {r.get("key"): r for r in results.rows} if results is not None else {}
  todo = [j for j in jobs if j.key not in done]
  keys = list(dict.fromkeys(k for j in todo for k in j.images))
  if keys and cache is not None:
    cache.encode_all(keys, progress, layers=layers)
  rows = []
  resumed = len(jobs) - len(todo)
  with tqdm(total=len(jobs), initial=resumed, desc=desc, unit="row", disable=not progress) as bar:
    for j in jobs:
      row = done.get(j.key)
      if row is None:
        row = {"key": j.key, "setup": setup, **j.run()}
        if results is not None:
          results.append(row)
        bar.update(1)
      rows.append(row)
  if resumed:
    log.info("resumed: %d of %d rows were already in %s", resumed, len(jobs), out)
  return rows, resumed


def shares(rows: Iterable[dict[str, Any]], group: Sequence[str], scores: Sequence[str] | None = None,
           methods: Sequence[str] = ()) -> list[dict[str, Any]]:
  """Share correct with a Wilson 95% interval per method and `group` fields.

  Each row holds {"results": {method: {"correct": 0/1 or {score: 0/1}}}}; `scores` names the entries of a
  dict-valued "correct" (None: it is one 0/1 value, reported as "accuracy"). Order: group values as they first
  appear in `rows` (layers ascending, the layer-free reference rows last), then `methods` in the order given.
  """
  groups: dict[tuple, list[Any]] = {}
  seen: dict[str, dict[Any, int]] = {g: {} for g in group}
  for r in rows:
    for g in group:
      seen[g].setdefault(r.get(g), len(seen[g]))
    for method, res in r["results"].items():
      groups.setdefault((method, *(r.get(g) for g in group)), []).append(res["correct"])
  rank = {m: i for i, m in enumerate(methods)}

  def order(k: tuple) -> tuple:
    fields = [(v is None, v or 0) if g == "layers" else (seen[g][v],) for g, v in zip(group, k[1:])]
    return (*fields, rank.get(k[0], len(rank)), k[0])

  out = []
  for k in sorted(groups, key=order):
    vals = groups[k]
    s: dict[str, Any] = {"method": k[0], **dict(zip(group, k[1:])), "n": len(vals)}
    for name in scores or ("accuracy",):
      v = [float(x[name] if scores else x) for x in vals]
      s[name] = float(np.mean(v))
      s[f"{name}_ci95"] = list(confidence_interval(v))
    out.append(s)
  return out


def format_shares(summary: Sequence[dict[str, Any]], group: Sequence[str], scores: Sequence[str]) -> str:
  """The summary as a table: one line per method and group, each score as "share [lo, hi]"."""
  head = [f"{'method':<18}"] + [f"{g:>8}" for g in group] + [f"{s:>19}" for s in scores] + [f"{'n':>5}"]
  lines = [" ".join(head)]
  for s in summary:
    cells = [f"{s['method']:<18}"] + [f"{'-' if s[g] is None else s[g]:>8}" for g in group]
    cells += [f"{s[x]:.2f} [{s[x + '_ci95'][0]:.2f},{s[x + '_ci95'][1]:.2f}]".rjust(19) for x in scores]
    lines.append(" ".join(cells + [f"{s['n']:>5}"]))
  return "\n".join(lines)


# ------------------------------------------------------------------------------------ CLI
def add_common_args(p: argparse.ArgumentParser, example: str, slots: str) -> None:
  """Arguments `spae caption` and `spae vqa` share; `example` is the default template, `slots` its help."""
  p.add_argument("--tokenizer", required=True, help="tokenizer directory, or 'tiny' (untrained built-in)")
  p.add_argument("--lm", default="none", help="gemma:PATH, hf:PATH, gguf:..., openai:URL#model, or 'none' "
                 "(the LLM-free baselines only)")
  _cli.add_lm_server_args(p)
  p.add_argument("--data", default=DEFAULT_QUERIES,
                 help=f"query scenes (default {DEFAULT_QUERIES}: the test split), restricted to --query-classes")
  p.add_argument("--support-data", default=DEFAULT_SUPPORT,
                 help=f"support scenes shown as examples (default {DEFAULT_SUPPORT}: the train split)")
  p.add_argument("--query-classes", choices=QUERY_CLASSES, default="heldout",
                 help="main-object classes of the queries (default heldout: the 39 classes no train scene leads "
                 "with; choose templates with 'train', never on held-out data)")
  p.add_argument("--shots", type=int, nargs="+", default=[5], help="support examples per prompt (K)")
  p.add_argument("--layers", type=int, nargs="+", default=[2], help="top pyramid layers per image (2 = 1+4 tokens)")
  p.add_argument("--episodes", type=int, default=100)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--template-example", default=example, help=f"one support example with {slots} (\\n for a line "
                 "break); the query is this cut before the answer")
  p.add_argument("--template-instruction", default="", help="text before the examples (default none)")
  p.add_argument("--token-mode", choices=("auto", "ids", "text"), default="auto")
  p.add_argument("--max-new", type=int, default=None, help="most LM tokens a free answer may have")
  p.add_argument("--no-oracle", action="store_true", help="skip the oracle (attribute words) rows")
  p.add_argument("--no-baselines", action="store_true", help="skip the LLM-free baselines")
  _cli.add_output_args(p)


def check_args(args: argparse.Namespace) -> None:
  """The shared arguments' cheap checks, naming the flag (run before anything is loaded)."""
  check_output_file(args.out)
  if args.summary:
    check_output_file(args.summary)
  for flag in ("shots", "layers"):
    if min(getattr(args, flag)) < 1:
      raise SpaeInputError(f"--{flag} must be >= 1, got {getattr(args, flag)}.")
  if args.episodes < 1:
    raise SpaeInputError(f"--episodes must be >= 1, got {args.episodes}.")
  if args.max_new is not None and args.max_new < 1:
    raise SpaeInputError(f"--max-new must be >= 1, got {args.max_new}.")


def open_inputs(args: argparse.Namespace) -> tuple[Any, ScenePools, Any]:
  """(tokenizer, pools, LM or None) from the shared arguments."""
  from spae import data

  tokenizer = _cli.load_tokenizer(args.tokenizer)
  pools = ScenePools(data.make_source(args.data), data.make_source(args.support_data), args.query_classes)
  lm = _cli.load_lm(args.lm, timeout=args.lm_timeout, attempts=args.lm_attempts)
  return tokenizer, pools, lm


def write_summary(args: argparse.Namespace, res: dict[str, Any], config: Any) -> str:
  path = args.summary or str(os.path.splitext(args.out)[0]) + ".summary.json"
  write_json_atomic(path, {k: v for k, v in res.items() if k != "rows"} | {
      "config": {**dataclasses.asdict(config), "lm": args.lm, "data": args.data, "support_data": args.support_data,
                 "tokenizer": args.tokenizer}})
  return path
