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
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, MutableMapping

_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
CPU_CONVOLUTIONS_FLAG = f"{_FLAG}=-individual_convolution"

# The installed distributions a training run's bits depend on: XLA's numerics (jax, jaxlib), the optimiser and
# initialisers (flax, optax, ml_dtypes), the data (numpy renders and draws the scenes; Pillow, scikit-image and
# scipy read, crop and resize the photographs; tensorflow-datasets and array_record store them) and the vocabulary
# (gguf reads Gemma's table). pip resolves spae's lower bounds to whatever the registry holds that day, so two
# machines built on different days can train one recipe to different bits.
NUMERICS_PACKAGES = ("jax", "jaxlib", "numpy", "flax", "optax", "ml_dtypes", "pillow", "scipy", "scikit-image",
                     "tensorflow-datasets", "array_record", "gguf")

# The SIMD extensions XLA:CPU's LLVM backend may compile float loops with: it targets the host CPU, so a machine with
# other ones (AVX-512 against AVX2 alone, say) vectorises reductions differently and rounds them differently.
VECTOR_EXTENSIONS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl",
                     "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_bf16", "amx_tile", "asimd", "sve", "sve2")

__all__ = ["CPU_CONVOLUTIONS_FLAG", "NUMERICS_PACKAGES", "VECTOR_EXTENSIONS", "numerics_differences",
           "numerics_record", "xla_convolutions_on_cpu"]


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


def _cpu_fields(lines: list[str]) -> dict[str, str]:
  """The fields of /proc/cpuinfo's first processor that decide which code XLA:CPU compiles: the marketing name alone
  ("AMD EPYC") names several generations."""
  first: dict[str, str] = {}
  for line in lines:
    if not line.strip():
      if first:
        break
      continue
    key, _, value = line.partition(":")
    first.setdefault(key.strip(), value.strip())
  kind = " ".join(f"{label} {first[key]}" if label else first[key]
                  for key, label in (("vendor_id", ""), ("cpu family", "family"), ("model", "model"),
                                     ("CPU implementer", "implementer"), ("CPU part", "part"))  # the last two: Arm
                  if key in first)
  flags = set((first.get("flags") or first.get("Features") or "").split())
  return {"cpu": first.get("model name", ""), "cpu_type": kind,
          "cpu_vector": " ".join(f for f in VECTOR_EXTENSIONS if f in flags)}


def numerics_record() -> dict[str, Any]:
  """What a run's bits depend on besides its code, config and seed: the CPU's name, type (vendor, family and model)
  and vector extensions ('' where /proc/cpuinfo does not say), XLA_FLAGS, the Python version and the installed
  versions of NUMERICS_PACKAGES (those not installed are left out)."""
  try:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
  except OSError:
    lines = []
  packages = {}
  for name in NUMERICS_PACKAGES:
    try:
      packages[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      pass
  return {**_cpu_fields(lines), "xla_flags": os.environ.get("XLA_FLAGS", ""), "python": platform.python_version(),
          "packages": packages}


def numerics_differences(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
  """One line per way `current` (a numerics_record()) differs from `recorded` (one a run wrote down): the reasons a
  rerun of that run may not reproduce its bits. Fields the record lacks (records older than a field) are skipped."""
  out = []
  for key, label in (("cpu", "CPU"), ("cpu_type", "CPU type"), ("cpu_vector", "CPU vector extensions"),
                     ("xla_flags", "XLA_FLAGS"), ("python", "Python")):
    if key in recorded and recorded[key] != current.get(key):
      out.append(f"{label} {current.get(key)!r} here, {recorded[key]!r} in the record")
  theirs, ours = recorded.get("packages", {}), current.get("packages", {})
  for name in sorted(theirs):
    if theirs[name] != ours.get(name):
      out.append(f"{name} {ours.get(name, 'not installed')} here, {theirs[name]} in the record")
  return out
