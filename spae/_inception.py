"""pytorch-fid's InceptionV3 (pool3, 2048-d features) for FID, in JAX, with weights from a user file only.

The architecture is the FID InceptionV3 of pytorch-fid (`pt_inception-2015-12-05`): BasicConv2d = conv + BatchNorm
(eps 1e-3, folded into the convolution at load time) + ReLU; max pools; 3×3 average pools that exclude padding;
the final global average pool. Weights are read through `spae._tensors` (npz, safetensors, orbax); nothing is
downloaded. Re-exported by `spae.metrics`.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from spae._io import SpaeInputError
from spae._tensors import Tensors, open_tensors

__all__ = ["INCEPTION_CONVS", "InceptionFeatures"]

Array = jax.Array


def _inception_convs() -> dict[str, tuple[int, int, tuple[int, int], int, tuple[int, int]]]:
  """BasicConv2d layers of pytorch-fid's FID InceptionV3: name -> (in, out, (kh, kw), stride, (ph, pw))."""
  specs: dict[str, tuple] = {}

  def add(name, cin, cout, k, stride=1, pad=(0, 0)):
    specs[name] = (cin, cout, (k, k) if isinstance(k, int) else k, stride, (pad, pad) if isinstance(pad, int) else pad)

  add("Conv2d_1a_3x3", 3, 32, 3, 2)
  add("Conv2d_2a_3x3", 32, 32, 3)
  add("Conv2d_2b_3x3", 32, 64, 3, pad=1)
  add("Conv2d_3b_1x1", 64, 80, 1)
  add("Conv2d_4a_3x3", 80, 192, 3)
  for name, cin, pool in (("Mixed_5b", 192, 32), ("Mixed_5c", 256, 64), ("Mixed_5d", 288, 64)):  # InceptionA
    add(f"{name}.branch1x1", cin, 64, 1)
    add(f"{name}.branch5x5_1", cin, 48, 1)
    add(f"{name}.branch5x5_2", 48, 64, 5, pad=2)
    add(f"{name}.branch3x3dbl_1", cin, 64, 1)
    add(f"{name}.branch3x3dbl_2", 64, 96, 3, pad=1)
    add(f"{name}.branch3x3dbl_3", 96, 96, 3, pad=1)
    add(f"{name}.branch_pool", cin, pool, 1)
  add("Mixed_6a.branch3x3", 288, 384, 3, 2)  # InceptionB
  add("Mixed_6a.branch3x3dbl_1", 288, 64, 1)
  add("Mixed_6a.branch3x3dbl_2", 64, 96, 3, pad=1)
  add("Mixed_6a.branch3x3dbl_3", 96, 96, 3, 2)
  for name, c7 in (("Mixed_6b", 128), ("Mixed_6c", 160), ("Mixed_6d", 160), ("Mixed_6e", 192)):  # InceptionC
    add(f"{name}.branch1x1", 768, 192, 1)
    add(f"{name}.branch7x7_1", 768, c7, 1)
    add(f"{name}.branch7x7_2", c7, c7, (1, 7), pad=(0, 3))
    add(f"{name}.branch7x7_3", c7, 192, (7, 1), pad=(3, 0))
    add(f"{name}.branch7x7dbl_1", 768, c7, 1)
    add(f"{name}.branch7x7dbl_2", c7, c7, (7, 1), pad=(3, 0))
    add(f"{name}.branch7x7dbl_3", c7, c7, (1, 7), pad=(0, 3))
    add(f"{name}.branch7x7dbl_4", c7, c7, (7, 1), pad=(3, 0))
    add(f"{name}.branch7x7dbl_5", c7, 192, (1, 7), pad=(0, 3))
    add(f"{name}.branch_pool", 768, 192, 1)
  add("Mixed_7a.branch3x3_1", 768, 192, 1)  # InceptionD
  add("Mixed_7a.branch3x3_2", 192, 320, 3, 2)
  add("Mixed_7a.branch7x7x3_1", 768, 192, 1)
  add("Mixed_7a.branch7x7x3_2", 192, 192, (1, 7), pad=(0, 3))
  add("Mixed_7a.branch7x7x3_3", 192, 192, (7, 1), pad=(3, 0))
  add("Mixed_7a.branch7x7x3_4", 192, 192, 3, 2)
  for name, cin in (("Mixed_7b", 1280), ("Mixed_7c", 2048)):  # InceptionE
    add(f"{name}.branch1x1", cin, 320, 1)
    add(f"{name}.branch3x3_1", cin, 384, 1)
    add(f"{name}.branch3x3_2a", 384, 384, (1, 3), pad=(0, 1))
    add(f"{name}.branch3x3_2b", 384, 384, (3, 1), pad=(1, 0))
    add(f"{name}.branch3x3dbl_1", cin, 448, 1)
    add(f"{name}.branch3x3dbl_2", 448, 384, 3, pad=1)
    add(f"{name}.branch3x3dbl_3a", 384, 384, (1, 3), pad=(0, 1))
    add(f"{name}.branch3x3dbl_3b", 384, 384, (3, 1), pad=(1, 0))
    add(f"{name}.branch_pool", cin, 192, 1)
  return specs


