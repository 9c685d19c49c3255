"""Evaluation metrics: PSNR/SSIM (jnp), the thumbnail anchor of a token budget, codebook health over a sliding
window (numpy), Fréchet distance, and a small registry of evaluators that yield (metric name, value), big_vision
style.

Image metrics take NHWC images in [0, max_val] (the evaluators map the model's [-1, 1] images there).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from spae._inception import INCEPTION_CONVS, InceptionFeatures
from spae._io import SpaeInputError

__all__ = [
    "CodebookEvaluator", "FeatureStats", "FidEvaluator", "INCEPTION_CONVS", "InceptionFeatures", "ReconEvaluator",
    "UsageWindow", "box_average", "feature_statistics", "frechet_distance", "get_evaluator", "list_evaluators",
    "prefix_bits", "psnr", "register_evaluator", "ssim", "thumbnail",
]

Array = jax.Array


# ------------------------------------------------------------------------------------ PSNR / SSIM
def _check_pair(x, y, what):
  if x.shape != y.shape or x.ndim != 4:
    raise SpaeInputError(f"{what} needs two [B, H, W, C] images of equal shape, got {x.shape} and {y.shape}.")


@functools.partial(jax.jit, static_argnames=("max_val",))
def psnr(x: Array, y: Array, max_val: float = 1.0) -> Array:
  """Per-image PSNR in dB: 10·log10(max_val² / mean((x − y)²)). x, y [B, H, W, C] -> [B] (inf if equal)."""
  _check_pair(x, y, "psnr")
  mse = jnp.mean(jnp.square(x.astype(jnp.float32) - y.astype(jnp.float32)), axis=(1, 2, 3))
  return 10.0 * jnp.log10(max_val ** 2 / mse)


def _gaussian_1d(size: int, sigma: float) -> np.ndarray:
  r = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
  g = np.exp(-0.5 * (r / sigma) ** 2)
  return (g / g.sum()).astype(np.float32)


def _filter_valid(x: Array, g: np.ndarray) -> Array:
  """Separable Gaussian filter per channel with 'valid' borders: [B, H, W, C] -> [B, H−f+1, W−f+1, C]."""
  c = x.shape[-1]
  kh = jnp.tile(jnp.asarray(g)[:, None, None, None], (1, 1, 1, c))  # HWIO, depthwise
  kw = jnp.tile(jnp.asarray(g)[None, :, None, None], (1, 1, 1, c))
  dn = ("NHWC", "HWIO", "NHWC")
  conv = functools.partial(jax.lax.conv_general_dilated, window_strides=(1, 1), padding="VALID",
                           dimension_numbers=dn, feature_group_count=c, precision=jax.lax.Precision.HIGHEST)
  return conv(conv(x, kh), kw)


@functools.partial(jax.jit, static_argnames=("max_val", "filter_size", "filter_sigma", "k1", "k2"))
def ssim(x: Array, y: Array, max_val: float = 1.0, filter_size: int = 11, filter_sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> Array:
  """Per-image SSIM (Wang et al. 2004) with an 11×11 σ=1.5 Gaussian window, valid borders, per channel.

  SSIM = mean over windows and channels of
    (2 μx μy + c1)(2 σxy + c2) / ((μx² + μy² + c1)(σx² + σy² + c2)),  c1 = (k1·max_val)², c2 = (k2·max_val)²,
  as dm-pix / tf.image.ssim compute it. x, y [B, H, W, C] with H, W >= filter_size -> [B].
  """
  _check_pair(x, y, "ssim")
  if min(x.shape[1:3]) < filter_size:
    raise SpaeInputError(f"ssim needs images of at least {filter_size}×{filter_size}, got {x.shape[1:3]}; "
                         "pass a smaller filter_size.")
  x = x.astype(jnp.float32)
  y = y.astype(jnp.float32)
  g = _gaussian_1d(filter_size, filter_sigma)
  f = lambda a: _filter_valid(a, g)
  mu_x, mu_y = f(x), f(y)
  # Clamp: the variance by E[x²] − E[x]² can dip below 0 by rounding.
  var_x = jnp.maximum(f(x * x) - mu_x ** 2, 0.0)
  var_y = jnp.maximum(f(y * y) - mu_y ** 2, 0.0)
  cov = f(x * y) - mu_x * mu_y
  c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
  num = (2 * mu_x * mu_y + c1) * (2 * cov + c2)
  den = (mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2)
  return jnp.mean(num / den, axis=(1, 2, 3))


# ------------------------------------------------------------------------------------ thumbnail anchor
def thumbnail(images: Any, side: int) -> np.ndarray:
  """The thumbnail anchor of a token budget: images -> their side×side thumbnails, scaled back up.

  Each image is box-averaged to side×side cells (area-weighted, so any H, W work), the cell colours are rounded to
  24 bits (8 per channel: an s×s thumbnail costs exactly s² colours), then resized back to H×W with spae's one
  resize (`spae._images.resize`, bicubic): 24·side² bits. Whether a pyramid prefix whose deepest layer is
  side×side spends more bits than that depends on its vocabularies (`prefix_bits`): the default's full pyramid
  does (1.45×), its shorter prefixes do not (0.19-0.82×).

  images: [B, H, W, C] or [H, W, C], uint8 or float in [0, 1] -> float32 of the same shape in [0, 1].
  """
  from spae._images import as_float_batch, resize, to_uint8

  x, single = as_float_batch(images)
  if not isinstance(side, (int, np.integer)) or not 1 <= side <= min(x.shape[1:3]):
    raise SpaeInputError(f"thumbnail side must be an integer in [1, {min(x.shape[1:3])}], got {side!r}.")
  out = resize(to_uint8(box_average(x, int(side))), x.shape[1:3])
  return out[0] if single else out


def prefix_bits(grids: Sequence[int], words_per_layer: Sequence[int]) -> list[float]:
  """The most information each pyramid prefix can carry: layer l has grids[l]² tokens, each one of the
  words_per_layer[l] words that layer searches (log2 of that many bits). [L] cumulative bits, to compare with
  the 24·side² bits of a side×side thumbnail (`thumbnail`).

  For a tokenizer: grids = config.pyramid.grids; words = len(config.pyramid.semantic_vocab) on its first
  semantic_layers layers, len(vocabulary) below."""
  if len(grids) != len(words_per_layer) or not all(int(w) >= 1 for w in words_per_layer):
    raise SpaeInputError(f"prefix_bits needs one word count >= 1 per layer; got grids {list(grids)} and words "
                         f"{list(words_per_layer)}.")
  return [float(b) for b in np.cumsum([int(g) ** 2 * np.log2(int(w)) for g, w in zip(grids, words_per_layer)])]


def box_average(x: np.ndarray, side: int) -> np.ndarray:
  """float [B, H, W, C] -> float64 [B, side, side, C]: each cell the area-weighted mean of the pixels under it
  (the thumbnail's cell colours before rounding)."""
  ah, aw = _box_weights(x.shape[1], side), _box_weights(x.shape[2], side)
  return np.einsum("iy,byxc,jx->bijc", ah, np.asarray(x, np.float64), aw)


def _box_weights(n: int, s: int) -> np.ndarray:
  """[s, n] weights: row i averages the pixels under cell i of s equal cells (fractional overlaps at borders)."""
  edges = np.arange(s + 1) * (n / s)
  lo, hi = edges[:-1, None], edges[1:, None]
  px = np.arange(n)[None, :]
  overlap = np.clip(np.minimum(hi, px + 1) - np.maximum(lo, px), 0.0, None)
  return overlap / (n / s)


# ------------------------------------------------------------------------------------ codebook health
class UsageWindow:
  """Host-side ring buffer of the last `window` token ids of each pyramid layer.

  Usage, perplexity and top-token mass are measured over the window (many batches), not per batch: a
  per-batch count of a 256-token layer can never exceed 256·B distinct ids whatever the vocabulary.
  """

  def __init__(self, num_layers: int, vocab_size: int, window: int | Sequence[int] = 65536):
    windows = [int(window)] * num_layers if np.isscalar(window) else [int(w) for w in window]
    if num_layers < 1 or len(windows) != num_layers or min(windows) < 1 or vocab_size < 1:
      raise SpaeInputError(f"UsageWindow needs num_layers >= 1, vocab_size >= 1 and one positive window per "
                           f"layer; got {num_layers}, {vocab_size}, {window}.")
    self.vocab_size = int(vocab_size)
    self._buf = [np.zeros(w, np.int64) for w in windows]
    self._pos = [0] * num_layers  # next write position
    self._filled = [0] * num_layers

  @property
  def num_layers(self) -> int:
    return len(self._buf)

  def update(self, ids: Sequence[Any]) -> None:
    """Adds one batch: `ids[l]` is layer l's ids of any shape (e.g. [B, s_l, s_l]), flattened here."""
    if len(ids) != self.num_layers:
      raise SpaeInputError(f"UsageWindow.update got {len(ids)} layers of ids, expected {self.num_layers}.")
    for layer, lid in enumerate(ids):
      flat = np.asarray(lid).reshape(-1).astype(np.int64)
      if flat.size and (flat.min() < 0 or flat.max() >= self.vocab_size):
        raise SpaeInputError(f"layer {layer} has token ids outside [0, {self.vocab_size}): "
                             f"min {flat.min()}, max {flat.max()}.")
      buf = self._buf[layer]
      n = buf.size
      flat = flat[-n:]  # only the newest n ids can stay in the window
      idx = (self._pos[layer] + np.arange(flat.size)) % n
      buf[idx] = flat
      self._pos[layer] = int((self._pos[layer] + flat.size) % n)
      self._filled[layer] = min(n, self._filled[layer] + flat.size)

  def counts(self, layer: int) -> np.ndarray:
    """[V] occurrences of each token in layer `layer`'s window."""
    buf = self._buf[layer]
    valid = buf if self._filled[layer] == buf.size else buf[:self._filled[layer]]
    return np.bincount(valid, minlength=self.vocab_size)

  def usage(self) -> np.ndarray:
    """[L] fraction of the vocabulary seen in each layer's window (unique ids / V); nan while empty."""
    return np.array([np.count_nonzero(self.counts(l)) / self.vocab_size if self._filled[l] else np.nan
                     for l in range(self.num_layers)])

  def perplexity(self) -> np.ndarray:
    """[L] exp(entropy) of the empirical token distribution of each window: V if uniform, 1 if constant."""
    out = []
    for l in range(self.num_layers):
      c = self.counts(l)
      if not self._filled[l]:
        out.append(np.nan)
        continue
      p = c[c > 0] / c.sum()
      out.append(float(np.exp(-np.sum(p * np.log(p)))))
    return np.array(out)

  def top_token_mass(self) -> np.ndarray:
    """[L] share of each window taken by its most frequent token."""
    return np.array([self.counts(l).max() / self._filled[l] if self._filled[l] else np.nan
                     for l in range(self.num_layers)])

  def metrics(self, prefix: str = "codebook/") -> Iterator[tuple[str, float]]:
    """Yields (f'{prefix}usage_l{l}', …), perplexity_l{l}, top_mass_l{l} for l = 1..L."""
    for name, vals in (("usage", self.usage()), ("perplexity", self.perplexity()),
                       ("top_mass", self.top_token_mass())):
      for l, v in enumerate(vals, start=1):
        yield f"{prefix}{name}_l{l}", float(v)


# ------------------------------------------------------------------------------------ Fréchet distance
def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
  """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (FID on Inception features):

    ||mu1 − mu2||² + tr(Σ1) + tr(Σ2) − 2·tr((Σ1 Σ2)^½),

  with tr((Σ1 Σ2)^½) = tr((A1 Σ2 A1)^½) = Σ singular values of A1·A2, A_i = Σ_i^½ (symmetric PSD roots by
  eigendecomposition, eigenvalues clipped at 0), in float64 and without scipy. The singular values keep
  full precision where eigenvalues of A1 Σ2 A1 would lose half of it on rank-deficient covariances.
  mu [D], sigma [D, D].
  """
  mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
  s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
  d = mu1.shape[0] if mu1.ndim == 1 else -1
  if d < 1 or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
    raise SpaeInputError(f"frechet_distance needs mu [D] and sigma [D, D] for both sets, got "
                         f"{mu1.shape}, {s1.shape}, {mu2.shape}, {s2.shape}.")
  tr_sqrt = np.sum(np.linalg.svd(_psd_sqrt(s1) @ _psd_sqrt(s2), compute_uv=False))
  diff = mu1 - mu2
  return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_sqrt)


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
  w, v = np.linalg.eigh((s + s.T) / 2)
  return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def feature_statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """(mean [D], covariance [D, D]) of features [N, D], unbiased (N − 1), in float64 as pytorch-fid does."""
  f = np.asarray(features, np.float64)
  if f.ndim != 2 or f.shape[0] < 2:
    raise SpaeInputError(f"feature_statistics needs [N >= 2, D] features, got shape {f.shape}.")
  return f.mean(0), np.cov(f, rowvar=False)


