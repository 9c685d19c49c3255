"""Random-access image sources: the protocol, arrays, folders and class subsets (tfds datasets: `_tfds`;
`make_source` opens them all by spec)."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Literal, Protocol, Sequence, runtime_checkable

import numpy as np

from spae._io import SpaeInputError
from spae.data import _shapes
from spae.data._preprocess import UnreadableImageError, decode_image, to_rgb

log = logging.getLogger("spae.data")

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm",
                              ".pbm", ".pnm", ".jfif", ".tga"})
CheckMode = Literal["none", "header", "full"]


@runtime_checkable
class LabelledSource(Protocol):
  """What few-shot episodes need: class names, the images of a class, and the pixels of an image.

  Every `ImageSource` has these; one whose `classes` is empty has no labels (`make_source(..., require_labels=
  True)` rejects it).
  """

  @property
  def classes(self) -> list[str]: ...

  def images_of(self, class_name: str) -> list[int]: ...

  def load(self, index: int) -> np.ndarray: ...


class ImageSource:
  """A random-access collection of images with optional integer labels and captions.

  Subclasses implement `__len__`, `load`, and `_all_labels` (+ `classes`, `caption` when they have them).
  """

  name: str = "images"

  def __len__(self) -> int:
    raise NotImplementedError

  def load(self, index: int) -> np.ndarray:
    """Image `index` as uint8 RGB [H, W, 3]. Raises UnreadableImageError if it cannot be decoded."""
    raise NotImplementedError

  @property
  def classes(self) -> list[str]:
    """Class names; label k means classes[k]. Empty if the source has no labels."""
    return []

  @property
  def has_captions(self) -> bool:
    return False

  def caption(self, index: int) -> str:
    """The caption of image `index` ('' if the source has no captions)."""
    return ""

  def example(self, index: int) -> tuple[np.ndarray, int, str]:
    """(uint8 RGB [H, W, 3], label or -1, caption or '') of image `index`, reading its record once."""
    return self.load(index), self.label(index), self.caption(index)

  def labels(self) -> np.ndarray:
    """int64 [N]: every image's label (-1 = none). Cached; may read every record once (tfds)."""
    if getattr(self, "_labels_cache", None) is None:
      self._labels_cache = np.asarray(self._all_labels(), np.int64).reshape(len(self))
    return self._labels_cache

  def label(self, index: int) -> int:
    return int(self.labels()[self._check_index(index)])

  def images_of(self, class_name: str) -> list[int]:
    """Indices of the images labelled `class_name`, ascending."""
    if not self.classes:
      raise SpaeInputError(f"{self.name} has no class labels, so images_of({class_name!r}) is undefined; use a "
                           "folder with one subfolder per class or a tfds dataset with a 'label' feature.")
    if class_name not in self.classes:
      raise SpaeInputError(f"{self.name} has no class {class_name!r}; classes are {self.classes[:20]}"
                           f"{' ...' if len(self.classes) > 20 else ''}.")
    return np.flatnonzero(self.labels() == self.classes.index(class_name)).tolist()

  def subset(self, classes: Sequence[str]) -> "ImageSource":
    """Only the images of `classes`, relabelled 0..len(classes)-1 in the given order."""
    return ClassSubset(self, classes)

  def _all_labels(self) -> Sequence[int]:
    return [-1] * len(self)

  def _check_index(self, index: int) -> int:
    n = len(self)
    if not -n <= index < n:
      raise IndexError(f"{self.name}: index {index} out of range for {n} images.")
    return index % n

  def __repr__(self) -> str:
    return f"{type(self).__name__}({self.name!r}, {len(self)} images, {len(self.classes)} classes)"


