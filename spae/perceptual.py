"""LPIPS-style perceptual distance on VGG16 features (flax.nnx), with weights only from user files.

The network is never randomly initialised: `PerceptualNet.load(path)` reads the 13 VGG16 convolutions
(torchvision names `features.{i}.weight/bias`, OIHW, or LPIPS's `net.slice{s}.{i}.weight/bias`) and,
optionally, LPIPS's learned linear heads `lin{j}.model.1.weight` ([1, C, 1, 1]) from an `.npz`,
`.safetensors` or an orbax checkpoint directory (a nested tree whose keys joined by '.' give those names).
`make_perceptual_loss(None)` returns None with a warning: the perceptual term is then off.

Distance (LPIPS, Zhang et al. 2018), images NHWC in [-1, 1]:
  x' = (x − shift) / scale  (ImageNet mean/std expressed for [-1, 1] inputs),
  f_l = VGG16 relu{1_2, 2_2, 3_3, 4_3, 5_3}(x'),  n_l = f_l / ||f_l||_channels,
  d(x, y) = Σ_l mean_{h,w} Σ_c w_{l,c} (n_l(x) − n_l(y))²_c,   w_{l,c} = lin weights, or 1 without them.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spae._io import SpaeInputError
from spae._tensors import open_tensors

__all__ = ["LPIPS_CHANNELS", "PerceptualLoss", "PerceptualNet", "PerceptualWeight", "VGG16_CHANNELS", "VGG16_SLICES",
           "make_perceptual_loss"]

Array = jax.Array
log = logging.getLogger("spae")

# torchvision VGG16 `features` indices of the convolutions, grouped by LPIPS slice (a 2×2 max-pool precedes
# slices 2..5), and their (in, out) channels.
VGG16_SLICES: tuple[tuple[int, ...], ...] = ((0, 2), (5, 7), (10, 12, 14), (17, 19, 21), (24, 26, 28))
VGG16_CHANNELS: dict[int, tuple[int, int]] = {
    0: (3, 64), 2: (64, 64), 5: (64, 128), 7: (128, 128), 10: (128, 256), 12: (256, 256), 14: (256, 256),
    17: (256, 512), 19: (512, 512), 21: (512, 512), 24: (512, 512), 26: (512, 512), 28: (512, 512)}
LPIPS_CHANNELS: tuple[int, ...] = (64, 128, 256, 512, 512)
# LPIPS ScalingLayer: ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) mapped to [-1, 1].
_SHIFT = np.array([-0.030, -0.088, -0.188], np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], np.float32)


class PerceptualWeight(nnx.Variable):
  """A frozen pretrained weight: not an nnx.Param, so `nnx.Optimizer(..., wrt=nnx.Param)` never updates it."""


def _conv3x3(x: Array, w: Array, b: Array) -> Array:
  y = jax.lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
  return y + b


def _max_pool2(x: Array) -> Array:
  # torch MaxPool2d(2, 2) with ceil_mode=False: odd trailing rows/columns are dropped.
  return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 2, 2, 1), (1, 2, 2, 1), "VALID")


def _normalize(f: Array) -> Array:
  # LPIPS divides by (||f|| + 1e-10); sqrt(s + 1e-20) is equal to within 1e-10 and has a finite gradient at 0.
  return f / jnp.sqrt(jnp.sum(f * f, axis=-1, keepdims=True) + 1e-20)


class PerceptualNet(nnx.Module):
  """VGG16 (up to relu5_3) feature network with optional LPIPS linear heads.

  Build it with `PerceptualNet.load(path)` (or `from_tensors`); __init__ takes already converted weights.
  """

  def __init__(self, kernels: Mapping[int, np.ndarray], biases: Mapping[int, np.ndarray],
               lin: Mapping[int, np.ndarray] | None = None):
    """kernels[i]: HWIO [3, 3, in, out] and biases[i]: [out] for every conv index i of VGG16_CHANNELS;
    lin[j]: [C_j] nonnegative channel weights for slice j = 0..4, or None for the unweighted channel sum."""
    self.kernels = nnx.Dict({str(i): PerceptualWeight(jnp.asarray(kernels[i], jnp.float32)) for i in VGG16_CHANNELS})
    self.biases = nnx.Dict({str(i): PerceptualWeight(jnp.asarray(biases[i], jnp.float32)) for i in VGG16_CHANNELS})
    # Without lin heads the channel sum is a dot with ones: one graph for both, so jitted code is shared.
    self.lin = nnx.Dict({str(j): PerceptualWeight(jnp.asarray(lin[j], jnp.float32) if lin is not None
                                                  else jnp.ones((c,), jnp.float32))
                         for j, c in enumerate(LPIPS_CHANNELS)})
    self.has_lin = PerceptualWeight(jnp.asarray(lin is not None))

  @property
  def use_lin(self) -> bool:
    """Whether LPIPS lin heads were loaded (host-side only)."""
    return bool(self.has_lin[...])

  @classmethod
  def load(cls, path: str | os.PathLike, *, use_lin: bool | None = None) -> "PerceptualNet":
    """Reads weights from an `.npz`, `.safetensors` or orbax checkpoint directory.

    use_lin: True requires the LPIPS `lin{j}` heads, False ignores them, None uses them when present.
    """
    return cls.from_tensors(read_tensors(path), use_lin=use_lin, where=str(path))

  @classmethod
  def from_tensors(cls, tensors: Mapping[str, np.ndarray], *, use_lin: bool | None = None,
                   where: str = "perceptual weights") -> "PerceptualNet":
    """From a flat {torch-style name: array} mapping (OIHW convolutions)."""
    kernels, biases = {}, {}
    for s, idxs in enumerate(VGG16_SLICES, start=1):
      for i in idxs:
        cin, cout = VGG16_CHANNELS[i]
        w = _get(tensors, (f"features.{i}.weight", f"net.slice{s}.{i}.weight"), (cout, cin, 3, 3), where)
        kernels[i] = np.transpose(w, (2, 3, 1, 0))  # OIHW -> HWIO; both are cross-correlations
        biases[i] = _get(tensors, (f"features.{i}.bias", f"net.slice{s}.{i}.bias"), (cout,), where)
    has_lin = any(k.startswith("lin") and k.endswith(".model.1.weight") for k in tensors)
    if use_lin is None:
      use_lin = has_lin
    lin = None
    if use_lin:
      lin = {j: _get(tensors, (f"lin{j}.model.1.weight",), (1, c, 1, 1), where).reshape(c)
             for j, c in enumerate(LPIPS_CHANNELS)}
    return cls(kernels, biases, lin)

  def features(self, x: Array) -> list[Array]:
    """[B, H, W, 3] in [-1, 1] -> the 5 VGG16 feature maps relu1_2 … relu5_3 ([B, H/2^j, W/2^j, C_j])."""
    h = (jnp.asarray(x, jnp.float32) - _SHIFT) / _SCALE
    feats = []
    for s, idxs in enumerate(VGG16_SLICES):
      if s > 0:
        h = _max_pool2(h)
      for i in idxs:
        h = jax.nn.relu(_conv3x3(h, self.kernels[str(i)][...], self.biases[str(i)][...]))
      feats.append(h)
    return feats

  def __call__(self, x: Array, y: Array) -> Array:
    """Perceptual distance per image: x, y [B, H, W, 3] in [-1, 1] -> [B]. Needs H, W >= 16."""
    if x.shape != y.shape or x.ndim != 4 or x.shape[-1] != 3:
      raise SpaeInputError(f"perceptual distance needs two [B, H, W, 3] images of equal shape, "
                           f"got {x.shape}, {y.shape}.")
    if min(x.shape[1:3]) < 16:
      raise SpaeInputError(f"perceptual distance needs images of at least 16×16 (4 VGG poolings), got {x.shape[1:3]}.")
    b = x.shape[0]
    # One pass over the concatenated pair: half the kernel launches of two passes.
    feats = self.features(jnp.concatenate([x, y], axis=0))
    total = jnp.zeros((b,), jnp.float32)
    for j, f in enumerate(feats):
      diff = jnp.square(_normalize(f[:b]) - _normalize(f[b:]))
      total = total + jnp.mean(diff @ self.lin[str(j)][...], axis=(1, 2))
    return total


def _get(tensors: Mapping[str, np.ndarray], names: tuple[str, ...], shape: tuple[int, ...], where: str) -> np.ndarray:
  for name in names:
    if name in tensors:
      arr = np.asarray(tensors[name], np.float32)
      if arr.shape != shape:
        raise SpaeInputError(f"{where}: tensor {name!r} has shape {arr.shape}, expected {shape} "
                             "(torch OIHW layout of VGG16 / LPIPS). Check that the file holds VGG16 weights.")
      return arr
  sample = sorted(tensors)[:12]
  raise SpaeInputError(f"{where}: missing tensor {names[0]!r} (or {' / '.join(names[1:]) or 'no alias'}); "
                       f"the file has {len(tensors)} tensors, e.g. {sample}. Export torchvision VGG16 "
                       "`features.*` (and LPIPS `lin*.model.1.weight`) tensors into it.")


def read_tensors(path: str | os.PathLike) -> Mapping[str, np.ndarray]:
  """The tensors of an `.npz`, `.safetensors` file or orbax checkpoint directory as {dotted name: array}."""
  if not Path(path).exists():
    raise SpaeInputError(f"perceptual weights {str(path)!r} do not exist; pass an .npz, .safetensors or orbax "
                         "checkpoint with VGG16 (LPIPS) weights, or no path to turn the perceptual loss off.")
  return open_tensors(path, dtype=np.float32, sep=".")


class PerceptualLoss:
  """A loaded PerceptualNet as pure functions.

  `loss(x, y)` closes over the weights; inside a jitted train step prefer `loss.apply(loss.params, x, y)`
  with `loss.params` passed as a jit argument, so ~60 MB of weights are not baked into the program.
  """

  def __init__(self, net: PerceptualNet):
    self.graphdef, self.params = nnx.split(net)
    self.use_lin = net.use_lin

  def distance(self, params: Any, x: Array, y: Array) -> Array:
    """Per-image distance [B] (the LPIPS metric when the lin heads are loaded)."""
    return nnx.merge(self.graphdef, jax.lax.stop_gradient(params))(x, y)

  def apply(self, params: Any, x: Array, y: Array) -> Array:
    """Mean distance over the batch: the perceptual loss scalar."""
    return jnp.mean(self.distance(params, x, y))

  def __call__(self, x: Array, y: Array) -> Array:
    return self.apply(self.params, x, y)


def make_perceptual_loss(path: str | os.PathLike | None, *, use_lin: bool | None = None) -> PerceptualLoss | None:
  """The perceptual loss loaded from `path`, or None (term off, with a warning) when no path is given."""
  if path is None or str(path) == "":
    msg = ("no perceptual weights given: the perceptual loss is OFF. Pass a VGG16/LPIPS weight file "
           "(.npz, .safetensors or orbax) to enable it; a random network is never used.")
    warnings.warn(msg, UserWarning, stacklevel=2)
    log.warning(msg)
    return None
  return PerceptualLoss(PerceptualNet.load(path, use_lin=use_lin))
