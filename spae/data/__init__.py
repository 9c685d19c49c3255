"""Datasets for spae: image sources, preprocessing, a resumable batch iterator and generated training data.

  src = spae.data.make_source("mix:scenes=0.7,photos=0.3")  # or "scenes:N", "photos:N", "shapes:~/data",
                                                          # "tfds:imagenet2012@/data", "folder:/imgs", "/imgs"
  it = spae.data.BatchIterator(src, 16, spae.data.Preprocess(64, crop="random", flip=True), seed=0)
  batch = next(it)                                      # {'image': float32 [16, 64, 64, 3] in [0, 1], ...}
  state = it.get_state()                                # JSON-able; it.set_state(state) resumes exactly

No TensorFlow: tfds datasets are read as array_record through `tfds.data_source`; images are decoded with Pillow.
"""

from spae.data._generated import ConcatSource, PhotoCropSource, SceneSource, heldout_photo_crops, mixed_source
from spae.data._iterator import BatchIterator
from spae.data._photos import HELDOUT_PHOTOS, PHOTOS, TRAIN_PHOTOS, load_photo
from spae.data._preprocess import CropMode, Preprocess, UnreadableImageError, decode_image, preprocess, to_rgb
from spae.data._scenes import CLASSES as SCENE_CLASSES, COLOURS as SCENE_COLOURS
from spae.data._scenes import HELDOUT_CLASSES as SCENE_HELDOUT_CLASSES, SHAPES as SCENE_SHAPES
from spae.data._scenes import TRAIN_CLASSES as SCENE_TRAIN_CLASSES, scene_example
from spae.data._shapes import BACKGROUND_NAMES, CLASSES as SHAPES_CLASSES, COLOUR_NAMES, COLOURS
from spae.data._shapes import HELDOUT_CLASSES as SHAPES_HELDOUT_CLASSES, SHAPES, SIZES, TEXTURES
from spae.data._shapes import TRAIN_CLASSES as SHAPES_TRAIN_CLASSES
from spae.data._shapes import caption_for, render_scene, sample_attributes as shapes_attributes, scene_rng
from spae.data._shapes_tfds import ShapesSpec, build_shapes
from spae.data._open import make_source
from spae.data._sources import (ArraySource, ClassSubset, FolderSource, ImageSource, LabelledSource,
                                render_shapes_source)
from spae.data._tfds import TfdsSource, shapes_source

__all__ = [
    "ArraySource", "BACKGROUND_NAMES", "BatchIterator", "COLOURS", "COLOUR_NAMES", "ClassSubset", "ConcatSource",
    "CropMode", "FolderSource", "HELDOUT_PHOTOS", "ImageSource", "LabelledSource", "PHOTOS", "PhotoCropSource",
    "Preprocess", "SCENE_CLASSES", "SCENE_COLOURS", "SCENE_HELDOUT_CLASSES", "SCENE_SHAPES", "SCENE_TRAIN_CLASSES",
    "SHAPES", "SHAPES_CLASSES", "SHAPES_HELDOUT_CLASSES", "SHAPES_TRAIN_CLASSES", "SIZES", "SceneSource",
    "ShapesSpec", "TEXTURES", "TRAIN_PHOTOS", "TfdsSource", "UnreadableImageError", "build_shapes", "caption_for",
    "decode_image", "heldout_photo_crops", "load_photo", "make_source", "mixed_source", "preprocess",
    "render_scene", "render_shapes_source", "scene_example", "scene_rng", "shapes_attributes", "shapes_source",
    "to_rgb",
]
