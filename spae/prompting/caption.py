"""In-context captioning: a frozen LLM reads K (image tokens -> caption) examples, then captions a query image.

The prompt (default template; `{tokens}` are the top `layers` pyramid layers' tokens, as in `spae fewshot`):

  Image: <tokens>\\nCaption: a large light blue striped heart in the top left with two other shapes on ...\\n
  ...                                                                  (K support scenes with their captions)
  Image: <tokens>\\nCaption:                                  the LLM writes greedily until the newline

Each generated caption is scored against the query scene's attributes: does it state the main object's colour,
shape, size and position (`parse_caption`), and all four. In the same run, on the same episodes:
  oracle   the same LLM and template with the images' true attribute words (`oracle_words`) in place of tokens;
  nearest  no LLM: the caption of the support scene whose token set overlaps the query's most (Jaccard of
           codebook ids; ties -> the earliest), scored the same way.
Shares come with Wilson 95% intervals; rows are JSONL, one per (K, layers, episode) plus one per (K, episode)
for the oracle, appended as they finish so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
from typing import Any, Sequence

from spae._io import SpaeInputError
from spae.data import _scenes
from spae.lm import LanguageModel
from spae.prompting import _cli
from spae.prompting import _scene_tasks as st
from spae.prompting._probes import jaccard_probe
from spae.prompting._render import render

__all__ = ["ATTRIBUTES", "CaptionConfig", "add_caption_args", "caption_truth", "evaluate_caption", "parse_caption",
           "run_caption", "score_caption"]

ATTRIBUTES = ("colour", "shape", "size", "position")
SCORES = ATTRIBUTES + ("all",)
_ALIASES = {"grey": "gray", "centre": "center", "middle": "center", "big": "large"}


@dataclasses.dataclass(frozen=True)
class CaptionConfig(st.SceneTaskConfig):
  """An in-context captioning run (see `SceneTaskConfig` for the shared fields).

  Attributes:
    example: one support example, `{tokens}` then `{caption}`; the query is this cut before the caption.
    max_new: most LM tokens of a generated caption.
  """

  example: str = "Image: {tokens}\nCaption: {caption}\n"
  max_new: int = 40

  def template(self) -> st.PromptTemplate:
    return st.template_of(self.example, self.instruction, "{caption}")

  def validate(self) -> None:
    super().validate()
    if self.max_new < 1:
      raise SpaeInputError(f"max_new must be >= 1, got {self.max_new}.")
    self.template()


# ------------------------------------------------------------------------------------ scoring
def caption_truth(attrs: dict[str, Any]) -> dict[str, str]:
  """What a caption of the scene must state: its main object's colour, shape, size and position (region)."""
  return {"colour": attrs["colour"], "shape": attrs["shape"], "size": attrs["size"], "position": attrs["region"]}


def parse_caption(text: str) -> dict[str, str | None]:
  """The main object's colour, shape, size and position a caption states (None where it states none).

  Words are read from the first line, lower case. shape: the first shape word (`SCENE_SHAPES`); colour and
  size: the last colour / size word before it (tones such as "light" are not colours), or, without a shape
  word, before the background or other-objects clause; position: "top"/"bottom" and "left"/"right" anywhere
  (the scenes' captions use these words for nothing else), else "center" if said. "grey", "centre", "middle"
  and "big" count as "gray", "center", "center" and "large".
  """
  words = [_ALIASES.get(w, w) for w in re.findall(r"[a-z]+", st.first_line(text).lower())]
  at = next((i for i, w in enumerate(words) if w in _scenes.SHAPES), None)
  if at is not None:
    head = words[:at]
  else:
    cut = [i for i, w in enumerate(words) if w in ("on", "with", "background")]
    head = words[:cut[0]] if cut else words
  colour = next((w for w in reversed(head) if w in _scenes.COLOURS), None)
  size = next((w for w in reversed(head) if w in _scenes.SIZES), None)
  row = next((w for w in words if w in ("top", "bottom")), "")
  col = next((w for w in words if w in ("left", "right")), "")
  position = f"{row} {col}".strip() or ("center" if "center" in words else None)
  return {"colour": colour, "shape": words[at] if at is not None else None, "size": size, "position": position}


def score_caption(text: str, attrs: dict[str, Any]) -> dict[str, Any]:
  """{"parsed": what the caption states, "correct": {attribute: 0/1, "all": 0/1}} against a scene."""
  parsed = parse_caption(text)
  truth = caption_truth(attrs)
  correct = {a: int(parsed[a] == truth[a]) for a in ATTRIBUTES}
  correct["all"] = int(all(correct.values()))
  return {"parsed": parsed, "correct": correct}


# ------------------------------------------------------------------------------------ one row
def _generate(lm: LanguageModel, prep: st.Prepared, template: st.PromptTemplate, config: CaptionConfig,
              support: Sequence[tuple[Any, str]], query: Any, attrs: dict[str, Any], where: str) -> dict[str, Any]:
  """Greedy caption of `query` after the `support` (description, caption) examples, scored."""
  answers = [st.answer_of(prep.tmap, template, cap) for _, cap in support]
  stop = {end for _, end in answers if end is not None}  # what ends a caption in the examples (the newline)
  if lm.tokenizer.eos_id is not None:
    stop.add(int(lm.tokenizer.eos_id))
  segs = st.build_prompt(template, [(image, a) for (image, _), (a, _) in zip(support, answers)], query)
  prompt = render(segs, prep.tmap)
  st.check_length(lm, len(prompt.ids), config.max_new, where)
  new = lm.generate(prompt.ids, config.max_new, stop=sorted(stop) or None)
  text = st.first_line(lm.tokenizer.decode([int(t) for t in new]))
  return {"prediction": text, **score_caption(text, attrs), "prompt": prompt.text, "prompt_tokens": len(prompt.ids)}


