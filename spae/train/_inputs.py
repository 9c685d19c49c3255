"""Resolves a TrainConfig's vocabulary and data specs into objects (the grammars live in `spae._specs`)."""

from __future__ import annotations

from spae import _specs, data
from spae._io import SpaeInputError
from spae._vocab import Vocabulary

__all__ = ["build_vocabulary", "open_data"]


def build_vocabulary(spec: str) -> Vocabulary:
  """A vocabulary spec: 'default' (shipped), 'gemma3-270m' (from its package), 'tiny', 'tiny:DIM' or a folder
  written by `Vocabulary.save`. A config's 'REQUIRED: how' placeholder says how to set it."""
  if spec.startswith("REQUIRED"):
    raise SpaeInputError(f"this config needs a vocabulary: {spec.split(':', 1)[-1].strip()} "
                         "(a directory written by spae.Vocabulary.save).")
  return _specs.resolve("vocab", spec)


def open_data(spec: str):
  """An image source: any `spae.data.make_source` spec ('shapes-memory:N[@SIZE]', 'scenes:N', '~/images', ...)."""
  return data.make_source(spec)
