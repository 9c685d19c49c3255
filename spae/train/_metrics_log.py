"""What a run logs: metrics.jsonl (one JSON row per log step), TensorBoard scalars, and the images-per-second
clock between log steps."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from spae._io import write_text_atomic

log = logging.getLogger("spae.train")


class Throughput:
  """Images per second between two log steps (the time includes the device work, which the log step waits for)."""

  def __init__(self):
    self.t0, self.images = time.perf_counter(), 0

  def add(self, images: int) -> None:
    self.images += images

  def rate(self) -> float:
    now = time.perf_counter()
    r = self.images / max(now - self.t0, 1e-9)
    self.t0, self.images = now, 0
    return r


def _row_step(line: str) -> int | None:
  """The step of a metrics.jsonl row, or None for a line an interrupted write left incomplete."""
  try:
    step = json.loads(line).get("step")
  except (json.JSONDecodeError, AttributeError):
    return None
  return step if isinstance(step, int) else None


class MetricsLog:
  """WORKDIR/metrics.jsonl (one JSON row per log step) and TensorBoard scalars under WORKDIR/tb.

  A run resumed at step S first drops what an interrupted run logged past S (rows of metrics.jsonl, and TensorBoard
  events through purge_step), since those steps run again: every step is logged once.
  """

  def __init__(self, workdir: Path, *, start_step: int = 0, enabled: bool = True):
    self.path = workdir / "metrics.jsonl"
    self.writer = None
    if enabled:
      from tensorboardX import SummaryWriter

      self._truncate(start_step)
      self.writer = SummaryWriter(str(workdir / "tb"), purge_step=start_step + 1)

  def _truncate(self, step: int) -> None:
    if not self.path.is_file():
      return
    lines = self.path.read_text().splitlines()
    keep = [line for line in lines if _row_step(line) is not None and _row_step(line) <= step]
    if len(keep) != len(lines):
      log.info("metrics.jsonl: dropped %d row(s) past step %d, which run again", len(lines) - len(keep), step)
      write_text_atomic(self.path, "".join(line + "\n" for line in keep))

  def write(self, row: dict[str, Any]) -> None:
    if self.writer is None:
      return
    with open(self.path, "a") as f:
      f.write(json.dumps(row) + "\n")
    for k, v in row.items():
      if isinstance(v, (int, float)) and k != "step":
        self.writer.add_scalar(k, v, row["step"])

  def close(self) -> None:
    if self.writer is not None:
      self.writer.close()
