"""A deterministic, resumable, shardable batch iterator over an ImageSource."""

from __future__ import annotations

import concurrent.futures
import logging
from typing import Any

import numpy as np

from spae._io import SpaeInputError
from spae.data._preprocess import Preprocess, UnreadableImageError, preprocess
from spae.data._sources import ImageSource

log = logging.getLogger("spae.data")

STATE_KEYS = ("epoch", "index", "seed")


class BatchIterator:
  """Yields batches {'image': float32 [B, S, S, 3] in [0, 1], 'label': int32 [B], 'index': int64 [B],
  'caption': list[str] (only if the source has captions)}.

  Order: epoch e visits the source in the permutation `default_rng([seed, e]).permutation(N)` (identity if
  `shuffle=False`). The epoch is cut into `steps_per_epoch = N // (batch_size * num_shards)` global batches
  (remainder dropped); shard i takes the i-th `batch_size` slice of each global batch, so shards are disjoint,
  and every shard runs the same number of steps. Random crops / flips of source image k in epoch e use
  `default_rng([seed, e, k])`, so a batch depends only on (seed, epoch, step, shard) and the data.

  Resuming: `get_state()` -> {'epoch', 'index' (next step within the epoch), 'seed', plus 'num_examples',
  'batch_size', 'num_shards' to catch mismatches}, JSON-able and the same on every shard; `set_state(state)`
  continues with exactly the batches an uninterrupted iterator would have produced.

  Unreadable images (a corrupt file in a folder) are replaced by the next readable image in source order,
  logged and counted (`num_skipped`); the run goes on.

  Args:
    source: the images (see make_source).
    batch_size: per-shard (per-host) batch size.
    preprocess: crop / resize / flip settings.
    seed: shuffling and augmentation seed.
    shuffle: shuffle each epoch (off for evaluation).
    shard_index, num_shards: this host's shard, e.g. jax.process_index(), jax.process_count().
    num_epochs: stop after this many epochs (None = forever).
    num_threads: decode / preprocess a batch with this many threads (0 = in the calling thread). Pillow releases
      the GIL while decoding and resizing. The output does not depend on it.
  """

  def __init__(self, source: ImageSource, batch_size: int, preprocess: Preprocess, *, seed: int = 0,
               shuffle: bool = True, shard_index: int = 0, num_shards: int = 1, num_epochs: int | None = None,
               num_threads: int = 0):
    if batch_size < 1:
      raise SpaeInputError(f"batch_size must be >= 1, got {batch_size}.")
    if num_shards < 1 or not 0 <= shard_index < num_shards:
      raise SpaeInputError(f"need 0 <= shard_index < num_shards, got shard_index={shard_index}, "
                           f"num_shards={num_shards}.")
    n = len(source)
    if n < batch_size * num_shards:
      raise SpaeInputError(f"{source.name} has {n} images, fewer than one global batch ({batch_size} x "
                           f"{num_shards} shards); use a smaller batch size or more data.")
    self.source = source
    self.batch_size = batch_size
    self.preprocess = preprocess
    self.shuffle = shuffle
    self.shard_index = shard_index
    self.num_shards = num_shards
    self.num_epochs = num_epochs
    self.steps_per_epoch = n // (batch_size * num_shards)
    self._num_examples = n
    self._seed = int(seed)
    self._epoch = 0
    self._step = 0
    self._perm: tuple[int, np.ndarray] | None = None  # (epoch, permutation) cache
    self._num_skipped = 0
    self._pool = concurrent.futures.ThreadPoolExecutor(num_threads) if num_threads > 0 else None

  # --- state -------------------------------------------------------------------------------------------------

  def get_state(self) -> dict[str, int]:
    """JSON-able position: the next batch is step `index` of epoch `epoch`."""
    return {"epoch": self._epoch, "index": self._step, "seed": self._seed, "num_examples": self._num_examples,
            "batch_size": self.batch_size, "num_shards": self.num_shards}

  def set_state(self, state: dict[str, Any]) -> None:
    """Continues from a `get_state()` result (possibly saved by another process or shard)."""
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
      raise SpaeInputError(f"iterator state is missing {missing}; it must come from BatchIterator.get_state().")
    for key, mine in (("num_examples", self._num_examples), ("batch_size", self.batch_size),
                      ("num_shards", self.num_shards)):
      if key in state and int(state[key]) != mine:
        raise SpaeInputError(f"iterator state has {key}={state[key]} but this iterator has {key}={mine}; resuming "
                             "would not reproduce the same batches. Use the same data, batch size and shards.")
    epoch, step = int(state["epoch"]), int(state["index"])
    if epoch < 0 or not 0 <= step <= self.steps_per_epoch:
      raise SpaeInputError(f"iterator state epoch={epoch}, index={step} is out of range "
                           f"(steps_per_epoch={self.steps_per_epoch}).")
    self._seed, self._epoch, self._step = int(state["seed"]), epoch, step

  @property
  def epoch(self) -> int:
    return self._epoch

  @property
  def num_skipped(self) -> int:
    """Unreadable images replaced by this iterator so far (the source may count scan-time skips too)."""
    return self._num_skipped

  # --- iteration ---------------------------------------------------------------------------------------------

  def __iter__(self) -> "BatchIterator":
    return self

  def __next__(self) -> dict[str, Any]:
    epoch, step = self._epoch, self._step
    if step >= self.steps_per_epoch:
      epoch, step = epoch + 1, 0
    if self.num_epochs is not None and epoch >= self.num_epochs:
      raise StopIteration  # the state stays at the end of the last epoch
    indices = self.batch_indices(epoch, step)
    work = (lambda i: self._example(epoch, int(i)))
    examples = list(self._pool.map(work, indices) if self._pool else map(work, indices))
    self._epoch, self._step = epoch, step + 1  # only after the batch is built, so a failure leaves no gap
    batch: dict[str, Any] = {
        "image": np.stack([e[0] for e in examples]),
        "label": np.asarray([e[1] for e in examples], np.int32),
        "index": np.asarray([e[3] for e in examples], np.int64),
    }
    if self.source.has_captions:
      batch["caption"] = [e[2] for e in examples]
    return batch

  def batch_indices(self, epoch: int, step: int) -> np.ndarray:
    """int64 [batch_size]: the source indices this shard reads at (epoch, step), before any bad-file fallback."""
    if self._perm is None or self._perm[0] != epoch:
      n = self._num_examples
      perm = np.random.default_rng([self._seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
      self._perm = (epoch, perm)
    start = (step * self.num_shards + self.shard_index) * self.batch_size
    return self._perm[1][start:start + self.batch_size].astype(np.int64)

  def _example(self, epoch: int, index: int) -> tuple[np.ndarray, int, str, int]:
    n = self._num_examples
    for k in range(n):
      j = (index + k) % n
      try:
        image, label, caption = self.source.example(j)
      except UnreadableImageError as e:
        # Determinism: the fallback depends only on which files are readable, not on timing or history.
        self._num_skipped += 1
        log.warning("%s; using the next image instead", e)
        continue
      rng = np.random.default_rng([self._seed, epoch, j]) if self.preprocess.is_random else None
      return preprocess(image, self.preprocess, rng), label, caption, j
    raise SpaeInputError(f"{self.source.name}: no image could be decoded.")

  def close(self) -> None:
    if self._pool is not None:
      self._pool.shutdown(wait=False)
