"""N-way K-shot image classification by in-context prompting of a frozen LLM with SPAE tokens.

Protocol (mini-ImageNet style, as in Frozen, LQAE and SPAE): each episode has N classes with K support images
each and a query image. Every support image becomes the words / LM ids of its top `layers` pyramid layers
followed by its label (`PromptTemplate`); the support set may be repeated (inner-shot repeats) and preceded by a
task-induction line naming the labels. The LLM then labels the query:

  mode 'score'     log-likelihood of every candidate label after the prompt (one `LanguageModel.score` call, the
                   prompt prefix is computed once and shared by the candidates); the best label wins.
  mode 'generate'  greedy decoding, constrained to the candidate labels (a trie) or free; exact match after
                   `normalize_label`.

Two LLM-free probes run on the same episodes and tokens: the nearest support example by token-set Jaccard
overlap, and a closed-form ridge regression on bags of tokens.

Results: one JSONL row per episode and setting (prompt, prediction, truth, probe predictions), appended line by
line so an interrupted run resumes where it stopped, and a summary with accuracy and a 95% confidence interval
per (ways, shots, repeats, layers) and method.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from spae._io import SpaeInputError, write_json_atomic
from spae._tokenizer import Tokenizer, TokenPyramid
from spae.data import LabelledSource
from spae.lm import LanguageModel, LogitsModel
from spae.prompting import _cli
from spae.prompting._episodes import (Episode, FileImages, load_image_from, normalize_label, read_episodes,
                                      repeated_support, sample_episodes, write_episodes)
from spae.prompting._jsonl import JsonlLog
from spae.prompting._probes import jaccard_probe, ridge_probe
from spae.prompting._prompt import PromptTemplate
from spae.prompting._render import Answer, Segment, readable, render
from spae.prompting._stats import confidence_interval, format_table, summarize
from spae.prompting._tokenmap import TokenMap

log = logging.getLogger(__name__)

__all__ = ["FewShotConfig", "TokenCache", "add_fewshot_args", "build_prompt", "classify_query",
           "confidence_interval", "evaluate_fewshot", "format_table", "run_fewshot", "score_candidates", "summarize"]


@dataclasses.dataclass(frozen=True)
class FewShotConfig:
  """One few-shot evaluation; the tuple fields are swept (every combination is evaluated).

  Attributes:
    ways, shots: N and K (ignored for episodes read from a file, which fix their own).
    layers: how many top pyramid layers describe each image (1 -> 1 token, 2 -> 1+4, 3 -> 1+4+16, ...).
    repeats: inner-shot repeats of the support set.
    episodes: episodes per (ways, shots) when sampling.
    queries: query images per episode (each is prompted separately with the same support).
    seed: episode sampling seed (episode i depends only on seed, ways, shots, queries and i).
    mode: 'score' (candidate log-likelihoods) or 'generate' (greedy decoding).
    constrained: in 'generate' mode, restrict the output to the candidate labels.
    induction: prepend the task-induction line naming the labels.
    names: 'real' class names or 'nonsense' names (open-ended protocol).
    template: the prompt layout.
    token_mode: how image tokens reach the LM: 'auto', 'ids' (shared vocabulary) or 'text' (words).
    length_norm: in 'score' mode, rank labels by mean rather than summed token log-probability.
    prefix_cache: score through `LanguageModel.score` (shared prefix); False recomputes every candidate's full
      sequence with `LanguageModel.logits` (a check on backends; same numbers).
    probes: also run the LLM-free probes.
    ridge_l2: ridge probe regularisation.
  """

  ways: tuple[int, ...] = (5,)
  shots: tuple[int, ...] = (1,)
  layers: tuple[int, ...] = (2,)
  repeats: tuple[int, ...] = (1,)
  episodes: int = 100
  queries: int = 1
  seed: int = 0
  mode: str = "score"
  constrained: bool = True
  induction: bool = False
  names: str = "real"
  template: PromptTemplate = PromptTemplate()
  token_mode: str = "auto"
  length_norm: bool = False
  prefix_cache: bool = True
  probes: bool = True
  ridge_l2: float = 0.1

  def validate(self) -> None:
    if self.mode not in ("score", "generate"):
      raise SpaeInputError(f"mode must be 'score' or 'generate', got {self.mode!r}.")
    if self.names not in ("real", "nonsense"):
      raise SpaeInputError(f"names must be 'real' or 'nonsense', got {self.names!r}.")
    for name in ("ways", "shots", "layers", "repeats"):
      vals = getattr(self, name)
      if not vals or min(vals) < 1:
        raise SpaeInputError(f"{name} must be one or more integers >= 1, got {vals}.")
    if self.episodes < 1 or self.queries < 1:
      raise SpaeInputError("episodes and queries must be >= 1.")
    self.template.validate()


# ------------------------------------------------------------------------------------ tokens
class TokenCache:
  """Codebook ids per image key, encoding each distinct image once (in batches)."""

  def __init__(self, tokenizer: Tokenizer, source: LabelledSource, batch_size: int = 16):
    self.tokenizer, self.source, self.batch_size = tokenizer, source, batch_size
    self._pyr: dict[Hashable, TokenPyramid] = {}

  def prefetch(self, keys: Iterable[Hashable]) -> None:
    todo = list(dict.fromkeys(k for k in keys if k not in self._pyr))
    for i in range(0, len(todo), self.batch_size):
      chunk = todo[i:i + self.batch_size]
      imgs = [self.tokenizer.preprocess(load_image_from(self.source, k))[0][0] for k in chunk]
      # pad to a fixed batch so the jitted encoder compiles once, whatever the number of new images
      imgs += [imgs[0]] * (self.batch_size - len(imgs))
      pyr = self.tokenizer.encode(np.stack(imgs))
      for j, k in enumerate(chunk):
        self._pyr[k] = pyr[j]

  def ids(self, key: Hashable, layers: int) -> list[int]:
    if key not in self._pyr:
      self.prefetch([key])
    return [int(t) for t in self._pyr[key].codebook_ids(layers)[0]]

  def episode(self, episode: Episode, layers: int) -> dict[Hashable, list[int]]:
    """Codebook ids of every image of an episode (support and queries), computed once for all its prompts."""
    self.prefetch(episode.image_keys())
    return {k: self.ids(k, layers) for k in episode.image_keys()}


# ------------------------------------------------------------------------------------ scoring
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
    logits = np.asarray(lm.logits(np.asarray([seq], np.int32)), np.float64)[0]
    logits = logits - logits.max(axis=-1, keepdims=True)
    logp = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    n = len(prefix)
    out.append(sum(logp[n + j - 1, t] for j, t in enumerate(c)))
  return np.asarray(out, np.float64)


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


def classify_query(lm: LanguageModel, prefix: Sequence[int], label_ids: LabelIds, config: FewShotConfig
                   ) -> tuple[int | None, str, list[float] | None]:
  """Asks the LM for the query's label. -> (label index or None, raw prediction text, scores or None).

  Score mode ranks log p(answer | prompt); generate mode decodes greedily (constrained to the labels, or free)
  until a stop id (what ends a label, or EOS), and matches the text after `normalize_label`.
  """
  labels = label_ids.labels
  if config.mode == "score":
    scored = [list(a.ids) for a in label_ids.answers]
    scores = score_candidates(lm, prefix, scored, prefix_cache=config.prefix_cache)
    if config.length_norm:
      scores = scores / np.asarray([len(c) for c in scored], np.float64)
    k = int(np.argmax(scores))
    return k, labels[k], [float(s) for s in scores]
  cands = [list(c) for c in label_ids.candidates]
  max_new = max(len(c) for c in cands) + (0 if config.constrained else 8)
  new = lm.generate(list(prefix), max_new, candidates=cands if config.constrained else None,
                    stop=list(label_ids.stop) or None)
  new = [int(t) for t in new]
  for k, c in enumerate(cands):
    if new == c:
      return k, labels[k], None
  text = lm.tokenizer.decode(new)
  norm = normalize_label(text)
  for k, l in enumerate(labels):
    if norm == normalize_label(l):
      return k, text, None
  return None, text, None


def build_prompt(episode: Episode, support: Sequence[tuple[int, Hashable]], query_key: Hashable,
                 image_tokens: Mapping[Hashable, Sequence[int]], label_ids: LabelIds, config: FewShotConfig
                 ) -> list[Segment]:
  """Prompt segments: [induction] support examples, then the query. `image_tokens`: codebook ids per image key;
  `label_ids`: the episode's answers, spliced into the support examples."""
  t = config.template
  segs: list[Segment] = t.instruction_segments(episode.labels) if config.induction else []
  for c, key in support:
    segs += t.example_segments(image_tokens[key], label_ids.answers[c])
  segs += t.query_segments(image_tokens[query_key])
  return segs


