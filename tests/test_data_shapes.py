"""The synthetic `shapes` dataset: renderer, tfds builder, held-out classes, `shapes:` specs."""

import numpy as np
import pytest

import spae
from spae import data
from spae.data import _shapes, _shapes_tfds

SPEC = data.ShapesSpec(image_size=32, num_train=40, num_validation=8, num_test=6, seed=3)


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("shapes_data")
  path = data.build_shapes(root, image_size=32, num_train=40, num_validation=8, num_test=6, seed=3)
  return root, path


def _is_solid_centre(o):
  return o["texture"] == "solid" and o["shape"] != "ring"


def test_render_scene_is_deterministic_and_sized():
  for size in (32, 64, 128):
    a = data.render_scene(np.random.default_rng(7), size)
    b = data.render_scene(np.random.default_rng(7), size)
    assert a[0].shape == (size, size, 3) and a[0].dtype == np.uint8
    assert a[0].tobytes() == b[0].tobytes() and a[1] == b[1] and a[2] == b[2]
  others = {data.render_scene(np.random.default_rng(s), 32)[0].tobytes() for s in range(10)}
  assert len(others) == 10


def test_shapes_attributes_are_render_scenes_without_the_image():
  for seed in range(20):
    rng = data.scene_rng(0, "test", seed)
    assert data.shapes_attributes(rng) == data.render_scene(data.scene_rng(0, "test", seed), 64)[2]


def test_render_scene_is_antialiased():
  # Supersampling leaves edge pixels that are neither the background nor the object colour.
  image, _, attrs = data.render_scene(np.random.default_rng(0), 64)
  colours = {tuple(int(v) for v in c) for c in np.unique(image.reshape(-1, 3), axis=0)}
  assert len(colours) > 40


def test_render_scene_pixels_match_attributes():
  checked = 0
  for seed in range(60):
    image, caption, attrs = data.render_scene(np.random.default_rng(seed), 64)
    objs = attrs["objects"]
    assert 1 <= len(objs) <= 3
    assert attrs["label"] == f"{objs[0]['colour']} {objs[0]['shape']}"
    assert attrs["label"] in data.SHAPES_CLASSES
    # The caption names every object in order.
    pos = 0
    for o in objs:
      words = f"{o['size']} {o['colour']}"
      pos = caption.index(words, pos)
      pos = caption.index(o["shape"], pos)
    assert caption.endswith(f"{attrs['background']} background")
    for o in objs:
      if _is_solid_centre(o):
        y, x = int(o["y"] * 64), int(o["x"] * 64)
        np.testing.assert_allclose(image[y, x], data.COLOURS[o["colour"]], atol=3)
        checked += 1
      # Objects stay inside the image and do not overlap.
      assert 0 < o["x"] - o["radius"] and o["x"] + o["radius"] < 1
    for i, a in enumerate(objs):
      for b in objs[i + 1:]:
        assert np.hypot(a["x"] - b["x"], a["y"] - b["y"]) > 1.25 * (a["radius"] + b["radius"])
    small = [o["radius"] for o in objs if o["size"] == "small"]
    large = [o["radius"] for o in objs if o["size"] == "large"]
    assert all(s < 0.12 for s in small) and all(r > 0.15 for r in large)
  assert checked > 20


def test_caption_relations_and_grammar():
  def obj(shape, colour, x, y, size="small", texture="solid"):
    return {"shape": shape, "colour": colour, "size": size, "texture": texture, "x": x, "y": y, "radius": 0.1}

  two = {"background": "gray", "objects": [obj("circle", "red", 0.5, 0.2), obj("square", "blue", 0.5, 0.8, "large")]}
  assert data.caption_for(two) == "a small red circle above a large blue square on a gray background"
  two["objects"][0]["y"] = 0.9
  assert data.caption_for(two).startswith("a small red circle below")
  side = {"background": "olive", "objects": [obj("star", "pink", 0.8, 0.5, texture="striped"),
                                             obj("ring", "white", 0.2, 0.45)]}
  assert data.caption_for(side) == ("a small pink striped star to the right of a small white ring on an olive "
                                    "background")
  one = {"background": "teal", "objects": [obj("cross", "black", 0.1, 0.1)]}
  assert data.caption_for(one) == "a small black cross in the top left on a teal background"
  three = {"background": "sand", "objects": [obj("cross", "black", 0.2, 0.5), obj("star", "red", 0.5, 0.5),
                                             obj("hexagon", "green", 0.5, 0.9, texture="dotted")]}
  assert data.caption_for(three) == ("a small black cross to the left of a small red star and a small green dotted "
                                     "hexagon at the bottom on a sand background")


