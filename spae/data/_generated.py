"""Generated image sources: `scenes`, scikit-image photo crops and their mixture (`make_source` opens them by spec).

Every image is a pure function of (seed, index), made when asked for (nothing is stored), so a source of 100k
images costs nothing to open and any index can be read in any order, on any host.

  'scenes:N[@SIZE]'            N train-split scenes (spae.data._scenes; main objects never of a held-out class)
  'scenes:SPLIT:N[@SIZE]'      N scenes of 'validation' or 'test' (all classes; disjoint random streams)
  'photos:N[@SIZE]'            N random crops of the training photos (spae.data._photos)
  'photos:test[@SIZE]'         the fixed evaluation crops of the held-out photos (8 per photo)
  'mix:[N:]NAME=W,...[@SIZE]'  N images (default 100000), a share W of each of NAME = scenes, photos (train sets),
                               e.g. 'mix:scenes=0.7,photos=0.3'
SIZE defaults to 64; the seed is 0 (pass `seed=` to the classes for others). The specs are read in `_open.py`.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from spae._io import SpaeInputError
from spae.data import _photos, _scenes
from spae.data._sources import ArraySource, ImageSource

DEFAULT_MIX_SIZE = 100_000


class SceneSource(ImageSource):
  """`num` scenes of `split` for `seed` at `image_size` px; image i is `_scenes.scene_example(seed, split, i)`.

  Labels are the main object's "<colour> <shape>" (`classes` = all 156 scene classes), captions describe the
  scene, and `attributes(i)` gives the full metadata (see `spae.data._scenes.sample_scene`).
  """

  def __init__(self, num: int, image_size: int = 64, seed: int = 0, split: str = "train"):
    if num < 1:
      raise SpaeInputError(f"a scenes source needs at least one image, got num={num}.")
    if image_size < 16:
      raise SpaeInputError(f"scenes image size must be >= 16 pixels, got {image_size}.")
    _scenes.scene_rng(seed, split, 0)  # validates the split
    self.num, self.image_size, self.seed, self.split = int(num), int(image_size), int(seed), split
    self.name = f"scenes:{split}:{num}@{image_size}" + (f" seed {seed}" if seed else "")

  def __len__(self) -> int:
    return self.num

  def attributes(self, index: int) -> dict[str, Any]:
    """The scene's attributes, without rendering it."""
    rng = _scenes.scene_rng(self.seed, self.split, self._check_index(index))
    return _scenes.sample_scene(rng, _scenes.split_classes(self.split))

  def example(self, index: int) -> tuple[np.ndarray, int, str]:
    attrs = self.attributes(index)
    return (_scenes.render(attrs, self.image_size), _scenes.CLASSES.index(attrs["label"]),
            _scenes.caption_for(attrs))

  def load(self, index: int) -> np.ndarray:
    return self.example(index)[0]

  @property
  def classes(self) -> list[str]:
    return list(_scenes.CLASSES)

  @property
  def has_captions(self) -> bool:
    return True

  def caption(self, index: int) -> str:
    return _scenes.caption_for(self.attributes(index))

  def _all_labels(self) -> Sequence[int]:
    return [_scenes.CLASSES.index(self.attributes(i)["label"]) for i in range(self.num)]


class PhotoCropSource(ImageSource):
  """`num` random crops of `photos` (default: the training photos) for `seed`, at `image_size` px.

  Labels are the photo each crop comes from (`classes` = `photos`); captions describe the photo.
  """

  def __init__(self, num: int, image_size: int = 64, seed: int = 0,
               photos: Sequence[str] = _photos.TRAIN_PHOTOS):
    if num < 1:
      raise SpaeInputError(f"a photo crop source needs at least one image, got num={num}.")
    if image_size < 1:
      raise SpaeInputError(f"photo crop size must be positive, got {image_size}.")
    unknown = [p for p in photos if p not in _photos.PHOTOS]
    if unknown or not photos:
      raise SpaeInputError(f"unknown photos {unknown}; choose from {sorted(_photos.PHOTOS)}.")
    self.num, self.image_size, self.seed, self.photos = int(num), int(image_size), int(seed), tuple(photos)
    self.name = f"photos:{num}@{image_size}" + (f" seed {seed}" if seed else "")

  def __len__(self) -> int:
    return self.num

  def example(self, index: int) -> tuple[np.ndarray, int, str]:
    image, name = _photos.random_crop(self.seed, self._check_index(index), self.photos, self.image_size)
    return image, self.photos.index(name), _photos.PHOTOS[name]

  def load(self, index: int) -> np.ndarray:
    return self.example(index)[0]

  @property
  def classes(self) -> list[str]:
    return list(self.photos)

  @property
  def has_captions(self) -> bool:
    return True

  def caption(self, index: int) -> str:
    return _photos.PHOTOS[self.photos[self.label(index)]]

  def _all_labels(self) -> Sequence[int]:
    return [self.photos.index(_photos.crop_photo_name(self.seed, i, self.photos)) for i in range(self.num)]


