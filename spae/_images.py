"""Image I/O and normalisation: every path into spae goes through here."""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from spae._io import SpaeInputError, atomic_path, check_regular_file

FitMode = Literal["center_crop", "resize", "reject"]
log = logging.getLogger(__name__)


class UnreadableImageError(SpaeInputError):
  """An image file or record could not be decoded (corrupt, truncated, or not an image)."""


# Decoded pixels allowed per image unless the caller says otherwise (an 8000x8000 image). Pillow itself refuses
# images over 2 * Image.MAX_IMAGE_PIXELS (~179 Mpx) before anything is decoded.
DEFAULT_MAX_PIXELS = 64_000_000
# Images are decoded reduced (JPEG DCT scaling, then integer box reduction) while their shorter side stays at
# least this many times the size the caller needs; Pillow's resize uses the same gap (3 is "indistinguishable").
_REDUCING_GAP = 3
# Pillow raises many exception types for corrupt data (struct.error and EOFError from headers, ...).
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, KeyError, TypeError,
                  ZeroDivisionError, OverflowError)
# Modes Image.reduce handles without alpha (premultiplying) or bit-depth subtleties; others go through to_rgb first.
_REDUCE_MODES = ("L", "RGB", "I", "F", "CMYK", "YCbCr", "LAB", "HSV")


def decode_image(data: bytes | str | os.PathLike, what: str = "image", *, max_pixels: int = DEFAULT_MAX_PIXELS,
                 min_size: int | None = None) -> np.ndarray:
  """Decodes encoded bytes or an image file to uint8 RGB [H, W, 3] (see `to_rgb`).

  Args:
    data: encoded bytes or a file path.
    what: how errors name the input.
    max_pixels: refuse (SpaeInputError) images with more decoded pixels; checked on the header, before decoding.
    min_size: the caller needs only this many pixels on the shorter side: larger images are decoded reduced
      (JPEG draft mode, then an integer box reduction), keeping the shorter side >= 3 * min_size.
  Raises UnreadableImageError (a SpaeInputError) naming `what` if Pillow cannot decode it. An animated image
  (GIF, APNG, multi-page TIFF) gives its first frame, with one warning.
  """
  from PIL import Image

  src = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else os.fspath(data)
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit below says it better
      im = Image.open(src)
    with im:
      _check_pixels(im, what, max_pixels, min_size)
      frames = getattr(im, "n_frames", 1)
      im.load()  # decode now, inside the try, so truncated files fail here and not later
      if frames > 1:
        log.warning("%s has %d frames; using the first.", what, frames)
      # Camera JPEGs store their rotation in EXIF: make images upright, after the reduction (exif_transpose
      # would copy the full-size image even when there is nothing to do).
      orientation = im.getexif().get(_ORIENTATION, 1)
      out = _reduce(im, min_size)
      method = _TRANSPOSE.get(orientation)
      return out if method is None else np.ascontiguousarray(
          np.asarray(Image.fromarray(out).transpose(Image.Transpose[method])))
  except SpaeInputError:
    raise
  except Image.DecompressionBombError as e:
    raise UnreadableImageError(f"{what} is too large to decode safely ({e}); shrink it first.") from None
  except _DECODE_ERRORS as e:
    # PIL raises UnidentifiedImageError (an OSError) for non-images and OSError/SyntaxError for corrupt ones.
    raise UnreadableImageError(f"cannot decode {what}: {type(e).__name__}: {e}") from e


def _check_pixels(im: Any, what: str, max_pixels: int, min_size: int | None) -> None:
  """Applies JPEG draft decoding for `min_size`, then refuses images whose decoded size is over `max_pixels`."""
  if min_size and im.format == "JPEG":
    need = _REDUCING_GAP * min_size
    im.draft(None, (need, need))  # DCT scaling by 1/2, 1/4 or 1/8 while both sides stay >= need
  w, h = im.size
  if w * h > max_pixels:
    raise SpaeInputError(f"{what} is {w}x{h} = {w * h / 1e6:.1f} Mpx, over the limit of {max_pixels / 1e6:g} Mpx; "
                         "shrink it, or raise the limit (max_pixels, --max-pixels) if you have the memory.")


