"""`make_source(spec)`: an image source from a short string (the 'data' kind of `spae._specs`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

from spae import _specs
from spae._io import SpaeInputError
from spae.data import _shapes_tfds
from spae.data._generated import DEFAULT_MIX_SIZE, PhotoCropSource, SceneSource, heldout_photo_crops, mixed_source
from spae.data._sources import CheckMode, FolderSource, ImageSource, render_shapes_source
from spae.data._tfds import TfdsSource, shapes_source

__all__ = ["make_source"]


def make_source(spec: str | os.PathLike | ImageSource, *, classes: Sequence[str] | None = None,
                require_labels: bool = False, check: CheckMode = "header",
                shapes_spec: _shapes_tfds.ShapesSpec | None = None) -> ImageSource:
  """Opens an image source from a spec string.

  Specs (a leading `~` in a path is the home folder):
    'shapes:DATA_DIR'           the train split of the synthetic `shapes` dataset under DATA_DIR: the one built
                                there, else `shapes_spec` (default: 64 px, 10k/1k/1k examples), built now.
    'shapes:SPLIT@DATA_DIR'     another split: train / validation / test (tfds slicing allowed).
    'shapes-memory:N[@SIZE]'    N shapes scenes of the train split rendered in memory (no tfds build; SIZE 64).
    'tfds:NAME[:SPLIT][@DATA_DIR]'  a prepared array_record tfds dataset, e.g. 'tfds:imagenet2012:validation@/data'
                                (SPLIT defaults to 'train'; DATA_DIR to tfds' default).
    'folder:PATH' or 'PATH'     a folder of images, searched recursively; first-level subfolders are the classes.
    'scenes:[SPLIT:]N[@SIZE]'   N generated scenes over the whole colour range (train split unless SPLIT is
                                validation / test), rendered on demand (spae.data._scenes).
    'photos:N[@SIZE]'           N random crops of scikit-image's training photographs; 'photos:test[@SIZE]' is the
                                fixed evaluation set of crops of the held-out photographs (spae.data._photos).
    'mix:[N:]scenes=W,photos=W[@SIZE]'  N training images (default 100000), a share W of each.
    An ImageSource is returned as is (after `classes` / `require_labels`).

  Args:
    classes: keep only these classes (relabelled in this order), e.g. spae.data.SHAPES_TRAIN_CLASSES.
    require_labels: raise SpaeInputError unless the source has class labels (few-shot episodes need them).
    check: how folders are checked for unreadable files at open time (see FolderSource).
    shapes_spec: which shapes configuration 'shapes:' specs open (and build if missing).
  """
  if isinstance(spec, ImageSource):
    src = spec
  else:
    src = _specs.resolve("data", os.fspath(spec), check=check, shapes_spec=shapes_spec)
  if classes is not None:
    src = src.subset(classes)
  if require_labels and not src.classes:
    raise SpaeInputError(f"{src.name} has no class labels; a labelled source is needed here (use a folder with one "
                         "subfolder per class, a tfds dataset with a 'label' ClassLabel feature, or shapes).")
  return src


# Each resolver takes make_source's `check` and `shapes_spec`; most need neither.
@_specs.register_scheme("data", "shapes", "shapes:[SPLIT@]DATA_DIR", takes="@")
def _shapes_dataset(spec: _specs.Spec, shapes_spec: _shapes_tfds.ShapesSpec | None = None, **_: Any) -> ImageSource:
  data_dir = spec.body if spec.location is None else spec.location
  if not data_dir:
    raise spec.error("names no DATA_DIR")
  return shapes_source(data_dir, "train" if spec.location is None else spec.body, spec=shapes_spec)


@_specs.register_scheme("data", "shapes-memory", "shapes-memory:N[@SIZE]", takes="@")
def _shapes_memory(spec: _specs.Spec, **_: Any) -> ImageSource:
  try:
    num, size = int(spec.body), int(spec.location or 64)
  except ValueError:
    raise spec.error("is malformed") from None
  return render_shapes_source(num, size)


@_specs.register_scheme("data", "tfds", "tfds:NAME[:SPLIT][@DATA_DIR]", takes="@")
def _tfds(spec: _specs.Spec, **_: Any) -> ImageSource:
  name, _, split = spec.body.partition(":")
  if not name:
    raise spec.error("names no dataset")
  return TfdsSource(name, split or "train", spec.location or None)


@_specs.register_scheme("data", "folder", "folder:PATH")
def _folder(spec: _specs.Spec, check: CheckMode = "header", **_: Any) -> ImageSource:
  return FolderSource(spec.body, check=check)


@_specs.register_scheme("data", "scenes", "scenes:[SPLIT:]N[@SIZE]", takes="@")
def _scenes(spec: _specs.Spec, **_: Any) -> ImageSource:
  split, _, num = spec.body.rpartition(":")
  return _generated(spec, lambda size: SceneSource(int(num), size, split=split or "train"))


@_specs.register_scheme("data", "photos", "photos:N|test[@SIZE]", takes="@")
def _photos(spec: _specs.Spec, **_: Any) -> ImageSource:
  return _generated(spec, lambda size: heldout_photo_crops(size) if spec.body == "test"
                    else PhotoCropSource(int(spec.body), size))


@_specs.register_scheme("data", "mix", "mix:[N:]scenes=W,photos=W[@SIZE]", takes="@")
def _mix(spec: _specs.Spec, **_: Any) -> ImageSource:
  def make(size: int) -> ImageSource:
    num, _, parts = spec.body.rpartition(":")
    weights: dict[str, float] = {}
    for item in parts.split(","):
      name, eq, value = item.partition("=")
      if not eq or name in weights:
        raise ValueError(item)
      weights[name.strip()] = float(value)
    return mixed_source(int(num) if num else DEFAULT_MIX_SIZE, weights, size)
  return _generated(spec, make)


def _generated(spec: _specs.Spec, make: Callable[[int], ImageSource]) -> ImageSource:
  """make(SIZE, default 64) for a generated source; a malformed number in the spec is a one-line error."""
  try:
    return make(int(spec.location) if spec.location is not None else 64)
  except SpaeInputError:
    raise
  except ValueError:  # int() / float() of a malformed part
    raise spec.error("is malformed") from None


@_specs.register_path("data", "an image folder's PATH")
def _path(spec: _specs.Spec, check: CheckMode = "header", **_: Any) -> ImageSource:
  if not Path(spec.body).is_dir():
    raise spec.error("is not an existing folder")
  return FolderSource(spec.body, check=check)