INCEPTION_CONVS = _inception_convs()
_BN_EPS = 1e-3  # torchvision / pytorch-fid BasicConv2d


def _max_pool(x, k, s, p=0):
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, k, k, 1), (1, s, s, 1),
                               ((0, 0), (p, p), (p, p), (0, 0)))


def _avg_pool_3x3_exclude_pad(x):
  # avg_pool2d(3, stride 1, padding 1, count_include_pad=False): divide by the in-image window size.
  pad = ((0, 0), (1, 1), (1, 1), (0, 0))
  total = jax.lax.reduce_window(x, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
  ones = jnp.ones((1,) + x.shape[1:3] + (1,), x.dtype)
  count = jax.lax.reduce_window(ones, 0.0, jax.lax.add, (1, 3, 3, 1), (1, 1, 1, 1), pad)
  return total / count


def _inception_forward(params: dict[str, tuple[Array, Array]], x: Array) -> Array:
  """x [B, 299, 299, 3] in [-1, 1] -> pool3 features [B, 2048]."""

  def conv(name, h):
    w, b = params[name]
    _, _, _, stride, (ph, pw) = INCEPTION_CONVS[name]
    y = jax.lax.conv_general_dilated(h, w, (stride, stride), ((ph, ph), (pw, pw)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    return jax.nn.relu(y + b)

  cat = lambda *xs: jnp.concatenate(xs, axis=-1)
  h = conv("Conv2d_2b_3x3", conv("Conv2d_2a_3x3", conv("Conv2d_1a_3x3", x)))
  h = _max_pool(h, 3, 2)
  h = _max_pool(conv("Conv2d_4a_3x3", conv("Conv2d_3b_1x1", h)), 3, 2)
  for m in ("Mixed_5b", "Mixed_5c", "Mixed_5d"):
    h = cat(conv(f"{m}.branch1x1", h),
            conv(f"{m}.branch5x5_2", conv(f"{m}.branch5x5_1", h)),
            conv(f"{m}.branch3x3dbl_3", conv(f"{m}.branch3x3dbl_2", conv(f"{m}.branch3x3dbl_1", h))),
            conv(f"{m}.branch_pool", _avg_pool_3x3_exclude_pad(h)))
  m = "Mixed_6a"
  h = cat(conv(f"{m}.branch3x3", h),
          conv(f"{m}.branch3x3dbl_3", conv(f"{m}.branch3x3dbl_2", conv(f"{m}.branch3x3dbl_1", h))),
          _max_pool(h, 3, 2))
  for m in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
    b7 = h
    for i in (1, 2, 3):
      b7 = conv(f"{m}.branch7x7_{i}", b7)
    bd = h
    for i in (1, 2, 3, 4, 5):
      bd = conv(f"{m}.branch7x7dbl_{i}", bd)
    h = cat(conv(f"{m}.branch1x1", h), b7, bd, conv(f"{m}.branch_pool", _avg_pool_3x3_exclude_pad(h)))
  m = "Mixed_7a"
  b7 = h
  for i in (1, 2, 3, 4):
    b7 = conv(f"{m}.branch7x7x3_{i}", b7)
  h = cat(conv(f"{m}.branch3x3_2", conv(f"{m}.branch3x3_1", h)), b7, _max_pool(h, 3, 2))
  for m, pool in (("Mixed_7b", _avg_pool_3x3_exclude_pad), ("Mixed_7c", lambda t: _max_pool(t, 3, 1, 1))):
    b3 = conv(f"{m}.branch3x3_1", h)
    bd = conv(f"{m}.branch3x3dbl_2", conv(f"{m}.branch3x3dbl_1", h))
    h = cat(conv(f"{m}.branch1x1", h),
            conv(f"{m}.branch3x3_2a", b3), conv(f"{m}.branch3x3_2b", b3),
            conv(f"{m}.branch3x3dbl_3a", bd), conv(f"{m}.branch3x3dbl_3b", bd),
            conv(f"{m}.branch_pool", pool(h)))
  return jnp.mean(h, axis=(1, 2))


class InceptionFeatures:
  """FID feature extractor: pytorch-fid's InceptionV3 (pool3, 2048-d), weights only from a user file.

  `InceptionFeatures.load(path)` reads an `.npz` / `.safetensors` / orbax checkpoint holding the state dict
  of pytorch-fid's `pt_inception-2015-12-05` weights (`Conv2d_1a_3x3.conv.weight` [OIHW],
  `Conv2d_1a_3x3.bn.{weight,bias,running_mean,running_var}`, …, `Mixed_7c.branch_pool.*`); nothing is
  downloaded. BatchNorm (eps 1e-3) is folded into the convolutions at load time.
  Call it on images [B, H, W, 3] in `value_range`: they are resized (bilinear, no antialiasing, like
  torch's `interpolate(align_corners=False)`) to 299×299 and mapped to [-1, 1]. Returns [B, 2048].
  """

  def __init__(self, params: dict[str, tuple[Array, Array]], *, value_range: tuple[float, float] = (-1.0, 1.0),
               resize: int | None = 299):
    self.params = params
    self.value_range = (float(value_range[0]), float(value_range[1]))
    self.resize = resize

  @classmethod
  def load(cls, path: str | os.PathLike, **kwargs: Any) -> "InceptionFeatures":
    """From an `.npz`, `.safetensors` file or orbax checkpoint directory (names joined with '.')."""
    return cls.from_tensors(open_tensors(path, dtype=np.float32, sep="."), **kwargs)

  @classmethod
  def from_tensors(cls, tensors: Mapping[str, Any], *, where: str = "inception weights",
                   **kwargs: Any) -> "InceptionFeatures":
    """From a {pytorch-fid state-dict name: array} mapping (a `spae._tensors.Tensors` or a plain dict)."""
    if not isinstance(tensors, Tensors):
      tensors = Tensors.from_arrays(tensors, where)
    get = lambda name, shape: tensors.get(name, shape, np.float32)
    params = {}
    for name, (cin, cout, (kh, kw), _, _) in INCEPTION_CONVS.items():
      w = get(f"{name}.conv.weight", (cout, cin, kh, kw))
      gamma, beta, mean, var = (get(f"{name}.bn.{k}", (cout,)) for k in ("weight", "bias", "running_mean",
                                                                          "running_var"))
      scale = gamma / np.sqrt(var + np.float32(_BN_EPS))
      params[name] = (jnp.asarray(np.transpose(w * scale[:, None, None, None], (2, 3, 1, 0)), jnp.float32),
                      jnp.asarray(beta - mean * scale, jnp.float32))
    return cls(params, **kwargs)

  def apply(self, params: dict[str, tuple[Array, Array]], images: Array) -> Array:
    """Pure jittable function: images [B, H, W, 3] in `value_range` -> [B, 2048]."""
    return _inception_features(params, images, self.value_range, self.resize)

  def __call__(self, images: Any) -> np.ndarray:
    return np.asarray(_inception_features_jit(self.params, images, self.value_range, self.resize))


def _inception_features(params, images, value_range, resize):
  x = jnp.asarray(images, jnp.float32)
  if x.ndim != 4 or x.shape[-1] != 3:
    raise SpaeInputError(f"Inception features need [B, H, W, 3] images, got shape {x.shape}.")
  lo, hi = value_range
  x = 2.0 * (x - lo) / (hi - lo) - 1.0
  if resize is not None and x.shape[1:3] != (resize, resize):
    # torch's interpolate(bilinear, align_corners=False) does not antialias when shrinking.
    x = jax.image.resize(x, (x.shape[0], resize, resize, 3), "bilinear", antialias=False)
  if min(x.shape[1:3]) < 75:
    raise SpaeInputError(f"InceptionV3 needs images of at least 75×75, got {x.shape[1:3]}.")
  return _inception_forward(params, x)


# One module-level jit: every InceptionFeatures instance shares its compiled programs.
_inception_features_jit = jax.jit(_inception_features, static_argnums=(2, 3))