class FeatureStats:
  """Streaming mean/covariance of features added batch by batch (float64 sums)."""

  def __init__(self):
    self.n, self._s1, self._s2 = 0, None, None

  def add(self, features: np.ndarray) -> None:
    """features [B, D]."""
    f = np.asarray(features, np.float64).reshape(np.shape(features)[0], -1)
    if self._s1 is None:
      self._s1, self._s2 = np.zeros(f.shape[1]), np.zeros((f.shape[1], f.shape[1]))
    self.n += f.shape[0]
    self._s1 += f.sum(0)
    self._s2 += f.T @ f

  def stats(self) -> tuple[np.ndarray, np.ndarray]:
    """(mean [D], unbiased covariance [D, D])."""
    if self.n < 2:
      raise SpaeInputError(f"FeatureStats needs at least 2 samples, has {self.n}.")
    mu = self._s1 / self.n
    return mu, (self._s2 - self.n * np.outer(mu, mu)) / (self.n - 1)


# ------------------------------------------------------------------------------------ evaluators
_EVALUATORS: dict[str, type] = {}


def register_evaluator(name: str) -> Callable[[type], type]:
  """Class decorator adding an evaluator under `name`."""
  def deco(cls):
    _EVALUATORS[name] = cls
    return cls
  return deco