_ORIENTATION = 0x0112  # the EXIF tag; values 2..8 map to these transposes (as in ImageOps.exif_transpose)
_TRANSPOSE = {2: "FLIP_LEFT_RIGHT", 3: "ROTATE_180", 4: "FLIP_TOP_BOTTOM", 5: "TRANSPOSE", 6: "ROTATE_270",
              7: "TRANSVERSE", 8: "ROTATE_90"}


def _reduce(im: Any, min_size: int | None) -> np.ndarray:
  """A decoded PIL image -> uint8 RGB, box-reduced by an integer factor while min side >= gap * min_size."""
  from PIL import Image

  factor = min(im.size) // (_REDUCING_GAP * min_size) if min_size else 1
  if factor < 2:
    return to_rgb(im)
  if im.mode in _REDUCE_MODES:
    return to_rgb(im.reduce(factor))
  return np.asarray(Image.fromarray(to_rgb(im)).reduce(factor), np.uint8)


def check_image_file(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS,
                     min_size: int | None = None) -> None:
  """Cheap check of an image file before any work: it is a regular file, Pillow knows the format, and its
  (draft) size is within `max_pixels`. Reads the header only; `load_image` may still find corrupt pixel data."""
  from PIL import Image

  path = _check_regular(path)
  what = f"image {str(path)!r}"
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", Image.DecompressionBombWarning)
      im = Image.open(path)
    with im:
      _check_pixels(im, what, max_pixels, min_size)
  except SpaeInputError:
    raise
  except Image.DecompressionBombError as e:
    raise UnreadableImageError(f"{what} is too large to decode safely ({e}); shrink it first.") from None
  except _DECODE_ERRORS as e:
    raise UnreadableImageError(f"cannot read {what}: {type(e).__name__}: {e}. Pass a valid PNG/JPEG/... file.") from e


def _check_regular(path: str | os.PathLike) -> Path:
  """Raises SpaeInputError saying what `path` is unless it is a regular file (a FIFO would block reads)."""
  return check_regular_file(path, f"image {str(path)!r}", missing=".",
                            folder=", not an image file; pass the image files in it.",
                            other=", not an image file; save the image to a file first.")


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


def load_image(path: str | os.PathLike, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               min_size: int | None = None) -> np.ndarray:
  """Reads an image file as uint8 RGB [H, W, 3] (conversions as in `to_rgb`; EXIF rotation applied).

  `max_pixels` and `min_size` as in `decode_image`: big images are refused, or decoded reduced when the
  caller needs only `min_size` pixels (a tokenizer needs its `image_size`).
  """
  path = _check_regular(path)
  try:
    return decode_image(path, f"image {str(path)!r}", max_pixels=max_pixels, min_size=min_size)
  except UnreadableImageError as e:
    if e.__cause__ is None:
      raise
    raise UnreadableImageError(f"cannot read image {str(path)!r}: {e.__cause__}. "
                               f"Pass a valid PNG/JPEG/... file.") from e


def as_float_batch(images: Any) -> tuple[np.ndarray, bool]:
  """uint8 [0,255] or float [0,1]; [H,W,3] or [B,H,W,3] -> (float32 [B,H,W,3] in [0,1], was_single)."""
  x = np.asarray(images)
  single = x.ndim == 3
  if single:
    x = x[None]
  if x.ndim != 4:
    raise SpaeInputError(f"images must be [H, W, C] or [B, H, W, C], got shape {x.shape}.")
  if x.shape[-1] == 1:
    x = np.repeat(x, 3, axis=-1)
  elif x.shape[-1] == 4:
    alpha = x[..., 3:].astype(np.float32) / (255.0 if x.dtype == np.uint8 else 1.0)
    white = 255.0 if x.dtype == np.uint8 else 1.0
    x = (x[..., :3] * alpha + white * (1 - alpha)).astype(x.dtype)
  elif x.shape[-1] != 3:
    raise SpaeInputError(f"images must have 1, 3 or 4 channels, got {x.shape[-1]}.")
  if x.dtype == np.uint8:
    return x.astype(np.float32) / 255.0, single
  if x.dtype == np.uint16:
    return x.astype(np.float32) / 65535.0, single
  if np.issubdtype(x.dtype, np.floating):
    x = x.astype(np.float32)
    if not np.all(np.isfinite(x)):
      raise SpaeInputError("images contain NaN or Inf.")
    if x.size and (x.min() < -1e-3 or x.max() > 1.0 + 1e-3):
      raise SpaeInputError(
          f"float images must be in [0, 1], got range [{x.min():.3g}, {x.max():.3g}]; "
          "divide uint8 data by 255 or pass uint8.")
    return np.clip(x, 0.0, 1.0), single
  raise SpaeInputError(f"images must be uint8 or float, got {x.dtype}.")


