"""BatchIterator: determinism, per-epoch shuffling, exact resume from a saved state, sharding, epochs."""

import json

import numpy as np
import pytest

import spae
from spae import data

AUG = data.Preprocess(16, crop="random", min_crop=0.6, flip=True)


@pytest.fixture(scope="module")
def source():
  return data.render_shapes_source(22, image_size=24, seed=2)  # in memory: no tfds build needed


def _take(it, n):
  return [next(it) for _ in range(n)]


def _same(a, b):
  assert a.keys() == b.keys()
  np.testing.assert_array_equal(a["image"], b["image"])
  np.testing.assert_array_equal(a["index"], b["index"])
  np.testing.assert_array_equal(a["label"], b["label"])
  assert a.get("caption") == b.get("caption")


def test_batches_have_the_documented_layout(source):
  b = next(data.BatchIterator(source, 4, AUG))
  assert b["image"].shape == (4, 16, 16, 3) and b["image"].dtype == np.float32
  assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0
  assert b["label"].dtype == np.int32 and b["index"].dtype == np.int64 and len(b["caption"]) == 4
  for k in range(4):
    i = int(b["index"][k])
    assert b["caption"][k] == source.caption(i) and b["label"][k] == source.label(i)


def test_resume_reproduces_the_uninterrupted_run(source):
  # 22 images, batch 4 -> 5 steps per epoch; 13 batches cross two epoch boundaries.
  ref = _take(data.BatchIterator(source, 4, AUG, seed=11), 13)
  first = data.BatchIterator(source, 4, AUG, seed=11)
  head = _take(first, 6)
  state = json.loads(json.dumps(first.get_state()))
  assert state["epoch"] == 1 and state["index"] == 1 and state["seed"] == 11
  resumed = data.BatchIterator(source, 4, AUG, seed=0, num_threads=2)  # seed comes from the state
  resumed.set_state(state)
  for a, b in zip(ref, head + _take(resumed, 7)):
    _same(a, b)
  # The state at the end of an epoch resumes into the next one.
  end = data.BatchIterator(source, 4, AUG, seed=11)
  _take(end, 5)
  assert end.get_state()["index"] == 5
  again = data.BatchIterator(source, 4, AUG, seed=11)
  again.set_state(end.get_state())
  _same(next(again), ref[5])


def test_epochs_are_shuffled_deterministically(source):
  it = data.BatchIterator(source, 4, AUG, seed=1)
  epochs = [np.concatenate([b["index"] for b in _take(it, 5)]) for _ in range(2)]
  assert len(set(epochs[0])) == 20 and not np.array_equal(epochs[0], epochs[1])
  other = data.BatchIterator(source, 4, AUG, seed=2)
  assert not np.array_equal(np.concatenate([b["index"] for b in _take(other, 5)]), epochs[0])
  plain = data.BatchIterator(source, 4, data.Preprocess(16), shuffle=False)
  np.testing.assert_array_equal(np.concatenate([b["index"] for b in _take(plain, 5)]), np.arange(20))
  # Augmentation differs between epochs for the same image, and threads do not change anything.
  a = data.BatchIterator(source, 22, AUG, seed=3, shuffle=False)
  e0, e1 = next(a)["image"], next(a)["image"]
  assert not np.array_equal(e0, e1)
  t = data.BatchIterator(source, 22, AUG, seed=3, shuffle=False, num_threads=3)
  np.testing.assert_array_equal(next(t)["image"], e0)


def test_shards_are_disjoint_and_in_step(source):
  shards = [data.BatchIterator(source, 2, AUG, seed=5, shard_index=i, num_shards=3) for i in range(3)]
  assert {s.steps_per_epoch for s in shards} == {3}  # 22 // (2 * 3): remainder dropped
  per_shard = [np.concatenate([b["index"] for b in _take(s, 3)]) for s in shards]
  flat = np.concatenate(per_shard)
  assert len(flat) == 18 and len(set(flat.tolist())) == 18
  single = data.BatchIterator(source, 6, AUG, seed=5)
  global_batches = _take(single, 3)
  for step in range(3):
    # Shard i holds slice i of the same global batch a single host would see.
    np.testing.assert_array_equal(np.concatenate([p[2 * step:2 * step + 2] for p in per_shard]),
                                  global_batches[step]["index"])
  # States are shard-independent: shard 2 resumes from shard 0's saved state.
  shards[2].set_state(shards[0].get_state())
  assert shards[2].get_state()["epoch"] == 0 and shards[2].get_state()["index"] == 3


def test_num_epochs_and_drop_remainder(source):
  it = data.BatchIterator(source, 6, data.Preprocess(16), num_epochs=2)
  batches = list(it)
  assert len(batches) == 2 * 3 and all(len(b["index"]) == 6 for b in batches)
  assert it.epoch == 1
  with pytest.raises(StopIteration):
    next(it)


def test_bad_iterator_arguments_and_states(source):
  it = data.BatchIterator(source, 4, AUG)
  with pytest.raises(spae.SpaeInputError, match="batch_size"):
    it.set_state({**it.get_state(), "batch_size": 8})
  with pytest.raises(spae.SpaeInputError, match="missing"):
    it.set_state({"epoch": 0})
  with pytest.raises(spae.SpaeInputError, match="out of range"):
    it.set_state({"epoch": 0, "index": 99, "seed": 0})
  with pytest.raises(spae.SpaeInputError, match="fewer than one global batch"):
    data.BatchIterator(source, 8, AUG, num_shards=3)
  with pytest.raises(spae.SpaeInputError, match="shard_index"):
    data.BatchIterator(source, 2, AUG, shard_index=3, num_shards=3)
