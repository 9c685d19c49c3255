"""Runs `python -m spae.cli ARGS` in a subprocess and checks that it failed cleanly and touched nothing.

Used by the table-driven bad-input tests: one call per row,

  check_fails_cleanly(["decode", "t.json", "--tokenizer", tok, "-o", "out.png"], cwd=tmp_path, watch=[tok],
                      expect="not valid JSON")

asserts a non-zero exit, exactly one non-empty line on stderr, no traceback anywhere, and that every file and
directory under `cwd` and `watch` is byte-for-byte as before, with nothing added or removed.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]


def snapshot(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
  """Every entry under `paths` (recursively, links not followed) -> its kind and content hash."""
  out: dict[str, str] = {}

  def visit(p: Path) -> None:
    try:
      st = os.lstat(p)
    except FileNotFoundError:
      return
    if stat.S_ISLNK(st.st_mode):
      out[str(p)] = f"link:{os.readlink(p)}"
    elif stat.S_ISDIR(st.st_mode):
      out[str(p)] = "dir"
      for child in sorted(p.iterdir()):
        visit(child)
    elif stat.S_ISREG(st.st_mode):
      out[str(p)] = "file:" + hashlib.sha256(p.read_bytes()).hexdigest()
    else:  # FIFOs, sockets, devices: never opened (a FIFO would block)
      out[str(p)] = f"special:{stat.S_IFMT(st.st_mode)}"

  for p in paths:
    visit(Path(p))
  return out


def run_cli(args: Sequence[str], *, cwd: str | os.PathLike, env: dict[str, str] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
  """`python -m spae.cli ARGS` with this checkout first on the path; stdin is empty."""
  full_env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": os.pathsep.join(
      [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]), **(env or {})}
  return subprocess.run([sys.executable, "-m", "spae.cli", *map(str, args)], cwd=cwd, env=full_env,
                        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout)


def _diff(before: dict[str, str], after: dict[str, str]) -> str:
  lines = [f"removed: {k}" for k in sorted(before.keys() - after.keys())]
  lines += [f"new: {k}" for k in sorted(after.keys() - before.keys())]
  lines += [f"changed: {k}" for k in sorted(before.keys() & after.keys()) if before[k] != after[k]]
  return "\n".join(lines)


def check_fails_cleanly(args: Sequence[str], *, cwd: str | os.PathLike, watch: Iterable[str | os.PathLike] = (),
                        env: dict[str, str] | None = None, expect: str | None = None) -> str:
  """Runs the CLI and asserts the clean-failure contract (see module doc); returns the stderr line.

  expect: a regular expression the error line must contain (e.g. the name of the bad input).
  """
  watched = [Path(cwd), *map(Path, watch)]
  before = snapshot(watched)
  r = run_cli(args, cwd=cwd, env=env)
  after = snapshot(watched)
  where = f"spae {' '.join(map(str, args))}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
  assert r.returncode != 0, f"exit 0 on bad input: {where}"
  assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, f"traceback printed: {where}"
  lines = [line for line in r.stderr.splitlines() if line.strip()]
  assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}: {where}"
  assert before == after, f"files changed by a failed run:\n{_diff(before, after)}\n{where}"
  if expect is not None:
    assert re.search(expect, lines[0]), f"error line does not match {expect!r}: {lines[0]}"
  return lines[0]
