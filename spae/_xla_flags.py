"""XLA:CPU settings spae's entry points choose before JAX starts its CPU backend.

XLA:CPU hands convolutions to YNNPACK by default (its `individual_convolution` fusion). On AVX2-only CPUs (the
2-core AMD EPYC of 2026-12-03, no AVX-512) that path ran the default tokenizer's decoder forward + backward 2.8-4.3×
slower than XLA's own convolution emitter, and a training step 2.3× slower (benchmarks/README.md, train_step.py).
Only convolutions leave YNNPACK: its matmul fusion stays, since turning it off too slowed a 2048² matmul by ~25%.

The two paths round differently (relative gradient differences ~1e-5), so runs are bit-reproducible only with the
same setting on the same machine type. XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution
restores XLA's default bit for bit, and any XLA_FLAGS that already sets the fusion type is left as it is.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import MutableMapping

_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
CPU_CONVOLUTIONS_FLAG = f"{_FLAG}=-individual_convolution"

__all__ = ["CPU_CONVOLUTIONS_FLAG", "numerics_record", "xla_convolutions_on_cpu"]


def xla_convolutions_on_cpu(environ: MutableMapping[str, str] | None = None) -> bool:
  """Adds CPU_CONVOLUTIONS_FLAG to XLA_FLAGS unless XLA_FLAGS already sets the YNN fusion type or JAX's backends
  already started (the flags are read once, at the first computation; adding it later would change nothing and
  misreport the run). Returns whether it added the flag."""
  env = os.environ if environ is None else environ
  flags = env.get("XLA_FLAGS", "")
  if _FLAG in flags:
    return False
  if environ is None:
    from jax._src import xla_bridge  # no public API tells whether the backends started

    if xla_bridge.backends_are_initialized():
      return False
  env["XLA_FLAGS"] = f"{flags} {CPU_CONVOLUTIONS_FLAG}".strip()
  return True


def numerics_record() -> dict[str, str]:
  """What a run's bits depend on besides its code, config and seed: the CPU model ('' where /proc/cpuinfo does not
  name one) and XLA_FLAGS."""
  try:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
  except OSError:
    lines = []
  cpu = next((l.split(":", 1)[1].strip() for l in lines if l.startswith("model name")), "")
  return {"cpu": cpu, "xla_flags": os.environ.get("XLA_FLAGS", "")}
