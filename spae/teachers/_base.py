"""The `Teacher` interface: image/text embeddings and image-to-vocabulary relevance with a disk cache."""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from spae._io import SpaeInputError, atomic_path
from spae._vocab import Vocabulary
from spae.teachers._layers import l2_normalize

# A short prompt ensemble in the style of CLIP's zero-shot templates; each word's text embedding is the
# renormalised mean of its normalised template embeddings.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a bad photo of the {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
    "art of the {}.",
    "itap of a {}.",
)
CACHE_FORMAT = 1


def default_cache_dir() -> Path:
  """$SPAE_CACHE_DIR, else ~/.cache/spae."""
  return Path(os.environ.get("SPAE_CACHE_DIR") or Path.home() / ".cache" / "spae")


@dataclasses.dataclass(frozen=True, eq=False)  # eq=False: hashed by identity, so `jax.jit(fn)` works
class RelevanceFn:
  """Jittable `images [B, H, W, 3] in [0, 1] -> relevance [B, V]` (cosine similarities).

  A pytree: `image_params` and `text_embeddings` are leaves, so the whole object can be passed *as an
  argument* to a jitted function (no multi-MB constants baked into the program); calling it from inside or
  outside jit both work. Gradients never reach the frozen parameters or text embeddings (stop_gradient);
  they do flow to `images`.
  """

  image_params: Any
  text_embeddings: jax.Array  # [V, D], L2-normalised
  apply: Callable = dataclasses.field(metadata=dict(static=True))  # (config, params, images) -> [B, D]
  config: Hashable = dataclasses.field(metadata=dict(static=True))
  offset: jax.Array | None = None  # [V] subtracted from every image's scores (`centred`, `restricted`)
  bank: jax.Array | None = None  # [N, D] unit caption embeddings the image is read through (`through_captions`)
  bank_tau: float = dataclasses.field(default=0.03, metadata=dict(static=True))
  scale: jax.Array | None = None  # [V] divides the scores once the offset is removed (`standardised`)
  mirrored: bool = dataclasses.field(default=False, metadata=dict(static=True))  # `mirror_averaged`

  def image_embeddings(self, images: jax.Array) -> jax.Array:
    """[B, H, W, 3] -> [B, D], L2-normalised."""
    return l2_normalize(self.apply(self.config, jax.lax.stop_gradient(self.image_params), images))

  def _read(self, images: jax.Array) -> jax.Array:
    z = self.image_embeddings(images)
    if self.bank is not None:  # the image's caption-space reading: a softmax mixture of its nearest captions
      bank = jax.lax.stop_gradient(self.bank)
      z = jax.nn.softmax(z @ bank.T / self.bank_tau, axis=-1) @ bank
    return z @ jax.lax.stop_gradient(self.text_embeddings).T

  def __call__(self, images: jax.Array) -> jax.Array:
    sims = self._read(images)
    if self.mirrored:
      sims = 0.5 * (sims + self._read(images[:, :, ::-1]))
    if self.offset is not None:
      sims = sims - jax.lax.stop_gradient(self.offset)
    return sims if self.scale is None else sims / jax.lax.stop_gradient(self.scale)

  def centred(self, reference: Any, *, batch_size: int = 64) -> "RelevanceFn":
    """Scores minus each word's mean cosine over `reference` images (replaces any earlier offset and scale).

    Hub words sit close to every image embedding and would top every image's list; subtracting the word's mean
    over typical images (as CSLS does for word translation) leaves what is particular to each image:
      rel'(x, k) = cos(x, k) - mean_{r in reference} cos(r, k).
    reference: [N, H, W, 3] floats in [0, 1] (training images).
    """
    mean, _ = self._reference_moments(reference, batch_size, spread=False)
    return dataclasses.replace(self, offset=jnp.asarray(mean.astype(np.float32)), scale=None)

  def standardised(self, reference: Any, *, batch_size: int = 64) -> "RelevanceFn":
    """`centred`, then each word's score divided by its standard deviation over the same `reference` images:
      rel'(x, k) = (rel(x, k) - mean_r rel(r, k)) / std_r rel(r, k).
    Centred scores of words that spread widely across images outrun those of words that spread little, so a few
    words win most images; in these units each word wins where it stands out most against its own spread."""
    mean, std = self._reference_moments(reference, batch_size, spread=True)
    return dataclasses.replace(self, offset=jnp.asarray(mean.astype(np.float32)),
                               scale=jnp.asarray(np.maximum(std, 1e-6).astype(np.float32)))

  def _reference_moments(self, reference: Any, batch_size: int, *,
                         spread: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Each word's mean [V] (float64) of the unoffset, unscaled scores over `reference`, and with `spread` their
    standard deviation, in the same pass of the image tower (None without). Without it the program is a plain
    sum, as it always was, so the centring offset of the shipped recipes keeps its bits."""
    plain = dataclasses.replace(self, offset=None, scale=None)
    if spread:
      fn = jax.jit(lambda f, x: (lambda s: (s.sum(axis=0), (s * s).sum(axis=0)))(f(x)))
    else:
      total = jax.jit(lambda f, x: f(x).sum(axis=0))
      fn = lambda f, x: (total(f, x),)
    reference = np.asarray(reference, np.float32)
    if reference.ndim != 4 or not len(reference):
      raise SpaeInputError(f"centring needs reference images [N, H, W, 3], got shape {reference.shape}.")
    sums = None
    for i in range(0, len(reference), batch_size):
      part = [np.asarray(v, np.float64) for v in fn(plain, jnp.asarray(reference[i:i + batch_size]))]
      sums = part if sums is None else [a + b for a, b in zip(sums, part)]
    mean = sums[0] / len(reference)
    return mean, np.sqrt(np.maximum(sums[1] / len(reference) - mean * mean, 0.0)) if spread else None

  def mirror_averaged(self) -> "RelevanceFn":
    """Scores of an image as the mean of its own and its left-right mirror's: a mirror keeps what a scene holds
    (colours, shapes), so the reading no longer depends on which way the image faces (the trainer flips its
    images). Call before `centred` / `standardised` / `restricted`, whose offsets belong to the reading."""
    if self.offset is not None:
      raise SpaeInputError("mirror_averaged must come before centred/standardised/restricted: their offset was "
                           "computed for the unmirrored scores.")
    return dataclasses.replace(self, mirrored=True)

  def through_captions(self, bank: Any, tau: float) -> "RelevanceFn":
    """Scores read through a bank of caption embeddings c_n (unit rows [N, D], e.g. the teacher's training
    captions) instead of the image embedding z itself:
      rel'(x, k) = (sum_n softmax_n(z . c_n / tau) c_n) . u_k.
    A tower trained to put images near their captions ranks captions far better than single words (whose
    embeddings sit apart from every caption's), so the words nearest the captions it retrieves name more of what
    is in the image (docs/method.md, "Caption-bank relevance"). Call before `centred` and `restricted`, whose
    offsets belong to the scores they were made for."""
    if self.offset is not None:
      raise SpaeInputError("through_captions must come before centred/restricted: their offset was computed for "
                           "the image's own scores.")
    bank = np.asarray(bank, np.float32)
    if bank.ndim != 2 or not len(bank) or bank.shape[1] != self.text_embeddings.shape[1]:
      raise SpaeInputError(f"a caption bank must be [N, D={self.text_embeddings.shape[1]}] embeddings with N >= 1, "
                           f"got shape {bank.shape}.")
    if not float(tau) > 0:
      raise SpaeInputError(f"the caption bank's temperature must be > 0, got {tau}.")
    bank = bank / np.maximum(np.linalg.norm(bank, axis=1, keepdims=True), 1e-12)
    return dataclasses.replace(self, bank=jnp.asarray(bank), bank_tau=float(tau))

  def restricted(self, allowed: np.ndarray) -> "RelevanceFn":
    """Words outside `allowed` (bool [V]) never score: rel'(x, k) = -1e4 there; other scores are unchanged."""
    v = self.text_embeddings.shape[0]
    allowed = np.asarray(allowed, bool)
    if allowed.shape != (v,) or not allowed.any():
      raise SpaeInputError(f"allowed must be a bool [V={v}] mask with at least one word.")
    offset = np.zeros(v, np.float32) if self.offset is None else np.asarray(self.offset, np.float32)
    return dataclasses.replace(self, offset=jnp.asarray(np.where(allowed, offset, np.float32(1e4))))


jax.tree_util.register_dataclass(RelevanceFn,
                                 data_fields=["image_params", "text_embeddings", "offset", "bank", "scale"],
                                 meta_fields=["apply", "config", "bank_tau", "mirrored"])


class Teacher(abc.ABC):
  """A frozen image-text model that scores how relevant each vocabulary word is to an image.

  Subclasses provide the towers; this class adds normalisation, batching, prompt templates and the
  vocabulary-embedding cache. Images are float [0, 1], NHWC, any size: each teacher resizes and normalises
  them as its checkpoint expects (see the subclass docstring).

  Cache: the vocabulary's text-embedding matrix [V, D] is stored as `<cache_dir>/teacher_text/<kind>-<key>.npz`,
  where key hashes the vocabulary fingerprint, the teacher identity (weights fingerprint) and the templates.
  cache_dir: constructor argument, else $SPAE_CACHE_DIR, else ~/.cache/spae.
  """

  kind: str = "teacher"
  config: Hashable
  # (config, image_params, images [B, H, W, 3] in [0, 1]) -> [B, D] unnormalised; pure and jittable.
  image_apply: Callable[..., jax.Array]

  def __init__(self, *, cache_dir: str | os.PathLike | None = None, text_batch_size: int = 256):
    self.cache_dir = Path(cache_dir) if cache_dir is not None else None
    self.text_batch_size = int(text_batch_size)
    self.text_tower_calls = 0  # batches run through the text tower (lets tests and logs see cache hits)
    self._memory: dict[str, np.ndarray] = {}

  # ---------------------------------------------------------------- per-model parts
  @property
  @abc.abstractmethod
  def identity(self) -> str:
    """Stable id of the weights and preprocessing (part of the cache key)."""

  @property
  def text_identity(self) -> str:
    """Stable id of what word embeddings depend on (the cache key): the whole model unless a teacher says less."""
    return self.identity

  def whole_word_mask(self, vocabulary: Vocabulary) -> np.ndarray | None:
    """bool [V]: the vocabulary words the text tower reads as one whole token of its own vocabulary (for
    MiniLM's WordPiece: lower-case English words), or None when the teacher has no such tokenizer."""
    tok = getattr(getattr(self, "text_tower", None), "tokenizer", None)
    known = getattr(tok, "vocab", None)
    if known is None:
      return None
    return np.array([w in known for w in vocabulary.words(np.arange(len(vocabulary)))], bool)

  @property
  @abc.abstractmethod
  def dim(self) -> int:
    """Embedding width D."""

  @property
  @abc.abstractmethod
  def image_params(self) -> Any:
    """The image tower's parameter pytree (argument of `image_apply`)."""

  @abc.abstractmethod
  def image_features(self, images: Any) -> jax.Array:
    """[B, H, W, 3] in [0, 1] -> [B, D], unnormalised."""

  @abc.abstractmethod
  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    """Texts -> [T, L] token ids in the text tower's fixed layout."""

  @abc.abstractmethod
  def text_features_from_ids(self, ids: Any) -> jax.Array:
    """[T, L] ids -> [T, D], unnormalised."""

  # ---------------------------------------------------------------- embeddings
  def _check_images(self, images: Any) -> jax.Array:
    shape = getattr(images, "shape", None)
    if shape is None or len(shape) != 4 or shape[-1] != 3:
      raise SpaeInputError(f"images must be a [B, H, W, 3] array (NHWC RGB), got shape {shape}.")
    dtype = np.dtype(images.dtype)
    if not np.issubdtype(dtype, np.floating):
      raise SpaeInputError(f"images must be floating point in [0, 1], got dtype {dtype}; divide uint8 by 255.")
    if not isinstance(images, jax.core.Tracer):
      lo, hi = float(jnp.min(images)), float(jnp.max(images))
      if lo < -0.01 or hi > 1.01:
        raise SpaeInputError(f"images must lie in [0, 1]; got values in [{lo:.3g}, {hi:.3g}].")
    return jnp.asarray(images)

  def image_embeddings(self, images: Any, *, normalize: bool = True) -> jax.Array:
    """[B, H, W, 3] float in [0, 1] -> [B, D] (L2-normalised unless normalize=False)."""
    z = self.image_features(images)
    return l2_normalize(z) if normalize else z

  def text_embeddings(self, texts: Sequence[str], *, normalize: bool = True) -> jax.Array:
    """Texts -> [T, D] (L2-normalised unless normalize=False), run in fixed-size batches."""
    if isinstance(texts, str):
      raise SpaeInputError("text_embeddings takes a list of strings, not a single string.")
    texts = list(texts)
    if not texts:
      return jnp.zeros((0, self.dim), jnp.float32)
    # One compiled shape for big inputs; small inputs pad to a power of two >= 8 (few shapes, little waste).
    size = min(self.text_batch_size, max(8, 1 << (len(texts) - 1).bit_length()))
    out = []
    for start in range(0, len(texts), size):
      chunk = texts[start:start + size]
      ids = self.tokenize(chunk + [chunk[-1]] * (size - len(chunk)))
      self.text_tower_calls += 1
      out.append(self.text_features_from_ids(ids)[:len(chunk)])
    z = jnp.concatenate(out) if len(out) > 1 else out[0]
    return l2_normalize(z) if normalize else z

  # ---------------------------------------------------------------- vocabulary relevance
  def cache_key(self, vocabulary: Vocabulary, templates: Sequence[str] | None = None) -> str:
    """Hash of (vocabulary fingerprint, the teacher's text identity, templates): names the cached embedding file."""
    templates = _check_templates(templates)
    blob = json.dumps({"format": CACHE_FORMAT, "vocab": vocabulary.fingerprint(), "teacher": self.text_identity,
                       "templates": list(templates)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]

  def cache_path(self, vocabulary: Vocabulary, templates: Sequence[str] | None = None,
                 cache_dir: str | os.PathLike | None = None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else self.cache_dir or default_cache_dir()
    return root / "teacher_text" / f"{self.kind}-{self.cache_key(vocabulary, templates)}.npz"

  def vocabulary_embeddings(self, vocabulary: Vocabulary, templates: Sequence[str] | None = None, *,
                            cache_dir: str | os.PathLike | None = None, use_cache: bool = True) -> np.ndarray:
    """[V, D] float32, row k = normalised mean over templates of the normalised embedding of
    `template.format(word_k)`, word_k = `vocabulary.words([k])[0]`. Read from / written to the disk cache."""
    templates = _check_templates(templates)
    key = self.cache_key(vocabulary, templates)
    path = self.cache_path(vocabulary, templates, cache_dir)
    if use_cache and str(path) in self._memory:
      return self._memory[str(path)]
    table = _read_cache(path, key, (len(vocabulary), self.dim)) if use_cache else None
    if table is None:
      table = self._embed_words(vocabulary.words(range(len(vocabulary))), templates)
      if use_cache:
        with atomic_path(path) as tmp:
          with open(tmp, "wb") as f:
            np.savez(f, embeddings=table, key=np.array(key), identity=np.array(self.identity),
                     templates=np.array(list(templates)))
    if use_cache:
      self._memory[str(path)] = table
    return table

  def _embed_words(self, words: list[str], templates: tuple[str, ...]) -> np.ndarray:
    per = max(1, self.text_batch_size // len(templates))  # words per text batch
    rows = []
    for start in range(0, len(words), per):
      texts = [t.format(w) for w in words[start:start + per] for t in templates]
      z = self.text_embeddings(texts).reshape(-1, len(templates), self.dim)
      rows.append(np.asarray(l2_normalize(z.mean(axis=1))))
    return np.concatenate(rows).astype(np.float32)

  def relevance(self, images: Any, vocabulary: Vocabulary, templates: Sequence[str] | None = None, *,
                cache_dir: str | os.PathLike | None = None) -> jax.Array:
    """[B, V]: cosine similarity of each image's embedding with every vocabulary word's text embedding."""
    table = self.vocabulary_embeddings(vocabulary, templates, cache_dir=cache_dir)
    return self.image_embeddings(images) @ jnp.asarray(table).T

  def relevance_fn(self, vocabulary: Vocabulary, templates: Sequence[str] | None = None, *,
                   cache_dir: str | os.PathLike | None = None) -> RelevanceFn:
    """A jittable, pytree `images -> [B, V]` holding the image-tower params and the cached [V, D] matrix."""
    table = self.vocabulary_embeddings(vocabulary, templates, cache_dir=cache_dir)
    return RelevanceFn(self.image_params, jnp.asarray(table), type(self).image_apply, self.config)


def _check_templates(templates: Sequence[str] | None) -> tuple[str, ...]:
  templates = DEFAULT_TEMPLATES if templates is None else tuple(templates)
  if isinstance(templates, str) or not templates:
    raise SpaeInputError("templates must be a non-empty list of strings such as ['a photo of a {}.'].")
  for t in templates:
    if not isinstance(t, str) or t.count("{}") != 1:
      raise SpaeInputError(f"template {t!r} must contain exactly one '{{}}' placeholder for the word.")
  return templates


def _read_cache(path: Path, key: str, shape: tuple[int, int]) -> np.ndarray | None:
  """The cached table, or None when absent, unreadable or not matching (then it is recomputed)."""
  if not path.is_file():
    return None
  try:
    with np.load(path, allow_pickle=False) as f:
      if str(f["key"]) != key or f["embeddings"].shape != shape:
        return None
      return np.asarray(f["embeddings"], np.float32)
  except (OSError, ValueError, KeyError):
    return None
