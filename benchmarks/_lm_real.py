"""Real GGUF models for benchmarks/lm_scoring.py (`--model gguf:...`).

For each model and weight dtype (float32, bfloat16), in a fresh process so peak memory is its own:
  prefill     spae's prompt throughput: `next_logprobs` on a cold cache (the whole prompt runs, the head only at
              the last position), tokens/s for prompts of several lengths, 3 distinct prompts each
  episode     a 5-way 5-shot few-shot episode scored label by label: per query with a cold cache (the shots run
              every time) and with the shots cached (only the query and the labels run)
  memory      weight bytes held by the model, resident memory after loading and at the end
Baseline in the same run: llama.cpp (llama-cpp-python) evaluating the very same token ids, with 1 and 2 threads,
also in its own process. spae never imports llama_cpp: it runs in this Python if importable, otherwise in the
interpreter given by --llama-python (e.g. a separate tools venv); without either, that column is skipped with
a note.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

WORDS = ("apple river stone cloud green window music paper silver garden yellow market winter engine candle "
         "forest mirror bottle orange castle pencil rabbit summer violin wooden bridge harbor jacket ladder "
         "marble needle ocean pepper quiet rocket saddle tunnel velvet wagon zebra anchor basket copper desert "
         "feather gravel helmet island jungle kettle lemon meadow nickel oyster pillow ribbon shadow thunder "
         "umbrella valley walnut blanket cactus dragon eagle falcon ginger hammer igloo jelly koala lantern").split()
LABELS = (" cat", " dog", " bird", " fish", " car")


def _rss_mib(field: str = "VmRSS") -> float:
  for line in Path("/proc/self/status").read_text().splitlines():
    if line.startswith(field + ":"):
      return int(line.split()[1]) / 1024.0
  return float("nan")


def _episode(tok, rng: np.random.Generator, shots: int, words: int, queries: int):
  """Token ids of a 5-way `shots`-shot prompt, the label continuations and `queries` query blocks."""
  def example() -> str:
    return "Input: " + " ".join(rng.choice(WORDS, size=words)) + "\nOutput:"

  text = "".join(f"{example()}{lab}\n###\n" for _ in range(shots) for lab in LABELS)
  prompt = tok.encode(text, add_bos=True)
  labels = [tok.encode(lab) for lab in LABELS]
  return prompt, labels, [tok.encode(example()) for _ in range(queries)]


def worker(spec: str, dtype: str, lengths: list[int], queries: int) -> dict[str, Any]:
  """One model in one dtype, in this (fresh) process."""
  import jax

  from spae import lm as L

  t0 = time.perf_counter()
  lm = L.load(spec, dtype=dtype)
  load_s = time.perf_counter() - t0
  out: dict[str, Any] = {"model": spec, "dtype": dtype, "load_s": load_s, "rss_after_load_mib": _rss_mib(),
                         "weights_mib": sum(x.nbytes for x in jax.tree.leaves(lm.params)) / 2**20}
  rng = np.random.default_rng(0)
  prompt, labels, qs = _episode(lm.tokenizer, rng, shots=5, words=20, queries=queries)
  stream = []  # distinct text for the throughput prompts: more episodes of fresh random words
  while len(stream) < 4 * max(lengths):
    stream += _episode(lm.tokenizer, rng, shots=1, words=20, queries=0)[0]
  chunks = {n: [stream[k * n:(k + 1) * n] for k in range(1, 4)] for n in lengths}
  prefill = {}
  for n in lengths:
    lm.clear_cache()
    lm.next_logprobs(stream[:n])  # compile this length's shapes
    times = []
    for c in chunks[n]:
      lm.clear_cache()
      t = time.perf_counter()
      lm.next_logprobs(c)
      times.append(time.perf_counter() - t)
    prefill[str(n)] = n / float(np.median(times))
  out["prefill_tokens_per_s"] = prefill
  # Episode: warm both paths up (every compiled shape), then time each query cold and cached.
  lm.clear_cache()
  lm.score(prompt + qs[0], labels)
  lm.score(prompt + qs[1], labels)
  cold, cached = [], []
  for q in qs:
    lm.clear_cache()
    t = time.perf_counter()
    a = lm.score(prompt + q, labels)
    cold.append(time.perf_counter() - t)
    lm.score(prompt + qs[0] if q is not qs[0] else prompt + qs[1], labels)  # shots cached, another query last
    t = time.perf_counter()
    b = lm.score(prompt + q, labels)
    cached.append(time.perf_counter() - t)
    out["episode_max_score_diff"] = max(out.get("episode_max_score_diff", 0.0), float(np.abs(a - b).max()))
  out["episode"] = {"prompt_tokens": len(prompt), "query_tokens": int(np.mean([len(q) for q in qs])),
                    "labels": len(labels), "queries": len(qs), "cold_ms_per_query": 1e3 * float(np.median(cold)),
                    "cached_ms_per_query": 1e3 * float(np.median(cached))}
  out["peak_rss_mib"] = _rss_mib("VmHWM")
  out["chunks"] = {str(n): c for n, c in chunks.items()}
  return out


LLAMA_CHILD = r"""
import json, resource, sys, time
import numpy as np
import llama_cpp
job = json.load(sys.stdin)
res = {"llama_cpp": llama_cpp.__version__, "threads": {}}
longest = max(len(c) for cs in job["chunks"].values() for c in cs)
for nt in job["threads"]:
  t0 = time.perf_counter()
  llm = llama_cpp.Llama(model_path=job["path"], n_ctx=longest + 16, n_batch=512, n_threads=nt, n_threads_batch=nt,
                        logits_all=False, verbose=False)
  row = {"load_s": time.perf_counter() - t0, "prefill_tokens_per_s": {}}
  for n, cs in job["chunks"].items():
    llm.reset(); llm.eval(cs[0])  # warm-up
    times = []
    for c in cs:
      llm.reset(); t = time.perf_counter(); llm.eval(c); times.append(time.perf_counter() - t)
    row["prefill_tokens_per_s"][n] = int(n) / float(np.median(times))
  res["threads"][str(nt)] = row
  del llm
