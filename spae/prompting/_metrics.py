"""PSNR / SSIM of one generated image against its target, through `spae.metrics`."""

from __future__ import annotations

import numpy as np


def image_metrics(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
  """{"psnr": dB (inf if equal), "ssim": ...} of two float [H, W, 3] images in [0, 1].

  SSIM uses the standard 11x11 Gaussian window, shrunk to the image side for images under 11 px.
  """
  import jax.numpy as jnp

  from spae import metrics

  x, y = jnp.asarray(np.asarray(a, np.float32)[None]), jnp.asarray(np.asarray(b, np.float32)[None])
  size = min(11, x.shape[1], x.shape[2])
  return {"psnr": float(metrics.psnr(x, y)[0]), "ssim": float(metrics.ssim(x, y, filter_size=size)[0])}
