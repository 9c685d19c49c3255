"""In-context visual question answering: K (image tokens, question -> answer) examples, then the query's question.

Questions are made from the scene attributes, one question type per episode (every example asks it too):

  colour    "What colour is the largest object?"               one of the 12 colour names
  shape     "What shape is the largest object?"                one of the 13 shape names
  size      "Is the largest object small, medium or large?"   small / medium / large
  count     "How many objects are there?"                      one .. four
  position  "Where is the largest object?"                     top left, top, ..., center, ..., bottom right

The prompt (default template):

  Image: <tokens>\\nQuestion: What colour is the largest object?\\nAnswer: blue\\n     (K support scenes)
  Image: <tokens>\\nQuestion: What colour is the largest object?\\nAnswer:

Answers are read two ways: constrained (every candidate answer of the type is scored by the LM, with exactly the
ids it has in the support examples, terminator included; the best wins) and free (greedy decoding until the
newline; exact match after `normalize_label`). In the same run, on the same episodes: the oracle (the same LM
and template with the images' true attribute words in place of the tokens), the majority answer of the support
examples (ties -> the one shown first) and the answer of the support scene whose tokens overlap the query's
most (Jaccard). Accuracy per question type with Wilson 95% intervals; JSONL rows resume after an interruption.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import os
from typing import Any, Sequence

import numpy as np

from spae._io import SpaeInputError
from spae.data import _scenes
from spae.lm import LanguageModel
from spae.prompting import _cli
from spae.prompting import _scene_tasks as st
from spae.prompting._episodes import normalize_label
from spae.prompting._probes import jaccard_probe
from spae.prompting._render import render
from spae.prompting._scoring import LabelIds, score_candidates

__all__ = ["ANSWER_MODES", "QUESTIONS", "QUESTION_TYPES", "VQAConfig", "add_vqa_args", "answer_truth",
           "evaluate_vqa", "majority_answer", "run_vqa"]

QUESTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "colour": ("What colour is the largest object?", _scenes.COLOURS),
    "shape": ("What shape is the largest object?", _scenes.SHAPES),
    "size": ("Is the largest object small, medium or large?", _scenes.SIZES),
    "count": ("How many objects are there?", st.COUNT_WORDS),
    "position": ("Where is the largest object?", st.REGIONS),
}
QUESTION_TYPES = tuple(QUESTIONS)
ANSWER_MODES = ("constrained", "free")
METHODS = ("lm/constrained", "lm/free", "nearest", "oracle/constrained", "oracle/free", "majority")  # table order


def answer_truth(question: str, attrs: dict[str, Any]) -> str:
  """The true answer to a question type about a scene (see `spae.data._scenes.sample_scene`)."""
  if question == "count":
    return st.COUNT_WORDS[attrs["count"] - 1]
  return attrs[{"position": "region"}.get(question, question)]


def majority_answer(answers: Sequence[str]) -> str:
  """The most frequent answer; ties -> the one that appears first."""
  counts = collections.Counter(answers)
  return max(dict.fromkeys(answers), key=lambda a: counts[a])  # max keeps the first of equal counts


@dataclasses.dataclass(frozen=True)
class VQAConfig(st.SceneTaskConfig):
  """An in-context VQA run (see `SceneTaskConfig` for the shared fields).

  Attributes:
    questions: question types to ask (`QUESTION_TYPES`).
    answers: 'constrained' (score the candidate answers) and / or 'free' (greedy decoding).
    example: one support example, `{tokens}`, `{question}`, then `{answer}`; the query is this cut before it.
    max_new: most LM tokens of a free answer.
  """

  questions: tuple[str, ...] = QUESTION_TYPES
  answers: tuple[str, ...] = ANSWER_MODES
  example: str = "Image: {tokens}\nQuestion: {question}\nAnswer: {answer}\n"
  max_new: int = 8

  def template(self, question: str) -> st.PromptTemplate:
    return st.template_of(self.example, self.instruction, "{answer}", {"{question}": QUESTIONS[question][0]})

  def validate(self) -> None:
    super().validate()
    bad = [q for q in self.questions if q not in QUESTIONS]
    if bad or not self.questions:
      raise SpaeInputError(f"unknown question type {bad[0] if bad else None!r}; choose from "
                           f"{', '.join(QUESTION_TYPES)}.")
    bad = [a for a in self.answers if a not in ANSWER_MODES]
    if bad or not self.answers:
      raise SpaeInputError(f"unknown answer mode {bad[0] if bad else None!r}; choose from {', '.join(ANSWER_MODES)}.")
    if self.max_new < 1:
      raise SpaeInputError(f"max_new must be >= 1, got {self.max_new}.")
    self.template(self.questions[0])


# ------------------------------------------------------------------------------------ one row
def _ask(lm: LanguageModel, prep: st.Prepared, template: st.PromptTemplate, label_ids: LabelIds | None,
         config: VQAConfig, support: Sequence[tuple[Any, int]], query: Any, truth: str, where: str
         ) -> tuple[str, dict[str, Any]]:
  """(readable prompt, {mode: {"prediction", "correct", ...}}): the LM answers `query` after the examples."""
  segs = st.build_prompt(template, [(image, label_ids.answers[a]) for image, a in support], query)
  prompt = render(segs, prep.tmap)
  writes = max(label_ids.longest if "constrained" in config.answers else 0,
               config.max_new if "free" in config.answers else 0)
  st.check_length(lm, len(prompt.ids), writes, where)
  labels = label_ids.labels
  out: dict[str, Any] = {}
  if "constrained" in config.answers:
    scores = score_candidates(lm, prompt.ids, [list(a.ids) for a in label_ids.answers])
    k = int(np.argmax(scores))
    out["constrained"] = {"prediction": labels[k], "correct": int(labels[k] == truth),
                          "scores": [float(s) for s in scores]}
  if "free" in config.answers:
    new = lm.generate(prompt.ids, config.max_new, stop=list(label_ids.stop) or None)
    text = st.first_line(lm.tokenizer.decode([int(t) for t in new]))
    out["free"] = {"prediction": text, "correct": int(normalize_label(text) == truth)}
  return prompt.text, out


def _row(lm: LanguageModel | None, prep: st.Prepared, pools: st.ScenePools, config: VQAConfig,
         label_ids: LabelIds | None, question: str, ep: st.SceneEpisode, shots: int, layers: int | None
         ) -> dict[str, Any]:
  """The (question, K, layers, episode) row: the LM on tokens and the nearest-answer baseline; layers None: the
  oracle and the majority baseline."""
  template = config.template(question)
  candidates = QUESTIONS[question][1]
  s_keys = [("s", j) for j in ep.support[:shots]]
  q_key = ("q", ep.query)
  truth = answer_truth(question, pools.attributes(q_key))
  s_answers = [answer_truth(question, pools.attributes(k)) for k in s_keys]
  s_index = [candidates.index(a) for a in s_answers]
  where = f"episode {ep.id} ({question}, {shots}-shot)"
  results: dict[str, Any] = {}
  prompts: dict[str, str] = {}
  if layers is None:
    if lm is not None and config.oracle:
      prompts["oracle"], res = _ask(lm, prep, template, label_ids, config,
                                    [(st.oracle_words(pools.attributes(k)), a) for k, a in zip(s_keys, s_index)],
                                    st.oracle_words(pools.attributes(q_key)), truth, where)
      results.update({f"oracle/{m}": r for m, r in res.items()})
    if config.baselines:
      pick = majority_answer(s_answers)
      results["majority"] = {"prediction": pick, "correct": int(pick == truth)}
  else:
    s_ids = [prep.cache.ids(k, layers) for k in s_keys]
    q_ids = prep.cache.ids(q_key, layers)
    if lm is not None:
      prompts["lm"], res = _ask(lm, prep, template, label_ids, config, list(zip(s_ids, s_index)), q_ids, truth,
                                where)
      results.update({f"lm/{m}": r for m, r in res.items()})
    if config.baselines:
      j = jaccard_probe(s_ids, list(range(shots)), q_ids)
      results["nearest"] = {"prediction": s_answers[j], "support_index": j, "correct": int(s_answers[j] == truth)}
  return {"episode": ep.id, "question": question, "shots": shots, "layers": layers, "query": ep.query,
          "support": list(ep.support[:shots]), "truth": truth, "support_answers": s_answers, "results": results,
          **({"prompts": prompts} if prompts else {})}


# ------------------------------------------------------------------------------------ the evaluation
def evaluate_vqa(config: VQAConfig, tokenizer: Any, lm: LanguageModel | None, pools: st.ScenePools, *,
                 out: str | os.PathLike | None = None, lm_name: str | None = None,
                 progress: bool = True) -> dict[str, Any]:
  """Runs in-context VQA; returns {"summary": [...], "rows": [...], "setup": id, "resumed": n, ...}.

  Args are as `spae.prompting.caption.evaluate_caption`'s: the config, the `spae.Tokenizer`, the LM (None: the
  baselines only), the query and support scenes, the resumable JSONL `out`, and the LM's name for the setup hash.
  """
  config.validate()
  prep = st.prepare(config, tokenizer, lm, pools, lm_name)
  setup = st.setup_id(prep.setup | {"task": "vqa", "example": config.example, "max_new": config.max_new,
                                    "answers": list(config.answers), "baselines": config.baselines})
  jobs = []
  for question in config.questions:
    label_ids = LabelIds.of(prep.tmap, QUESTIONS[question][1], config.template(question)) if lm is not None else None
    for shots in config.shots:
      for ep in prep.episodes:
        run = functools.partial(_row, lm, prep, pools, config, label_ids, question, ep, shots)
        if (lm is not None and config.oracle) or config.baselines:
          jobs.append(st.Job(f"{setup}/{question}/K{shots}/ref/{ep.id}", (), functools.partial(run, None)))
        if lm is not None or config.baselines:
          images = tuple([("s", j) for j in ep.support[:shots]] + [("q", ep.query)])
          jobs += [st.Job(f"{setup}/{question}/K{shots}/L{layers}/{ep.id}", images, functools.partial(run, layers))
                   for layers in config.layers]
  rows, resumed = st.run_jobs(jobs, prep.cache, out, setup=setup, desc="vqa episodes", progress=progress,
                              layers=max(config.layers))
  return {"setup": setup, "token_mode": prep.token_mode, "lm": prep.lm_name, "resumed": resumed,
          "summary": st.shares(rows, ("question", "shots", "layers"), methods=METHODS), "rows": rows}


# ------------------------------------------------------------------------------------ CLI
def add_vqa_args(p: argparse.ArgumentParser) -> None:
  """Arguments of `spae vqa`."""
  st.add_common_args(p, VQAConfig.example, "{tokens}, {question}, then {answer}")
  p.add_argument("--questions", nargs="+", default=list(QUESTION_TYPES),
                 help=f"question types (default all: {' '.join(QUESTION_TYPES)})")
  p.add_argument("--answers", nargs="+", default=list(ANSWER_MODES),
                 help="constrained (score the candidate answers) and / or free (greedy) (default both)")


def run_vqa(args: argparse.Namespace) -> int:
  """`spae vqa`: evaluate, write the JSONL and the summary, print the table."""
  st.check_args(args)
  config = VQAConfig(shots=tuple(args.shots), layers=tuple(args.layers), episodes=args.episodes, seed=args.seed,
                     instruction=_cli.unescape(args.template_instruction), token_mode=args.token_mode,
                     oracle=not args.no_oracle, baselines=not args.no_baselines,
                     questions=tuple(args.questions), answers=tuple(args.answers),
                     example=_cli.unescape(args.template_example), max_new=args.max_new or VQAConfig.max_new)
  config.validate()
  tokenizer, pools, lm = st.open_inputs(args)
  res = evaluate_vqa(config, tokenizer, lm, pools, out=args.out, lm_name=args.lm, progress=not args.no_progress)
  path = st.write_summary(args, res, config)
  if res["resumed"]:
    print(f"resumed: {res['resumed']} row(s) were already in {args.out}")
  print(st.format_shares(res["summary"], ("question", "shots", "layers"), ("accuracy",)))
  print(f"per-episode results: {args.out}\nsummary: {path}")
  return 0
