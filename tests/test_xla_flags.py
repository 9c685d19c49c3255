"""spae's entry points leave CPU convolutions to XLA's own emitter and cap XLA's instruction set at AVX2 on AVX-512
CPUs (spae._xla_flags): each flag is added only when the user did not set it (the cap only where the CPU has
AVX-512), it takes effect when added after `import jax` (before the first computation), and the `spae` command adds
them before running a subcommand."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from spae import cli
from spae._xla_flags import CPU_CONVOLUTIONS_FLAG, CPU_ISA_FLAG, xla_convolutions_on_cpu, xla_cpu_settings

# A conv's gradient in a fresh process: the flag under test is read once, when JAX's backend starts.
_PROBE = """
import hashlib, sys
import jax, jax.numpy as jnp, numpy as np
import spae
added = spae.xla_cpu_settings()
r = np.random.default_rng(0)
x = jnp.asarray(r.standard_normal((4, 16, 16, 32)), jnp.float32)
w = jnp.asarray(r.standard_normal((3, 3, 32, 32)), jnp.float32)
conv = lambda w, x: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
g = jax.jit(jax.grad(lambda w, x: jnp.sum(jnp.tanh(conv(w, x)) ** 2)))(w, x)
print(",".join(added) or "-", hashlib.sha256(np.asarray(g).tobytes()).hexdigest())
"""


def _probe(xla_flags: str | None) -> tuple[str, str]:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  if xla_flags is not None:
    env["XLA_FLAGS"] = xla_flags
  out = subprocess.run([sys.executable, "-c", _PROBE], env={**env, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                       text=True, timeout=120, check=True).stdout.split()
  return out[0], out[1]


def test_adds_the_flag_only_where_the_user_did_not_choose():
  avx2 = _cpuinfo("AuthenticAMD", 25, 1, "sse4_2 avx avx2 fma f16c")
  env = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
  assert xla_cpu_settings(env, avx2) == [CPU_CONVOLUTIONS_FLAG]
  assert env["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {CPU_CONVOLUTIONS_FLAG}"
  assert not xla_cpu_settings(env, avx2) and env["XLA_FLAGS"].count("ynn_fusion_type") == 1  # idempotent
  mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"}
  assert not xla_cpu_settings(mine, avx2) and mine["XLA_FLAGS"].endswith("+individual_convolution")
  empty: dict[str, str] = {}
  assert xla_cpu_settings(empty, avx2) and empty["XLA_FLAGS"] == CPU_CONVOLUTIONS_FLAG


def test_caps_the_instruction_set_only_on_avx512_cpus_and_only_where_the_user_did_not():
  """On an AVX2-only CPU the cap would change nothing, so XLA_FLAGS (and a run's record) stay as they were."""
  avx512 = _cpuinfo("AuthenticAMD", 26, 2, "sse4_2 avx avx2 fma avx512f avx512bw")
  avx2 = _cpuinfo("AuthenticAMD", 25, 1, "sse4_2 avx avx2 fma f16c")
  env: dict[str, str] = {}
  assert xla_cpu_settings(env, avx512) == [CPU_CONVOLUTIONS_FLAG, CPU_ISA_FLAG]
  assert env["XLA_FLAGS"] == f"{CPU_CONVOLUTIONS_FLAG} {CPU_ISA_FLAG}"
  assert xla_cpu_settings(env, avx512) == [] and env["XLA_FLAGS"].count("max_isa") == 1  # idempotent
  lifted = {"XLA_FLAGS": "--xla_cpu_max_isa=AVX512"}
  assert xla_cpu_settings(lifted, avx512) == [CPU_CONVOLUTIONS_FLAG] and "=AVX2" not in lifted["XLA_FLAGS"]
  older = {}
  assert xla_cpu_settings(older, avx2) == [CPU_CONVOLUTIONS_FLAG] and "max_isa" not in older["XLA_FLAGS"]
  assert xla_cpu_settings({}, []) == [CPU_CONVOLUTIONS_FLAG]  # nothing to read: no AVX-512 known, no cap
  # The name from before the cap does the same.
  assert xla_convolutions_on_cpu({"XLA_FLAGS": CPU_CONVOLUTIONS_FLAG}) == xla_cpu_settings(
      {"XLA_FLAGS": CPU_CONVOLUTIONS_FLAG})


def test_does_nothing_once_the_backend_started(monkeypatch):
  import jax.numpy as jnp

  jnp.zeros(1).block_until_ready()  # this process's backend has started
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  assert not xla_cpu_settings() and "XLA_FLAGS" not in os.environ


def test_the_flag_takes_effect_when_added_after_import_jax():
  """The probe's gradient with the flag added by spae equals the one with it set before Python started, and
  differs from XLA's default (the user's own setting, which spae leaves alone). Every run holds the same
  instruction-set setting, so only the convolution flag differs."""
  added, ours = _probe(None)
  isa = f" {CPU_ISA_FLAG}" if CPU_ISA_FLAG in added.split(",") else ""
  _, preset = _probe(CPU_CONVOLUTIONS_FLAG + isa)
  kept, default = _probe("--xla_cpu_experimental_ynn_fusion_type=+individual_convolution" + isa)
  assert CPU_CONVOLUTIONS_FLAG in added.split(",") and CPU_CONVOLUTIONS_FLAG not in kept.split(",")
  if preset == default:
    pytest.skip("XLA rounds YNNPACK's and its own convolutions alike on this CPU: the flag's effect is invisible")
  assert ours == preset  # so not XLA's default: the flag added after `import jax` took effect


def test_the_cap_reaches_xla_when_added_after_import_jax(tmp_path):
  """XLA records the options a program was compiled with: the cap spae adds after `import jax` is among them (the
  CPU is given as an AVX-512 one, so this runs on any machine)."""
  code = (f"import jax, jax.numpy as jnp\nfrom spae._xla_flags import xla_cpu_settings\n"
          f"added = xla_cpu_settings(cpuinfo={_cpuinfo('AuthenticAMD', 26, 2, 'avx2 fma avx512f')!r})\n"
          f"jax.jit(lambda x: x + 1)(jnp.ones(3)).block_until_ready()\nprint(','.join(added))\n")
  env = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": f"--xla_dump_to={tmp_path}"}
  out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                       check=True).stdout.split()
  assert out == [f"{CPU_CONVOLUTIONS_FLAG},{CPU_ISA_FLAG}"]
  options = [p.read_text() for p in tmp_path.rglob("*debug_options")]
  assert options and all('xla_cpu_max_isa: "AVX2"' in o for o in options)


