"""Reading orbax checkpoints without orbax's late tracebacks: a synchronous pre-read, and cleanup after a failure.

orbax restores every array concurrently. When one read fails it closes its event loop with the others pending, and
each of those later prints a long traceback (often at interpreter exit, after spae's one-line error).
"""
from __future__ import annotations

from pathlib import Path

from spae._io import SpaeInputError


def first_line(e: BaseException, n: int = 120) -> str:
  """The first line of an exception's message, cut to `n` characters ("..." marks what was left out)."""
  lines = str(e).strip().splitlines()
  return (lines[0][:n] + ("..." if len(lines) > 1 or len(lines[0]) > n else "")) if lines else type(e).__name__


def check_array_data(path: Path, fix: str = "") -> None:
  """Reads and decodes every stored array once, synchronously, so a truncated or undecodable chunk fails here.

  orbax reads all arrays concurrently; when one fails it abandons the rest, and they print long tracebacks later (see
  `drop_abandoned_reads`). The price is one extra read and decode of the data (orbax's own read then mostly hits
  the page cache); for a tokenizer bundle's few MB that is milliseconds. Only OCDBT checkpoints (what orbax writes
  by default) are checked; others go straight to orbax.
  """
  if not (path / "manifest.ocdbt").is_file():
    return
  import tensorstore as ts

  base = {"driver": "file", "path": str(path.absolute()) + "/"}
  name = "the OCDBT index"
  try:
    keys = ts.KvStore.open({"driver": "ocdbt", "base": base}).result().list().result()
    for key in sorted(k.decode()[:-len("/.zarray")] for k in keys if k.endswith(b"/.zarray")):
      name = key
      ts.open({"driver": "zarr", "kvstore": {"driver": "ocdbt", "base": base, "path": key + "/"}},
              open=True).result().read().result()
  except Exception as e:  # TensorStore raises ValueError with a long multi-line message
    raise SpaeInputError(f"{path} is truncated or damaged: {name} cannot be read ({type(e).__name__}: "
                         f"{first_line(e, 80)})" + (f"; {fix}" if fix else "")) from None


def drop_abandoned_reads() -> None:
  """Closes the read coroutines orbax abandons when one chunk fails, so they print nothing later.

  When one array read fails, orbax closes its event loop with the sibling reads still pending; TensorStore's
  callbacks keep them alive, and whenever they are finally collected (often at interpreter exit, after our one-line
  error) each prints a long "Exception ignored in <coroutine ...>" traceback: orbax turns the GeneratorExit of
  close() into an Exception. Closing them here, with that exception swallowed, keeps the error one line. The failed
  exception is not chained for the same reason: its traceback holds those coroutines.
  """
  import asyncio
  import gc
  import sys
  import types

  hook, sys.unraisablehook = sys.unraisablehook, lambda _: None  # for those already unreachable: collected here
  try:
    gc.collect()
    for obj in gc.get_objects():
      if isinstance(obj, types.CoroutineType) and obj.cr_frame is not None and \
          obj.__qualname__ == "_read_array_index_and_device_put":
        try:
          obj.close()
        except BaseException:  # the Exception orbax raises from GeneratorExit: the report we are suppressing
          pass
      elif isinstance(obj, asyncio.Future) and obj.get_loop().is_closed():  # tasks of orbax's closed loop
        if obj.done() and not obj.cancelled():
          obj.exception()  # marks it retrieved, so asyncio does not log "Task exception was never retrieved"
        elif isinstance(obj, asyncio.Task):
          obj._log_destroy_pending = False  # pylint: disable=protected-access  # nor "destroyed but it is pending"
  finally:
    sys.unraisablehook = hook
