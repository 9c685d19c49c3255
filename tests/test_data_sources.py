"""Image folders (classes, recursion, odd modes, corrupt files), decoding, preprocessing and data specs."""

import io
import logging

import numpy as np
import pytest
from PIL import Image

import spae
from spae import data


def _png(path, im):
  path.parent.mkdir(parents=True, exist_ok=True)
  im.save(path)


@pytest.fixture
def folder(tmp_path):
  """cat/: 3 RGB PNG + a corrupt one; dog/: grayscale, RGBA, 16-bit, palette, JPEG, nested, truncated."""
  root = tmp_path / "imgs"
  rng = np.random.default_rng(0)
  for i in range(3):
    _png(root / "cat" / f"c{i}.png", Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)))
  (root / "cat" / "broken.png").write_bytes(b"not a png at all" * 10)
  _png(root / "dog" / "gray.png", Image.fromarray(np.full((16, 16), 77, np.uint8), "L"))
  rgba = np.zeros((16, 16, 4), np.uint8)
  rgba[:8] = (200, 10, 20, 255)  # opaque top half
  rgba[8:] = (0, 0, 0, 0)  # transparent bottom half -> white
  _png(root / "dog" / "rgba.png", Image.fromarray(rgba, "RGBA"))
  deep = np.zeros((16, 16), np.uint16)
  deep[:, :8], deep[:, 8:] = 65535, 32896
  _png(root / "dog" / "deep16.png", Image.fromarray(deep))
  pal = Image.fromarray(np.tile(np.arange(2, dtype=np.uint8), (16, 8)), "P")
  pal.putpalette([10, 200, 30, 250, 240, 5] + [0] * 762)
  _png(root / "dog" / "palette.png", pal)
  _png(root / "dog" / "photo.jpg", Image.fromarray(np.full((12, 18, 3), 128, np.uint8)))
  _png(root / "dog" / "nested" / "deeper" / "x.png", Image.fromarray(np.full((8, 8, 3), 9, np.uint8)))
  buf = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
  (root / "dog" / "truncated.png").write_bytes(buf.getvalue()[:300])  # valid header, cut-off data
  (root / "README.txt").write_text("not an image")
  (root / "dog" / ".hidden.png").write_bytes(b"ignored")
  return root


def test_folder_classes_recursion_and_scan_skips(folder, caplog):
  with caplog.at_level(logging.WARNING, logger="spae.data"):
    src = data.make_source(str(folder))
  assert src.classes == ["cat", "dog"]
  names = [f.name for f in src.files]
  assert "broken.png" not in names and "x.png" in names and "README.txt" not in names
  assert ".hidden.png" not in names
  assert len(src) == 3 + 7  # the truncated file passes the header check; it fails only when decoded
  assert src.num_skipped == 1 and src.skipped[0][0].endswith("broken.png")
  assert any("broken.png" in r.getMessage() for r in caplog.records)
  assert [src.classes[src.label(i)] for i in range(len(src))] == ["cat"] * 3 + ["dog"] * 7
  assert src.images_of("cat") == [0, 1, 2]
  assert isinstance(data.make_source(f"folder:{folder}"), data.FolderSource)
  full = data.FolderSource(folder, check="full")
  assert full.num_skipped == 2 and len(full) == 9


def test_mode_conversions(folder):
  def load(name):
    src = data.FolderSource(folder)
    return src.load([f.name for f in src.files].index(name))

  gray = load("gray.png")
  assert gray.shape == (16, 16, 3) and gray.dtype == np.uint8 and (gray == 77).all()
  rgba = load("rgba.png")
  assert (rgba[:8] == (200, 10, 20)).all() and (rgba[8:] == 255).all()
  deep = load("deep16.png")
  assert (deep[:, :8] == 255).all() and (deep[:, 8:] == 128).all()
  pal = load("palette.png")
  assert (pal[:, 0] == (10, 200, 30)).all() and (pal[:, 1] == (250, 240, 5)).all()
  photo = load("photo.jpg")
  assert photo.shape == (12, 18, 3) and abs(int(photo.mean()) - 128) <= 2
  assert data.to_rgb(np.full((4, 4, 1), 7, np.uint16) * 257).max() == 7
  with pytest.raises(spae.SpaeInputError, match="uint8 or uint16"):
    data.to_rgb(np.zeros((4, 4, 3), np.float32))