# ------------------------------------------------------------------------------------ the evaluation
def _setup_id(config: FewShotConfig, lm_name: str, tokenizer: Tokenizer, token_mode: str) -> str:
  """Hash of everything that changes an episode's outcome besides (episode, layers, repeats)."""
  d = {"mode": config.mode if lm_name != "none" else "none", "constrained": config.constrained,
       "induction": config.induction, "names": config.names, "template": dataclasses.asdict(config.template),
       "token_mode": token_mode, "length_norm": config.length_norm, "lm": lm_name,
       "vocab": tokenizer.vocabulary.fingerprint(), "probes": config.probes, "ridge_l2": config.ridge_l2}
  return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def evaluate_fewshot(config: FewShotConfig, tokenizer: Tokenizer, lm: LanguageModel | None, *,
                     source: LabelledSource | None = None, episodes: Sequence[Episode] | None = None,
                     out: str | os.PathLike | None = None, lm_name: str | None = None,
                     progress: bool = True) -> dict[str, Any]:
  """Runs the few-shot evaluation; returns {"summary": [...], "rows": [...], "setup": id, ...}.

  Args:
    config: what to evaluate.
    tokenizer: the `spae.Tokenizer` (its vocabulary must match the LM for token mode 'ids').
    lm: the language model, or None for the probes only.
    source: labelled images; required (for episode files with image paths use `FileImages(folder)`).
    episodes: fixed episodes (e.g. `read_episodes(file)`); otherwise they are sampled from `source`.
    out: per-episode JSONL; rows already there for the same setup are skipped (resume).
    lm_name: identifies the LM in the setup hash (default: its class name).
  """
  config.validate()
  if source is None:
    raise SpaeInputError("pass a labelled image source to sample episodes from and load their images "
                         "(for episode files with image paths use FileImages(folder)).")
  if lm is None and not config.probes:
    raise SpaeInputError("nothing to evaluate: no LM and probes disabled.")
  lm_name = lm_name or ("none" if lm is None else type(lm).__name__)
  tmap = TokenMap(tokenizer.vocabulary, lm.tokenizer, config.token_mode) if lm is not None else None
  token_mode = tmap.mode if tmap else "none"
  setup = _setup_id(config, lm_name, tokenizer, token_mode)
  max_layers = tokenizer.config.pyramid.num_layers
  if max(config.layers) > max_layers:
    raise SpaeInputError(f"layers {max(config.layers)} exceeds this tokenizer's {max_layers} pyramid layers.")

  if episodes is not None:
    episode_sets = [list(episodes)]
  else:
    episode_sets = [sample_episodes(source, w, s, config.episodes, seed=config.seed, queries=config.queries,
                                    names=config.names) for w in config.ways for s in config.shots]
  plan = [(eps, layers, rep) for eps in episode_sets for layers in config.layers for rep in config.repeats]
  total = sum(len(eps) for eps, _, _ in plan)
  results = JsonlLog(out) if out is not None else None
  cache = TokenCache(tokenizer, source)
  words = tokenizer.vocabulary.words(np.arange(len(tokenizer.vocabulary)))
  rows: list[dict[str, Any]] = []
  done = 0
  with tqdm(total=total, desc="few-shot episodes", unit="ep", disable=not progress) as bar:
    for eps, layers, rep in plan:
      for ep in eps:
        key = f"{setup}/L{layers}/R{rep}/{ep.id}"
        if results is not None and key in results.keys:
          rows.append(next(r for r in results.rows if r.get("key") == key))
          done += 1
        else:
          row = _run_episode(ep, layers, rep, config, lm, tmap, cache.episode(ep, layers), words)
          row.update(key=key, setup=setup, lm=lm_name)
          if results is not None:
            results.append(row)
          rows.append(row)
        bar.update(1)
  if done:
    log.info("resumed: %d of %d episode settings were already in %s", done, total, out)
  return {"setup": setup, "token_mode": token_mode, "lm": lm_name, "resumed": done, "summary": summarize(rows),
          "rows": rows}


