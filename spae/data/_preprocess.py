"""Decoding any image to RGB uint8, and crop / resize / flip preprocessing to float32 [0, 1]."""

from __future__ import annotations

import dataclasses
from typing import Literal

import numpy as np

from spae._images import UnreadableImageError, center_square, decode_image, resize, to_rgb  # noqa: F401
from spae._io import SpaeInputError

CropMode = Literal["center", "random", "none"]


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
  """uint8 RGB [H, W, 3] -> float32 [S, S, 3] in [0, 1] (crop, then `spae._images.resize`, then flip).

  The resize is the tokenizer's own (`Tokenizer.preprocess`), so crop='center' gives the pixels the tokenizer
  sees at inference. `rng` drives the random crop and flip and is required when `config.is_random`.
  """
  if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
    raise SpaeInputError(f"preprocess expects uint8 RGB [H, W, 3], got {image.dtype} {image.shape}; "
                         "decode with spae.data.decode_image / to_rgb first.")
  if config.is_random and rng is None:
    raise SpaeInputError("random crop / flip needs a numpy Generator: pass rng=np.random.default_rng(seed).")
  h, w = image.shape[:2]
  if config.crop == "random":
    side = max(1, int(round(min(h, w) * rng.uniform(config.min_crop, 1.0))))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    image = image[top:top + side, left:left + side]
  elif config.crop == "center":
    image = image[center_square(h, w)]
  # Crop before resizing, so the bicubic kernel never reads pixels outside the crop.
  out = resize(image, config.image_size)
  if config.flip and rng.random() < 0.5:
    out = np.ascontiguousarray(out[:, ::-1])
  return out