def test_the_spae_command_adds_it_before_a_subcommand(monkeypatch, tmp_path):
  """...with the AVX2 cap, except for the subcommands a frozen LLM's matmuls dominate."""
  calls = []
  monkeypatch.setattr(cli, "xla_cpu_settings", lambda isa_cap=True: calls.append(isa_cap) or [])
  assert cli.main(["init", str(tmp_path / "tok")]) == 0 and calls == [True]
  assert "fewshot" in cli.LLM_COMMANDS and "train" not in cli.LLM_COMMANDS and cli.LLM_COMMANDS <= set(cli._COMMANDS)


def test_programs_an_llm_dominates_are_not_capped():
  avx512 = _cpuinfo("AuthenticAMD", 26, 2, "sse4_2 avx avx2 fma avx512f")
  env: dict[str, str] = {}
  assert xla_cpu_settings(env, avx512, isa_cap=False) == [CPU_CONVOLUTIONS_FLAG] and "max_isa" not in env["XLA_FLAGS"]


def test_runs_record_the_flags_they_computed_under(monkeypatch):
  from spae._xla_flags import numerics_record

  monkeypatch.setenv("XLA_FLAGS", CPU_CONVOLUTIONS_FLAG)
  rec = numerics_record()
  assert rec["xla_flags"] == CPU_CONVOLUTIONS_FLAG and isinstance(rec["cpu"], str)


def test_runs_record_the_package_versions_their_bits_depend_on():
  from importlib import metadata

  from spae._xla_flags import NUMERICS_PACKAGES, numerics_record

  rec = numerics_record()
  assert rec["packages"]["jax"] == metadata.version("jax") and rec["packages"]["numpy"] == metadata.version("numpy")
  assert set(rec["packages"]) <= set(NUMERICS_PACKAGES) and rec["python"].count(".") == 2


def test_differences_name_each_field_that_changed_and_skip_fields_the_record_lacks():
  from spae._xla_flags import numerics_differences, numerics_record

  here = numerics_record()
  assert numerics_differences(here, here) == []
  assert numerics_differences({"cpu": here["cpu"]}, here) == []  # an old record: no packages, no Python
  other = dict(here, xla_flags="--other", packages=dict(here["packages"], jax="0.0.1", gone="1.0"))
  lines = numerics_differences(other, here)
  assert len(lines) == 3 and any(l.startswith("XLA_FLAGS") for l in lines)
  assert f"jax {here['packages']['jax']} here, 0.0.1 in the record" in lines
  assert "gone not installed here, 1.0 in the record" in lines


def _cpuinfo(vendor: str, family: int, model: int, flags: str) -> list[str]:
  one = [f"vendor_id\t: {vendor}", f"cpu family\t: {family}", f"model\t\t: {model}", "model name\t: AMD EPYC",
         f"flags\t\t: fpu {flags} lm"]
  return ["processor\t: 0", *one, "", "processor\t: 1", *one, ""]


def test_the_record_tells_cpu_generations_apart_where_their_name_does_not():
  """Two EPYC generations share the name "AMD EPYC" but not the code XLA compiles for them (AVX-512 or not): the
  record names the type and vector extensions too, and a difference in either is reported."""
  from spae._xla_flags import _cpu_fields, numerics_differences, numerics_record

  zen3 = _cpu_fields(_cpuinfo("AuthenticAMD", 25, 1, "sse4_2 avx avx2 fma f16c"))
  zen5 = _cpu_fields(_cpuinfo("AuthenticAMD", 26, 2, "avx512f sse4_2 avx avx512bw avx2 fma"))
  assert zen3 == {"cpu": "AMD EPYC", "cpu_type": "AuthenticAMD family 25 model 1",
                  "cpu_vector": "sse4_2 avx avx2 fma f16c"}
  assert zen5["cpu_vector"] == "sse4_2 avx avx2 fma avx512f avx512bw"  # in VECTOR_EXTENSIONS' order
  here = numerics_record()
  lines = numerics_differences(dict(here, **zen3), dict(here, **zen5))
  assert lines == ["CPU type 'AuthenticAMD family 26 model 2' here, 'AuthenticAMD family 25 model 1' in the record",
                   "CPU vector extensions 'sse4_2 avx avx2 fma avx512f avx512bw' here, 'sse4_2 avx avx2 fma f16c' in "
                   "the record"]
  # Nothing to read (no /proc/cpuinfo): empty fields, not an error.
  assert _cpu_fields([]) == {"cpu": "", "cpu_type": "", "cpu_vector": ""}
