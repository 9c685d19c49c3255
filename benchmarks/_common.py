"""Shared helpers for the benchmarks: machine info, timing, matmul roofline, JSON output."""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from typing import Any, Callable, Sequence

import numpy as np

from spae._xla_flags import numerics_record, xla_cpu_settings

# Every benchmark imports this module before it computes anything: time what the `spae` command and the tools run
# (the benchmarks that an LLM's forward passes dominate run as `spae fewshot` does, without the AVX2 cap; fewshot.py
# only when it is given an LLM).
LLM_BENCHMARKS = ("generate_real.py", "lm_scoring.py", "sweep_scoring.py")
LLM_WITH_LM_FLAG = ("fewshot.py",)  # these time an LLM only when given one (--lm)


def runs_an_llm(argv: Sequence[str]) -> bool:
  """Whether the benchmark command line `argv` (sys.argv) runs an LLM's forward passes."""
  name, args = os.path.basename(argv[0]), argv[1:]
  return name in LLM_BENCHMARKS or (name in LLM_WITH_LM_FLAG and any(
      a.startswith("--lm=") or (a == "--lm" and i + 1 < len(args) and args[i + 1] != "none")
      for i, a in enumerate(args)))


xla_cpu_settings(isa_cap=not runs_an_llm(sys.argv))


def machine_info() -> dict[str, Any]:
  import jax

  info = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
          "jax": jax.__version__, "backend": jax.default_backend(),
          "devices": [str(d) for d in jax.devices()], "date": time.strftime("%Y-%m-%d")}
  numerics = numerics_record()
  for key in ("cpu", "cpu_type", "cpu_vector"):  # the name alone ("AMD EPYC") spans CPU generations
    if numerics[key]:
      info[key] = numerics[key]
  info["xla_flags"] = numerics["xla_flags"]
  info["packages"] = numerics["packages"]
  try:
    info["mem_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
  except (OSError, ValueError):
    pass
  return info



def machine_line(machine: dict[str, Any], load_before: Sequence[float], load_after: Sequence[float]) -> str:
  """One header line: CPU, cores, jax version and the 1-minute load average before and after the run."""
  kind = f" ({machine['cpu_type']})" if machine.get("cpu_type") else ""
  return (f"{machine.get('cpu', '?')}{kind}, {machine['cpu_count']} CPUs, jax {machine['jax']}; load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after")


def time_fn(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 3, min_seconds: float = 0.0) -> float:
  """Median wall seconds of fn() after warm-up; fn must block until its result is ready."""
  for _ in range(warmup):
    fn()
  times = []
  start = time.perf_counter()
  while len(times) < repeats or time.perf_counter() - start < min_seconds:
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def matmul_gflops(m: int, k: int, n: int, repeats: int = 3) -> float:
  """Achieved f32 GFLOP/s of an [m,k]x[k,n] jitted matmul on this machine, measured now."""
  import jax
  import jax.numpy as jnp

  a = jnp.asarray(np.random.default_rng(0).standard_normal((m, k)), jnp.float32)
  b = jnp.asarray(np.random.default_rng(1).standard_normal((k, n)), jnp.float32)
  f = jax.jit(lambda a, b: jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST))
  t = time_fn(lambda: f(a, b).block_until_ready(), repeats=repeats)
  return 2.0 * m * k * n / t / 1e9


def peak_rss_mib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load_tokenizer_bundle(path: str) -> Any:
  """spae.Tokenizer.load(path), or one line naming the bundle (as the CLI gives) instead of a traceback."""
  import spae

  try:
    return spae.Tokenizer.load(path)
  except spae.SpaeInputError as e:
    raise SystemExit(f"--tokenizer {path}: {e}") from None


def write_json(path: str | None, obj: Any) -> None:
  """--out: the results as JSON (numpy scalars as floats), written through spae's one atomic writer; no-op without
  a path."""
  from spae._io import write_text_atomic

  if path:
    write_text_atomic(path, json.dumps(obj, indent=1, default=float))


def print_table(rows: list[dict[str, Any]], cols: list[str]) -> None:
  def fmt(v):
    if isinstance(v, (list, tuple)):  # an interval
      return "[" + ", ".join(f"{x:.2f}" if isinstance(x, float) else str(x) for x in v) + "]"
    return f"{v:.4g}" if isinstance(v, float) else str(v)

  widths = [max(len(c), *(len(fmt(r.get(c, ""))) for r in rows)) for c in cols]
  print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
  for r in rows:
    print("  ".join(fmt(r.get(c, "")).ljust(w) for c, w in zip(cols, widths)))