def fit_to_size(x: np.ndarray, size: int, mode: FitMode = "center_crop") -> np.ndarray:
  """float [B, H, W, 3] -> [B, size, size, 3].

  'center_crop': crop the largest centred square, then `resize` to size×size.
  'resize': `resize` to size×size ignoring the aspect ratio.
  'reject': raise unless the images are already size×size.
  """
  b, h, w, _ = x.shape
  if (h, w) == (size, size):
    return x
  if mode == "reject":
    raise SpaeInputError(f"images are {h}×{w} but this tokenizer expects {size}×{size}; "
                         "resize them or use fit='center_crop'.")
  if mode == "center_crop":
    rows, cols = center_square(h, w)
    x = x[:, rows, cols]
  elif mode != "resize":
    raise SpaeInputError(f"unknown fit mode {mode!r}; use 'center_crop', 'resize' or 'reject'.")
  return resize(x, size)


def center_square(h: int, w: int) -> tuple[slice, slice]:
  """(rows, cols) slices of the largest centred square of an h×w image (shared by tokenizer and data pipeline)."""
  side = min(h, w)
  top, left = (h - side) // 2, (w - side) // 2
  return slice(top, top + side), slice(left, left + side)


def resize(images: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
  """THE resize of spae: tokenizer inputs, training data and thumbnails all go through it.

  Args:
    images: [H, W, C] or [B, H, W, C]; float in [0, 1], or uint8 (divided by 255 first, as `as_float_batch` does).
    size: output side, or (height, width).

  Returns:
    float32 [..., h, w, C] in [0, 1]: Pillow's bicubic (a = -0.5) on float32 channels, so no 8-bit rounding;
    antialiased when shrinking (Pillow widens the kernel by the scale factor); clipped to [0, 1] because bicubic
    overshoots at edges.
  """
  from PIL import Image

  x = np.asarray(images)
  x = x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else x.astype(np.float32, copy=False)
  if x.ndim == 4:
    return np.stack([resize(im, size) for im in x]) if len(x) else x
  if x.ndim != 3:
    raise SpaeInputError(f"resize expects [H, W, C] or [B, H, W, C] images, got shape {x.shape}.")
  oh, ow = (size, size) if isinstance(size, int) else size
  if x.shape[:2] == (oh, ow):
    return x
  chans = [np.asarray(Image.fromarray(np.ascontiguousarray(x[..., c])).resize((ow, oh), Image.Resampling.BICUBIC))
           for c in range(x.shape[-1])]
  return np.clip(np.stack(chans, axis=-1), 0.0, 1.0)


def to_uint8(x: Any) -> np.ndarray:
  return np.clip(np.round(np.asarray(x, np.float32) * 255.0), 0, 255).astype(np.uint8)


def save_image(path: str | os.PathLike, image: Any) -> None:
  """Writes a float [0,1] or uint8 [H, W, 3] image atomically (format from the suffix)."""
  from PIL import Image

  arr = np.asarray(image)
  if arr.dtype != np.uint8:
    arr = to_uint8(arr)
  path = Path(path)
  with atomic_path(path) as tmp:
    Image.fromarray(arr).save(tmp, format=_format_for(path))


def _format_for(path: Path) -> str:
  ext = path.suffix.lower().lstrip(".")
  return {"jpg": "JPEG", "jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "bmp": "BMP"}.get(ext, "PNG")


def image_grid(rows: list[list[np.ndarray]], pad: int = 2) -> np.ndarray:
  """Tiles float/uint8 [H, W, 3] images (all the same size) into one uint8 grid with white padding."""
  cells = [[to_uint8(c) if c.dtype != np.uint8 else c for c in r] for r in rows]
  h, w = cells[0][0].shape[:2]
  ncol = max(len(r) for r in cells)
  out = np.full((len(cells) * (h + pad) + pad, ncol * (w + pad) + pad, 3), 255, np.uint8)
  for i, r in enumerate(cells):
    for j, c in enumerate(r):
      out[pad + i * (h + pad):pad + i * (h + pad) + h, pad + j * (w + pad):pad + j * (w + pad) + w] = c
  return out