def test_heldout_classes_are_novel_combinations():
  train, held = set(data.SHAPES_TRAIN_CLASSES), set(data.SHAPES_HELDOUT_CLASSES)
  assert not train & held and train | held == set(data.SHAPES_CLASSES)
  assert len(data.SHAPES_CLASSES) == len(data.SHAPES) * len(data.COLOUR_NAMES) == 80 and len(held) == 20
  for group in (train, held):
    assert {c.split(" ")[1] for c in group} == set(data.SHAPES)
    assert {c.split(" ")[0] for c in group} == set(data.COLOUR_NAMES)


def test_build_reads_back_what_was_rendered(shapes_dir):
  import tensorflow_datasets as tfds

  _, path = shapes_dir
  assert path.name == "1.0.0" and path.parent.name == SPEC.config_name
  sources = tfds.builder_from_directory(str(path)).as_data_source()
  assert {k: len(v) for k, v in sources.items()} == {"train": 40, "validation": 8, "test": 6}
  for split, ds in sources.items():
    seen = set()
    for rec in ds:
      i = int(rec["index"])
      seen.add(i)
      image, caption, attrs = data.render_scene(_shapes.scene_rng(3, split, i), 32)
      np.testing.assert_array_equal(rec["image"], image)  # PNG is lossless
      assert rec["caption"].decode() == caption
      assert data.SHAPES_CLASSES[rec["label"]] == attrs["label"]
      assert data.BACKGROUND_NAMES[rec["background"]] == attrs["background"]
      objs = rec["objects"]
      assert [data.SHAPES[k] for k in objs["shape"]] == [o["shape"] for o in attrs["objects"]]
      assert [data.COLOUR_NAMES[k] for k in objs["colour"]] == [o["colour"] for o in attrs["objects"]]
      assert [data.SIZES[k] for k in objs["size"]] == [o["size"] for o in attrs["objects"]]
      assert [data.TEXTURES[k] for k in objs["texture"]] == [o["texture"] for o in attrs["objects"]]
      np.testing.assert_allclose(objs["x"], [o["x"] for o in attrs["objects"]], rtol=1e-6)
    assert seen == set(range(len(ds)))


def test_build_is_deterministic(shapes_dir, tmp_path, monkeypatch):
  import tempfile

  import tensorflow_datasets as tfds

  def png_bytes(path):
    ds = tfds.builder_from_directory(str(path)).as_data_source(
        split="train", decoders={"image": tfds.decode.SkipDecoding()})
    return {int(r["index"]): r["image"] for r in ds}

  _, path = shapes_dir
  scratch = tmp_path / "tmp"  # the temporary folder while building: nothing may be left in it
  scratch.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(scratch))
  again = data.build_shapes(tmp_path / "a", image_size=32, num_train=40, num_validation=8, num_test=6, seed=3)
  other = data.build_shapes(tmp_path / "b", image_size=32, num_train=40, num_validation=0, num_test=0, seed=4)
  assert not list(scratch.iterdir())
  assert png_bytes(path) == png_bytes(again)
  first, third = png_bytes(path), png_bytes(other)
  assert sum(first[i] == third[i] for i in first) == 0


