"""Checkpoint reading for the frozen teachers: safetensors and npz, with errors that name tensor and file."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from spae._io import SpaeInputError

# safetensors dtype tags -> numpy dtypes (bfloat16 through ml_dtypes, which jax already depends on).
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
              "U8": "u1", "BOOL": "?"}


def _st_dtype(tag: str, where: str) -> np.dtype:
  if tag == "BF16":
    import ml_dtypes

    return np.dtype(ml_dtypes.bfloat16)
  if tag not in _ST_DTYPES:
    raise SpaeInputError(f"{where}: unsupported safetensors dtype {tag}.")
  return np.dtype(_ST_DTYPES[tag])


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
  """All tensors of one `.safetensors` file, as read-only views of a memory map (no torch needed)."""
  try:
    with open(path, "rb") as f:
      n = int.from_bytes(f.read(8), "little")
      header = json.loads(f.read(n))
  except (OSError, ValueError) as e:
    raise SpaeInputError(f"{path} is not a readable safetensors file ({e}).") from e
  data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + n)
  out = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    start, end = info["data_offsets"]
    dtype = _st_dtype(info["dtype"], f"{path}: tensor {name!r}")
    out[name] = data[start:end].view(dtype).reshape(info["shape"])
  return out


class TensorFile:
  """Named tensors of one checkpoint, fetched with shape checks.

  `get` raises SpaeInputError naming the tensor and the file when a tensor is missing or its shape is not
  what the model configuration implies.
  """

  def __init__(self, tensors: dict[str, np.ndarray], where: str):
    self.tensors = tensors
    self.where = where

  @classmethod
  def from_safetensors(cls, path: str | os.PathLike) -> "TensorFile":
    """A `.safetensors` file, or a folder of them (sharded HF checkpoints are merged)."""
    path = Path(path)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files or not files[0].is_file():
      raise SpaeInputError(f"no .safetensors weights found at {str(path)!r}; expected model.safetensors.")
    tensors: dict[str, np.ndarray] = {}
    for f in files:
      tensors.update(read_safetensors(f))
    return cls(tensors, str(files[0]) if len(files) == 1 else f"{path}/*.safetensors")

  @classmethod
  def from_npz(cls, path: str | os.PathLike) -> "TensorFile":
    path = Path(path)
    if not path.is_file():
      raise SpaeInputError(f"checkpoint {str(path)!r} does not exist.")
    try:
      with np.load(path, allow_pickle=False) as f:
        tensors = {k: f[k] for k in f.keys()}
    except (OSError, ValueError) as e:
      raise SpaeInputError(f"{path} is not a readable .npz checkpoint ({e}).") from e
    return cls(tensors, str(path))

  def __contains__(self, name: str) -> bool:
    return name in self.tensors

  def keys(self) -> Iterable[str]:
    return self.tensors.keys()

  def get(self, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Tensor `name` as float32, checked against `shape` (None: any shape)."""
    if name not in self.tensors:
      near = sorted(k for k in self.tensors if k.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1])[:5]
      raise SpaeInputError(
          f"{self.where}: missing tensor {name!r}"
          + (f" (expected shape {tuple(shape)})" if shape is not None else "")
          + (f"; similar names present: {near}" if near else "")
          + ". The checkpoint is incomplete or of a different architecture.")
    arr = self.tensors[name]
    if shape is not None and tuple(arr.shape) != tuple(shape):
      raise SpaeInputError(
          f"{self.where}: tensor {name!r} has shape {tuple(arr.shape)} but the model configuration implies "
          f"{tuple(shape)}. The config and weights do not belong together.")
    return np.asarray(arr, dtype=np.float32)

  def fingerprint(self) -> str:
    """A cheap content hash: names, shapes and a strided sample of every tensor's values."""
    h = hashlib.sha256()
    for name in sorted(self.tensors):
      arr = self.tensors[name]
      flat = np.asarray(arr).reshape(-1)
      step = max(1, flat.size // 512)
      h.update(f"{name}:{arr.shape}:{arr.dtype};".encode())
      h.update(np.ascontiguousarray(flat[::step]).tobytes())
    return h.hexdigest()[:16]


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
