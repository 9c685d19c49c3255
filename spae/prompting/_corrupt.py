"""Image corruptions for in-context generation tasks: the condition the LLM is asked to restore."""

from __future__ import annotations

import numpy as np

from spae._io import SpaeInputError

IMAGE_TASKS = ("denoise", "inpaint", "outpaint", "deblur", "shift")
# Default corruption strengths (fractions of the image side, or a noise sigma for 'denoise').
DEFAULT_STRENGTH = {"denoise": 0.25, "inpaint": 0.5, "outpaint": 0.5, "deblur": 1 / 16, "shift": 0.25}


def corrupt(image: np.ndarray, task: str, strength: float | None = None, seed: int = 0) -> np.ndarray:
  """float [S, S, 3] in [0, 1] -> the corrupted condition image for an image-to-image task.

  denoise: Gaussian pixel noise, sigma = strength (0.25). inpaint: a centred gray square of side strength*S
  (0.5). outpaint: everything outside a centred square of side (1-strength)*S is gray (0.5). deblur: Gaussian
  blur, sigma = strength*S pixels (S/16). shift: content moved right and down by strength*S pixels (0.25),
  the uncovered border replicating the edge.
  """
  if task not in IMAGE_TASKS:
    raise SpaeInputError(f"unknown image task {task!r}; use one of {', '.join(IMAGE_TASKS)}.")
  x = np.asarray(image, np.float32)
  s = DEFAULT_STRENGTH[task] if strength is None else float(strength)
  if s < 0:
    raise SpaeInputError(f"strength must be >= 0, got {s}.")
  h, w = x.shape[:2]
  if task == "denoise":
    return np.clip(x + np.random.default_rng(seed).normal(0, s, x.shape), 0, 1).astype(np.float32)
  if task in ("inpaint", "outpaint"):
    side = s if task == "inpaint" else 1.0 - s
    if not 0.0 <= side <= 1.0:
      raise SpaeInputError(f"{task} strength must be in [0, 1], got {s}.")
    bh, bw = int(round(side * h)), int(round(side * w))
    t, l = (h - bh) // 2, (w - bw) // 2
    inside = np.zeros((h, w), bool)
    inside[t:t + bh, l:l + bw] = True
    out = x.copy()
    out[inside if task == "inpaint" else ~inside] = 0.5
    return out
  if task == "deblur":
    return _gaussian_blur(x, s * w)
  dy, dx = int(round(s * h)), int(round(s * w))
  rows = np.clip(np.arange(h) - dy, 0, h - 1)
  cols = np.clip(np.arange(w) - dx, 0, w - 1)
  return x[rows][:, cols].copy()


def _gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
  """Separable Gaussian blur of [H, W, C] with edge reflection (sigma in pixels)."""
  if sigma <= 0:
    return x.copy()
  r = max(1, int(np.ceil(3 * sigma)))
  k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
  k /= k.sum()
  for axis in (0, 1):
    pad = [(0, 0)] * x.ndim
    pad[axis] = (r, r)
    xp = np.pad(x, pad, mode="reflect" if x.shape[axis] > r else "edge")
    x = sum(k[j] * np.take(xp, np.arange(j, j + x.shape[axis]), axis=axis) for j in range(2 * r + 1))
  return np.clip(x, 0, 1).astype(np.float32)
