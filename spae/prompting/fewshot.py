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

import dataclasses
import hashlib
import json
import logging
import os
from typing import Any, Hashable, Mapping, Sequence

import numpy as np
from tqdm.auto import tqdm

from spae._io import SpaeInputError
from spae._tokenizer import Tokenizer
from spae.data import LabelledSource
from spae.lm import LanguageModel
from spae.prompting._episodes import (Episode, normalize_label, repeated_support, sample_episodes,
                                      sample_nested_episodes, scene_attributes)
from spae.prompting._frozen import frozen_induction
from spae.prompting._jsonl import JsonlLog
from spae.prompting._probes import jaccard_probe, ridge_probe
from spae.prompting._prompt import PromptTemplate
from spae.prompting._render import Segment, Text, fill, readable, render
from spae.prompting._scoring import LabelIds, calibrated_scores, score_candidates
from spae.prompting._scene_tasks import describe, oracle_words
from spae.prompting._stats import confidence_interval, format_table, summarize
from spae.prompting._tokencache import TokenCache
from spae.prompting._tokenmap import TokenMap

log = logging.getLogger(__name__)

__all__ = ["FewShotConfig", "TokenCache", "build_prompt", "calibrated_scores", "classify_query",
           "confidence_interval", "episode_template", "evaluate_fewshot", "format_table", "sampled_episodes",
           "score_candidates", "summarize", "sweep_fewshot"]


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
    oracle: also run the LM on the images' true attribute words in place of their tokens (generated scenes).
    nested: sample the episodes of all `shots` nested (`sample_nested_episodes`: same classes and query, the
      smaller support a prefix of the larger) and run each episode's shot counts back to back, so the LM's prefix
      cache computes only the added support.
    calibrate: content-free inputs (e.g. ("N/A",)) for contextual calibration in 'score' mode (Zhao et al. 2021,
      `calibrated_scores`): each query's label scores are divided by those the same prompt gets with a
      content-free input in the query's place, which removes the LM's prior over the labels in that context
      (majority and recency bias). The uncalibrated answers are kept as methods 'lm_raw' / 'oracle_raw'.
      Empty: off.
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
  oracle: bool = False
  nested: bool = False
  calibrate: tuple[str, ...] = ()

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
    if self.calibrate and (self.mode != "score" or self.length_norm):
      raise SpaeInputError("calibration divides the labels' probabilities in 'score' mode; use mode 'score' "
                           "without length_norm, or drop calibrate.")
    self.template.validate()


# ------------------------------------------------------------------------------------ scoring
def classify_query(lm: LanguageModel, prefix: Sequence[int], label_ids: LabelIds, config: FewShotConfig
                   ) -> tuple[int | None, str, list[float] | None]:
  """Asks the LM for the query's label. -> (label index or None, raw prediction text, scores or None).

  Score mode ranks log p(answer | prompt); generate mode decodes greedily (constrained to the labels, or free)
  until a stop id (what ends a label, or EOS), and matches the text after `normalize_label`.
  """
  labels = label_ids.labels
  if config.mode == "score":
    scored = [list(a.ids) for a in label_ids.answers]
    return _pick(score_candidates(lm, prefix, scored, prefix_cache=config.prefix_cache), label_ids, config)
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


def _pick(scores: np.ndarray, label_ids: LabelIds, config: FewShotConfig) -> tuple[int, str, list[float]]:
  """Score mode's answer from the answers' summed log-probabilities [C] (mean per token with length_norm)."""
  scores = np.asarray(scores, np.float64)
  if config.length_norm:
    scores = scores / np.asarray([len(a.ids) for a in label_ids.answers], np.float64)
  k = int(np.argmax(scores))
  return k, label_ids.labels[k], [float(s) for s in scores]


def episode_template(episode: Episode, config: FewShotConfig) -> PromptTemplate:
  """The layout an episode is prompted with: the config's template, or, for an episode with captions (Frozen's
  files), the published Frozen text: induction "Answer with dax or blicket.", each support image followed by its
  caption, the query image by the question; the label is scored as " <label><ending>\n"."""
  if not episode.captions:
    return config.template
  return PromptTemplate(instruction=frozen_induction(episode.labels),
                        example=f"{{tokens}} {episode.question} {{label}}{episode.ending}\n")


