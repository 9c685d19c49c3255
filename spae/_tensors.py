"""One reader for every checkpoint format spae loads: safetensors, npz / npy, orbax and GGUF.

`open_tensors(path)` returns a `Tensors` mapping {name: array} that reads lazily:

- safetensors (a file, or a folder of `*.safetensors` shards): each shard's header is read once and its data
  memory-mapped; tensors keep their stored dtype (bf16 as `ml_dtypes.bfloat16`).
- `.npz` (members read on access, never with pickle) and `.npy` (memory-mapped; the tensor is named by the
  file's stem).
- orbax checkpoint directories: restored once; names are key paths joined by `sep` (`embedder/input_embedding`).
- GGUF (llama.cpp): header parsed by `spae._gguf_file`, data memory-mapped; names as stored (`blk.0.attn_q.weight`);
  shapes in numpy order (ggml lists dimensions innermost first, so they are reversed); quantized tensors (Q8_0,
  Q4_K, ...) are dequantized on `get` (gguf.quants); the key/value metadata is `Tensors.metadata`.

`Tensors.get(name, shape=None, dtype=None)` checks that the tensor exists, has the expected shape and can be
read as the requested dtype, and raises `SpaeInputError` naming the file and the tensor otherwise.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from spae._io import SpaeInputError

__all__ = ["Tensors", "open_tensors", "load_tensor", "flatten_tree", "FORMATS", "GGUF_TYPES"]

# safetensors dtype tags -> numpy dtype strings ("BF16" is handled through ml_dtypes).
_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
              "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?"}

# GGML tensor types spae reads: plain ones are viewed in place, quantized ones go through gguf.quants.dequantize.
_GGUF_PLAIN = {"F32": "<f4", "F16": "<f2", "BF16": "bfloat16", "F64": "<f8", "I8": "i1", "I16": "<i2",
               "I32": "<i4", "I64": "<i8"}
_GGUF_QUANT = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K")
GGUF_TYPES: tuple[str, ...] = ("F32", "F16", "BF16", *_GGUF_QUANT)  # the float types, in errors and docs


def _bfloat16() -> np.dtype:
  import ml_dtypes  # a jax dependency

  return np.dtype(ml_dtypes.bfloat16)


@dataclasses.dataclass(frozen=True)
class _Entry:
  shape: tuple[int, ...]
  stored: str  # numpy dtype name ('float32', 'bfloat16', ...) or a GGML quantization type ('Q4_K')
  read: Callable[[], np.ndarray]  # the stored array (quantized: raw blocks)
  quant: str | None = None  # the GGML type of quantized entries
  file: str | None = None  # the shard holding it, when the checkpoint has several


class Tensors(Mapping[str, np.ndarray]):
  """Named tensors of one checkpoint, read lazily, fetched with shape and dtype checks.

  A `Mapping`: `tensors[name]` is `get(name)`. `where` names the file in every error.
  Attributes:
    where: the file or folder, as shown in errors.
    format: 'safetensors', 'npz', 'npy', 'orbax', 'gguf' or 'arrays'.
    dtype: default dtype of `get` (None: as stored; quantized GGUF tensors come back as float32).
    metadata: a GGUF file's key/value metadata (`general.architecture`, `tokenizer.ggml.tokens`, ...: numeric
      arrays as numpy arrays, string arrays as lists) or a safetensors file's `__metadata__`; else empty.
  """

  def __init__(self, entries: dict[str, _Entry], where: str, format: str, *, dtype: Any = None,
               metadata: dict[str, Any] | None = None):
    self._entries = entries
    self.where = where
    self.format = format
    self.dtype = None if dtype is None else np.dtype(dtype)
    self.metadata = metadata or {}

  @classmethod
  def from_arrays(cls, arrays: Mapping[str, Any], where: str = "arrays", *, dtype: Any = None) -> "Tensors":
    """In-memory arrays behind the same checked interface."""
    entries = {}
    for k, v in arrays.items():
      a = np.asarray(v)
      entries[k] = _Entry(tuple(a.shape), a.dtype.name, lambda a=a: a)
    return cls(entries, where, "arrays", dtype=dtype)

  # ---------------------------------------------------------------- mapping
  def __getitem__(self, name: str) -> np.ndarray:
    return self.get(name)

  def __iter__(self) -> Iterator[str]:
    return iter(self._entries)

  def __len__(self) -> int:
    return len(self._entries)

  def __contains__(self, name: object) -> bool:
    return name in self._entries

  def __repr__(self) -> str:
    return f"Tensors({self.where!r}, format={self.format}, {len(self)} tensors)"

  # ---------------------------------------------------------------- metadata (no data read)
  def shape(self, name: str) -> tuple[int, ...]:
    return self._entry(name, None).shape

  def stored_dtype(self, name: str) -> str:
    """'float32', 'bfloat16', 'int64', ... or, for quantized GGUF tensors, the GGML type ('Q4_K')."""
    return self._entry(name, None).stored

  def rename(self, fn: Callable[[str], str | None]) -> "Tensors":
    """A view with every name mapped through `fn`; names mapped to None are left out."""
    entries = {}
    for k, e in self._entries.items():
      new = fn(k)
      if new is not None:
        entries[new] = e
    return Tensors(entries, self.where, self.format, dtype=self.dtype, metadata=self.metadata)

  def subset(self, prefix: str) -> "Tensors":
    """The tensors whose names start with `prefix`, with the prefix removed."""
    return self.rename(lambda k: k[len(prefix):] if k.startswith(prefix) else None)

  # ---------------------------------------------------------------- data
  def raw(self, name: str) -> np.ndarray:
    """The tensor as stored: a read-only memory-mapped view where the format allows; quantized GGUF tensors
    are their raw uint8 blocks."""
    return self._entry(name, None).read()

  def get(self, name: str, shape: tuple[int, ...] | None = None, dtype: Any = None) -> np.ndarray:
    """Tensor `name`, checked against `shape` (None: any) and read as `dtype` (None: the store's default).

    Floating tensors (quantized included) may be read as any floating dtype; integer and bool tensors as any
    integer or floating dtype. Without a copy when the stored dtype already matches (a memory-mapped view).
    """
    e = self._entry(name, shape)
    where = e.file or self.where
    if shape is not None and e.shape != tuple(shape):
      raise SpaeInputError(
          f"{where}: tensor {name!r} has shape {e.shape} but the model configuration implies "
          f"{tuple(shape)}. The config and weights do not belong together.")
    want = dtype if dtype is not None else self.dtype
    if want is not None:
      want = np.dtype(want)
      floating = e.quant is not None or e.stored in ("bfloat16", "float16", "float32", "float64")
      if floating and not np.issubdtype(want, np.floating) and want != _bfloat16():
        raise SpaeInputError(f"{where}: tensor {name!r} is stored as {e.stored}; it cannot be read as "
                             f"{want.name} (a floating dtype is needed).")
    if e.quant is not None:
      from spae._gguf_file import dequantize

      return dequantize(e.read(), e.quant, e.shape, want if want is not None else np.dtype(np.float32))
    arr = e.read()
    if want is not None and arr.dtype != want:
      arr = arr.astype(want)
    return arr

  def fingerprint(self) -> str:
    """A cheap content hash: names, shapes, stored dtypes and a strided sample of every tensor's values."""
    h = hashlib.sha256()
    for name in sorted(self._entries):
      arr = self.raw(name)
      flat = np.asarray(arr).reshape(-1)
      step = max(1, flat.size // 512)
      h.update(f"{name}:{arr.shape}:{arr.dtype};".encode())
      h.update(np.ascontiguousarray(flat[::step]).tobytes())
    return h.hexdigest()[:16]

  def _entry(self, name: str, shape: tuple[int, ...] | None) -> _Entry:
    e = self._entries.get(name)
    if e is None:
      tail = name.replace("/", ".").rsplit(".", 1)[-1]
      near = sorted(k for k in self._entries if k.replace("/", ".").rsplit(".", 1)[-1] == tail)[:5]
      raise SpaeInputError(
          f"{self.where}: missing tensor {name!r}"
          + (f" (expected shape {tuple(shape)})" if shape is not None else "")
          + (f"; similar names present: {near}" if near else f"; it has {sorted(self._entries)[:8]}"
             + (" ..." if len(self._entries) > 8 else ""))
          + ". The checkpoint is incomplete or of a different architecture.")
    return e


# ------------------------------------------------------------------------------------------------ opening
FORMATS = ("safetensors", "npz", "npy", "orbax", "gguf")


def open_tensors(path: str | os.PathLike, *, format: str | None = None, dtype: Any = None,
                 sep: str = "/") -> Tensors:
  """The tensors of a `.safetensors` file or folder of shards, `.npz`, `.npy`, `.gguf` or orbax directory.

  Args:
    path: the checkpoint.
    format: require this format (one of FORMATS); None: infer it from the path.
    dtype: default dtype of `Tensors.get` (None: as stored).
    sep: joins nested orbax key paths into names.
  """
  path = Path(path)
  if not path.exists():
    raise SpaeInputError(f"checkpoint {str(path)!r} does not exist; pass an existing .safetensors, .npz, .npy, "
                         ".gguf file or an orbax checkpoint directory.")
  if format is not None and format not in FORMATS:
    raise SpaeInputError(f"unknown tensor file format {format!r}; known: {', '.join(FORMATS)}.")
  tensors = _open(path, dtype, sep, format)
  if format is not None and tensors.format != format:
    raise SpaeInputError(f"{path}: expected a {format} checkpoint, found {tensors.format}.")
  return tensors


def _open(path: Path, dtype: Any, sep: str, format: str | None) -> Tensors:
  if format == "safetensors" and not (path.suffix == ".safetensors" or any(path.glob("*.safetensors"))):
    raise SpaeInputError(f"no .safetensors weights found at {str(path)!r}; expected model.safetensors.")
  if path.is_dir():
    shards = sorted(path.glob("*.safetensors"))
    if shards:
      return _open_safetensors(shards, f"{path}/*.safetensors" if len(shards) > 1 else str(shards[0]), dtype)
    return _open_orbax(path, dtype, sep)
  suffix = path.suffix.lower()
  if suffix == ".safetensors":
    return _open_safetensors([path], str(path), dtype)
  if suffix == ".npz":
    return _open_npz(path, dtype)
  if suffix == ".npy":
    return _open_npy(path, dtype)
  if suffix == ".gguf" or _magic(path) == b"GGUF":
    return _open_gguf(path, dtype)
  raise SpaeInputError(f"cannot read tensors from {str(path)!r}: expected .safetensors, .npz, .npy, .gguf or an "
                       "orbax checkpoint directory.")


def _magic(path: Path) -> bytes:
  try:
    with open(path, "rb") as f:
      return f.read(4)
  except OSError:
    return b""


def _open_safetensors(files: list[Path], where: str, dtype: Any) -> Tensors:
  entries: dict[str, _Entry] = {}
  metadata: dict[str, Any] = {}
  for f in files:
    size = f.stat().st_size
    try:
      with open(f, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        if not 0 < n <= size - 8:
          raise ValueError(f"header length {n} does not fit a {size}-byte file")
        header = json.loads(fh.read(n))
    except (OSError, ValueError) as e:
      raise SpaeInputError(f"{f} is not a readable safetensors file ({e}).") from e
    base = 8 + n
    data = np.memmap(f, dtype=np.uint8, mode="r", offset=base) if size > base else np.zeros(0, np.uint8)
    for name, info in header.items():
      if name == "__metadata__":
        metadata.update(info)
        continue
      tag = info.get("dtype")
      if tag == "BF16":
        dt = _bfloat16()
      elif tag in _ST_DTYPES:
        dt = np.dtype(_ST_DTYPES[tag])
      else:
        raise SpaeInputError(f"{f}: tensor {name!r} has unsupported safetensors dtype {tag!r}; supported: "
                             f"{sorted([*_ST_DTYPES, 'BF16'])}.")
      start, end = info["data_offsets"]
      shape = tuple(int(s) for s in info["shape"])
      if base + end > size or end - start != int(np.prod(shape)) * dt.itemsize:
        raise SpaeInputError(f"{f}: tensor {name!r} lies outside the file or has the wrong size; the file is "
                             "truncated or corrupt (download it again).")
      entries[name] = _Entry(shape, dt.name, lambda d=data, s=start, e=end, t=dt, sh=shape: d[s:e].view(t).reshape(sh),
                             file=str(f) if len(files) > 1 else None)
  return Tensors(entries, where, "safetensors", dtype=dtype, metadata=metadata)


def _open_npz(path: Path, dtype: Any) -> Tensors:
  try:
    with np.load(path, allow_pickle=False) as f:
      names = list(f.files)
      infos = {}
      for k in names:  # shapes and dtypes from the member headers, without reading the data
        with f.zip.open(f"{k}.npy") as m:
          version = np.lib.format.read_magic(m)
          read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0) else
                         np.lib.format.read_array_header_2_0)
          shape, _, dt = read_header(m)
          infos[k] = (tuple(shape), np.dtype(dt).name)
  except (OSError, ValueError, KeyError) as e:
    raise SpaeInputError(f"{path} is not a readable .npz file ({e}).") from e

  def read(k: str) -> np.ndarray:
    with np.load(path, allow_pickle=False) as f:
      return f[k]

  entries = {k: _Entry(s, d, lambda k=k: read(k)) for k, (s, d) in infos.items()}
  return Tensors(entries, str(path), "npz", dtype=dtype)


def _open_npy(path: Path, dtype: Any) -> Tensors:
  try:
    arr = np.load(path, mmap_mode="r", allow_pickle=False)
  except (OSError, ValueError) as e:
    raise SpaeInputError(f"{path} is not a readable .npy file ({e}).") from e
  return Tensors({path.stem: _Entry(tuple(arr.shape), arr.dtype.name, lambda: arr)}, str(path), "npy", dtype=dtype)


def _open_orbax(path: Path, dtype: Any, sep: str) -> Tensors:
  import orbax.checkpoint as ocp

  try:
    tree = ocp.PyTreeCheckpointer().restore(str(path.absolute()))
  except Exception as e:  # orbax raises many types for a non-checkpoint folder
    raise SpaeInputError(f"{path} is not a readable orbax checkpoint ({type(e).__name__}: {e}).") from e
  flat = flatten_tree(tree, sep=sep)
  entries = {}
  for k, v in flat.items():
    a = np.asarray(v)
    entries[k] = _Entry(tuple(a.shape), a.dtype.name, lambda a=a: a)
  return Tensors(entries, str(path), "orbax", dtype=dtype)


def _open_gguf(path: Path, dtype: Any) -> Tensors:
  from spae._gguf_file import read_gguf

  g = read_gguf(path)
  data = np.memmap(path, dtype=np.uint8, mode="r") if g.tensors else np.zeros(0, np.uint8)
  entries: dict[str, _Entry] = {}
  for t in g.tensors:
    raw = (lambda o=t.offset, n=t.nbytes: data[o:o + n]) if t.nbytes is not None else _unsupported(path, t)
    if t.type_name in _GGUF_PLAIN:
      dt = _bfloat16() if t.type_name == "BF16" else np.dtype(_GGUF_PLAIN[t.type_name]).newbyteorder(g.byte_order)
      entries[t.name] = _Entry(t.shape, dt.name, lambda r=raw, d=dt, s=t.shape: r().view(d).reshape(s))
    elif t.type_name in _GGUF_QUANT and g.byte_order == "<":
      entries[t.name] = _Entry(t.shape, t.type_name, raw, quant=t.type_name)
    else:
      entries[t.name] = _Entry(t.shape, t.type_name, _unsupported(path, t))
  return Tensors(entries, str(path), "gguf", dtype=dtype, metadata=g.metadata)


def _unsupported(path: Path, t: Any) -> Callable[[], np.ndarray]:
  def read() -> np.ndarray:
    raise SpaeInputError(f"{path}: tensor {t.name!r} is stored as GGML type {t.type_name}, which spae does not "
                         f"read; supported: {', '.join(GGUF_TYPES)}. Re-quantize the model with llama-quantize.")
  return read


# ------------------------------------------------------------------------------------------------ helpers
def flatten_tree(tree: Any, prefix: str = "", sep: str = "/") -> dict[str, Any]:
  """Nested dicts (and lists) -> {'a/b/c': leaf}."""
  out: dict[str, Any] = {}
  if isinstance(tree, Mapping):
    for k, v in tree.items():
      out.update(flatten_tree(v, f"{prefix}{k}{sep}", sep))
  elif isinstance(tree, (list, tuple)):
    for i, v in enumerate(tree):
      out.update(flatten_tree(v, f"{prefix}{i}{sep}", sep))
  else:
    out[prefix[:-len(sep)]] = tree
  return out


def load_tensor(source: Any, name: str | None = None) -> np.ndarray:
  """One tensor from an array or a checkpoint file / directory (see `open_tensors`), in its stored dtype
  (bfloat16 widened to float32; quantized GGUF tensors dequantized to float32).

  Args:
    source: a numpy/jax array, or a path.
    name: the tensor's name (safetensors, npz, GGUF) or key path (orbax, e.g. `embedder/input_embedding`;
      released Gemma checkpoints' leading `transformer/` may be left out). Optional when there is one tensor.
  """
  if not isinstance(source, (str, os.PathLike)):
    return np.asarray(source)
  path = Path(source)
  if not path.exists():
    raise SpaeInputError(f"embedding source {str(path)!r} does not exist; pass an array or an existing file.")
  tensors = open_tensors(path)
  if name is None:
    if len(tensors) == 1:
      return _widen_bf16(tensors.get(next(iter(tensors))))
    raise SpaeInputError(f"{tensors.where} holds {len(tensors)} tensors ({sorted(tensors)[:8]}...); pass name=... "
                         + ("(a key path such as 'embedder/input_embedding')." if tensors.format == "orbax" else "."))
  if tensors.format == "orbax":
    key = name.strip("/")
    for cand in (key, f"transformer/{key}", key[len("transformer/"):] if key.startswith("transformer/") else None):
      if cand is not None and cand in tensors:
        name = cand
        break
  return _widen_bf16(tensors.get(name))


def _widen_bf16(a: np.ndarray) -> np.ndarray:
  # numpy has no native bfloat16 (it is not np.floating): callers of load_tensor get float32 instead.
  return a.astype(np.float32) if a.dtype == _bfloat16() else a
