"""`Tokenizer`: images <-> a pyramid of frozen-LLM tokens, and the `TokenPyramid` it produces."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from spae import _bundle, _images, _specs, _strict
from spae._bundle import TOKENIZER_FORMAT, VOCAB_REF, is_tokenizer_bundle
from spae._codebook import CodebookConfig
from spae._io import SpaeInputError, atomic_dir, atomic_path
from spae._nets import Autoencoder, AutoencoderConfig
from spae._pyramid import PyramidSpec, pyramid_quantize, reconstruct_from_ids
from spae._token_json import TOKENS_FORMAT, parse_entry
from spae._vocab import Vocabulary


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
  """Everything needed to rebuild a tokenizer's networks (stored as config.json).

  Attributes:
    image_size: side of the square images the networks take.
    autoencoder: encoder/decoder shape; `latent_dim` must equal the code dimension (the vocabulary's
      dimension for 'raw'/'normalized' codebook scoring, `codebook.dim` otherwise).
    codebook: how the frozen table is scored against the encoder's output (spae._codebook).
    quantizer: 'saq' (Streaming Average Quantization, the paper's) or 'rq' (residual sums; an ablation).
    pyramid: token layers; every grid must divide the latent side image_size / downsample_factor.
    fit: how other image sizes are handled: 'center_crop' (default), 'resize' or 'reject'.
    vocab_chunk: vocabulary rows per step of the exact nearest-token search (memory bound).
  """

  image_size: int = 128
  autoencoder: AutoencoderConfig = AutoencoderConfig(channel_multipliers=(1, 2, 2, 4))
  pyramid: PyramidSpec = PyramidSpec()
  fit: str = "center_crop"
  vocab_chunk: int = 8192
  codebook: CodebookConfig = CodebookConfig()
  quantizer: str = "saq"

  @property
  def latent_size(self) -> int:
    return self.image_size // self.autoencoder.downsample_factor

  def validate(self, vocab_dim: int | None = None) -> None:
    if self.quantizer not in ("saq", "rq"):
      raise SpaeInputError(f"quantizer must be 'saq' or 'rq', got {self.quantizer!r}.")
    f = self.autoencoder.downsample_factor
    if self.image_size % f:
      raise SpaeInputError(f"image_size {self.image_size} is not divisible by the downsample factor {f}.")
    self.pyramid.check_latent(self.latent_size, self.latent_size)
    if vocab_dim is not None and self.codebook.latent_dim(vocab_dim) != self.autoencoder.latent_dim:
      raise SpaeInputError(f"autoencoder.latent_dim={self.autoencoder.latent_dim} but {self.codebook.mode!r} "
                           f"codebook scoring of a {vocab_dim}-dim vocabulary gives "
                           f"{self.codebook.latent_dim(vocab_dim)}-dim codes; they must be equal.")
    if self.codebook.semantic_map and not self.pyramid.semantic_layers:
      raise SpaeInputError("codebook.semantic_map needs semantic layers in the pyramid (pyramid.semantic_vocab; "
                           "training sets them with semantic.vocab_size > 0).")
    head = self.autoencoder.semantic_head
    if isinstance(head, bool) or not isinstance(head, int) or head < 0:
      raise SpaeInputError(f"autoencoder.semantic_head must be an integer >= 0, got {head!r}.")
    if head:
      spec = self.pyramid
      blocks = [g * g for g in spec.grids[:spec.semantic_layers]]
      if not spec.semantic_layers or sum(blocks) > len(spec.semantic_vocab) or max(blocks) > 4:
        raise SpaeInputError(f"autoencoder.semantic_head needs semantic layers of at most 4 blocks each and a "
                             f"sub-vocabulary of at least their {sum(blocks)} words; the pyramid has grids "
                             f"{spec.grids[:spec.semantic_layers]} and {len(spec.semantic_vocab)} words.")
    if self.fit not in ("center_crop", "resize", "reject"):
      raise SpaeInputError(f"fit must be 'center_crop', 'resize' or 'reject', got {self.fit!r}.")

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    if not d["pyramid"]["layer_weights"]:  # plain SAQ: config.json as before weights existed, for older readers
      del d["pyramid"]["layer_weights"]
    return d

  def make_autoencoder(self, vocab_shape: tuple[int, int], rngs: nnx.Rngs) -> Autoencoder:
    """The networks (and codebook map) for a vocabulary table of shape (V, D)."""
    spec = self.pyramid
    return Autoencoder(self.autoencoder, rngs=rngs, codebook=self.codebook, vocab_shape=tuple(vocab_shape),
                       pool_grids=spec.grids[:spec.pooled_layers], pool_hidden=spec.pool_hidden,
                       pool_contrast=spec.pool_contrast, head_words=len(spec.semantic_vocab))

  @classmethod
  def from_dict(cls, d: dict[str, Any], where: str = "tokenizer config") -> "TokenizerConfig":
    """From `to_dict()` output (e.g. JSON); unknown keys and wrong types are SpaeInputErrors naming `where`."""
    return _strict.from_dict(cls, d, where, minimums={"num_res_blocks": 0, "semantic_layers": 0,
                                                          "semantic_vocab": 0, "pooled_layers": 0,
                                                          "pool_hidden": 0, "semantic_head": 0, "layer_weights": 0})


@dataclasses.dataclass
class TokenPyramid:
  """SPAE tokens of a batch of images.

  Attributes:
    ids: one int32 [B, s_l, s_l] array of codebook indices per layer, top (layer 1) first.
    vocabulary: the codebook the ids index (needed for words and LLM ids).
  Layers are numbered from 1 (the top, semantic layer), as in the paper.
  """

  ids: list[np.ndarray]
  vocabulary: Vocabulary | None = None

  def __post_init__(self):
    try:
      self.ids = [np.asarray(a, dtype=np.int32) for a in self.ids]
    except (TypeError, ValueError, OverflowError) as e:
      raise SpaeInputError(f"token ids must be int32 arrays [B, s, s] per layer ({type(e).__name__}: {e}).") from None
    if not self.ids:
      raise SpaeInputError("a TokenPyramid needs at least one layer.")
    b = self.ids[0].shape[0]
    for i, a in enumerate(self.ids, 1):
      if a.ndim != 3 or a.shape[0] != b or a.shape[1] != a.shape[2]:
        raise SpaeInputError(f"layer {i} ids must be [B, s, s] with B={b}, got {a.shape}.")
    if self.vocabulary is not None:
      top = max(int(a.max(initial=0)) for a in self.ids)
      if top >= len(self.vocabulary) or min(int(a.min(initial=0)) for a in self.ids) < 0:
        raise SpaeInputError(f"token ids out of range for a vocabulary of {len(self.vocabulary)} entries.")

  @property
  def batch_size(self) -> int:
    return self.ids[0].shape[0]

  @property
  def num_layers(self) -> int:
    return len(self.ids)

  @property
  def grids(self) -> tuple[int, ...]:
    return tuple(a.shape[1] for a in self.ids)

  def __len__(self) -> int:
    return self.batch_size

  def __getitem__(self, i: int | slice) -> "TokenPyramid":
    sl = slice(i, i + 1) if isinstance(i, int) else i
    return TokenPyramid([a[sl] for a in self.ids], self.vocabulary)

  def _check_layers(self, layers: int | None) -> int:
    k = self.num_layers if layers is None else int(layers)
    if not 1 <= k <= self.num_layers:
      raise SpaeInputError(f"layers must be in 1..{self.num_layers}, got {layers}.")
    return k

  def codebook_ids(self, layers: int | None = None) -> np.ndarray:
    """[B, n] codebook indices of the first `layers` layers in reading order (layer by layer, row-major)."""
    k = self._check_layers(layers)
    return np.concatenate([a.reshape(self.batch_size, -1) for a in self.ids[:k]], axis=1)

  def llm_ids(self, layers: int | None = None) -> np.ndarray:
    """[B, n] ids in the LLM's own vocabulary, same order as `codebook_ids`, for prompts."""
    if self.vocabulary is None:
      raise SpaeInputError("this TokenPyramid has no vocabulary attached; LLM ids are unknown.")
    return self.vocabulary.llm_ids[self.codebook_ids(layers)]

  def words(self, layer: int, image: int | None = None) -> list[list[str]] | list[str]:
    """Strings of one layer (1-based) in row-major order: per image, or for one `image`."""
    if self.vocabulary is None:
      raise SpaeInputError("this TokenPyramid has no vocabulary attached; words are unknown.")
    if not 1 <= layer <= self.num_layers:
      raise SpaeInputError(f"layer must be in 1..{self.num_layers}, got {layer}.")
    rows = [self.vocabulary.words(a) for a in self.ids[layer - 1].reshape(self.batch_size, -1)]
    return rows if image is None else rows[image]

  def to_json(self) -> dict[str, Any]:
    out: dict[str, Any] = {"format": TOKENS_FORMAT, "grids": list(self.grids),
                           "ids": [a.tolist() for a in self.ids]}
    if self.vocabulary is not None:
      out["vocabulary"] = self.vocabulary.fingerprint()
      out["words"] = [self.words(l) for l in range(1, self.num_layers + 1)]
    return out

  @classmethod
  def from_json(cls, obj: dict[str, Any] | str, vocabulary: Vocabulary | None = None) -> "TokenPyramid":
    """One entry as written by `to_json`, fully validated (see `spae._token_json.parse_entry`)."""
    if isinstance(obj, str):
      try:
        obj = json.loads(obj)
      except (ValueError, RecursionError) as e:
        raise SpaeInputError(f"token JSON is not valid JSON ({str(e)[:120]}).") from None
    ids, _ = parse_entry(obj, vocab_size=None if vocabulary is None else len(vocabulary),
                         fingerprint=None if vocabulary is None else vocabulary.fingerprint())
    return cls(ids, vocabulary)


class Tokenizer:
  """Encodes images into a `TokenPyramid` over a frozen vocabulary and decodes any prefix of layers.

  Example:
    tok = Tokenizer(TokenizerConfig(...), vocabulary)
    pyr = tok.encode(images)          # uint8 [B,H,W,3] or float [0,1], or one image
    pyr.words(1)                      # top-layer words per image
    imgs = tok.decode(pyr, layers=3)  # float [B,H,W,3] in [0,1]
  """

  def __init__(self, config: TokenizerConfig, vocabulary: Vocabulary, model: Autoencoder | None = None,
               *, seed: int = 0):
    config.validate(vocabulary.dim)
    config.pyramid.check_vocab(len(vocabulary))
    self.config = config
    self.vocabulary = vocabulary
    self.model = model if model is not None else config.make_autoencoder(vocabulary.embeddings.shape, nnx.Rngs(seed))
    self.table = jnp.asarray(vocabulary.embeddings)
    self._encode_fns: dict[int, Any] = {}
    self._decode_fns: dict[int, Any] = {}
    self.refresh()

  @property
  def codebook(self) -> jax.Array:
    """[V, d] the codes the quantizer searches: the frozen table as scored by `config.codebook`."""
    return self._codes

  @property
  def semantic_codebook(self) -> jax.Array | None:
    """[V, d] the codes of the layers that search the semantic sub-vocabulary when they have a map of their own
    (`CodebookConfig.semantic_map`), else None (they use `codebook`)."""
    return self._semantic_codes

  # ------------------------------------------------------------------ encode / decode
  def preprocess(self, images: Any) -> tuple[np.ndarray, bool]:
    """Images -> float [B, S, S, 3] in [0, 1] at the tokenizer's size (see `TokenizerConfig.fit`)."""
    x, single = _images.as_float_batch(images)
    return _images.fit_to_size(x, self.config.image_size, self.config.fit), single

  def encode(self, images: Any, layers: int | None = None) -> TokenPyramid:
    """Images -> their token pyramid; `layers`: only the first k layers (the same ids as a full encode's first k,
    since a layer's target depends only on the layers above it; the search of the fine layers dominates the cost).
    """
    x, _ = self.preprocess(images)
    spec = self.config.pyramid
    k = spec.num_layers if layers is None else layers
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= spec.num_layers:
      raise SpaeInputError(f"layers must be an integer from 1 to {spec.num_layers}, got {layers!r}.")
    k = int(k)
    if k not in self._encode_fns:
      part = spec.prefix(k)
      chunk, quantizer = self.config.vocab_chunk, self.config.quantizer

      @jax.jit
      def fn(state, codebook, semantic, x):
        model = nnx.merge(self._graphdef, state)
        z = model.encoder(x * 2.0 - 1.0)
        ids, _ = pyramid_quantize(z, codebook, part, quantizer, vocab_chunk=chunk,
                                  pool_weights=_pooled_prefix(model.pool_weights(z), part),
                                  semantic_codebook=semantic, semantic_ranked=model.semantic_ranked(x))
        return ids

      self._encode_fns[k] = fn
    ids = self._encode_fns[k](self._state, self.codebook, self.semantic_codebook, jnp.asarray(x))
    return TokenPyramid([np.asarray(a) for a in ids], self.vocabulary)

  def encode_latents(self, images: Any) -> jax.Array:
    """Encoder output z [B, h, w, d] before quantization."""
    x, _ = self.preprocess(images)
    return self.model.encoder(jnp.asarray(x) * 2.0 - 1.0)

  def decode(self, tokens: TokenPyramid | Sequence[Any], layers: int | None = None) -> np.ndarray:
    """Float [B, S, S, 3] images in [0, 1] from the first `layers` layers (default all)."""
    pyr = tokens if isinstance(tokens, TokenPyramid) else TokenPyramid(list(tokens), self.vocabulary)
    k = pyr._check_layers(layers)
    expected = self.config.pyramid.grids[:k]
    if pyr.grids[:k] != expected:
      raise SpaeInputError(f"token grids {pyr.grids[:k]} do not match this tokenizer's pyramid {expected}.")
    if max(int(a.max(initial=0)) for a in pyr.ids[:k]) >= len(self.vocabulary):
      raise SpaeInputError(f"token ids exceed this tokenizer's vocabulary of {len(self.vocabulary)}.")
    if k not in self._decode_fns:
      hw = (self.config.latent_size, self.config.latent_size)

      @jax.jit
      def fn(state, codebook, semantic, ids):
        model = nnx.merge(self._graphdef, state)
        r = reconstruct_from_ids(ids, codebook, hw, mode=self.config.quantizer, semantic_codebook=semantic,
                                 spec=self.config.pyramid)[-1]
        return jnp.clip((model.decoder(r) + 1.0) / 2.0, 0.0, 1.0)

      self._decode_fns[k] = fn
    out = self._decode_fns[k](self._state, self.codebook, self.semantic_codebook,
                              [jnp.asarray(a) for a in pyr.ids[:k]])
    return np.asarray(out)

  def refresh(self) -> None:
    """Re-reads the model's parameters after they were changed in place (e.g. by training)."""
    self._graphdef, self._state = nnx.split(self.model)
    graphdef = self._graphdef
    codes = jax.jit(lambda state, table: (lambda m: (m.codes(table), m.semantic_codes(table)))(
        nnx.merge(graphdef, state)))
    self._codes, self._semantic_codes = codes(self._state, self.table)

  # ------------------------------------------------------------------ persistence
  def save(self, directory: str | os.PathLike) -> Path:
    """Writes config.json, params/ (orbax) and vocab/ atomically: a crash leaves no half bundle.

    `directory` must be new, empty, or an existing tokenizer bundle (which is replaced); any other
    non-empty folder is refused with a SpaeInputError, so no user file is ever removed.
    """
    import orbax.checkpoint as ocp

    directory = Path(directory)
    with atomic_dir(directory, is_tokenizer_bundle, "spae tokenizer bundle") as tmp:
      tmp.mkdir()
      params = nnx.state(self.model, nnx.Param).to_pure_dict()
      ckptr = ocp.StandardCheckpointer()
      ckptr.save((tmp / "params").absolute(), params)
      ckptr.wait_until_finished()
      self.vocabulary.save(tmp / "vocab")
      meta = {"format": TOKENIZER_FORMAT, "kind": "spae-tokenizer", "config": self.config.to_dict(),
              "vocabulary": self.vocabulary.fingerprint()}
      (tmp / "config.json").write_text(json.dumps(meta, indent=1))
    return directory

  @classmethod
  def load(cls, directory: str | os.PathLike) -> "Tokenizer":
    """Reads a bundle written by `save`; any damaged or foreign file is a one-line SpaeInputError naming it."""
    directory = Path(directory)
    _bundle.check_files(directory)
    meta = _bundle.read_meta(directory)
    where = f"{directory / 'config.json'}: config"
    config = TokenizerConfig.from_dict(meta.get("config"), where)
    vocab = _bundle.load_vocab(directory)
    try:
      config.validate(vocab.dim)
    except SpaeInputError as e:
      raise SpaeInputError(f"{where}: {e} Re-export the tokenizer.") from None
    if meta["vocabulary"] != vocab.fingerprint():
      raise SpaeInputError(f"{directory}: its vocabulary does not match the one recorded in config.json; "
                           "re-export the tokenizer.")
    try:
      abstract = nnx.eval_shape(lambda: config.make_autoencoder(vocab.embeddings.shape, nnx.Rngs(0)))
    except Exception as e:  # shape errors from the layer constructors; their types vary
      raise SpaeInputError(f"{where} describes networks that cannot be built ({type(e).__name__}: "
                           f"{str(e)[:100]}); re-export the tokenizer.") from None
    graphdef, state = nnx.split(abstract)
    target = nnx.state(abstract, nnx.Param).to_pure_dict()
    restored = _bundle.restore_params(directory / "params", target)
    nnx.replace_by_pure_dict(state, restored)
    model = nnx.merge(graphdef, state)
    return cls(config, vocab, model)


def _pooled_prefix(weights: list | None, spec: PyramidSpec) -> list | None:
  """The attention weight maps of the pooled layers among a prefix `spec` of the pyramid."""
  return None if weights is None else weights[:spec.pooled_layers]


def share_default_vocabulary(directory: str | os.PathLike, builtin: str = "default") -> bool:
  """Replaces a bundle's vocab/ copy by a reference to a built-in vocabulary ('default', shipped, or
  'gemma3-270m', read from its package), if it is that one. Returns whether the bundle now refers to it (True
  again for a bundle that already does, so an earlier stage's sharing is no error)."""
  directory = Path(directory)
  ref = directory / VOCAB_REF
  if ref.is_file() and not (directory / "vocab").exists():
    return json.loads(ref.read_text()).get("builtin") == builtin
  vocab = Vocabulary.load(directory / "vocab")
  if vocab.fingerprint() != _specs.resolve_builtin("vocab", builtin).fingerprint():
    return False
  with atomic_path(directory / VOCAB_REF) as tmp:
    tmp.write_text(json.dumps({"builtin": builtin, "fingerprint": vocab.fingerprint()}))
  import shutil

  shutil.rmtree(directory / "vocab")
  return True
