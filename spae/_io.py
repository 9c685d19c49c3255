"""Small file helpers: atomic writes and tensor loading from npy / safetensors / orbax."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


class SpaeInputError(ValueError):
  """A user-supplied input (file, directory, argument) is unusable; the message says how to fix it."""


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
  """Yields a temporary sibling path; renames it onto `path` only if the block succeeds.

  Works for files and directories, so nothing half-written is ever left at `path`.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
  target = tmp / path.name
  try:
    yield target
    if path.is_dir() and not path.is_symlink():
      shutil.rmtree(path)
    os.replace(target, path)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
  with atomic_path(path) as tmp:
    tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
  write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def load_tensor(source: Any, name: str | None = None) -> np.ndarray:
  """Loads one 2-D-or-more tensor from an array, `.npy`, `.npz`, safetensors file or orbax checkpoint.

  Args:
    source: a numpy/jax array, or a path. Paths ending in `.npy`/`.npz`/`.safetensors` are read as such;
      a directory is read as an orbax checkpoint (or a folder of `*.safetensors` shards).
    name: tensor name (safetensors, npz) or `/`-separated key path (orbax, e.g. `embedder/input_embedding`).
  """
  if not isinstance(source, (str, os.PathLike)):
    return np.asarray(source)
  path = Path(source)
  if not path.exists():
    raise SpaeInputError(f"embedding source {str(path)!r} does not exist; pass an array or an existing file.")
  if path.suffix == ".npy":
    return np.load(path, allow_pickle=False)
  if path.suffix == ".npz":
    with np.load(path, allow_pickle=False) as f:
      keys = list(f.keys())
      key = name or (keys[0] if len(keys) == 1 else None)
      if key not in keys:
        raise SpaeInputError(f"{path}: no tensor named {name!r}; it has {keys[:20]}. Pass name=... .")
      return f[key]
  if path.suffix == ".safetensors" or (path.is_dir() and any(path.glob("*.safetensors"))):
    return _load_safetensors(path, name)
  if path.is_dir():
    return _load_orbax(path, name)
  raise SpaeInputError(
      f"cannot read tensors from {str(path)!r}: expected .npy, .npz, .safetensors or an orbax checkpoint directory.")


def _load_safetensors(path: Path, name: str | None) -> np.ndarray:
  from safetensors import safe_open

  files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
  available: list[str] = []
  for f in files:
    with safe_open(str(f), framework="numpy") as st:
      keys = list(st.keys())
      available += keys
      if name is None and len(files) == 1 and len(keys) == 1:
        name = keys[0]
      if name in keys:
        return st.get_tensor(name)
  raise SpaeInputError(
      f"{path}: missing tensor {name!r}; available tensors include {sorted(available)[:20]}. "
      "Pass the right tensor name.")


def _load_orbax(path: Path, key_path: str | None) -> np.ndarray:
  import orbax.checkpoint as ocp

  try:
    tree = ocp.PyTreeCheckpointer().restore(str(path.absolute()))
  except Exception as e:  # orbax raises many types for a non-checkpoint folder
    raise SpaeInputError(f"{path} is not a readable orbax checkpoint ({type(e).__name__}: {e}).") from e
  return _get_key_path(tree, key_path, str(path))


def flatten_tree(tree: Any, prefix: str = "") -> dict[str, Any]:
  """Nested dicts -> {'a/b/c': leaf}."""
  out: dict[str, Any] = {}
  if isinstance(tree, dict):
    for k, v in tree.items():
      out.update(flatten_tree(v, f"{prefix}{k}/"))
  else:
    out[prefix[:-1]] = tree
  return out


def _get_key_path(tree: Any, key_path: str | None, where: str) -> np.ndarray:
  """Finds `a/b/c` in nested dicts; also in semi-flat layouts whose keys hold slashes.

  Released Gemma checkpoints store `{'transformer/embedder': {'input_embedding': ...}}`, so the path is
  matched on the flattened tree, with or without a leading `transformer/`.
  """
  if key_path is None:
    raise SpaeInputError(f"{where}: an orbax checkpoint needs a key path such as 'embedder/input_embedding'.")
  flat = flatten_tree(tree) if isinstance(tree, dict) else {}
  key = key_path.strip("/")
  for cand in (key, f"transformer/{key}", key[len("transformer/"):] if key.startswith("transformer/") else None):
    if cand is not None and cand in flat:
      return np.asarray(flat[cand])
  raise SpaeInputError(f"{where}: missing tensor {key_path!r}; the checkpoint has {sorted(flat)[:12]}"
                       f"{' ...' if len(flat) > 12 else ''}.")
