"""Orbax checkpoints of the train state and the data iterator's position, keep-N, optionally asynchronous."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger("spae.train")


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
    """(step, state, data_state) of the newest complete checkpoint, or None. Unfinished saves are never listed.

    abstract_state: a pytree of jax.ShapeDtypeStruct (with shardings) matching the saved state.
    """
    import orbax.checkpoint as ocp

    step = self.manager.latest_step()
    if step is None:
      return None
    restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                                  data=ocp.args.JsonRestore()))
    return step, restored["state"], restored["data"]

  def wait(self) -> None:
    if self._mgr is not None:
      self._mgr.wait_until_finished()
