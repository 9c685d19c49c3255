"""GGUF header metadata without the tensors: a fast reader for the key/value pairs llama.cpp stores."""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from spae._io import SpaeInputError

__all__ = ["read_gguf_metadata", "metadata_from_reader"]


_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


def read_gguf_metadata(path: str | os.PathLike) -> dict[str, Any]:
  """All key/value pairs of a GGUF file's header (tensors are not read), in file order.

  Arrays of numbers come back as numpy arrays, arrays of strings as lists. This walks the header with `struct`,
  which takes a fraction of a second where `gguf.GGUFReader` builds a numpy view per string (tens of seconds for a
  262,144-piece vocabulary).
  """
  path = Path(path)
  try:
    with open(path, "rb") as f:
      mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
  except (OSError, ValueError) as e:  # ValueError: an empty file cannot be mapped
    raise SpaeInputError(f"cannot read GGUF file {str(path)!r} ({e}); pass an existing .gguf file.") from None
  try:
    return _parse_kv(mm, path)
  except (struct.error, IndexError, UnicodeDecodeError, MemoryError, OverflowError) as e:
    raise SpaeInputError(f"{path} is truncated or corrupt in its GGUF header ({type(e).__name__}); "
                         "re-download or re-export the file.") from None
  finally:
    mm.close()


def _parse_kv(mm: mmap.mmap, path: Path) -> dict[str, Any]:
  if mm[:4] != b"GGUF":
    raise SpaeInputError(f"{path} is not a GGUF file (it does not start with b'GGUF'); pass a .gguf model file.")
  bo = "<"
  (version,) = struct.unpack_from("<I", mm, 4)
  if version & 0xFFFF == 0:  # written big-endian
    bo = ">"
    (version,) = struct.unpack_from(">I", mm, 4)
  if version not in (2, 3):
    raise SpaeInputError(f"{path} is GGUF version {version}; versions 2 and 3 are supported.")
  _, n_kv = struct.unpack_from(bo + "QQ", mm, 8)
  off = 24
  size = len(mm)

  def string(off: int) -> tuple[str, int]:
    (n,) = struct.unpack_from(bo + "Q", mm, off)
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
    etype, n = struct.unpack_from(bo + "IQ", mm, off)
    off += 12
    if etype == _STRING:  # the vocabulary: hundreds of thousands of strings, so the loop is kept lean
      u64, raw = struct.Struct(bo + "Q").unpack_from, []
      for _ in range(n):
        (k,) = u64(mm, off)
        raw.append(mm[off + 8:off + 8 + k])
        off += 8 + k
      if off > size:
        raise IndexError("string array past the end of the file")
      return [b.decode("utf-8") for b in raw], off
    if etype == _ARRAY:
      out = []
      for _ in range(n):
        v, off = value(_ARRAY, off)
        out.append(v)
      return out, off
    if etype not in _SCALARS:
      raise SpaeInputError(f"{path} has an unknown GGUF array type {etype}; the file is corrupt or too new.")
    dt = np.dtype(bo + _SCALARS[etype]) if etype != 7 else np.dtype(np.bool_)
    end = off + n * dt.itemsize
    if end > size:
      raise IndexError("array past the end of the file")
    return np.frombuffer(mm, dt, count=n, offset=off).copy(), end

  out: dict[str, Any] = {}
  for _ in range(n_kv):
    key, off = string(off)
    (vtype,) = struct.unpack_from(bo + "I", mm, off)
    out[key], off = value(vtype, off + 4)
  return out


def metadata_from_reader(reader: Any) -> dict[str, Any]:
  """The tokenizer keys of a `gguf.GGUFReader` (`field.contents()`), shaped like `read_gguf_metadata`'s."""
  out = {}
  for key, field in reader.fields.items():
    if key.startswith("tokenizer.") or key.startswith("general."):
      v = field.contents()
      out[key] = np.asarray(v) if isinstance(v, list) and v and not isinstance(v[0], str) else v
  return out