def test_shapes_source_and_class_subsets(shapes_dir):
  root, _ = shapes_dir
  src = data.make_source(f"shapes:{root}")
  assert len(src) == 40 and src.classes == list(data.SHAPES_CLASSES) and src.has_captions
  assert len(data.make_source(f"shapes:validation@{root}")) == 8
  assert len(data.make_source(f"shapes:test[:3]@{root}")) == 3
  image, label, caption = src.example(5)
  rec = src.record(5)
  ref, ref_caption, ref_attrs = data.render_scene(_shapes.scene_rng(3, "train", int(rec["index"])), 32)
  np.testing.assert_array_equal(image, ref)
  assert caption == ref_caption == src.caption(5) and src.classes[label] == ref_attrs["label"] == \
      src.classes[src.label(5)]
  mem = data.render_shapes_source(40, image_size=32, seed=3)  # the same scenes without tfds
  k = int(rec["index"])
  np.testing.assert_array_equal(mem.load(k), image)
  assert mem.caption(k) == caption and mem.label(k) == label
  for name in set(src.classes[k] for k in src.labels()):
    assert all(src.classes[src.label(i)] == name for i in src.images_of(name))
  assert sum(len(src.images_of(c)) for c in src.classes) == len(src)

  train = data.make_source(f"shapes:{root}", classes=data.SHAPES_TRAIN_CLASSES, require_labels=True)
  held = data.make_source(f"shapes:{root}", classes=data.SHAPES_HELDOUT_CLASSES)
  assert len(train) + len(held) == len(src) and len(held) > 0
  assert train.classes == list(data.SHAPES_TRAIN_CLASSES)
  for i in range(len(held)):
    _, label, caption = held.example(i)
    assert held.classes[label] in data.SHAPES_HELDOUT_CLASSES
    assert caption.split(" ")[2] == held.classes[label].split(" ")[0]  # "a <size> <colour> ..."
  assert isinstance(held, data.LabelledSource)
  with pytest.raises(spae.SpaeInputError, match="no class"):
    src.images_of("plaid circle")


def test_shapes_spec_builds_when_missing(tmp_path):
  spec = data.ShapesSpec(image_size=32, num_train=12, num_validation=2, num_test=2, seed=1)
  src = data.make_source(f"shapes:{tmp_path}", shapes_spec=spec)
  assert len(src) == 12 and src.load(0).shape == (32, 32, 3)
  assert (tmp_path / "shapes" / spec.config_name / "1.0.0" / "dataset_info.json").exists()
  # Reopening without a spec finds the one dataset already built instead of building the default.
  assert len(data.make_source(f"shapes:validation@{tmp_path}")) == 2
  with pytest.raises(spae.SpaeInputError, match="no shapes dataset"):
    data.shapes_source(tmp_path / "empty", build=False)


def test_tfds_spec_reads_shapes_by_name(shapes_dir):
  root, _ = shapes_dir
  src = data.make_source(f"tfds:shapes/{SPEC.config_name}:validation@{root}")
  assert len(src) == 8 and src.classes == list(data.SHAPES_CLASSES) and src.load(0).shape == (32, 32, 3)
  with pytest.raises(spae.SpaeInputError, match="no split"):
    data.make_source(f"tfds:shapes/{SPEC.config_name}:nosuchsplit@{root}")


def test_bad_shapes_arguments():
  with pytest.raises(spae.SpaeInputError, match=">= 16"):
    data.render_scene(np.random.default_rng(0), 8)
  with pytest.raises(spae.SpaeInputError, match="num_train"):
    data.ShapesSpec(num_train=-1)
  with pytest.raises(spae.SpaeInputError, match="DATA_DIR"):
    data.make_source("shapes:")


def test_iterator_over_tfds_shapes_with_threads(shapes_dir):
  root, _ = shapes_dir
  src = data.make_source(f"shapes:{root}")
  aug = data.Preprocess(24, crop="random", flip=True)
  serial = list(data.BatchIterator(src, 8, aug, seed=4, num_epochs=2))
  threaded = list(data.BatchIterator(src, 8, aug, seed=4, num_epochs=2, num_threads=3))
  assert len(serial) == 10
  for a, b in zip(serial, threaded):
    np.testing.assert_array_equal(a["image"], b["image"])
    assert a["caption"] == b["caption"] and (a["label"] == b["label"]).all()
  for b in serial[:2]:
    for k, i in enumerate(b["index"]):
      assert src.classes[b["label"][k]] == src.classes[src.label(int(i))]
      assert b["caption"][k] == src.caption(int(i))


def test_predefined_and_custom_configs_construct(tmp_path):
  cls = _shapes_tfds._builder_cls()
  for spec in (data.ShapesSpec(), data.ShapesSpec(image_size=128), SPEC):
    builder = cls(spec=spec, data_dir=str(tmp_path), file_format="array_record")
    assert builder.builder_config.spec == spec and builder.builder_config.name == spec.config_name
    assert builder.info.features["image"].shape == (spec.image_size, spec.image_size, 3)
  assert cls(data_dir=str(tmp_path)).builder_config.spec == data.ShapesSpec()  # the default config