def build_prompt(episode: Episode, support: Sequence[tuple[int, Hashable]], query_key: Hashable,
                 images: Mapping[Hashable, Sequence[int] | str], label_ids: LabelIds, config: FewShotConfig
                 ) -> list[Segment]:
  """Prompt segments: [induction] support examples, then the query (`episode_template`).

  `images`: per image key, its codebook ids, or a text (the oracle's words) shown in their place; `label_ids`:
  the episode's answers, spliced into the support examples.
  """
  t = episode_template(episode, config)
  segs: list[Segment] = t.instruction_segments(episode.labels) if config.induction else []
  prefixes = episode.caption_prefixes()
  for c, key in support:
    if prefixes:  # "<image> This is a" + the answer " dax.\n": the caption verbatim, the label as it is scored
      segs += [describe(images[key]), Text(" " + prefixes[key]), label_ids.answers[c]]
    else:
      segs += fill(t.query, {"{tokens}": describe(images[key])}) + [label_ids.answers[c]]
  return segs + fill(t.query, {"{tokens}": describe(images[query_key])})


# ------------------------------------------------------------------------------------ the evaluation
def _setup_id(config: FewShotConfig, lm_name: str, tokenizer: Tokenizer, token_mode: str, probe: list[int]) -> str:
  """Hash of everything that changes an episode's outcome besides (episode, layers, repeats). `probe`: the
  tokens of one image (the vocabulary's fingerprint does not change when a tokenizer is retrained)."""
  d = {"mode": config.mode if lm_name != "none" else "none", "constrained": config.constrained,
       "induction": config.induction, "names": config.names, "template": dataclasses.asdict(config.template),
       "token_mode": token_mode, "length_norm": config.length_norm, "lm": lm_name,
       "vocab": tokenizer.vocabulary.fingerprint(), "probes": config.probes, "ridge_l2": config.ridge_l2,
       "probe": probe}
  if config.nested:  # other episodes; left out otherwise so that earlier results files still resume
    d["nested"] = True
  if config.calibrate:  # other answers; likewise left out when off
    d["calibrate"] = list(config.calibrate)
  return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def evaluate_fewshot(config: FewShotConfig, tokenizer: Tokenizer, lm: LanguageModel | None, *,
                     source: LabelledSource | None = None, episodes: Sequence[Episode] | None = None,
                     out: str | os.PathLike | None = None, lm_name: str | None = None,
                     progress: bool = True, cache: TokenCache | None = None) -> dict[str, Any]:
  """Runs the few-shot evaluation; returns {"summary": [...], "rows": [...], "setup": id, ...}.

  Every (ways, shots) x layers x repeats cell runs on the same episodes; each image is encoded once for the whole
  run, and with `config.oracle` the LM also reads the images' true attribute words (one row per episode and
  repeats, `layers` None).

  Args:
    config: what to evaluate.
    tokenizer: the `spae.Tokenizer` (its vocabulary must match the LM for token mode 'ids').
    lm: the language model, or None for the probes only.
    source: labelled images; required (for episode files with image paths use `FileImages(folder)`).
    episodes: fixed episodes (e.g. `read_episodes(file)`, `read_frozen(folder, ...)`); otherwise they are
      sampled from `source`.
    out: per-episode JSONL; rows already there for the same setup are skipped (resume).
    lm_name: identifies the LM in the setup hash (default: its class name).
    cache: a `TokenCache` of this tokenizer and source to share across calls (each image is encoded once).
  """
  res = sweep_fewshot([config], tokenizer, lm, source=source, episodes=episodes, out=out, lm_name=lm_name,
                      progress=progress, cache=cache)
  return res | {"setup": res["setup"][0]}