def _run_episode(ep: Episode, layers: int, rep: int, config: FewShotConfig, lm: LanguageModel | None,
                 tmap: TokenMap | None, image_tokens: Mapping[Hashable, list[int]], words: Sequence[str]
                 ) -> dict[str, Any]:
  support = repeated_support(ep, rep, config.seed)
  s_tokens = [image_tokens[k] for _, k in ep.support]
  s_classes = [c for c, _ in ep.support]
  ridge = (ridge_probe(s_tokens, s_classes, [image_tokens[k] for _, k in ep.query], ep.ways, config.ridge_l2)
           if config.probes else None)
  label_ids = (LabelIds.of(tmap, ep.labels, config.template) if lm is not None else
               LabelIds.text_only(ep.labels, config.template))
  queries = []
  for qi, (qc, qkey) in enumerate(ep.query):
    segs = build_prompt(ep, support, qkey, image_tokens, label_ids, config)
    q: dict[str, Any] = {"truth": ep.labels[qc], "truth_class": ep.classes[qc]}
    if config.probes:
      j = jaccard_probe(s_tokens, s_classes, image_tokens[qkey])
      q.update(jaccard=ep.labels[j], jaccard_correct=int(j == qc), ridge=ep.labels[int(ridge[qi])],
               ridge_correct=int(ridge[qi] == qc))
    if lm is None:
      q["prompt"] = readable(segs, words)
    else:
      prompt = render(segs, tmap)
      q["prompt"] = prompt.text
      if len(prompt.ids) + label_ids.longest > lm.max_length:
        raise SpaeInputError(f"episode {ep.id}: the prompt is {len(prompt.ids)} LM tokens, over the LM's "
                             f"max_length {lm.max_length}; use fewer --layers, --shots or --repeats.")
      k, text, scores = classify_query(lm, prompt.ids, label_ids, config)
      q.update(prediction=text, lm_correct=int(k == qc), prompt_tokens=len(prompt.ids))
      if scores is not None:
        q["scores"] = scores
    queries.append(q)
  return {"episode": ep.id, "ways": ep.ways, "shots": ep.shots, "repeats": rep, "layers": layers,
          "mode": config.mode if lm is not None else "none", "classes": list(ep.classes), "labels": list(ep.labels),
          "queries": queries}