res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps(res))
"""


def _llama_python(given: str | None) -> str | None:
  try:
    import llama_cpp  # noqa: F401
    return sys.executable
  except ImportError:
    return given


def llama_baseline(python: str, path: str, chunks: dict[str, list[list[int]]], threads: list[int]) -> dict:
  job = json.dumps({"path": path, "chunks": chunks, "threads": threads})
  p = subprocess.run([python, "-c", LLAMA_CHILD], input=job, capture_output=True, text=True, check=False)
  if p.returncode != 0:
    return {"error": p.stderr.strip().splitlines()[-1] if p.stderr.strip() else f"exit {p.returncode}"}
  return json.loads(p.stdout.strip().splitlines()[-1])


def run_worker_process(script: Path, spec: str, dtype: str, lengths: list[int], queries: int) -> dict:
  cmd = [sys.executable, str(script), "--worker", "--model", spec, "--dtype", dtype, "--queries", str(queries),
         "--lengths", *map(str, lengths)]
  p = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if p.returncode != 0:
    raise SystemExit(f"worker for {spec} ({dtype}) failed:\n{p.stderr[-2000:]}")
  return json.loads(p.stdout.strip().splitlines()[-1])


def run(args, script: Path) -> dict[str, Any]:
  from spae._gguf_file import resolve_gguf

  llama_py = _llama_python(args.llama_python)
  notes = []
  if llama_py is None:
    notes.append("llama.cpp column skipped: llama_cpp is not importable here and --llama-python was not given")
  rows = []
  for spec in args.model:
    path = str(resolve_gguf(spec[len("gguf:"):]))
    base = None
    for dtype in args.dtypes:
      r = run_worker_process(script, spec, dtype, args.lengths, args.queries)
      chunks = r.pop("chunks")
      if base is None and llama_py is not None:
        base = llama_baseline(llama_py, path, chunks, args.threads)
        if "error" in base:
          notes.append(f"llama.cpp on {spec} failed: {base['error']}")
      if base is not None and "error" not in base:
        best = {n: max(t["prefill_tokens_per_s"][n] for t in base["threads"].values()) for n in chunks}
        r["llama_cpp_prefill_tokens_per_s"] = {nt: t["prefill_tokens_per_s"] for nt, t in base["threads"].items()}
        r["ratio_vs_best_llama_cpp"] = {n: r["prefill_tokens_per_s"][n] / best[n] for n in chunks}
        r["llama_cpp_peak_rss_mib"] = base["peak_rss_mib"]
        r["llama_cpp_version"] = base["llama_cpp"]
      rows.append(r)
  return {"rows": rows, "notes": notes}


def print_rows(rows: list[dict[str, Any]]) -> None:
  for r in rows:
    ep = r["episode"]
    print(f"{r['model']} [{r['dtype']}]: load {r['load_s']:.1f} s, weights {r['weights_mib']:.0f} MiB, "
          f"RSS after load {r['rss_after_load_mib']:.0f} MiB, peak {r['peak_rss_mib']:.0f} MiB")
    for n, v in r["prefill_tokens_per_s"].items():
      line = f"  prefill {n:>4} tokens: spae {v:7.1f} tok/s"
      if "llama_cpp_prefill_tokens_per_s" in r:
        ll = "  ".join(f"{nt} thread{'s' if nt != '1' else ''} {t[n]:6.1f}"
                       for nt, t in r["llama_cpp_prefill_tokens_per_s"].items())
        line += f" | llama.cpp {ll} | spae / best llama.cpp = {r['ratio_vs_best_llama_cpp'][n]:.2f}"
      print(line)
    print(f"  5-way 5-shot episode ({ep['prompt_tokens']}-token shots, ~{ep['query_tokens']}-token queries, "
          f"{ep['labels']} labels): cold {ep['cold_ms_per_query']:.0f} ms/query, shots cached "
          f"{ep['cached_ms_per_query']:.0f} ms/query (x{ep['cold_ms_per_query'] / ep['cached_ms_per_query']:.1f})")
