"""Few-shot label scoring with and without the prefix KV cache (GemmaLM, tiny random model).

A 5-way 5-shot prompt (25 examples of ~25 tokens) is followed by a query; every candidate label is scored.
Three ways, each on the same queries, after a warm-up that compiles every shape:
  uncached     one full forward of prompt + query + label per label (what a plain logits() loop costs)
  per-call     GemmaLM.score with a cold cache: the prompt runs once per query, labels run as one batch
  cached       GemmaLM.score across queries: the shots stay cached, each query runs only its own tokens
It prints seconds per query, the speed-up of each over `uncached`, and the cached cost in units of one forward
of the full prompt and of the query alone (the cached path should cost about one query, not the whole prompt),
checks that all three give the same scores, prints machine info, and writes JSON with --out.

  .venv/bin/python benchmarks/lm_scoring.py --out /tmp/lm_scoring.json
  .venv/bin/python benchmarks/lm_scoring.py --smoke

Real models (`--model gguf:...`, see benchmarks/_lm_real.py): spae's prompt throughput against llama.cpp's on the
same token ids, the few-shot episode cost with the prefix cache, and float32 vs bfloat16 weight memory:

  .venv/bin/python benchmarks/lm_scoring.py --model gguf:gemma3-270m --model gguf:smollm2-135m \
      --llama-python /path/to/venv-with-llama-cpp-python/bin/python --out lm_real.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import jax  # noqa: E402

import _lm_real  # noqa: E402
from _common import machine_info, machine_line  # noqa: E402
from spae import lm as L  # noqa: E402
from spae._io import write_json_atomic  # noqa: E402


def build_prompt(lm, ways: int, shots: int, words_per_example: int, rng: np.random.Generator):
  """Token ids of a few-shot prompt, its labels (as token lists) and a query maker."""
  tok = lm.tokenizer
  safe = L.round_trip_safe(lm.vocabulary(), tok).llm_ids.tolist()
  labels = [tok.encode(w) for w in ("cat", "dog", "bird", "fish", "car", "tree", "house", "red")[:ways]]

  def example(label_ids=None):
    words = rng.choice(safe, size=words_per_example).tolist()
    ids = tok.encode("Input:") + words + tok.encode("Output:")
    return ids + (label_ids or [])

  prompt = [tok.bos_id]
  for _ in range(shots):
    for lab in labels:
      prompt += example(lab) + tok.encode("#")
  return prompt, labels, example


def uncached_scores(lm, prefix, labels):
  out = []
  for lab in labels:
    logp = np.asarray(jax.nn.log_softmax(lm.logits(np.asarray([prefix + lab]))[0], axis=-1))
    out.append(sum(logp[len(prefix) - 1 + j, lab[j]] for j in range(len(lab))))
  return np.asarray(out)


def timed(fn, reps: int):
  times = []
  result = None
  for _ in range(reps):
    t = time.perf_counter()
    result = fn()
    times.append(time.perf_counter() - t)
  return float(np.median(times)), result


def main(argv=None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--kind", default="gemma2", choices=["gemma2", "gemma3", "llama"])
  ap.add_argument("--ways", type=int, default=5)
  ap.add_argument("--shots", type=int, default=5)
  ap.add_argument("--words", type=int, default=20, help="random words per example (~25 tokens with the template)")
  ap.add_argument("--queries", type=int, default=8)
  ap.add_argument("--smoke", action="store_true", help="CI size: 2 queries, 2 shots")
  ap.add_argument("--out", type=Path)
  real = ap.add_argument_group("real GGUF models")
  real.add_argument("--model", action="append", default=[], help="gguf:PATH or gguf:NAME (repeatable)")
  real.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
  real.add_argument("--lengths", nargs="+", type=int, default=[128, 512], help="prompt lengths for throughput")
  real.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="llama.cpp thread counts")
  real.add_argument("--llama-python", help="a Python with llama-cpp-python, if this one lacks it")
  real.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
  real.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
  args = ap.parse_args(argv)
  if args.worker:
    print(json.dumps(_lm_real.worker(args.model[0], args.dtype, args.lengths, args.queries)))
    return 0
  if args.model:
    return run_real(args)
  if args.smoke:
    args.queries, args.shots = 2, 2
  rng = np.random.default_rng(0)
  with tempfile.TemporaryDirectory() as d:
    lm = L.load(L.testing.make_tiny_lm(d, args.kind, "hf", max_length=4096))
  prompt, labels, example = build_prompt(lm, args.ways, args.shots, args.words, rng)
  queries = [example() for _ in range(args.queries)]

  # Warm-up: compile every shape each path will use.
  uncached_scores(lm, prompt + queries[0], labels)
  lm.clear_cache()
  lm.score(prompt + queries[0], labels)
  lm.score(prompt + queries[1 % len(queries)], labels)
  lm.logits(np.asarray([queries[0]]))
  lm.logits(np.asarray([prompt + queries[0]]))

  t_unc, t_call, t_cached, t_one, t_full, max_diff = [], [], [], [], [], 0.0
  for q in queries:
    prefix = prompt + q
    s, ref = timed(lambda: uncached_scores(lm, prefix, labels), 1)
    t_unc.append(s)

    def cold():
      lm.clear_cache()
      return lm.score(prefix, labels)

    s, got = timed(cold, 3)
    t_call.append(s)
    max_diff = max(max_diff, float(np.abs(got - ref).max()))
  for q in queries:  # shots cached from the previous query: only the query and the labels run
    s, got = timed(lambda: lm.score(prompt + q, labels), 1)
    t_cached.append(s)
    lm.score(prompt + queries[0], labels)  # re-cache the shots + another query, as a stream of queries would
    s, _ = timed(lambda: lm.logits(np.asarray([q])), 3)
    t_one.append(s)
    s, _ = timed(lambda: lm.logits(np.asarray([prompt + q])), 3)
    t_full.append(s)

  med = lambda xs: float(np.median(xs))  # noqa: E731
  res = {
      "benchmark": "lm_scoring", "kind": args.kind, "ways": args.ways, "shots": args.shots,
      "prompt_tokens": len(prompt), "query_tokens": int(np.mean([len(q) for q in queries])),
      "labels": len(labels), "queries": len(queries), "smoke": args.smoke,
      "seconds_per_query": {"uncached": med(t_unc), "per_call_cache": med(t_call), "cached_prefix": med(t_cached),
                            "one_query_forward": med(t_one), "one_full_prompt_forward": med(t_full)},
      "speedup_vs_uncached": {"per_call_cache": med(t_unc) / med(t_call), "cached_prefix": med(t_unc) / med(t_cached)},
      "cached_cost_in_query_forwards": med(t_cached) / med(t_one),
      "cached_cost_in_full_prompt_forwards": med(t_cached) / med(t_full),
      "max_abs_score_diff_vs_uncached": max_diff,
      "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                  "jax": jax.__version__, "devices": [str(x) for x in jax.devices()]},
  }
  print(f"{args.ways}-way {args.shots}-shot prompt: {len(prompt)} tokens; query ~{res['query_tokens']} tokens; "
        f"{len(labels)} labels; {len(queries)} queries ({args.kind}, {res['machine']['devices'][0]})")
  for k, v in res["seconds_per_query"].items():
    print(f"  {k:18s} {v * 1e3:8.2f} ms/query")
  print(f"  speed-up vs uncached: per-call cache x{res['speedup_vs_uncached']['per_call_cache']:.1f}, "
        f"cached prefix x{res['speedup_vs_uncached']['cached_prefix']:.1f}")
  print(f"  cached scoring of all labels costs {res['cached_cost_in_full_prompt_forwards']:.2f} forwards of the "
        f"full prompt ({res['cached_cost_in_query_forwards']:.1f} forwards of the query alone, which has no "
        "context to attend to and no per-call overhead)")
  print(f"  max |score - uncached| = {max_diff:.2e}")
  if args.out:
    write_json_atomic(args.out, res)
    print(f"wrote {args.out}")
  return 0


def run_real(args) -> int:
  load = os.getloadavg()
  res = _lm_real.run(args, Path(__file__).resolve())
  res.update(benchmark="lm_scoring_real", machine=machine_info(), load_avg_before=load, load_avg_after=os.getloadavg())
  print(machine_line(res["machine"], load, res["load_avg_after"]))
  _lm_real.print_rows(res["rows"])
  for n in res["notes"]:
    print("note:", n)
  if args.out:
    write_json_atomic(args.out, res)
    print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
