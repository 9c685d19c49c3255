"""Exact nearest-word search: spae's chunked scan against the naive full-matrix argmin peers use.

Default: a 262,144 × 2304 random table (Gemma-2 scale) and one or more images of 597 pyramid tokens.
Each case runs in its own process; memory is reported as XLA's working (temp) memory of the compiled search, and
peak RSS. Prints a table with tokens/s, achieved GFLOP/s as a fraction of a plain matmul of the same shape measured
in the same run, and peak memory; writes JSON with --out.

  python benchmarks/quantizer.py                 # full size (a few minutes on 2 CPU cores)
  python benchmarks/quantizer.py --smoke         # tiny, for CI
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402


def _table(v: int, d: int):
  import jax
  import jax.numpy as jnp

  e = jax.random.normal(jax.random.key(0), (v, d), jnp.float32)
  return e.block_until_ready()


def run_case(case: str, n: int, v: int, d: int, vocab_chunk: int) -> dict:
  import jax
  import jax.numpy as jnp

  import spae

  e = _table(v, d)
  x = jax.random.normal(jax.random.key(1), (n, d), jnp.float32).block_until_ready()
  flops = 2.0 * n * v * d
  if case == "spae":
    fn = jax.jit(lambda x, e: spae.nearest_tokens(x, e, vocab_chunk=vocab_chunk))
  elif case == "naive":
    fn = jax.jit(lambda x, e: jnp.argmin(
        jnp.sum(e * e, -1)[None] - 2.0 * jnp.dot(x, e.T, precision=jax.lax.Precision.HIGHEST), axis=1))
  elif case == "matmul":
    fn = jax.jit(lambda x, e: jnp.dot(x, e.T, precision=jax.lax.Precision.HIGHEST))
  else:
    raise ValueError(case)
  # XLA's own accounting of the working memory the compiled search needs beyond its inputs and outputs.
  mem = fn.lower(x, e).compile().memory_analysis()
  temp_mib = (getattr(mem, "temp_size_in_bytes", 0) or 0) / 2**20 if mem is not None else float("nan")
  f = lambda: fn(x, e).block_until_ready()
  t = _common.time_fn(f, repeats=3)
  out = {"case": case, "tokens": n, "vocab": v, "dim": d, "seconds": t, "tokens_per_s": n / t,
         "gflops": flops / t / 1e9, "temp_mib": temp_mib, "peak_rss_mib": _common.peak_rss_mib()}
  dev = jax.devices()[0]
  if dev.platform != "cpu" and hasattr(dev, "memory_stats") and dev.memory_stats():
    out["device_peak_mib"] = dev.memory_stats().get("peak_bytes_in_use", 0) / 2**20
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--vocab", type=int, default=262_144)
  p.add_argument("--dim", type=int, default=2304)
  p.add_argument("--images", default="1,4", help="comma-separated image counts (597 tokens each)")
  p.add_argument("--tokens-per-image", type=int, default=597)
  p.add_argument("--vocab-chunk", type=int, default=8192)
  p.add_argument("--naive-budget-gib", type=float, default=6.0,
                 help="run the naive full-matrix argmin only while its N×V matrix fits in this many GiB")
  p.add_argument("--smoke", action="store_true", help="tiny sizes for CI")
  p.add_argument("--out", default=None, help="write results as JSON here")
  p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # internal: one measurement per process
  p.add_argument("--n", type=int, default=None, help=argparse.SUPPRESS)
  a = p.parse_args(argv)
  if a.smoke:
    a.vocab, a.dim, a.images, a.tokens_per_image, a.vocab_chunk = 4096, 64, "1,2", 85, 1024
  if a.case:
    print(json.dumps(run_case(a.case, a.n, a.vocab, a.dim, a.vocab_chunk)))
    return 0

  rows = []
  for images in [int(s) for s in a.images.split(",")]:
    n = images * a.tokens_per_image
    cases = ["matmul", "spae"]
    naive_gib = n * a.vocab * 4 / 2**30
    if naive_gib <= a.naive_budget_gib:
      cases.append("naive")
    for case in cases:
      cmd = [sys.executable, __file__, "--case", case, "--n", str(n), "--vocab", str(a.vocab), "--dim", str(a.dim),
             "--vocab-chunk", str(a.vocab_chunk)]
      res = subprocess.run(cmd, capture_output=True, text=True, env=os.environ)
      if res.returncode != 0:
        print(res.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"case {case} (n={n}) failed")
      row = json.loads(res.stdout.strip().splitlines()[-1])
      row["images"] = images
      rows.append(row)
    if "naive" not in cases:
      rows.append({"case": "naive", "images": images, "tokens": n, "vocab": a.vocab, "dim": a.dim,
                   "skipped": f"needs a {naive_gib:.1f} GiB distance matrix"})
  # Ratios against the matmul measured in the same run, for the same shape.
  for r in rows:
    mm = next((m for m in rows if m["case"] == "matmul" and m["tokens"] == r["tokens"]), None)
    if mm and "gflops" in r:
      r["frac_of_matmul"] = r["gflops"] / mm["gflops"]
    sp = next((m for m in rows if m["case"] == "spae" and m["tokens"] == r["tokens"]), None)
    if sp and r["case"] == "naive" and "seconds" in r:
      r["spae_speedup_vs_naive"] = r["seconds"] / sp["seconds"]
  info = _common.machine_info()
  print(f"# quantizer search: vocab {a.vocab} x dim {a.dim}, chunk {a.vocab_chunk}; {info.get('cpu', '')} "
        f"({info['cpu_count']} cores, {info['backend']})")
  _common.print_table(rows, ["case", "images", "tokens", "seconds", "tokens_per_s", "gflops", "frac_of_matmul",
                             "spae_speedup_vs_naive", "temp_mib", "peak_rss_mib", "skipped"])
  _common.write_json(a.out, {"benchmark": "quantizer", "machine": info, "args": vars(a), "rows": rows})
  return 0


if __name__ == "__main__":
  sys.exit(main())
