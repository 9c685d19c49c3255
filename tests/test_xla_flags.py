"""spae's entry points leave CPU convolutions to XLA's own emitter (spae._xla_flags): the flag is added only when
the user did not set it, it takes effect when added after `import jax` (before the first computation), and the
`spae` command adds it before running a subcommand."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from spae import cli
from spae._xla_flags import CPU_CONVOLUTIONS_FLAG, xla_convolutions_on_cpu

# A conv's gradient in a fresh process: the flag under test is read once, when JAX's backend starts.
_PROBE = """
import hashlib, sys
import jax, jax.numpy as jnp, numpy as np
import spae
added = spae.xla_convolutions_on_cpu()
r = np.random.default_rng(0)
x = jnp.asarray(r.standard_normal((4, 16, 16, 32)), jnp.float32)
w = jnp.asarray(r.standard_normal((3, 3, 32, 32)), jnp.float32)
conv = lambda w, x: jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"))
g = jax.jit(jax.grad(lambda w, x: jnp.sum(jnp.tanh(conv(w, x)) ** 2)))(w, x)
print(added, hashlib.sha256(np.asarray(g).tobytes()).hexdigest())
"""


def _probe(xla_flags: str | None) -> tuple[str, str]:
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  if xla_flags is not None:
    env["XLA_FLAGS"] = xla_flags
  out = subprocess.run([sys.executable, "-c", _PROBE], env={**env, "JAX_PLATFORMS": "cpu"}, capture_output=True,
                       text=True, timeout=120, check=True).stdout.split()
  return out[0], out[1]


def test_adds_the_flag_only_where_the_user_did_not_choose():
  env = {"XLA_FLAGS": "--xla_dump_to=/tmp/x"}
  assert xla_convolutions_on_cpu(env) and env["XLA_FLAGS"] == f"--xla_dump_to=/tmp/x {CPU_CONVOLUTIONS_FLAG}"
  assert not xla_convolutions_on_cpu(env) and env["XLA_FLAGS"].count("ynn_fusion_type") == 1  # idempotent
  mine = {"XLA_FLAGS": "--xla_cpu_experimental_ynn_fusion_type=+individual_convolution"}
  assert not xla_convolutions_on_cpu(mine) and mine["XLA_FLAGS"].endswith("+individual_convolution")
  empty: dict[str, str] = {}
  assert xla_convolutions_on_cpu(empty) and empty["XLA_FLAGS"] == CPU_CONVOLUTIONS_FLAG


def test_does_nothing_once_the_backend_started(monkeypatch):
  import jax.numpy as jnp

  jnp.zeros(1).block_until_ready()  # this process's backend has started
  monkeypatch.delenv("XLA_FLAGS", raising=False)
  assert not xla_convolutions_on_cpu() and "XLA_FLAGS" not in os.environ


def test_the_flag_takes_effect_when_added_after_import_jax():
  """The probe's gradient with the flag added by spae equals the one with it set before Python started, and
  differs from XLA's default (the user's own setting, which spae leaves alone)."""
  added, ours = _probe(None)
  _, preset = _probe(CPU_CONVOLUTIONS_FLAG)
  kept, default = _probe("--xla_cpu_experimental_ynn_fusion_type=+individual_convolution")
  assert (added, kept) == ("True", "False")
  if preset == default:
    pytest.skip("XLA rounds YNNPACK's and its own convolutions alike on this CPU: the flag's effect is invisible")
  assert ours == preset  # so not XLA's default: the flag added after `import jax` took effect


def test_the_spae_command_adds_it_before_a_subcommand(monkeypatch, tmp_path):
  calls = []
  monkeypatch.setattr(cli, "xla_convolutions_on_cpu", lambda: calls.append(1) or False)
  assert cli.main(["init", str(tmp_path / "tok")]) == 0 and calls == [1]


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
