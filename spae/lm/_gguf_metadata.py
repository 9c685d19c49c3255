"""GGUF metadata for the tokenizer: from a path (through spae._gguf_file, the one GGUF parser) or a gguf.GGUFReader."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["read_gguf_metadata", "metadata_from_reader"]


def read_gguf_metadata(path: str | os.PathLike) -> dict[str, Any]:
  """The metadata of a GGUF file, from spae's one GGUF header parser (spae._gguf_file)."""
  from spae._gguf_file import read_gguf

  return read_gguf(path).metadata


def metadata_from_reader(reader: Any) -> dict[str, Any]:
  """The tokenizer keys of a `gguf.GGUFReader` (`field.contents()`), shaped like `read_gguf_metadata`'s."""
  out = {}
  for key, field in reader.fields.items():
    if key.startswith("tokenizer.") or key.startswith("general."):
      v = field.contents()
      out[key] = np.asarray(v) if isinstance(v, list) and v and not isinstance(v[0], str) else v
  return out