def heldout_photo_crops(image_size: int = 64, per_photo: int = 8) -> ArraySource:
  """The fixed evaluation crops of `HELDOUT_PHOTOS` (labelled by photo, captioned), identical on every call."""
  images, names = _photos.heldout_crops(image_size, per_photo)
  classes = list(_photos.HELDOUT_PHOTOS)
  return ArraySource(images, [classes.index(n) for n in names], classes, [_photos.PHOTOS[n] for n in names],
                     name=f"photos:test@{image_size}")


class ConcatSource(ImageSource):
  """Several sources one after another; classes of the same name are merged (labels remapped by name)."""

  def __init__(self, parts: Sequence[ImageSource], name: str | None = None):
    self.parts = [p for p in parts if len(p)]
    if not self.parts:
      raise SpaeInputError("a concatenated source needs at least one non-empty source.")
    self._starts = np.cumsum([0] + [len(p) for p in self.parts])
    self._classes: list[str] = []
    for p in self.parts:
      self._classes += [c for c in p.classes if c not in self._classes]
    self._remap = [np.asarray([self._classes.index(c) for c in p.classes] + [-1], np.int64) for p in self.parts]
    self.name = name or " + ".join(p.name for p in self.parts)

  def __len__(self) -> int:
    return int(self._starts[-1])

  def _locate(self, index: int) -> tuple[int, int]:
    index = self._check_index(index)
    k = int(np.searchsorted(self._starts, index, side="right")) - 1
    return k, index - int(self._starts[k])

  def example(self, index: int) -> tuple[np.ndarray, int, str]:
    k, j = self._locate(index)
    image, label, caption = self.parts[k].example(j)
    return image, int(self._remap[k][label]), caption

  def load(self, index: int) -> np.ndarray:
    k, j = self._locate(index)
    return self.parts[k].load(j)

  @property
  def classes(self) -> list[str]:
    return list(self._classes)

  @property
  def has_captions(self) -> bool:
    return any(p.has_captions for p in self.parts)

  def caption(self, index: int) -> str:
    k, j = self._locate(index)
    return self.parts[k].caption(j)

  def _all_labels(self) -> Sequence[int]:
    return np.concatenate([remap[p.labels()] for p, remap in zip(self.parts, self._remap)])


MIX_PARTS = ("scenes", "photos")


def mixed_source(num: int, weights: dict[str, float], image_size: int = 64, seed: int = 0) -> ConcatSource:
  """`num` training images, a share `weights[name]` (normalised) from each of 'scenes' and 'photos'."""
  unknown = [k for k in weights if k not in MIX_PARTS]
  if unknown or not weights:
    raise SpaeInputError(f"mix parts must be among {MIX_PARTS}, got {list(weights)}.")
  w = np.asarray(list(weights.values()), np.float64)
  if np.any(w < 0) or w.sum() <= 0:
    raise SpaeInputError(f"mix weights must be >= 0 and not all 0, got {weights}.")
  exact = num * w / w.sum()
  counts = np.floor(exact).astype(int)
  counts[np.argsort(counts - exact)[:num - counts.sum()]] += 1  # largest remainders get the leftover images
  make = {"scenes": lambda n: SceneSource(n, image_size, seed, "train"),
          "photos": lambda n: PhotoCropSource(n, image_size, seed)}
  parts = [make[k](int(n)) for k, n in zip(weights, counts) if n > 0]
  spec = ",".join(f"{k}={v:g}" for k, v in weights.items())
  return ConcatSource(parts, name=f"mix:{num}:{spec}@{image_size}")
