"""Shared tiny language models for the spae.lm tests (built once per session, reused across test modules)."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import pytest

from spae import lm as L

PARITY = Path(__file__).parent / "fixtures" / "parity"
_ROOT = Path(tempfile.mkdtemp(prefix="spae_lm_tests_"))


@functools.lru_cache(maxsize=None)
def tiny(kind: str = "gemma2", layout: str = "hf") -> L.GemmaLM:
  """A tiny random model (cached: pytest may collect an imported fixture once per module)."""
  return L.load(L.testing.make_tiny_lm(_ROOT / f"{kind}-{layout}", kind, layout))


@functools.lru_cache(maxsize=None)
def parity(kind: str, layout: str) -> L.GemmaLM:
  return L.load(f"{'hf' if layout == 'hf' else 'gemma'}:{PARITY / kind / layout}")


@pytest.fixture(scope="session")
def tiny_gemma2() -> L.GemmaLM:
  return tiny("gemma2")


@pytest.fixture(scope="session")
def lm_tmp() -> Path:
  return _ROOT
