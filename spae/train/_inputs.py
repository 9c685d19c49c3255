"""Resolves a TrainConfig's vocabulary and data specs into objects (the grammars live in `spae._specs`)."""

from __future__ import annotations

import numpy as np

from spae import _specs, data
from spae._io import SpaeInputError
from spae._vocab import Vocabulary

__all__ = ["build_vocabulary", "open_data", "reference_images"]


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


def reference_images(src, n: int, image_size: int, crop: str) -> np.ndarray:
  """The first `n` images of a training source as the model sees them, without random augmentation (a random
  crop becomes the centre crop; no flip): [n, S, S, 3] floats in [0, 1]. What the teacher is centred on, chooses the
  semantic sub-vocabulary from and labels for the refit."""
  prep = data.Preprocess(image_size, crop="center" if crop == "random" else crop, flip=False)
  return np.stack([data.preprocess(src.load(i), prep) for i in range(min(n, len(src)))])
