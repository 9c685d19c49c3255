"""An append-only JSONL results log that survives crashes: whole lines only, a torn last line is repaired."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class JsonlLog:
  """Rows already in `path` (by their "key") plus atomic line appends.

  On open, a last line without its newline (a crash mid-write) is cut off the file; unparsable complete lines
  are skipped with a warning. Each append is one `write` of a full line on an O_APPEND descriptor followed by
  fsync, so a reader never sees half a row except at the very end after a crash, which the next open repairs.
  """

  def __init__(self, path: str | os.PathLike):
    self.path = Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self.rows: list[dict[str, Any]] = []
    self.repaired_bytes = 0
    if self.path.exists():
      data = self.path.read_bytes()
      end = data.rfind(b"\n") + 1
      if end < len(data):
        self.repaired_bytes = len(data) - end
        log.warning("%s: dropping a truncated last line (%d bytes) left by an interrupted run", self.path,
                    self.repaired_bytes)
        os.truncate(self.path, end)
      for n, line in enumerate(data[:end].decode("utf-8", errors="replace").splitlines(), 1):
        if not line.strip():
          continue
        try:
          row = json.loads(line)
        except json.JSONDecodeError:
          log.warning("%s:%d is not valid JSON; ignoring it", self.path, n)
          continue
        if isinstance(row, dict):
          self.rows.append(row)
    self.keys = {r.get("key") for r in self.rows}

  def append(self, row: dict[str, Any]) -> None:
    line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
    fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      written = os.write(fd, line)
      while written < len(line):  # os.write may be partial on some filesystems
        written += os.write(fd, line[written:])
      os.fsync(fd)
    finally:
      os.close(fd)
    self.rows.append(row)
    self.keys.add(row.get("key"))
