"""Small file helpers: the input error type and atomic writes (tensor reading lives in `spae._tensors`)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


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