def sweep_fewshot(configs: Sequence[FewShotConfig], tokenizer: Tokenizer, lm: LanguageModel | None, *,
                  source: LabelledSource | None = None, episodes: Sequence[Episode] | None = None,
                  out: str | os.PathLike | None = None, lm_name: str | None = None,
                  progress: bool = True, cache: TokenCache | None = None) -> dict[str, Any]:
  """`evaluate_fewshot` over several configs (e.g. names x induction) as one run: one results file, every image
  encoded once, one progress bar with its ETA over all episodes; "setup" is the list of the configs' ids."""
  if source is None:
    raise SpaeInputError("pass a labelled image source to sample episodes from and load their images "
                         "(for episode files with image paths use FileImages(folder)).")
  lm_name = lm_name or ("none" if lm is None else type(lm).__name__)
  cache = cache or TokenCache(tokenizer, source)
  tmaps: dict[str, TokenMap] = {}
  oracles: dict[int, Any] = {}
  jobs, setups = [], []
  for n, config in enumerate(configs):
    _check(config, tokenizer, lm)
    if lm is not None and config.token_mode not in tmaps:
      tmaps[config.token_mode] = TokenMap(tokenizer.vocabulary, lm.tokenizer, config.token_mode)
    tmap = tmaps.get(config.token_mode)
    setup, cfg_jobs = _plan(config, tokenizer, lm_name, tmap, source, episodes, cache)
    setups.append(setup)
    jobs += [(n, *j) for j in cfg_jobs]
    if config.oracle:
      oracles[n] = _oracle_words(source, cfg_jobs[0][2])
  # Episode index outermost, so every cell fills at the same pace (the ETA holds from the start and an
  # interrupted sweep leaves balanced cells); an episode's shot counts ascending last (nested episodes' prompts
  # then extend the previous one, which the LM's prefix cache reuses). The order changes no result.
  jobs.sort(key=lambda j: (j[1][0], j[0], j[1][1:]))
  results = JsonlLog(out) if out is not None else None
  done = {r.get("key"): r for r in results.rows} if results is not None else {}
  # Encode every image the remaining token rows read, once for the whole sweep, in full batches.
  todo = [(ep, layers) for _, _, key, ep, layers, _ in jobs if key not in done and layers is not None]
  cache.encode_all((k for ep, _ in todo for k in ep.image_keys()), progress,
                   layers=max((layers for _, layers in todo), default=None))
  words = tokenizer.vocabulary.words(np.arange(len(tokenizer.vocabulary)))
  rows: list[dict[str, Any]] = []
  resumed = sum(1 for j in jobs if j[2] in done)
  with tqdm(total=len(jobs), initial=resumed, desc="few-shot episodes", unit="ep", disable=not progress) as bar:
    pending: list[tuple[dict[str, Any], list[_Query]]] = []

    def finish() -> None:  # the LM answers the pending rows' queries; the rows are then written, in order
      _answer([q for _, qs in pending for q in qs], lm)
      for row, _ in pending:
        if results is not None:
          results.append(row)
      bar.update(len(pending))
      pending.clear()

    for n, _, key, ep, layers, rep in jobs:
      row = done.get(key)
      if row is None:
        config, tmap = configs[n], tmaps.get(configs[n].token_mode)
        if layers is None:
          row, queries = _run_oracle(ep, rep, config, lm, tmap, {k: oracles[n](k) for k in ep.image_keys()})
        else:
          row, queries = _run_episode(ep, layers, rep, config, lm, tmap, cache.episode(ep, layers), words)
        row.update(key=key, setup=setups[n], lm=lm_name, names=config.names if episodes is None else None)
        pending.append((row, queries))
        if len(pending) == _BATCH:
          finish()
      rows.append(row)
    finish()
  if resumed:
    log.info("resumed: %d of %d episode settings were already in %s", resumed, len(jobs), out)
  modes = sorted({t.mode for t in tmaps.values()}) or ["none"]
  return {"setup": setups, "token_mode": modes[0] if len(modes) == 1 else modes, "lm": lm_name,
          "resumed": resumed, "summary": summarize(rows), "rows": rows}


def _check(config: FewShotConfig, tokenizer: Tokenizer, lm: LanguageModel | None) -> None:
  config.validate()
  if lm is None and not config.probes:
    raise SpaeInputError("nothing to evaluate: no LM and probes disabled.")
  if lm is None and config.oracle:
    raise SpaeInputError("the oracle row asks an LM to read the images' attribute words; pass --lm.")
  if lm is None and config.calibrate:
    raise SpaeInputError("calibration rescales an LM's label scores; pass --lm, or drop --calibrate.")
  max_layers = tokenizer.config.pyramid.num_layers
  if max(config.layers) > max_layers:
    raise SpaeInputError(f"layers {max(config.layers)} exceeds this tokenizer's {max_layers} pyramid layers.")


def sampled_episodes(config: FewShotConfig, source: LabelledSource) -> list[list[Episode]]:
  """The episodes a config samples, one list per (ways, shots): `sample_nested_episodes` when `config.nested`,
  else `sample_episodes` per cell."""
  if config.nested:
    return [eps for w in config.ways for eps in sample_nested_episodes(
        source, w, config.shots, config.episodes, seed=config.seed, queries=config.queries,
        names=config.names).values()]
  return [sample_episodes(source, w, s, config.episodes, seed=config.seed, queries=config.queries,
                          names=config.names) for w in config.ways for s in config.shots]