class ArraySource(ImageSource):
  """In-memory images (uint8 [N, H, W, 3] or a list of [H, W, C] arrays), for tests, benchmarks and demos."""

  def __init__(self, images: np.ndarray | Sequence[np.ndarray], labels: Sequence[int] | None = None,
               classes: Sequence[str] = (), captions: Sequence[str] | None = None, name: str = "arrays"):
    self._images = images
    self.name = name
    n = len(images)
    if n == 0:
      raise SpaeInputError(f"{name}: no images given.")
    self._labels = None if labels is None else np.asarray(labels, np.int64)
    if self._labels is not None and self._labels.shape != (n,):
      raise SpaeInputError(f"{name}: {n} images but labels has shape {self._labels.shape}.")
    if self._labels is not None and classes and self._labels.max() >= len(classes):
      raise SpaeInputError(f"{name}: label {self._labels.max()} but only {len(classes)} classes.")
    self._classes = list(classes)
    self._captions = None if captions is None else list(captions)
    if self._captions is not None and len(self._captions) != n:
      raise SpaeInputError(f"{name}: {n} images but {len(self._captions)} captions.")

  def __len__(self) -> int:
    return len(self._images)

  def load(self, index: int) -> np.ndarray:
    return to_rgb(np.asarray(self._images[self._check_index(index)]))

  @property
  def classes(self) -> list[str]:
    return list(self._classes)

  @property
  def has_captions(self) -> bool:
    return self._captions is not None

  def caption(self, index: int) -> str:
    return "" if self._captions is None else self._captions[self._check_index(index)]

  def _all_labels(self) -> Sequence[int]:
    return [-1] * len(self) if self._labels is None else self._labels


def render_shapes_source(num: int, image_size: int = 64, seed: int = 0, split: str = "train") -> ArraySource:
  """`num` shapes scenes rendered in memory (no tfds), identical to that split of a built dataset with `seed`."""
  images, captions, labels = [], [], []
  for i in range(num):
    im, cap, attrs = _shapes.render_scene(_shapes.scene_rng(seed, split, i), image_size)
    images.append(im)
    captions.append(cap)
    labels.append(_shapes.CLASSES.index(attrs["label"]))
  return ArraySource(np.stack(images), labels, _shapes.CLASSES, captions, name=f"shapes(in-memory, {num})")