# ------------------------------------------------------------------------------------ CLI
def add_fewshot_args(p: argparse.ArgumentParser) -> None:
  """Arguments of `spae fewshot`."""
  p.add_argument("--tokenizer", required=True, help="tokenizer directory, or 'tiny' (untrained built-in)")
  p.add_argument("--lm", default="none",
                 help="gemma:PATH, hf:PATH, openai:URL#model, or 'none' (LLM-free probes only)")
  _cli.add_lm_server_args(p)
  p.add_argument("--data", default=None, help="labelled images: an image folder with class subfolders, a tfds "
                 "name, or 'shapes...' (see spae.data.make_source)")
  p.add_argument("--classes", default=None,
                 help="comma-separated class names to keep, or 'shapes-heldout' / 'shapes-train' for the shapes split")
  p.add_argument("--episodes-file", default=None,
                 help="replay episodes from this JSONL/CSV file (format: spae.prompting.read_episodes)")
  p.add_argument("--save-episodes", default=None, help="also write the sampled episodes to this JSONL file")
  p.add_argument("--ways", type=int, nargs="+", default=[5])
  p.add_argument("--shots", type=int, nargs="+", default=[1])
  p.add_argument("--layers", type=int, nargs="+", default=[2], help="top pyramid layers per image (2 = 1+4 tokens)")
  p.add_argument("--repeats", type=int, nargs="+", default=[1], help="inner-shot repeats of the support set")
  p.add_argument("--episodes", type=int, default=100)
  p.add_argument("--queries", type=int, default=1, help="query images per episode")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--mode", choices=("score", "generate"), default="score")
  p.add_argument("--free", action="store_true", help="generate mode: do not constrain the output to the labels")
  p.add_argument("--induction", action="store_true", help="prepend a task-induction line naming the labels")
  p.add_argument("--names", choices=("real", "nonsense"), default="real")
  p.add_argument("--template-example", default=PromptTemplate.example,
                 help="one support example, {tokens} then {label} (\\n for a line break); the query is this cut "
                      "before the label")
  p.add_argument("--template-instruction", default=PromptTemplate.instruction, help="with {labels}")
  p.add_argument("--token-mode", choices=("auto", "ids", "text"), default="auto")
  p.add_argument("--length-norm", action="store_true", help="score labels by mean token log-probability")
  p.add_argument("--no-prefix-cache", action="store_true", help="score every candidate from scratch")
  p.add_argument("--no-probes", action="store_true")
  p.add_argument("--out", required=True, help="per-episode JSONL (resumed if it exists)")
  p.add_argument("--summary", default=None, help="summary JSON (default: OUT with .summary.json)")
  p.add_argument("--no-progress", action="store_true")