def get_evaluator(name: str, **kwargs: Any) -> Any:
  """Builds the evaluator registered as `name` with `kwargs`; its `run(batches)` yields (metric, value)."""
  if name not in _EVALUATORS:
    raise SpaeInputError(f"unknown evaluator {name!r}; available: {sorted(_EVALUATORS)}.")
  return _EVALUATORS[name](**kwargs)


def list_evaluators() -> list[str]:
  return sorted(_EVALUATORS)


def _to_unit(x: Any, value_range: tuple[float, float]) -> Array:
  lo, hi = value_range
  return jnp.clip((jnp.asarray(x, jnp.float32) - lo) / (hi - lo), 0.0, 1.0)


@register_evaluator("recon")
class ReconEvaluator:
  """PSNR and SSIM (and an optional perceptual distance) of reconstructions from each pyramid prefix.

  Args:
    decode_fn: (images [B, H, W, 3], num_layers l) -> reconstruction [B, H, W, 3] from the first l layers.
    num_layers: L; prefixes default to 1..L.
    perceptual_fn: optional (x, y) -> [B] distance (e.g. `partial(loss.distance, loss.params)` of
      `spae.perceptual`, the LPIPS metric), on images in `value_range`.
    value_range: the images' range (mapped to [0, 1] and clipped before PSNR/SSIM).
  Yields 'recon/psnr_l{l}', 'recon/ssim_l{l}' (and 'recon/lpips_l{l}'): means over all images.
  """

  def __init__(self, decode_fn: Callable[[Any, int], Any], num_layers: int, *,
               prefixes: Sequence[int] | None = None, perceptual_fn: Callable[[Any, Any], Any] | None = None,
               value_range: tuple[float, float] = (-1.0, 1.0), ssim_filter_size: int = 11):
    self.decode_fn = decode_fn
    self.prefixes = list(prefixes) if prefixes is not None else list(range(1, num_layers + 1))
    if not self.prefixes or any(not 1 <= p <= num_layers for p in self.prefixes):
      raise SpaeInputError(f"recon prefixes must lie in [1, {num_layers}], got {self.prefixes}.")
    self.perceptual_fn = perceptual_fn
    self.value_range = value_range
    self.ssim_filter_size = ssim_filter_size

  def run(self, batches: Iterable[Any]) -> Iterator[tuple[str, float]]:
    sums: dict[str, float] = {}
    count = 0
    for images in batches:
      x = _to_unit(images, self.value_range)
      count += x.shape[0]
      for l in self.prefixes:
        recon = self.decode_fn(images, l)
        y = _to_unit(recon, self.value_range)
        vals = {"psnr": psnr(x, y), "ssim": ssim(x, y, filter_size=self.ssim_filter_size)}
        if self.perceptual_fn is not None:
          vals["lpips"] = self.perceptual_fn(jnp.asarray(images, jnp.float32), jnp.asarray(recon, jnp.float32))
        for k, v in vals.items():
          sums[f"recon/{k}_l{l}"] = sums.get(f"recon/{k}_l{l}", 0.0) + float(np.sum(np.asarray(v, np.float64)))
    if count == 0:
      raise SpaeInputError("the recon evaluator got no image batches.")
    for name, total in sums.items():
      yield name, total / count


