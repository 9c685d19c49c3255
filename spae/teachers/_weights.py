"""Small helpers of the teacher loaders (tensors themselves are read by `spae._tensors.open_tensors`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from spae._io import SpaeInputError


def read_json(path: Path, what: str) -> dict:
  if not path.is_file():
    raise SpaeInputError(f"{path} does not exist; {what}.")
  try:
    return json.loads(path.read_text(encoding="utf-8"))
  except ValueError as e:
    raise SpaeInputError(f"{path} is not valid JSON ({e}).") from e


def stack_layers(layers: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
  """[{name: [..]}] * L -> {name: [L, ..]}, so one `lax.scan` body runs every block."""
  return {k: np.stack([layer[k] for layer in layers]) for k in layers[0]}
