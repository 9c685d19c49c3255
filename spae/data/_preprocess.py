"""Decoding any image to RGB uint8, and crop / resize / flip preprocessing to float32 [0, 1]."""

from __future__ import annotations

import dataclasses
import io
import os
from typing import Any, Literal

import numpy as np

from spae._io import SpaeInputError

CropMode = Literal["center", "random", "none"]


class UnreadableImageError(SpaeInputError):
  """An image file or record could not be decoded (corrupt, truncated, or not an image)."""


def decode_image(data: bytes | str | os.PathLike, what: str = "image") -> np.ndarray:
  """Decodes encoded bytes or an image file to uint8 RGB [H, W, 3] (see `to_rgb`).

  Raises UnreadableImageError (a SpaeInputError) naming `what` if Pillow cannot decode it.
  """
  from PIL import Image, ImageOps

  try:
    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else os.fspath(data)
    with Image.open(src) as im:
      im.load()  # decode now, inside the try, so truncated files fail here and not later
      # Camera JPEGs store their rotation in EXIF; apply it so images are upright.
      return to_rgb(ImageOps.exif_transpose(im))
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    # PIL raises UnidentifiedImageError (an OSError) for non-images and OSError/SyntaxError for corrupt ones.
    raise UnreadableImageError(f"cannot decode {what}: {type(e).__name__}: {e}") from e


def to_rgb(im: Any) -> np.ndarray:
  """A PIL image or numpy array in any common mode -> uint8 RGB [H, W, 3].

  Grayscale and palette images are expanded, RGBA / LA / transparent palettes are composited on white, and
  16-bit (or 32-bit int / float) images are scaled to 8 bits by their full range rather than clipped.
  """
  from PIL import Image

  if isinstance(im, np.ndarray):
    return _array_to_rgb(im)
  if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
    a = np.asarray(im).astype(np.float64)
    # 'I;16*' is 16-bit by definition; 16-bit PNGs can also arrive as 'I' (32-bit), whose values stay < 65536.
    top = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
    return _gray(np.rint(np.clip(a, 0, top) * (255.0 / top)).astype(np.uint8))
  if im.mode == "F":
    a = np.asarray(im, np.float64)
    scale = 255.0 if a.max(initial=0) <= 1.0 else 1.0
    return _gray(np.rint(np.clip(a * scale, 0, 255)).astype(np.uint8))
  if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (im.mode == "P" and "transparency" in im.info):
    rgba = im.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), np.uint8)
  if im.mode != "RGB":
    im = im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX
  return np.asarray(im, np.uint8)


def _gray(g: np.ndarray) -> np.ndarray:
  return np.repeat(g[..., None], 3, axis=-1)


def _array_to_rgb(a: np.ndarray) -> np.ndarray:
  if a.ndim == 3 and a.shape[-1] == 1:
    a = a[..., 0]
  if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
    raise SpaeInputError(f"an image array must be [H, W], [H, W, 1], [H, W, 3] or [H, W, 4]; got {a.shape}.")
  if a.dtype == np.uint16:
    a = np.rint(a.astype(np.float64) * (255.0 / 65535.0)).astype(np.uint8)
  elif a.dtype != np.uint8:
    raise SpaeInputError(f"image arrays must be uint8 or uint16, got {a.dtype}; convert floats with "
                         "np.uint8(np.clip(x, 0, 1) * 255) first.")
  if a.ndim == 2:
    return _gray(a)
  if a.shape[-1] == 4:
    alpha = a[..., 3:].astype(np.float32) / 255.0
    rgb = a[..., :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)
    return np.rint(rgb).astype(np.uint8)
  return np.ascontiguousarray(a)


@dataclasses.dataclass(frozen=True)
class Preprocess:
  """How an image becomes a model input.

  Attributes:
    image_size: output side S; outputs are float32 [S, S, 3] in [0, 1].
    crop: 'center' = the largest centred square; 'random' = a random square covering `min_crop`..1 of the short
      side at a random position; 'none' = the whole image, squashed to a square.
    min_crop: smallest random-crop side as a fraction of the short side (crop='random' only).
    flip: flip horizontally with probability 1/2.
  """

  image_size: int = 64
  crop: CropMode = "center"
  min_crop: float = 0.8
  flip: bool = False

  def __post_init__(self):
    if self.image_size < 1:
      raise SpaeInputError(f"image_size must be positive, got {self.image_size}.")
    if self.crop not in ("center", "random", "none"):
      raise SpaeInputError(f"crop must be 'center', 'random' or 'none', got {self.crop!r}.")
    if not 0.0 < self.min_crop <= 1.0:
      raise SpaeInputError(f"min_crop must be in (0, 1], got {self.min_crop}.")

  @property
  def is_random(self) -> bool:
    return self.flip or self.crop == "random"


def preprocess(image: np.ndarray, config: Preprocess,
               rng: np.random.Generator | None = None) -> np.ndarray:
  """uint8 RGB [H, W, 3] -> float32 [S, S, 3] in [0, 1] (crop, then antialiased bicubic resize, then flip).

  `rng` drives the random crop and flip and is required when `config.is_random`.
  """
  from PIL import Image

  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise SpaeInputError(f"preprocess expects uint8 RGB [H, W, 3], got {image.dtype} {image.shape}; "
                         "decode with spae.data.decode_image / to_rgb first.")
  if config.is_random and rng is None:
    raise SpaeInputError("random crop / flip needs a numpy Generator: pass rng=np.random.default_rng(seed).")
  h, w = image.shape[:2]
  if config.crop != "none":
    side = min(h, w)
    if config.crop == "random":
      side = max(1, int(round(side * rng.uniform(config.min_crop, 1.0))))
      top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    else:
      top, left = (h - side) // 2, (w - side) // 2
    # Crop first: resize(box=...) would let the bicubic kernel read pixels outside the crop.
    image = image[top:top + side, left:left + side]
  s = config.image_size
  if image.shape[:2] == (s, s):
    out = image
  else:
    out = np.asarray(Image.fromarray(image).resize((s, s), Image.Resampling.BICUBIC), np.uint8)
  if config.flip and rng.random() < 0.5:
    out = out[:, ::-1]
  return out.astype(np.float32) / np.float32(255.0)