@register_evaluator("codebook")
class CodebookEvaluator:
  """Codebook health per layer over all evaluated images (or the last `window` ids per layer).

  Args:
    encode_fn: images [B, H, W, 3] -> a sequence of L id arrays ([B, s_l, s_l] each).
    num_layers, vocab_size: pyramid depth L and vocabulary size V.
    window: ids kept per layer (default: a large window, so effectively all evaluated ids).
  Yields 'codebook/usage_l{l}', 'codebook/perplexity_l{l}', 'codebook/top_mass_l{l}'.
  """

  def __init__(self, encode_fn: Callable[[Any], Sequence[Any]], num_layers: int, vocab_size: int, *,
               window: int = 1 << 20):
    self.encode_fn = encode_fn
    self.num_layers, self.vocab_size, self.window = num_layers, vocab_size, window

  def run(self, batches: Iterable[Any]) -> Iterator[tuple[str, float]]:
    win = UsageWindow(self.num_layers, self.vocab_size, self.window)
    for images in batches:
      win.update(self.encode_fn(images))
    yield from win.metrics("codebook/")


@register_evaluator("fid")
class FidEvaluator:
  """Fréchet distance between features of real images and of their reconstructions, per prefix.

  `feature_fn` (images [B, H, W, 3] -> [B, D]) comes from user-supplied weights, e.g.
  `InceptionFeatures.load(path)` for standard FID; nothing is downloaded.
  Yields 'fid/l{l}'.
  """

  def __init__(self, decode_fn: Callable[[Any, int], Any], feature_fn: Callable[[Any], Any], num_layers: int, *,
               prefixes: Sequence[int] | None = None):
    self.decode_fn, self.feature_fn = decode_fn, feature_fn
    self.prefixes = list(prefixes) if prefixes is not None else [num_layers]
    if any(not 1 <= p <= num_layers for p in self.prefixes):
      raise SpaeInputError(f"fid prefixes must lie in [1, {num_layers}], got {self.prefixes}.")

  def run(self, batches: Iterable[Any]) -> Iterator[tuple[str, float]]:
    real = FeatureStats()
    fake = {l: FeatureStats() for l in self.prefixes}
    for images in batches:
      real.add(np.asarray(self.feature_fn(images)))
      for l in self.prefixes:
        fake[l].add(np.asarray(self.feature_fn(self.decode_fn(images, l))))
    mu_r, sig_r = real.stats()
    for l in self.prefixes:
      yield f"fid/l{l}", frechet_distance(mu_r, sig_r, *fake[l].stats())
