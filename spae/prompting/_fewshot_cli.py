"""`spae fewshot` on the command line: arguments, data (sampled, episode files, Frozen's files), the Frozen table."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

from spae._io import SpaeInputError, check_output_file, write_json_atomic
from spae.prompting import _cli
from spae.prompting._episodes import Episode, FileImages, read_episodes, write_episodes
from spae.prompting._frozen import FROZEN_TABLE, read_frozen
from spae.prompting._prompt import PromptTemplate
from spae.prompting._stats import format_table, summarize
from spae.prompting.fewshot import FewShotConfig, TokenCache, evaluate_fewshot, sampled_episodes, sweep_fewshot

__all__ = ["FROZEN_PREFIX", "add_fewshot_args", "frozen_table", "run_fewshot"]

FROZEN_PREFIX = "frozen:"


def _episode_count(text: str) -> int | str:
  if text == "all":
    return text  # `_resolve` turns it into None
  try:
    n = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number of episodes or 'all', got {text!r}") from None
  if n < 1:
    raise argparse.ArgumentTypeError(f"--episodes must be >= 1, got {n}")
  return n


def add_fewshot_args(p: argparse.ArgumentParser) -> None:
  """Arguments of `spae fewshot`."""
  p.add_argument("--tokenizer", required=True, help="tokenizer directory, or 'tiny' (untrained built-in)")
  p.add_argument("--lm", default="none",
                 help="gguf:gemma3-270m, gguf:PATH, gemma:PATH, hf:PATH, openai:URL#model, or 'none' (LLM-free "
                      "probes only)")
  _cli.add_lm_server_args(p)
  p.add_argument("--data", default=None, help="labelled images: an image folder with class subfolders, a tfds "
                 "name, 'scenes:...' / 'shapes...' (see spae.data.make_source), or frozen:PATH, the open_ended_mi "
                 "or real_name_mi folder of Frozen's mini-ImageNet (its questions are the episodes)")
  p.add_argument("--classes", default=None,
                 help="comma-separated class names to keep, or shapes-heldout / shapes-train / scenes-heldout / "
                      "scenes-train for those splits' classes")
  p.add_argument("--episodes-file", default=None,
                 help="replay episodes from this JSONL/CSV file (format: spae.prompting.read_episodes)")
  p.add_argument("--save-episodes", default=None, help="also write the episodes to this JSONL file")
  p.add_argument("--sweep", choices=("standard",), default=None,
                 help="'standard': ways 2 5 x shots 1 3 5 x layers 1 2 3 x names real nonsense x induction off on, "
                      "nested episodes, 100 episodes per cell (an option given explicitly overrides its part)")
  p.add_argument("--ways", type=int, nargs="+", default=None, help="(default 5)")
  p.add_argument("--shots", type=int, nargs="+", default=None,
                 help="support images per class (Frozen: inner shots; default 1)")
  p.add_argument("--layers", type=int, nargs="+", default=None,
                 help="top pyramid layers per image (2 = 1+4 tokens; default 2)")
  p.add_argument("--repeats", type=int, nargs="+", default=[1],
                 help="times the support set is shown (1 = once; Frozen's 'repeats r' is r+1)")
  p.add_argument("--episodes", type=_episode_count, default=None,
                 help="episodes per (ways, shots) (default 100); with frozen: data the first N questions of each "
                      "file, or 'all'")
  p.add_argument("--queries", type=int, default=1, help="query images per episode")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--mode", choices=("score", "generate"), default="score")
  p.add_argument("--free", action="store_true", help="generate mode: do not constrain the output to the labels")
  p.add_argument("--induction", nargs="*", choices=("off", "on"), default=None,
                 help="prepend a task-induction line naming the labels: bare --induction = on; 'off on' runs both")
  p.add_argument("--names", nargs="+", choices=("real", "nonsense"), default=None,
                 help="label names of sampled episodes, one or both (default real; frozen: data and episode files "
                      "fix their own)")
  p.add_argument("--nested-shots", action="store_true",
                 help="sample the episodes of all --shots nested (same classes and query; the smaller support is "
                      "the start of the larger), so the shot counts are paired and the LM reuses the shared prefix")
  p.add_argument("--oracle", action="store_true",
                 help="also run the LM on the images' true attribute words in place of their tokens (scenes data)")
  p.add_argument("--frozen-table", action="store_true",
                 help="run the seven columns of the Frozen / LQAE / SPAE mini-ImageNet table per --ways (induction "
                      "off/on, inner shots 1 3 5, repeats 0 1 3 5) instead of --shots x --repeats x --induction")
  p.add_argument("--template-example", default=PromptTemplate.example,
                 help="one support example, {tokens} then {label} (\\n for a line break); the query is this cut "
                      "before the label (frozen: data uses the files' own captions and questions)")
  p.add_argument("--template-instruction", default=PromptTemplate.instruction, help="with {labels}")
  p.add_argument("--token-mode", choices=("auto", "ids", "text"), default="auto")
  p.add_argument("--length-norm", action="store_true", help="score labels by mean token log-probability")
  p.add_argument("--calibrate", nargs="*", default=None, metavar="TEXT",
                 help="contextual calibration (Zhao et al. 2021) in score mode: divide each query's label "
                      "probabilities by those of the same prompt with a content-free input in the query's place "
                      "(bare --calibrate: 'N/A'; several inputs are averaged). The uncalibrated answers are "
                      "reported too, as lm_raw / oracle_raw")
  p.add_argument("--no-prefix-cache", action="store_true", help="score every candidate from scratch")
  p.add_argument("--no-probes", action="store_true")
  _cli.add_output_args(p)


STANDARD_SWEEP = dict(ways=[2, 5], shots=[1, 3, 5], layers=[1, 2, 3], names=["real", "nonsense"],
                      induction=["off", "on"], episodes=100, nested_shots=True)
_DEFAULTS = dict(ways=[5], shots=[1], layers=[2], names=["real"], induction=["off"], episodes=100)


def _resolve(args: argparse.Namespace) -> None:
  """Fills what the command line left unset from --sweep's preset, then from the plain defaults."""
  if args.sweep and args.frozen_table:
    raise SpaeInputError("--sweep and --frozen-table each fix their own grid; pass one of them.")
  if args.induction == []:  # a bare --induction, as before it took values
    args.induction = ["on"]
  preset = STANDARD_SWEEP if args.sweep == "standard" else {}
  for name, default in _DEFAULTS.items():
    if getattr(args, name) is None:
      setattr(args, name, preset.get(name, default))
  if args.episodes == "all":
    args.episodes = None
  args.nested_shots = args.nested_shots or preset.get("nested_shots", False)