def test_corrupt_file_is_skipped_by_the_iterator(folder, caplog):
  src = data.FolderSource(folder)
  bad = [f.name for f in src.files].index("truncated.png")
  it = data.BatchIterator(src, 5, data.Preprocess(8), shuffle=False, num_epochs=2)
  with caplog.at_level(logging.WARNING, logger="spae.data"):
    batches = list(it)
  assert len(batches) == 4 and all(b["image"].shape == (5, 8, 8, 3) for b in batches)
  indices = np.concatenate([b["index"] for b in batches])
  assert bad not in indices and (bad + 1) % len(src) in indices  # replaced by the next readable image
  assert it.num_skipped == 2  # once per epoch
  assert src.num_skipped == 2 and src.skipped[-1][0].endswith("truncated.png")  # counted once per file
  assert any("truncated.png" in r.getMessage() for r in caplog.records)
  assert bad not in src.images_of("dog")
  with pytest.raises(data.UnreadableImageError, match="truncated.png"):
    src.load(bad)


def test_empty_and_unreadable_folders(tmp_path):
  with pytest.raises(spae.SpaeInputError, match="no image files"):
    data.make_source(str(tmp_path))
  (tmp_path / "a").mkdir()
  (tmp_path / "a" / "x.jpg").write_bytes(b"\x00" * 50)
  (tmp_path / "a" / "y.png").write_bytes(b"garbage")
  with pytest.raises(spae.SpaeInputError, match="no readable image"):
    data.make_source(f"folder:{tmp_path}")
  with pytest.raises(spae.SpaeInputError, match="does not exist"):
    data.FolderSource(tmp_path / "missing")


def test_bad_specs(tmp_path):
  for spec, match in [("", "empty data spec"), ("nosuch:thing", "unknown data source kind"),
                      (str(tmp_path / "missing"), "not an existing folder"), ("tfds:", "names no dataset"),
                      ("shapes:validation@", "DATA_DIR"),
                      (f"tfds:no_such_dataset_xyz@{tmp_path}", "cannot open tfds")]:
    with pytest.raises(spae.SpaeInputError, match=match):
      data.make_source(spec)
  with pytest.raises(spae.SpaeInputError, match="no class labels"):
    data.make_source(data.ArraySource(np.zeros((2, 4, 4, 3), np.uint8)), require_labels=True)
  with pytest.raises(spae.SpaeInputError, match="has no class"):
    data.make_source(data.ArraySource(np.zeros((2, 4, 4, 3), np.uint8), [0, 1], ["a", "b"]), classes=["c"])


def test_folder_without_class_subfolders_is_unlabelled(tmp_path):
  for i in range(2):
    _png(tmp_path / f"{i}.png", Image.fromarray(np.full((4, 4, 3), i, np.uint8)))
  src = data.make_source(tmp_path)
  assert src.classes == [] and src.label(0) == -1
  with pytest.raises(spae.SpaeInputError, match="no class labels"):
    src.images_of("x")


def test_preprocess_center_crop_and_ranges():
  image = np.zeros((40, 80, 3), np.uint8)
  image[:, :20] = (255, 0, 0)
  image[:, 20:60] = (0, 255, 0)
  image[:, 60:] = (0, 0, 255)
  out = data.preprocess(image, data.Preprocess(16))
  assert out.shape == (16, 16, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out, np.broadcast_to([0, 1, 0], out.shape), atol=1 / 255)  # only the middle
  squashed = data.preprocess(image, data.Preprocess(16, crop="none"))
  assert squashed[:, 0, 0].min() > 0.9 and squashed[:, -1, 2].min() > 0.9
  assert 0.0 <= squashed.min() and squashed.max() <= 1.0
  same = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
  np.testing.assert_array_equal(data.preprocess(same, data.Preprocess(16)), same / np.float32(255))
  with pytest.raises(spae.SpaeInputError, match="uint8 RGB"):
    data.preprocess(np.zeros((4, 4), np.uint8), data.Preprocess(4))
  with pytest.raises(spae.SpaeInputError, match="crop must be"):
    data.Preprocess(8, crop="middle")


