"""tfds datasets as image sources: `TfdsSource` reads a prepared split through `tfds.data_source` (array_record, no
TensorFlow), and `shapes_source` opens (building it first if asked) the synthetic `shapes` dataset."""

from __future__ import annotations

import logging
import os
from typing import Any, Sequence

import numpy as np

from spae._io import SpaeInputError
from spae.data import _shapes_tfds
from spae.data._preprocess import decode_image, to_rgb
from spae.data._sources import ImageSource

log = logging.getLogger("spae.data")


def _registered_builder(name: str, data_dir: str | os.PathLike | None) -> Any:
  """tfds.builder(name, data_dir), with nothing left in the temporary folder: for a dataset not prepared under
  data_dir, tfds looks its info up in its GCS bucket through a mkdtemp folder it never removes (offline it finds
  nothing), so the lookup runs with a private temporary folder that is removed afterwards. tempfile.tempdir is
  process-wide: another thread making a temporary file during this call would make it there too."""
  import tempfile

  import tensorflow_datasets as tfds

  with tempfile.TemporaryDirectory() as scratch:
    previous, tempfile.tempdir = tempfile.tempdir, scratch
    try:
      return tfds.builder(name, data_dir=None if data_dir is None else os.fspath(data_dir))
    finally:
      tempfile.tempdir = previous


class TfdsSource(ImageSource):
  """A split of a prepared tfds dataset, read through `tfds.data_source` (array_record; no TensorFlow).

  The image feature is decoded with Pillow (so 16-bit / grayscale / RGBA become RGB uint8). A ClassLabel feature
  `label_key` gives `classes`; a Text feature `caption_key` gives captions. Either may be missing.

  Args:
    name: tfds name, optionally with config / version ('imagenet2012', 'shapes/64px_...'); or None with
      `builder_dir`.
    split: tfds split string, slicing allowed ('train', 'validation[:10%]').
    data_dir: where the dataset was prepared (default: tfds' default, ~/tensorflow_datasets).
    builder_dir: read a prepared dataset directory directly (…/name/config/version), no registered builder needed.
  """

  def __init__(self, name: str | None, split: str = "train", data_dir: str | os.PathLike | None = None,
               image_key: str = "image", label_key: str = "label", caption_key: str = "caption",
               builder_dir: str | os.PathLike | None = None):
    import tensorflow_datasets as tfds

    where = f"tfds {name or builder_dir}:{split}" + (f"@{data_dir}" if data_dir else "")
    self.name = where
    try:
      if builder_dir is not None:
        builder = tfds.builder_from_directory(os.fspath(builder_dir))
      else:
        builder = _registered_builder(name, data_dir)
      features = builder.info.features
      if image_key not in features:
        raise SpaeInputError(f"{where}: no image feature {image_key!r}; features are {sorted(features.keys())}.")
      if split.split("[")[0] not in builder.info.splits:
        raise SpaeInputError(f"{where}: no split {split!r}; splits are {sorted(builder.info.splits.keys())}.")
      # Skip tfds' own image decoding: Pillow via decode_image handles every mode the same way as folders.
      self._ds = builder.as_data_source(split=split, decoders={image_key: tfds.decode.SkipDecoding()})
    except SpaeInputError:
      raise
    except Exception as e:  # tfds raises many types (DatasetNotFoundError, AssertionError, FileNotFoundError...)
      raise SpaeInputError(
          f"cannot open {where}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. The dataset must "
          "already be prepared in array_record format under data_dir (tfds build --file_format=array_record).") from e
    self._image_key = image_key
    label = features[label_key] if label_key in features else None
    self._label_key = label_key if isinstance(label, tfds.features.ClassLabel) else None
    self._classes = list(label.names) if self._label_key else []
    self._caption_key = caption_key if caption_key in features else None
    if len(self._ds) == 0:
      raise SpaeInputError(f"{where} is empty.")

  def __len__(self) -> int:
    return len(self._ds)

  def record(self, index: int) -> dict[str, Any]:
    """The raw tfds record (image still encoded)."""
    return self._ds[self._check_index(index)]

  def load(self, index: int) -> np.ndarray:
    return self._image(self.record(index), index)

  def example(self, index: int) -> tuple[np.ndarray, int, str]:
    # One record read, and no full label scan (which `label()` would trigger on a big dataset).
    rec = self.record(index)
    label = int(rec[self._label_key]) if self._label_key else -1
    return self._image(rec, index), label, self._caption(rec)

  def _image(self, rec: dict[str, Any], index: int) -> np.ndarray:
    data = rec[self._image_key]
    if isinstance(data, np.ndarray) and data.dtype != object:  # an Image feature that was not encoded
      return to_rgb(data)
    return decode_image(bytes(data), f"{self.name} record {index}")

  def _caption(self, rec: dict[str, Any]) -> str:
    if self._caption_key is None:
      return ""
    c = rec[self._caption_key]
    return c.decode("utf-8") if isinstance(c, bytes) else str(c)

  @property
  def classes(self) -> list[str]:
    return list(self._classes)

  @property
  def has_captions(self) -> bool:
    return self._caption_key is not None

  def caption(self, index: int) -> str:
    return self._caption(self.record(index)) if self._caption_key else ""

  def _all_labels(self) -> Sequence[int]:
    if self._label_key is None:
      return [-1] * len(self)
    # Batched reads when the data source supports them (one array_record call per chunk).
    out: list[int] = []
    get = getattr(self._ds, "__getitems__", None)
    for start in range(0, len(self), 1024):
      idx = list(range(start, min(start + 1024, len(self))))
      recs = get(idx) if get is not None else [self._ds[i] for i in idx]
      out += [int(r[self._label_key]) for r in recs]
    return out


def shapes_source(data_dir: str | os.PathLike, split: str = "train", build: bool = True,
                  spec: _shapes_tfds.ShapesSpec | None = None) -> TfdsSource:
  """A split of the `shapes` dataset under `data_dir`.

  With `spec`, that configuration (built first if missing and `build`). Without, the one already built there (the
  default config if several are), or else the default config (64 px, 10k/1k/1k; ~40 s to build) is built.
  """
  built = _shapes_tfds.built_shapes(data_dir)
  if spec is not None:
    path = _shapes_tfds.shapes_dir(data_dir, spec)
  elif built:
    path = _shapes_tfds.shapes_dir(data_dir)
    if path not in built:
      if len(built) > 1:
        raise SpaeInputError(
            f"several shapes datasets under {str(data_dir)!r} ({[p.parent.name for p in built]}) and none is the "
            "default; choose one with make_source(..., shapes_spec=spae.data.ShapesSpec(...)).")
      path = built[0]
  else:
    path = _shapes_tfds.shapes_dir(data_dir)
  if path not in built:
    if not build:
      raise SpaeInputError(f"no shapes dataset {path.parent.name!r} under {str(data_dir)!r}; build it with "
                           "spae.data.build_shapes(data_dir, ...).")
    log.info("building the shapes dataset %s under %s", path.parent.name, data_dir)
    s = spec or _shapes_tfds.DEFAULT_SPEC
    _shapes_tfds.build_shapes(data_dir, s.image_size, s.num_train, s.num_validation, s.num_test, s.seed, s.max_objects)
  src = TfdsSource(None, split, builder_dir=path)
  src.name = f"shapes:{split}@{data_dir}"
  return src
