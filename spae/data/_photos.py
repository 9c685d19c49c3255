"""Crops of the real photographs shipped inside scikit-image's wheel (`skimage.data`, no download).

`PHOTOS` are the 19 real photographs of scikit-image 0.26 that load offline (synthetic images such as
`colorwheel`, `logo` or `checkerboard` are left out, and so is `cat`, the same photo as `chelsea`). Grayscale
photos become gray RGB.

Held out for evaluation, never cropped by the training source (`HELDOUT_PHOTOS`, chosen for diverse content):
`coffee` (a colour still life), `stereo_motorcycle` (left view; a colourful man-made object), `camera` (a
grayscale portrait outdoors), `coins` (small grayscale objects) and `gravel` (a texture). The other 14 are
`TRAIN_PHOTOS`.

- `spae.data.PhotoCropSource(num)`: `num` random square crops of the training photos, each a pure function of (seed,
  index): a photo drawn uniformly, a side log-uniform between the output size and the photo's short side, a
  uniform position, then resized with the one resize of spae (`spae._images.resize`).
- `spae.data.heldout_photo_crops()`: the fixed evaluation set, `per_photo` crops of each held-out photo at sides spread
  evenly (in log scale) over the same range, at deterministic positions.
"""

from __future__ import annotations

import functools
from typing import Sequence

import numpy as np

from spae._images import resize, to_rgb, to_uint8
from spae._io import SpaeInputError

PHOTOS: dict[str, str] = {  # name -> caption
    "astronaut": "a photo of an astronaut in a spacesuit in front of a flag",
    "brick": "a photo of a brick wall",
    "camera": "a photo of a man with a camera on a tripod",
    "cell": "a microscope photo of a cell",
    "chelsea": "a photo of a ginger cat",
    "clock": "a photo of a wall clock",
    "coffee": "a photo of a cup of coffee on a saucer",
    "coins": "a photo of old coins",
    "grass": "a photo of grass",
    "gravel": "a photo of gravel",
    "hubble_deep_field": "a telescope photo of galaxies in deep space",
    "immunohistochemistry": "a microscope photo of stained tissue",
    "microaneurysms": "a photo of the retina with microaneurysms",
    "moon": "a photo of the surface of the moon",
    "page": "a photo of a printed page of text",
    "retina": "a photo of the retina of an eye",
    "rocket": "a photo of a rocket on a launch pad",
    "stereo_motorcycle": "a photo of a motorcycle",
    "text": "a photo of handwritten and printed text",
}
HELDOUT_PHOTOS: tuple[str, ...] = ("coffee", "stereo_motorcycle", "camera", "coins", "gravel")
TRAIN_PHOTOS: tuple[str, ...] = tuple(p for p in PHOTOS if p not in HELDOUT_PHOTOS)
_STREAM = 0x9407A5  # keeps these random streams apart from the scene renderers'


@functools.lru_cache(maxsize=None)
def load_photo(name: str) -> np.ndarray:
  """uint8 RGB [H, W, 3]: the scikit-image photograph `name` (read once per process)."""
  if name not in PHOTOS:
    raise SpaeInputError(f"unknown photo {name!r}; the photos are {sorted(PHOTOS)}.")
  try:
    from skimage import data as skdata
  except ImportError:
    raise SpaeInputError("photo crops need scikit-image (pip install scikit-image): its wheel ships the "
                         "photographs.") from None
  image = getattr(skdata, name)()
  if isinstance(image, tuple):  # stereo_motorcycle -> (left, right, disparity)
    image = image[0]
  out = to_rgb(np.asarray(image))
  out.flags.writeable = False  # shared by every caller
  return out


def crop_side_range(photo: np.ndarray, image_size: int) -> tuple[int, int]:
  """The smallest and largest crop side: never enlarged beyond 1:1 (unless the photo is too small), up to all."""
  short = min(photo.shape[:2])
  return min(short, image_size), short


def crop_photo(photo: np.ndarray, side: int, top: int, left: int, image_size: int) -> np.ndarray:
  """uint8 [S, S, 3]: the side×side square at (top, left), resized to S with `spae._images.resize`."""
  return to_uint8(resize(photo[top:top + side, left:left + side], image_size))


def _crop_rng(seed: int, index: int) -> np.random.Generator:
  return np.random.default_rng([_STREAM, int(seed), 0, int(index)])


def crop_photo_name(seed: int, index: int, photos: Sequence[str]) -> str:
  """The photo that training crop `index` for `seed` comes from (its first random draw), without cropping."""
  return photos[int(_crop_rng(seed, index).integers(len(photos)))]


def random_crop(seed: int, index: int, photos: Sequence[str], image_size: int) -> tuple[np.ndarray, str]:
  """(uint8 [S, S, 3], photo name): training crop `index` for `seed`, a pure function of its arguments."""
  rng = _crop_rng(seed, index)
  name = photos[int(rng.integers(len(photos)))]
  photo = load_photo(name)
  lo, hi = crop_side_range(photo, image_size)
  side = int(round(np.exp(rng.uniform(np.log(lo), np.log(hi)))))
  h, w = photo.shape[:2]
  top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
  return crop_photo(photo, side, top, left, image_size), name


def heldout_crops(image_size: int = 64, per_photo: int = 8,
                  photos: Sequence[str] = HELDOUT_PHOTOS) -> tuple[np.ndarray, list[str]]:
  """(uint8 [len(photos) * per_photo, S, S, 3], photo name of each): the fixed evaluation crops."""
  images, names = [], []
  for name in photos:
    photo = load_photo(name)
    lo, hi = crop_side_range(photo, image_size)
    sides = np.rint(np.geomspace(lo, hi, per_photo)).astype(int)
    rng = np.random.default_rng([_STREAM, PHOTOS_INDEX[name], 1])
    h, w = photo.shape[:2]
    for side in sides:
      top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
      images.append(crop_photo(photo, int(side), top, left, image_size))
      names.append(name)
  return np.stack(images), names


PHOTOS_INDEX = {name: i for i, name in enumerate(PHOTOS)}