def test_random_crop_and_flip_are_seeded():
  image = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
  cfg = data.Preprocess(24, crop="random", min_crop=0.5, flip=True)
  runs = [data.preprocess(image, cfg, np.random.default_rng(s)) for s in (5, 5, 6, 7, 8)]
  np.testing.assert_array_equal(runs[0], runs[1])
  assert all(not np.array_equal(runs[0], r) for r in runs[2:])
  with pytest.raises(spae.SpaeInputError, match="rng"):
    data.preprocess(image, cfg)
  # A flip is an exact mirror of the unflipped output for the same crop.
  flips = [data.preprocess(image, data.Preprocess(24, crop="center", flip=True), np.random.default_rng(s))
           for s in range(8)]
  plain = data.preprocess(image, data.Preprocess(24))
  kinds = {("same" if np.array_equal(f, plain) else "mirror" if np.array_equal(f, plain[:, ::-1]) else "other")
           for f in flips}
  assert kinds == {"same", "mirror"}


def test_decode_image_errors():
  with pytest.raises(data.UnreadableImageError, match="my bytes"):
    data.decode_image(b"nope", "my bytes")
  assert issubclass(data.UnreadableImageError, spae.SpaeInputError)


def test_folder_follows_symlinks_without_looping(folder):
  import os

  os.symlink(folder / "cat", folder / "dog" / "loop")  # dog/loop -> cat: counted under dog, no infinite walk
  os.symlink(folder, folder / "cat" / "up")  # a loop back to the root
  src = data.FolderSource(folder)
  names = [f.relative_to(folder).as_posix() for f in src.files]
  assert "dog/loop/c0.png" in names and not any("up/" in n for n in names)


@pytest.mark.parametrize("shape", [(45, 70), (20, 27)])  # shrink (antialiased) and enlarge
def test_data_pipeline_and_tokenizer_see_identical_pixels(tiny_tok, tmp_path, shape):
  """Training (FolderSource -> BatchIterator) and inference (Tokenizer.preprocess) resize the same file alike."""
  from spae._images import fit_to_size, load_image

  rng = np.random.default_rng(3)
  smooth = np.linspace(0, 255, shape[1])[None, :, None] * np.ones((shape[0], 1, 3))
  im = np.clip(smooth + rng.normal(0, 40, (*shape, 3)), 0, 255).astype(np.uint8)
  _png(tmp_path / "imgs" / "a.jpg", Image.fromarray(im))
  size = tiny_tok.config.image_size
  assert tiny_tok.config.fit == "center_crop"
  it = data.BatchIterator(data.make_source(tmp_path / "imgs"), 1, data.Preprocess(size, crop="center"),
                          shuffle=False)
  train = next(it)["image"][0]
  infer, _ = tiny_tok.preprocess(load_image(tmp_path / "imgs" / "a.jpg"))
  assert train.shape == infer[0].shape == (size, size, 3) and train.dtype == infer.dtype == np.float32
  np.testing.assert_array_equal(train, infer[0])
  # No 8-bit rounding after the resize: values between the uint8 steps survive on both paths.
  assert np.any(np.abs(train * 255 - np.round(train * 255)) > 1e-3)
  squashed = fit_to_size(load_image(tmp_path / "imgs" / "a.jpg")[None].astype(np.float32) / 255, size, "resize")
  np.testing.assert_array_equal(data.preprocess(load_image(tmp_path / "imgs" / "a.jpg"),
                                                data.Preprocess(size, crop="none")), squashed[0])


def test_resize_is_antialiased_bicubic_and_checks_shapes():
  from spae._images import resize

  stripes = np.zeros((64, 64, 3), np.float32)
  stripes[:, ::2] = 1.0  # 1-px stripes: a point-sampling resize would alias them to all-0 or all-1
  out = resize(stripes, 8)
  assert out.shape == (8, 8, 3) and out.dtype == np.float32
  np.testing.assert_allclose(out, 0.5, atol=0.02)
  np.testing.assert_array_equal(resize(stripes, (64, 64)), stripes)  # same size: untouched
  assert resize(np.full((2, 4, 6, 3), 255, np.uint8), (3, 5)).shape == (2, 3, 5, 3)
  np.testing.assert_allclose(resize(np.full((4, 6, 3), 255, np.uint8), 9), 1.0)
  with pytest.raises(spae.SpaeInputError, match="resize expects"):
    resize(np.zeros((4, 4), np.float32), 2)
