"""PSNR and SSIM for generated images (numpy; used when `spae.metrics` is not available)."""

from __future__ import annotations

import numpy as np


def psnr(a: np.ndarray, b: np.ndarray, max_val: float = 1.0) -> float:
  """Peak signal-to-noise ratio in dB of two float images in [0, max_val] ([H, W, C]); inf when equal."""
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  mse = float(np.mean((a - b) ** 2))
  return float("inf") if mse == 0 else float(10.0 * np.log10(max_val ** 2 / mse))


def _gaussian_filter(x: np.ndarray, size: int, sigma: float) -> np.ndarray:
  """'valid' separable Gaussian filtering of [H, W, C]."""
  k = np.exp(-0.5 * ((np.arange(size) - (size - 1) / 2) / sigma) ** 2)
  k /= k.sum()
  h = np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 0, x)
  return np.apply_along_axis(lambda r: np.convolve(r, k, mode="valid"), 1, h)


def ssim(a: np.ndarray, b: np.ndarray, max_val: float = 1.0, size: int = 11, sigma: float = 1.5) -> float:
  """Mean structural similarity (Wang et al. 2004: Gaussian 11x11 window, sigma 1.5, K1=0.01, K2=0.03).

  The window shrinks to the image side for images smaller than 11 px.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  size = min(size, a.shape[0], a.shape[1])
  c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
  mu_a, mu_b = _gaussian_filter(a, size, sigma), _gaussian_filter(b, size, sigma)
  saa = _gaussian_filter(a * a, size, sigma) - mu_a ** 2
  sbb = _gaussian_filter(b * b, size, sigma) - mu_b ** 2
  sab = _gaussian_filter(a * b, size, sigma) - mu_a * mu_b
  s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
  return float(s.mean())


def image_metrics(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
  """{"psnr": dB, "ssim": ...} of two float [H, W, 3] images in [0, 1]."""
  return {"psnr": psnr(a, b), "ssim": ssim(a, b)}
