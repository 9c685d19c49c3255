"""Orbax checkpoints of the train state and the data iterator's position, keep-N, optionally asynchronous."""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from spae._ckpt_read import check_array_data, drop_abandoned_reads
from spae._io import SpaeInputError

log = logging.getLogger("spae.train")


@contextlib.contextmanager
def _quiet_absl():
  """orbax logs (through absl) each file it cannot parse; restore_latest reports an unreadable step once itself."""
  logger = logging.getLogger("absl")
  level = logger.level
  logger.setLevel(logging.CRITICAL)
  try:
    yield
  finally:
    logger.setLevel(level)


class Checkpoints:
  """WORKDIR/checkpoints/<step>/ holding {'state': the train state pytree, 'data': the iterator state (JSON)}.

  The orbax manager is created on first use, so a run that fails before its first save or restore leaves no
  directory behind.
  """

  def __init__(self, directory: str | os.PathLike, *, keep: int, async_save: bool):
    self.directory = Path(directory).absolute()
    self.keep = keep
    self.async_save = async_save
    self._mgr = None

  @property
  def manager(self):
    if self._mgr is None:
      import orbax.checkpoint as ocp

      opts = ocp.CheckpointManagerOptions(
          create=True, enable_async_checkpointing=self.async_save,
          preservation_policy=ocp.checkpoint_managers.LatestN(self.keep))
      self._mgr = ocp.CheckpointManager(self.directory, options=opts)
    return self._mgr

  def save(self, step: int, state: Any, data_state: dict[str, Any], *, wait: bool = False) -> None:
    import orbax.checkpoint as ocp

    self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                    data=ocp.args.JsonSave(data_state)))
    if wait:
      self.wait()

  def restore_latest(self, abstract_state: Any) -> tuple[int, Any, dict[str, Any]] | None:
    """(step, state, data_state) of the newest intact checkpoint, or None when there is none at all.

    Unfinished saves are never listed (orbax renames a finished one into place). A listed checkpoint that cannot be
    read (truncated or corrupted files, or a state of another shape) is skipped for the previous one; once one is
    restored, each skipped step gets a warning naming it and is moved to WORKDIR/checkpoints.unreadable/<step>, so
    a later save of that step does not collide with it. If none can be read: SpaeInputError (one line), nothing
    moved.

    abstract_state: a pytree of jax.ShapeDtypeStruct (with shardings) matching the saved state.
    """
    import orbax.checkpoint as ocp

    if not self.directory.is_dir():  # a fresh run: nothing to restore, and no directory made for it yet
      return None
    with _quiet_absl():
      steps = sorted(self.manager.all_steps(), reverse=True)
    failed: list[tuple[int, str]] = []
    for step in steps:
      try:
        check_array_data(self.directory / str(step) / "state")  # a damaged chunk fails here, synchronously
        with _quiet_absl():
          restored = self.manager.restore(step, args=ocp.args.Composite(
              state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        if not isinstance(e, SpaeInputError):
          drop_abandoned_reads()
        failed.append((step, f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"))
        continue
      for bad, why in failed:
        log.warning("checkpoint at step %d in %s is unreadable (%s); resuming from step %d.", bad, self.directory,
                    why, step)
      if failed:
        self._set_aside([s for s, _ in failed])
      return step, restored["state"], restored["data"]
    if failed:
      raise SpaeInputError(
          f"no intact checkpoint in {self.directory}: step(s) {', '.join(str(s) for s, _ in failed)} cannot be read "
          f"(newest: {failed[0][1][:120]}); move that directory away to train from scratch.")
    return None

  def _set_aside(self, steps: list[int]) -> None:
    """Moves unreadable checkpoints out of orbax's directory (nothing is deleted), then reopens the manager."""
    aside = self.directory.parent / (self.directory.name + ".unreadable")
    aside.mkdir(exist_ok=True)
    for step in steps:
      src, dst = self.directory / str(step), aside / str(step)
      n = 1
      while dst.exists():
        dst, n = aside / f"{step}.{n}", n + 1
      os.replace(src, dst)
      log.warning("moved the unreadable checkpoint of step %d to %s", step, dst)
    self._mgr.close()
    self._mgr = None

  def wait(self) -> None:
    if self._mgr is not None:
      self._mgr.wait_until_finished()