def _plan(config: FewShotConfig, tokenizer: Tokenizer, lm_name: str, tmap: TokenMap | None,
          source: LabelledSource, episodes: Sequence[Episode] | None, cache: TokenCache
          ) -> tuple[str, list[tuple[tuple, str, Episode, int | None, int]]]:
  """(setup id, jobs): one job per episode x layers x repeats, plus the oracle's per episode x repeats; each job
  is (order key, result key, episode, layers or None for the oracle, repeats)."""
  episode_sets = [list(episodes)] if episodes is not None else sampled_episodes(config, source)
  if not any(episode_sets):
    raise SpaeInputError("no episodes to evaluate.")
  token_mode = tmap.mode if tmap else "none"
  setup = _setup_id(config, lm_name, tokenizer, token_mode, cache.all_ids(episode_sets[0][0].query[0][1]))
  jobs = []
  for s, eps in enumerate(episode_sets):
    for i, ep in enumerate(eps):
      for layers in [*config.layers, None] if config.oracle else config.layers:
        name = f"L{layers}" if layers is not None else "oracle"
        for rep in config.repeats:
          # (episode index, then the same episode's cells; nested: its shot counts ascending, last)
          order = (i, ep.ways, 0 if config.nested else s, layers is None, layers or 0, rep, ep.shots)
          jobs.append((order, f"{setup}/{name}/R{rep}/{ep.id}", ep, layers, rep))
  return setup, jobs


def _oracle_words(source: LabelledSource, probe: Episode):
  """key -> the image's true attribute words (`oracle_words`); a one-line error if the source has none."""
  if scene_attributes(source, probe.image_keys()[0]) is None:
    raise SpaeInputError(f"the oracle needs images whose attributes are known (generated scenes, e.g. --data "
                         f"scenes:test:4000 --classes scenes-heldout); {getattr(source, 'name', source)!r} has none.")
  return lambda key: oracle_words(scene_attributes(source, key))


# Jobs whose queries the LM answers together: in score mode one `score_many` call, so the LM's output head (a read
# of its whole V x d table) runs once for all of them. An interrupted run loses at most this many rows.
_BATCH = 16


@dataclasses.dataclass
class _Query:
  """A query of an episode row, waiting for the LM's answer; `entry` (in the row) receives it."""

  entry: dict[str, Any]
  prompt: Any  # the rendered prompt: ids and text
  label_ids: LabelIds
  truth: int
  field: str  # "lm_correct" or "oracle_correct"
  config: FewShotConfig
  content_free: tuple[Any, ...] = ()  # the prompt again with each `config.calibrate` text for the query's tokens


def _query(ep: Episode, support: Sequence[tuple[int, Hashable]], qkey: Hashable, truth: int,
           images: Mapping[Hashable, Sequence[int] | str], label_ids: LabelIds, config: FewShotConfig,
           lm: LanguageModel, tmap: TokenMap, entry: dict[str, Any], field: str) -> _Query:
  """The prompt asking the LM for one query's label (a one-line error if it exceeds the LM's context)."""
  prompt = render(build_prompt(ep, support, qkey, images, label_ids, config), tmap)
  content_free = tuple(render(build_prompt(ep, support, qkey, {**images, qkey: text}, label_ids, config), tmap)
                       for text in config.calibrate)
  longest = max(len(p.ids) for p in (prompt, *content_free))
  if longest + label_ids.longest > lm.max_length:
    raise SpaeInputError(f"episode {ep.id}: the prompt is {longest} LM tokens, over the LM's "
                         f"max_length {lm.max_length}; use fewer --layers, --shots or --repeats.")
  return _Query(entry, prompt, label_ids, truth, field, config, content_free)