def _unescape(s: str) -> str:
  return s.replace("\\n", "\n").replace("\\t", "\t")


def run_fewshot(args: argparse.Namespace) -> int:
  """`spae fewshot`: evaluate, write the JSONL and the summary, print the table."""
  template = PromptTemplate(instruction=_unescape(args.template_instruction), example=_unescape(args.template_example))
  config = FewShotConfig(ways=tuple(args.ways), shots=tuple(args.shots), layers=tuple(args.layers),
                         repeats=tuple(args.repeats), episodes=args.episodes, queries=args.queries, seed=args.seed,
                         mode=args.mode, constrained=not args.free, induction=args.induction, names=args.names,
                         template=template, token_mode=args.token_mode, length_norm=args.length_norm,
                         prefix_cache=not args.no_prefix_cache, probes=not args.no_probes)
  config.validate()
  if args.data is None and args.episodes_file is None:
    raise SpaeInputError("pass --data (labelled images) or --episodes-file.")
  tokenizer = _cli.load_tokenizer(args.tokenizer)
  source = _cli.load_source(args.data, _cli.parse_classes(args.classes))
  episodes = None
  if args.episodes_file:
    episodes = read_episodes(args.episodes_file)
    if source is None:
      source = FileImages(Path(args.episodes_file).parent)
  lm = _cli.load_lm(args.lm, timeout=args.lm_timeout, attempts=args.lm_attempts)
  if lm is None and config.probes is False:
    raise SpaeInputError("--lm none with --no-probes leaves nothing to evaluate.")
  if args.save_episodes and episodes is None:
    eps = [e for w in config.ways for s in config.shots
           for e in sample_episodes(source, w, s, config.episodes, seed=config.seed, queries=config.queries,
                                    names=config.names)]
    write_episodes(args.save_episodes, eps)
  res = evaluate_fewshot(config, tokenizer, lm, source=source, episodes=episodes, out=args.out, lm_name=args.lm,
                         progress=not args.no_progress)
  summary_path = args.summary or str(Path(args.out).with_suffix("")) + ".summary.json"
  write_json_atomic(summary_path, {k: v for k, v in res.items() if k != "rows"} | {
      "config": {**dataclasses.asdict(config), "lm": args.lm, "data": args.data, "tokenizer": args.tokenizer,
                 "episodes_file": args.episodes_file}})
  if res["resumed"]:
    print(f"resumed: {res['resumed']} episode(s) were already in {args.out}")
  print(format_table(res["summary"]))
  print(f"per-episode results: {args.out}\nsummary: {summary_path}")
  return 0