class FolderSource(ImageSource):
  """Every image file under a folder, recursively; the first-level subfolders are the classes.

  Files whose extension is not an image extension are ignored. Image files that cannot be opened are skipped,
  logged (logger 'spae.data') and counted in `num_skipped` / `skipped`: at scan time for `check='header'`
  (reads each file's header) or 'full' (decodes every file), and later by the batch iterator when a file fails
  to decode. Images directly in the root folder are unlabelled (label -1) when class subfolders exist.

  Raises SpaeInputError if the folder does not exist or holds no readable image.
  """

  def __init__(self, root: str | os.PathLike, check: CheckMode = "header"):
    self.root = Path(root)
    self.name = f"folder {str(self.root)!r}"
    if check not in ("none", "header", "full"):
      raise SpaeInputError(f"check must be 'none', 'header' or 'full', got {check!r}.")
    if not self.root.is_dir():
      raise SpaeInputError(f"image folder {str(self.root)!r} does not exist or is not a directory.")
    self.skipped: list[tuple[str, str]] = []  # (path, reason) of every file skipped so far
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(self.root, followlinks=True):
      real = os.path.realpath(dirpath)
      ancestors = Path(dirpath).relative_to(self.root).parents
      if any(os.path.realpath(self.root / a) == real for a in ancestors):  # a symlink loop: don't descend
        dirnames[:] = []
        continue
      dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # sorted walk = stable indices
      files += [Path(dirpath, f) for f in sorted(filenames)
                if not f.startswith(".") and Path(f).suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
      raise SpaeInputError(f"image folder {str(self.root)!r} contains no image files (looked recursively for "
                           f"{', '.join(sorted(IMAGE_EXTENSIONS))}).")
    if check != "none":
      files = [f for f in files if self._readable(f, full=check == "full")]
    if not files:
      raise SpaeInputError(f"image folder {str(self.root)!r} has no readable image: all {len(self.skipped)} "
                           f"image files failed to open (first: {self.skipped[0][0]}: {self.skipped[0][1]}).")
    if self.skipped:
      log.warning("%s: skipped %d unreadable image file(s) of %d.", self.name, len(self.skipped),
                  len(files) + len(self.skipped))
    self.files = files
    rel_top = [f.relative_to(self.root).parts for f in files]
    self._classes = sorted({p[0] for p in rel_top if len(p) > 1})
    index = {c: k for k, c in enumerate(self._classes)}
    self._file_labels = np.asarray([index[p[0]] if len(p) > 1 else -1 for p in rel_top], np.int64)
    self._bad: set[int] = set()
    self._lock = threading.Lock()  # the batch iterator may load from several threads

  @property
  def num_skipped(self) -> int:
    """How many image files were skipped as unreadable so far (scan + failed loads)."""
    return len(self.skipped)

  def _readable(self, path: Path, full: bool) -> bool:
    from PIL import Image

    try:
      if full:
        decode_image(path, str(path))
      else:
        with Image.open(path) as im:
          im.size  # the header parses
      return True
    except (UnreadableImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
      self._skip(path, f"{type(e).__name__}: {e}")
      return False

  def _skip(self, path: Path, reason: str) -> None:
    self.skipped.append((str(path), reason))
    log.warning("skipping unreadable image %s (%s)", path, reason)

  def __len__(self) -> int:
    return len(self.files)

  def load(self, index: int) -> np.ndarray:
    index = self._check_index(index)
    path = self.files[index]
    try:
      return decode_image(path, str(path))
    except UnreadableImageError as e:
      with self._lock:
        if index not in self._bad:  # count each bad file once, however often it is asked for
          self._bad.add(index)
          self._skip(path, str(e.__cause__ or e))
      raise

  @property
  def classes(self) -> list[str]:
    return list(self._classes)

  def _all_labels(self) -> Sequence[int]:
    return self._file_labels

  def images_of(self, class_name: str) -> list[int]:
    return [i for i in super().images_of(class_name) if i not in self._bad]


class ClassSubset(ImageSource):
  """The images of some classes of another source, relabelled 0..len(classes)-1 in the given order."""

  def __init__(self, base: ImageSource, classes: Sequence[str]):
    classes = list(classes)
    if not classes:
      raise SpaeInputError("a class subset needs at least one class name.")
    missing = [c for c in classes if c not in base.classes]
    if missing:
      raise SpaeInputError(f"{base.name} has no class(es) {missing[:10]}; it has {base.classes[:20]}.")
    self.base = base
    self.name = f"{base.name} [{len(classes)} classes]"
    self._classes = classes
    base_labels = base.labels()
    remap = np.full(len(base.classes), -1, np.int64)
    remap[[base.classes.index(c) for c in classes]] = np.arange(len(classes))
    keep = (base_labels >= 0) & (remap[np.maximum(base_labels, 0)] >= 0)
    self.indices = np.flatnonzero(keep)  # int64 [M]: base index of each subset image
    if self.indices.size == 0:
      raise SpaeInputError(f"{base.name} has no images of classes {classes[:10]}.")
    self._labels_cache = remap[base_labels[self.indices]]

  def __len__(self) -> int:
    return int(self.indices.size)

  def load(self, index: int) -> np.ndarray:
    return self.base.load(int(self.indices[self._check_index(index)]))

  def example(self, index: int) -> tuple[np.ndarray, int, str]:
    image, _, caption = self.base.example(int(self.indices[self._check_index(index)]))
    return image, int(self._labels_cache[index]), caption

  @property
  def classes(self) -> list[str]:
    return list(self._classes)

  @property
  def has_captions(self) -> bool:
    return self.base.has_captions

  def caption(self, index: int) -> str:
    return self.base.caption(int(self.indices[self._check_index(index)]))

  @property
  def num_skipped(self) -> int:
    return getattr(self.base, "num_skipped", 0)