def _row(lm: LanguageModel | None, prep: st.Prepared, pools: st.ScenePools, template: st.PromptTemplate,
         config: CaptionConfig, ep: st.SceneEpisode, shots: int, layers: int | None) -> dict[str, Any]:
  """The (K, layers, episode) row: the LM on tokens and the nearest-caption baseline; layers None: the oracle."""
  s_keys = [("s", j) for j in ep.support[:shots]]
  q_key = ("q", ep.query)
  attrs = pools.attributes(q_key)
  captions = [pools.caption(k) for k in s_keys]
  where = f"episode {ep.id} ({shots}-shot)"
  results: dict[str, Any] = {}
  if layers is None:
    results["oracle"] = _generate(lm, prep, template, config,
                                  [(st.oracle_words(pools.attributes(k)), c) for k, c in zip(s_keys, captions)],
                                  st.oracle_words(attrs), attrs, where)
  else:
    s_ids = [prep.cache.ids(k, layers) for k in s_keys]
    q_ids = prep.cache.ids(q_key, layers)
    if lm is not None:
      results["lm"] = _generate(lm, prep, template, config, list(zip(s_ids, captions)), q_ids, attrs, where)
    if config.baselines:
      j = jaccard_probe(s_ids, list(range(shots)), q_ids)
      results["nearest"] = {"prediction": captions[j], "support_index": j, **score_caption(captions[j], attrs)}
  return {"episode": ep.id, "shots": shots, "layers": layers, "query": ep.query, "support": list(ep.support[:shots]),
          "truth": pools.caption(q_key), "attributes": caption_truth(attrs), "results": results}


# ------------------------------------------------------------------------------------ the evaluation
def evaluate_caption(config: CaptionConfig, tokenizer: Any, lm: LanguageModel | None, pools: st.ScenePools, *,
                     out: str | os.PathLike | None = None, lm_name: str | None = None,
                     progress: bool = True) -> dict[str, Any]:
  """Runs in-context captioning; returns {"summary": [...], "rows": [...], "setup": id, "resumed": n, ...}.

  Args:
    config: what to evaluate.
    tokenizer: the `spae.Tokenizer` whose tokens describe the images.
    lm: the language model, or None for the baseline only.
    pools: query and support scenes (`ScenePools`).
    out: per-row JSONL; rows already there for the same setup are skipped (resume).
    lm_name: identifies the LM in the setup hash (default: its class name).
  """
  config.validate()
  template = config.template()
  prep = st.prepare(config, tokenizer, lm, pools, lm_name)
  setup = st.setup_id(prep.setup | {"task": "caption", "example": config.example, "max_new": config.max_new,
                                    "baselines": config.baselines})
  jobs = []
  for shots in config.shots:
    for ep in prep.episodes:
      run = functools.partial(_row, lm, prep, pools, template, config, ep, shots)
      if lm is not None and config.oracle:
        jobs.append(st.Job(f"{setup}/K{shots}/oracle/{ep.id}", (), functools.partial(run, None)))
      images = tuple([("s", j) for j in ep.support[:shots]] + [("q", ep.query)])
      jobs += [st.Job(f"{setup}/K{shots}/L{layers}/{ep.id}", images, functools.partial(run, layers))
               for layers in config.layers]
  rows, resumed = st.run_jobs(jobs, prep.cache, out, setup=setup, desc="caption episodes", progress=progress,
                              layers=max(config.layers))
  return {"setup": setup, "token_mode": prep.token_mode, "lm": prep.lm_name, "resumed": resumed,
          "summary": st.shares(rows, ("shots", "layers"), SCORES, ("lm", "nearest", "oracle")), "rows": rows}


# ------------------------------------------------------------------------------------ CLI
def add_caption_args(p: argparse.ArgumentParser) -> None:
  """Arguments of `spae caption`."""
  st.add_common_args(p, CaptionConfig.example, "{tokens} then {caption}")


def run_caption(args: argparse.Namespace) -> int:
  """`spae caption`: evaluate, write the JSONL and the summary, print the table."""
  st.check_args(args)
  config = CaptionConfig(shots=tuple(args.shots), layers=tuple(args.layers), episodes=args.episodes, seed=args.seed,
                         instruction=_cli.unescape(args.template_instruction), token_mode=args.token_mode,
                         oracle=not args.no_oracle, baselines=not args.no_baselines,
                         example=_cli.unescape(args.template_example),
                         max_new=args.max_new or CaptionConfig.max_new)
  config.validate()
  tokenizer, pools, lm = st.open_inputs(args)
  res = evaluate_caption(config, tokenizer, lm, pools, out=args.out, lm_name=args.lm, progress=not args.no_progress)
  path = st.write_summary(args, res, config)
  if res["resumed"]:
    print(f"resumed: {res['resumed']} row(s) were already in {args.out}")
  print(st.format_shares(res["summary"], ("shots", "layers"), SCORES))
  print(f"per-episode results: {args.out}\nsummary: {path}")
  return 0
