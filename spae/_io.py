"""Small file helpers: the input error type and atomic writes (tensor reading lives in `spae._tensors`)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator


class SpaeInputError(ValueError):
  """A user-supplied input (file, directory, argument) is unusable; the message says how to fix it."""


def _nearest_existing(path: Path) -> Path:
  p = path
  while not os.path.lexists(p) and p != p.parent:
    p = p.parent
  return p


def check_can_create(path: str | os.PathLike) -> None:
  """Raises SpaeInputError unless `path` could be created: probes the nearest existing folder above it."""
  path = Path(path)
  anc = _nearest_existing(path.parent)
  if not anc.is_dir():
    raise SpaeInputError(f"cannot write {str(path)!r}: {str(anc)!r} is a file, not a folder; "
                         "choose another output path.")
  try:  # os.access() says yes for root on read-only pseudo file systems (/sys); only a real write tells
    fd, probe = tempfile.mkstemp(prefix=".spae-probe-", dir=anc)
    os.close(fd)
    os.unlink(probe)
  except OSError as e:
    raise SpaeInputError(f"cannot write {str(path)!r}: folder {str(anc)!r} is not writable ({e.strerror}); "
                         "choose another output path.") from None


def check_output_file(path: str | os.PathLike) -> Path:
  """Raises SpaeInputError unless `path` can be written as a file; call it before any long work.

  An existing directory is never replaced by a file; an existing file is (that is what an output path means).
  """
  path = Path(path)
  if path.is_dir():
    raise SpaeInputError(f"output {str(path)!r} is an existing directory; give a file name "
                         "(spae never replaces a directory with a file).")
  check_can_create(path)
  return path


def check_output_dir(path: str | os.PathLike, replaceable: Callable[[Path], bool] | None = None,
                     what: str = "spae output folder") -> Path:
  """Raises SpaeInputError unless `path` can become a directory written by spae.

  A missing or empty directory is fine; a non-empty one only if `replaceable(path)` says it is a `what`.
  """
  path = Path(path)
  if os.path.lexists(path) and not path.is_dir():
    raise SpaeInputError(f"output {str(path)!r} exists and is not a folder; choose a new folder name.")
  if path.is_dir() and any(path.iterdir()) and not (replaceable is not None and replaceable(path)):
    raise SpaeInputError(f"output folder {str(path)!r} is not empty and is not a {what}; "
                         "choose a new or empty folder (spae never removes other files).")
  check_can_create(path)
  return path


def _make_parents(folder: Path) -> list[Path]:
  """mkdir -p that returns the folders it created (deepest last), so a failed write can remove them again."""
  missing = []
  p = folder
  while not os.path.lexists(p):
    missing.append(p)
    p = p.parent
  for p in reversed(missing):
    p.mkdir()
  return missing[::-1]


@contextlib.contextmanager
def _staged(path: Path, commit: Callable[[Path, Path], None]) -> Iterator[Path]:
  """Yields a path in a private temporary sibling folder; `commit(staged, tmp)` moves it onto `path`.

  On any error nothing is left: the private folder is removed, and so are the parent folders made for it.
  """
  try:
    created = _make_parents(path.parent)
  except OSError as e:
    raise SpaeInputError(f"cannot create the folder for {str(path)!r} ({e.strerror}); "
                         "choose another output path.") from None
  try:
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
  except OSError as e:
    _remove_empty(created)
    raise SpaeInputError(f"cannot write {str(path)!r} ({e.strerror}); choose a writable location.") from None
  done = False
  try:
    yield tmp / path.name
    commit(tmp / path.name, tmp)
    done = True
  finally:
    shutil.rmtree(tmp, ignore_errors=True)  # only the private folder made above, never anything of the user's
    if not done:
      _remove_empty(created)


def _remove_empty(folders: list[Path]) -> None:
  for p in reversed(folders):
    try:
      p.rmdir()
    except OSError:
      return


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
  """Yields a temporary sibling path; renames it onto `path` only if the block succeeds.

  For a file output: an existing file is replaced, an existing directory is refused (SpaeInputError), and
  nothing half-written is ever left at `path`. Write directories with `atomic_dir`.
  """
  path = check_output_file(path)

  def commit(staged: Path, tmp: Path) -> None:
    if path.is_dir() and not path.is_symlink():  # appeared while we were writing
      raise SpaeInputError(f"output {str(path)!r} became a directory while spae was writing it; not replaced.")
    os.replace(staged, path)

  with _staged(path, commit) as target:
    yield target


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, replaceable: Callable[[Path], bool] | None = None,
               what: str = "spae output folder") -> Iterator[Path]:
  """Like `atomic_path` for a directory the block creates at the yielded path.

  An existing non-empty directory is replaced only if `replaceable(path)` is true (e.g. it is a spae
  tokenizer bundle being re-saved); anything else is refused before the block runs.
  """
  path = check_output_dir(path, replaceable, what)

  def commit(staged: Path, tmp: Path) -> None:
    if path.is_dir() and not path.is_symlink() and any(path.iterdir()):
      if replaceable is None or not replaceable(path):
        raise SpaeInputError(f"output folder {str(path)!r} changed while spae was writing it; not replaced.")
      # Move the old bundle into the private folder (removed with it), then move the new one in.
      os.replace(path, tmp / ".replaced")
    os.replace(staged, path)

  with _staged(path, commit) as target:
    yield target


def check_regular_file(path: str | os.PathLike, what: str, *, missing: str = "", folder: str = "",
                       other: str = "") -> Path:
  """`path` as a Path if it is a regular file, else a SpaeInputError naming `what` (e.g. "image 'a.png'") and what
  the path is instead, followed by `missing` / `folder` / `other` (what to do about it). Checked before opening,
  because opening a FIFO for reading blocks until something writes to it."""
  path = Path(path)
  try:
    mode = path.stat().st_mode
  except FileNotFoundError:
    raise SpaeInputError(f"{what} does not exist{missing}") from None
  except OSError as e:
    raise SpaeInputError(f"cannot read {what} ({e.strerror}){missing}") from None
  if stat.S_ISDIR(mode):
    raise SpaeInputError(f"{what} is a folder{folder}")
  if not stat.S_ISREG(mode):
    kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else
            "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
    raise SpaeInputError(f"{what} is {kind}{other}")
  return path


def read_json(path: str | os.PathLike, what: str, fix: str) -> Any:
  """Parses a JSON file; a missing, binary, malformed or deeply nested file, or one that is not a regular file, is a
  SpaeInputError naming `what` (e.g. "tokenizer config") and ending with `fix` (what to do about it)."""
  name = f"{what} {str(path)!r}"
  path = check_regular_file(path, name, missing=f"; {fix}", folder=f", not a JSON file; {fix}", other=f"; {fix}")
  try:
    return json.loads(path.read_bytes().decode("utf-8"))
  except FileNotFoundError:
    raise SpaeInputError(f"{name} does not exist; {fix}") from None
  except UnicodeDecodeError:
    raise SpaeInputError(f"{name} is not valid JSON (binary data, not UTF-8 text); {fix}") from None
  except RecursionError:
    raise SpaeInputError(f"{name} is not valid JSON (nested too deeply); {fix}") from None
  except ValueError as e:  # JSONDecodeError, and integers over Python's digit limit
    raise SpaeInputError(f"{name} is not valid JSON ({str(e).splitlines()[0][:100]}); {fix}") from None
  except OSError as e:
    raise SpaeInputError(f"cannot read {name} ({e.strerror}); {fix}") from None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
  with atomic_path(path) as tmp:
    tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
  write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")
