"""The few-shot sweep's LM scoring: one `score` call per prompt against `score_many` over the sweep's batches.

Records the scoring requests (prompt ids and answer ids, in the sweep's order) that a short run of the standard
sweep makes (ways 2 5 x shots 1 3 5 x layers 1 2 3 x names real nonsense x induction off on, nested episodes,
oracle rows; generated held-out scenes), then replays them through the same loaded LM in two ways:

  per-call     `score` once per request: the output head runs once per prompt
  batched      `score_many` over `--batch` requests at a time, as the sweep calls it: one head pass per batch

Both keep the prefix cache across requests, as the sweep does. A warm-up pass of each compiles every shape;
then the timed passes alternate. Prints seconds per request, the speed-up of batched over per-call, the largest
score difference and how many rankings change, with machine info and load.

  .venv/bin/python benchmarks/sweep_scoring.py --lm gguf:gemma3-270m --episodes 2 --out sweep_scoring.json
  .venv/bin/python benchmarks/sweep_scoring.py --smoke    # a tiny random Gemma, the tiny tokenizer
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine_info, machine_line, write_json  # noqa: E402
from spae import lm as L  # noqa: E402
from spae.prompting import FewShotConfig, PromptTemplate, sweep_fewshot  # noqa: E402
from spae.prompting import _cli  # noqa: E402

TEMPLATE = PromptTemplate(example="Input: {tokens}\nOutput: {label}\n")


def record(lm, tokenizer, source, args) -> list[tuple[list[int], list[list[int]]]]:
  """The requests a short standard sweep sends to `lm.score_many`, in order."""
  configs = [FewShotConfig(ways=tuple(args.ways), shots=tuple(args.shots), layers=tuple(args.layers),
                           episodes=args.episodes, names=names, induction=induction, template=TEMPLATE, oracle=True,
                           nested=True, probes=False, token_mode=args.token_mode)
             for names in ("real", "nonsense") for induction in (False, True)]
  requests = []
  many = lm.score_many

  def recording(reqs):
    requests.extend((list(p), [list(c) for c in cs]) for p, cs in reqs)
    return many(reqs)

  lm.score_many = recording
  try:
    sweep_fewshot(configs, tokenizer, lm, source=source, progress=False)
  finally:
    del lm.score_many
  return requests


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--lm", default="gguf:gemma3-270m")
  ap.add_argument("--tokenizer", default="spae/assets/default/tokenizer")
  ap.add_argument("--data", default="scenes:test:3000")
  ap.add_argument("--classes", default="scenes-heldout")
  ap.add_argument("--episodes", type=int, default=2, help="nested episodes per cell")
  ap.add_argument("--batch", type=int, default=16, help="requests per score_many call (the sweep's)")
  ap.add_argument("--repeats", type=int, default=1, help="timed passes of each way")
  ap.add_argument("--smoke", action="store_true",
                  help="tiny random Gemma and tiny tokenizer, 2-way 1/3-shot, layers 1-2")
  ap.add_argument("--out", type=Path)
  args = ap.parse_args(argv)
  args.ways, args.shots, args.layers, args.token_mode = [2, 5], [1, 3, 5], [1, 2, 3], "auto"
  load = os.getloadavg()
  with tempfile.TemporaryDirectory() as d:
    if args.smoke:
      args.lm, args.tokenizer, args.data = L.testing.make_tiny_lm(d, "gemma3"), "tiny", "scenes:test:600"
      args.classes = "blue hexagon,cyan diamond,pink star,orange arrow"  # 8-10 scenes each in the first 600
      args.episodes = 1
      args.ways, args.shots, args.layers, args.token_mode = [2], [1, 3], [1, 2], "text"
    lm = L.load(args.lm)
  tokenizer = _cli.load_tokenizer(args.tokenizer)
  source = _cli.load_source(args.data, _cli.parse_classes(args.classes))
  t0 = time.perf_counter()
  requests = record(lm, tokenizer, source, args)
  t_record = time.perf_counter() - t0

  def per_call():
    lm.clear_cache()
    return [lm.score(p, c) for p, c in requests]

  def batched():
    lm.clear_cache()
    return [s for i in range(0, len(requests), args.batch) for s in lm.score_many(requests[i:i + args.batch])]

  ways = {"per_call": per_call, "batched": batched}
  scores = {name: fn() for name, fn in ways.items()}  # warm-up: compiles every shape
  times: dict[str, list[float]] = {name: [] for name in ways}
  for _ in range(args.repeats):
    for name, fn in ways.items():
      t = time.perf_counter()
      scores[name] = fn()
      times[name].append(time.perf_counter() - t)
  a, b = (np.concatenate(scores[n]) for n in ways)
  flips = sum(int(np.argmax(x) != np.argmax(y)) for x, y in zip(scores["per_call"], scores["batched"]))
  sec = {name: float(np.median(t)) / len(requests) for name, t in times.items()}
  res = {"benchmark": "sweep_scoring", "lm": args.lm, "tokenizer": args.tokenizer, "data": args.data,
         "episodes": args.episodes, "batch": args.batch, "requests": len(requests),
         "scored_answers": int(sum(len(c) for _, c in requests)),
         "mean_prompt_tokens": float(np.mean([len(p) for p, _ in requests])),
         "record_seconds": t_record, "seconds_per_request": sec,
         "speedup_batched_vs_per_call": sec["per_call"] / sec["batched"],
         "max_abs_score_diff": float(np.abs(a - b).max()), "ranking_changes": flips,
         "machine": machine_info(), "load_avg_before": load, "load_avg_after": os.getloadavg(), "smoke": args.smoke}
  print(machine_line(res["machine"], load, res["load_avg_after"]))
  print(f"{args.lm}: {len(requests)} scoring requests of a {args.episodes}-episode standard sweep "
        f"(mean prompt {res['mean_prompt_tokens']:.0f} tokens, {res['scored_answers']} answers)")
  for name, s in sec.items():
    print(f"  {name:9s} {s * 1e3:8.1f} ms/request")
  print(f"  batched (score_many x{args.batch}) vs per-call: x{res['speedup_batched_vs_per_call']:.2f}; "
        f"max |score diff| {res['max_abs_score_diff']:.1e}, ranking changes {flips}")
  if args.out:
    write_json(args.out, res)
    print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