def _configs(args: argparse.Namespace) -> list[FewShotConfig]:
  """One config per (names, induction) of the command line."""
  template = PromptTemplate(instruction=_cli.unescape(args.template_instruction),
                            example=_cli.unescape(args.template_example))
  shots = sorted({s for _, s, _ in FROZEN_TABLE}) if args.frozen_table else args.shots
  out = []
  for names in dict.fromkeys(args.names):
    for induction in dict.fromkeys(args.induction):
      config = FewShotConfig(ways=tuple(args.ways), shots=tuple(shots), layers=tuple(args.layers),
                             repeats=tuple(args.repeats), episodes=args.episodes or 1, queries=args.queries,
                             seed=args.seed, mode=args.mode, constrained=not args.free, induction=induction == "on",
                             names=names, template=template, token_mode=args.token_mode,
                             length_norm=args.length_norm, prefix_cache=not args.no_prefix_cache,
                             probes=not args.no_probes, oracle=args.oracle, nested=args.nested_shots,
                             calibrate=_calibration(args.calibrate))
      config.validate()
      out.append(config)
  return out


def _calibration(texts: list[str] | None) -> tuple[str, ...]:
  """--calibrate's content-free inputs: none when absent, ("N/A",) when bare (the paper's first), else as given."""
  if texts is None:
    return ()
  return tuple(_cli.unescape(t) for t in texts) or ("N/A",)


def _inputs(args: argparse.Namespace, config: FewShotConfig) -> tuple[Any, list[Episode] | None]:
  """(image source, fixed episodes or None to sample) from --data / --episodes-file."""
  frozen = args.data is not None and args.data.startswith(FROZEN_PREFIX)
  if args.data is None and args.episodes_file is None:
    raise SpaeInputError("pass --data (labelled images or frozen:PATH) or --episodes-file.")
  if args.episodes is None and not (frozen or args.episodes_file):
    raise SpaeInputError("--episodes all reads every question of frozen: data or an episode file; give sampled "
                         "episodes a number.")
  if frozen:
    if args.episodes_file or args.classes:
      raise SpaeInputError("frozen: data fixes its own episodes and classes; drop --episodes-file / --classes.")
    root = os.path.expanduser(args.data[len(FROZEN_PREFIX):])
    return FileImages(root), read_frozen(root, config.ways, config.shots, args.episodes)
  source = _cli.load_source(args.data, _cli.parse_classes(args.classes))
  if not args.episodes_file:
    return source, None
  episodes = read_episodes(args.episodes_file)
  if args.episodes is not None:
    episodes = episodes[:args.episodes]
  return source or FileImages(Path(args.episodes_file).parent), episodes