def _answer(queries: Sequence[_Query], lm: LanguageModel | None) -> None:
  """The LM labels the queries, in order; each entry gets {field: correct, "prompt", "prediction",
  "prompt_tokens"[, "scores"]}. Score-mode queries with the prefix cache are scored in one `score_many` call."""
  def batched(q: _Query) -> bool:
    return q.config.mode == "score" and q.config.prefix_cache

  # Each query's content-free prompts follow it, so the LM's prefix cache computes only their last example.
  requests = [(p.ids, [list(a.ids) for a in q.label_ids.answers]) for q in queries if batched(q)
              for p in (q.prompt, *q.content_free)]
  scores = iter(lm.score_many(requests) if requests else ())  # in the order of the batched queries
  for q in queries:
    if batched(q):
      k, text, s = _pick(next(scores), q.label_ids, q.config)
      cf = [next(scores) for _ in q.content_free]
    else:
      k, text, s = classify_query(lm, q.prompt.ids, q.label_ids, q.config)
      answers = [list(a.ids) for a in q.label_ids.answers]
      cf = [score_candidates(lm, p.ids, answers, prefix_cache=False) for p in q.content_free]
    q.entry.update({q.field: int(k == q.truth), "prompt": q.prompt.text, "prediction": text,
                    "prompt_tokens": len(q.prompt.ids)})
    if s is not None:
      q.entry["scores"] = s
    if cf:  # the calibrated answer is the row's; the raw one stays as "<field>_raw"
      c = calibrated_scores(s, cf)
      kc = int(np.argmax(c))
      q.entry.update({q.field.replace("_correct", "_raw_correct"): int(k == q.truth), "raw_prediction": text,
                      q.field: int(kc == q.truth), "prediction": q.label_ids.labels[kc],
                      "content_free_scores": [[float(x) for x in row] for row in cf]})


def _row(ep: Episode, layers: int | None, rep: int, config: FewShotConfig, lm: LanguageModel | None,
         queries: list[dict[str, Any]]) -> dict[str, Any]:
  return {"episode": ep.id, "ways": ep.ways, "shots": ep.shots, "repeats": rep, "layers": layers,
          "induction": config.induction, "mode": config.mode if lm is not None else "none",
          "classes": list(ep.classes), "labels": list(ep.labels), "queries": queries}


def _run_episode(ep: Episode, layers: int, rep: int, config: FewShotConfig, lm: LanguageModel | None,
                 tmap: TokenMap | None, image_tokens: Mapping[Hashable, list[int]], words: Sequence[str]
                 ) -> tuple[dict[str, Any], list[_Query]]:
  """The episode's row (probes filled in) and its queries for the LM (`_answer` completes the row)."""
  support = repeated_support(ep, rep, config.seed)
  s_tokens = [image_tokens[k] for _, k in ep.support]
  s_classes = [c for c, _ in ep.support]
  ridge = (ridge_probe(s_tokens, s_classes, [image_tokens[k] for _, k in ep.query], ep.ways, config.ridge_l2)
           if config.probes else None)
  template = episode_template(ep, config)
  label_ids = LabelIds.of(tmap, ep.labels, template) if lm is not None else LabelIds.text_only(ep.labels, template)
  queries, asked = [], []
  for qi, (qc, qkey) in enumerate(ep.query):
    q: dict[str, Any] = {"truth": ep.labels[qc], "truth_class": ep.classes[qc]}
    if config.probes:
      j = jaccard_probe(s_tokens, s_classes, image_tokens[qkey])
      q.update(jaccard=ep.labels[j], jaccard_correct=int(j == qc), ridge=ep.labels[int(ridge[qi])],
               ridge_correct=int(ridge[qi] == qc))
    if lm is None:
      q["prompt"] = readable(build_prompt(ep, support, qkey, image_tokens, label_ids, config), words)
    else:
      asked.append(_query(ep, support, qkey, qc, image_tokens, label_ids, config, lm, tmap, q, "lm_correct"))
    queries.append(q)
  return _row(ep, layers, rep, config, lm, queries), asked


def _run_oracle(ep: Episode, rep: int, config: FewShotConfig, lm: LanguageModel, tmap: TokenMap,
                descriptions: Mapping[Hashable, str]) -> tuple[dict[str, Any], list[_Query]]:
  """The oracle row: the same LM, episode and template with each image's attribute words for its tokens (and
  its queries, as `_run_episode`)."""
  support = repeated_support(ep, rep, config.seed)
  label_ids = LabelIds.of(tmap, ep.labels, episode_template(ep, config))
  queries, asked = [], []
  for qc, qkey in ep.query:
    q = {"truth": ep.labels[qc], "truth_class": ep.classes[qc]}
    asked.append(_query(ep, support, qkey, qc, descriptions, label_ids, config, lm, tmap, q, "oracle_correct"))
    queries.append(q)
  return _row(ep, None, rep, config, lm, queries), asked
