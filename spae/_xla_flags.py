"""XLA:CPU settings spae's entry points choose before JAX starts its CPU backend.

1. XLA:CPU hands convolutions to YNNPACK by default (its `individual_convolution` fusion). On AVX2-only CPUs (the
   2-core AMD EPYC of 2026-12-03, no AVX-512) that path ran the default tokenizer's decoder forward + backward
   2.8-4.3× slower than XLA's own convolution emitter, and a training step 2.3× slower (benchmarks/README.md,
   train_step.py). Only convolutions leave YNNPACK: its matmul fusion stays, since turning it off too slowed a 2048²
   matmul by ~25%.
2. On CPUs with AVX-512, XLA:CPU's code for the nearest-word search (distances to 32,768 words and their argmin, in
   chunks) ran 3.6× slower than the same search compiled for AVX2 (the 2-core AMD EPYC family 26 of 2026-12-06:
   0.72 against 0.20 s per step, every other part of the step alike), so a training step of the shipped recipe took
   1.35 s instead of 0.85 (benchmarks/README.md, "XLA:CPU's AVX-512 code"). spae caps XLA's instruction set at AVX2
   there (`--xla_cpu_max_isa=AVX2`), except in programs that an LLM's matmuls dominate (`isa_cap=False`: Gemma 3
   270M's batched scoring ran ~7% slower capped). On CPUs without AVX-512 the cap would change nothing and is not
   added, so XLA_FLAGS there, and the bits of a run, stay as they were.

Each setting rounds differently (relative gradient differences ~1e-5), so runs are bit-reproducible only with the
same settings on the same machine type. An XLA_FLAGS that already sets the YNN fusion type, or the instruction-set
cap, is left as it is: XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution restores XLA's
default convolutions, and XLA_FLAGS=--xla_cpu_max_isa=AVX512 (any value) lifts the cap.
"""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, MutableMapping

_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
CPU_CONVOLUTIONS_FLAG = f"{_FLAG}=-individual_convolution"
_ISA = "--xla_cpu_max_isa"
CPU_ISA_FLAG = f"{_ISA}=AVX2"  # added only where the CPU has AVX-512 (avx512f)

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

__all__ = ["CPU_CONVOLUTIONS_FLAG", "CPU_ISA_FLAG", "NUMERICS_PACKAGES", "VECTOR_EXTENSIONS", "numerics_differences",
           "numerics_record", "xla_convolutions_on_cpu", "xla_cpu_settings"]


def xla_cpu_settings(environ: MutableMapping[str, str] | None = None, cpuinfo: list[str] | None = None, *,
                     isa_cap: bool = True) -> list[str]:
  """Adds spae's XLA:CPU settings to XLA_FLAGS: CPU_CONVOLUTIONS_FLAG unless XLA_FLAGS already sets the YNN fusion
  type, and CPU_ISA_FLAG where the CPU has AVX-512 unless XLA_FLAGS already sets the instruction-set cap. Adds
  nothing once JAX's backends started (the flags are read once, at the first computation; adding them later would
  change nothing and misreport the run). Returns the flags it added.

  environ: the environment to change (os.environ when None; then the backend check applies).
  cpuinfo: /proc/cpuinfo's lines (read when None; nothing to read means no AVX-512 known, no cap).
  isa_cap: False for programs that an LLM's matmuls dominate (Gemma 3 270M's batched scoring ran ~7% slower
    capped); the cap pays where the tokenizer searches its vocabulary.
  """
  env = os.environ if environ is None else environ
  flags = env.get("XLA_FLAGS", "")
  if environ is None:
    from jax._src import xla_bridge  # no public API tells whether the backends started

    if xla_bridge.backends_are_initialized():
      return []
  added = []
  if _FLAG not in flags:
    added.append(CPU_CONVOLUTIONS_FLAG)
  if isa_cap and _ISA not in flags:
    if "avx512f" in _cpu_fields(_read_cpuinfo() if cpuinfo is None else cpuinfo)["cpu_vector"].split():
      added.append(CPU_ISA_FLAG)
  if added:
    env["XLA_FLAGS"] = " ".join([flags, *added]).strip()
  return added


def xla_convolutions_on_cpu(environ: MutableMapping[str, str] | None = None) -> list[str]:
  """`xla_cpu_settings` under its name from before it capped the instruction set (kept for library callers)."""
  return xla_cpu_settings(environ)


def _read_cpuinfo() -> list[str]:
  try:
    return Path("/proc/cpuinfo").read_text().splitlines()
  except OSError:
    return []


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
  lines = _read_cpuinfo()
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