def run_fewshot(args: argparse.Namespace) -> int:
  """`spae fewshot`: evaluate, write the JSONL and the summary, print the table."""
  check_output_file(args.out)
  _resolve(args)
  configs = _configs(args)
  config = configs[0]
  tokenizer = _cli.load_tokenizer(args.tokenizer)
  source, episodes = _inputs(args, config)
  if episodes is not None and len(set(args.names)) > 1:
    raise SpaeInputError("--names picks the labels of sampled episodes; an episode file or frozen: data fixes its "
                         "own, so pass one --names value (or none).")
  lm = _cli.load_lm(args.lm, timeout=args.lm_timeout, attempts=args.lm_attempts)
  if lm is None and not config.probes:
    raise SpaeInputError("--lm none with --no-probes leaves nothing to evaluate.")
  if args.save_episodes:
    write_episodes(args.save_episodes, episodes if episodes is not None else _sampled(source, configs))
  common = dict(source=source, out=args.out, lm_name=args.lm, progress=not args.no_progress)
  if args.frozen_table:
    res = frozen_table(configs, tokenizer, lm, episodes, **common)
  else:
    res = sweep_fewshot(configs, tokenizer, lm, episodes=episodes, **common)
  summary_path = args.summary or str(Path(args.out).with_suffix("")) + ".summary.json"
  write_json_atomic(summary_path, {k: v for k, v in res.items() if k != "rows"} | {
      "config": {**dataclasses.asdict(config), "lm": args.lm, "names": args.names, "induction": args.induction,
                 "sweep": args.sweep, "data": args.data, "tokenizer": args.tokenizer,
                 "episodes_file": args.episodes_file, "frozen_table": args.frozen_table}})
  if res["resumed"]:
    print(f"resumed: {res['resumed']} episode(s) were already in {args.out}")
  print(format_table(res["summary"]))
  if args.frozen_table:
    from spae.prompting._frozen import format_frozen_table

    print("\n" + format_frozen_table(res["summary"], config.ways))
  print(f"per-episode results: {args.out}\nsummary: {summary_path}")
  return 0


def _sampled(source: Any, configs: Sequence[FewShotConfig]) -> list[Episode]:
  """The episodes `sweep_fewshot` samples for these configs (for --save-episodes); with both names settings the
  ids get a "-real" / "-nonsense" suffix, since the two share images and ids."""
  out: dict[str, Episode] = {}
  both = len({c.names for c in configs}) > 1
  for c in configs:
    out.update((f"{c.names}/{e.id}", dataclasses.replace(e, id=f"{e.id}-{c.names}") if both else e)
               for eps in sampled_episodes(c, source) for e in eps)
  return list(out.values())


def frozen_table(configs: FewShotConfig | Sequence[FewShotConfig], tokenizer: Any, lm: Any,
                 episodes: Sequence[Episode] | None, *, source: Any,
                 cells: Sequence[tuple[bool, int, int]] = FROZEN_TABLE, **kwargs: Any) -> dict[str, Any]:
  """`evaluate_fewshot` on the table's cells (induction, shots, times shown) for every ways and layers of
  the config (the first, if several: the table fixes induction itself), sharing one token cache (each image
  encoded once) and one results file."""
  config = configs if isinstance(configs, FewShotConfig) else configs[0]
  cache = TokenCache(tokenizer, source)
  rows, resumed, setups = [], 0, []
  groups: dict[tuple[bool, tuple[int, ...]], list[int]] = {}
  for induction, shots, repeats in cells:  # one call per (induction, repeats set), over the shots it pairs with
    groups.setdefault((induction, tuple(r for i, s2, r in cells if i == induction and s2 == shots)), []).append(shots)
  for (induction, repeats), shots in groups.items():
    cfg = dataclasses.replace(config, induction=induction, shots=tuple(dict.fromkeys(shots)), repeats=repeats)
    eps = None if episodes is None else [e for e in episodes if e.shots in cfg.shots]
    res = evaluate_fewshot(cfg, tokenizer, lm, source=source, episodes=eps, cache=cache, **kwargs)
    rows += res["rows"]
    resumed += res["resumed"]
    setups.append(res["setup"])
  return {"setup": setups, "token_mode": res["token_mode"], "lm": res["lm"], "resumed": resumed,
          "summary": summarize(rows), "rows": rows}
