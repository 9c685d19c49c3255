"""A small safetensors reader (numpy only): reads bf16/f16/f32 tensors as float32 without torch."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from spae._io import SpaeInputError

_DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64,
           "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
  """All tensors of one file; floating tensors come back as float32 (bf16 is widened exactly)."""
  data = path.read_bytes()
  try:
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
  except Exception as e:  # a truncated or non-safetensors file
    raise SpaeInputError(f"{path} is not a safetensors file ({e}).") from e
  base = 8 + n
  out: dict[str, np.ndarray] = {}
  for name, info in header.items():
    if name == "__metadata__":
      continue
    dtype = _DTYPES.get(info.get("dtype"))
    if dtype is None:
      raise SpaeInputError(f"{path}: tensor {name!r} has unsupported dtype {info.get('dtype')!r}.")
    start, end = info["data_offsets"]
    arr = np.frombuffer(data, dtype=dtype, count=(end - start) // np.dtype(dtype).itemsize, offset=base + start)
    if info["dtype"] == "BF16":  # bf16 is the top half of an f32
      arr = (arr.astype(np.uint32) << 16).view(np.float32)
    elif np.issubdtype(arr.dtype, np.floating):
      arr = arr.astype(np.float32)
    out[name] = arr.reshape(info["shape"])
  return out


def read_safetensors_dir(folder: Path) -> tuple[dict[str, np.ndarray], str | None]:
  """Every `*.safetensors` shard in a folder, merged. Returns (tensors, stored dtype of the first float)."""
  files = sorted(folder.glob("*.safetensors"))
  if not files:
    raise SpaeInputError(f"{folder} has no *.safetensors files; it is not an HF-format checkpoint folder.")
  tensors: dict[str, np.ndarray] = {}
  dtype = None
  for f in files:
    raw = f.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    for name, info in header.items():
      if name != "__metadata__" and dtype is None and info["dtype"] in ("F32", "F16", "BF16"):
        dtype = info["dtype"]
    del raw
    tensors.update(read_safetensors(f))
  return tensors, dtype
