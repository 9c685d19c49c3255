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

from spae import _images
from spae._codebook import CodebookConfig
from spae._io import SpaeInputError, atomic_path
from spae._nets import Autoencoder, AutoencoderConfig
from spae._pyramid import PyramidSpec, reconstruct_from_ids, saq_quantize
from spae._vocab import Vocabulary

TOKENIZER_FORMAT = 1
_FILES = ("config.json", "params")
# A bundle may name a shipped vocabulary instead of carrying a copy (the default tokenizer does, to stay small).
VOCAB_REF = "vocab.ref.json"


@dataclasses.dataclass(frozen=True)
class TokenizerConfig:
  """Everything needed to rebuild a tokenizer's networks (stored as config.json).

  Attributes:
    image_size: side of the square images the networks take.
    autoencoder: encoder/decoder shape; `latent_dim` must equal the code dimension (the vocabulary's
      dimension for 'raw'/'normalized' codebook scoring, `codebook.dim` otherwise).
    codebook: how the frozen table is scored against the encoder's output (spae._codebook).
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

  @property
  def latent_size(self) -> int:
    return self.image_size // self.autoencoder.downsample_factor

  def validate(self, vocab_dim: int | None = None) -> None:
    f = self.autoencoder.downsample_factor
    if self.image_size % f:
      raise SpaeInputError(f"image_size {self.image_size} is not divisible by the downsample factor {f}.")
    self.pyramid.check_latent(self.latent_size, self.latent_size)
    if vocab_dim is not None and self.codebook.latent_dim(vocab_dim) != self.autoencoder.latent_dim:
      raise SpaeInputError(f"autoencoder.latent_dim={self.autoencoder.latent_dim} but {self.codebook.mode!r} "
                           f"codebook scoring of a {vocab_dim}-dim vocabulary gives "
                           f"{self.codebook.latent_dim(vocab_dim)}-dim codes; they must be equal.")
    if self.fit not in ("center_crop", "resize", "reject"):
      raise SpaeInputError(f"fit must be 'center_crop', 'resize' or 'reject', got {self.fit!r}.")

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def make_autoencoder(self, vocab_shape: tuple[int, int], rngs: nnx.Rngs) -> Autoencoder:
    """The networks (and codebook map) for a vocabulary table of shape (V, D)."""
    return Autoencoder(self.autoencoder, rngs=rngs, codebook=self.codebook, vocab_shape=tuple(vocab_shape))

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "TokenizerConfig":
    d = dict(d)
    ae = d.pop("autoencoder", {})
    py = d.pop("pyramid", {})
    cb = CodebookConfig(**d.pop("codebook", {}))
    ae = AutoencoderConfig(**{**ae, "channel_multipliers": tuple(ae.get("channel_multipliers", (1, 2, 2, 4)))})
    py = PyramidSpec(**{**py, "grids": tuple(py.get("grids", PyramidSpec().grids))})
    return cls(autoencoder=ae, pyramid=py, codebook=cb, **d)


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
    self.ids = [np.asarray(a, dtype=np.int32) for a in self.ids]
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
    out: dict[str, Any] = {"format": TOKENIZER_FORMAT, "grids": list(self.grids),
                           "ids": [a.tolist() for a in self.ids]}
    if self.vocabulary is not None:
      out["vocabulary"] = self.vocabulary.fingerprint()
      out["words"] = [self.words(l) for l in range(1, self.num_layers + 1)]
    return out

  @classmethod
  def from_json(cls, obj: dict[str, Any] | str, vocabulary: Vocabulary | None = None) -> "TokenPyramid":
    if isinstance(obj, str):
      obj = json.loads(obj)
    if not isinstance(obj, dict) or "ids" not in obj:
      raise SpaeInputError("token JSON must be an object with an 'ids' list (as written by `spae encode --json`).")
    if obj.get("format", TOKENIZER_FORMAT) != TOKENIZER_FORMAT:
      raise SpaeInputError(f"token JSON format {obj.get('format')} is not supported (expected {TOKENIZER_FORMAT}).")
    if vocabulary is not None and obj.get("vocabulary") not in (None, vocabulary.fingerprint()):
      raise SpaeInputError("these tokens were made with a different vocabulary than the given tokenizer's "
                           f"({obj.get('vocabulary')} vs {vocabulary.fingerprint()}).")
    try:
      ids = [np.asarray(a, dtype=np.int32) for a in obj["ids"]]
    except (TypeError, ValueError) as e:
      raise SpaeInputError(f"token JSON 'ids' is malformed: {e}") from e
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
    self.config = config
    self.vocabulary = vocabulary
    self.model = model if model is not None else config.make_autoencoder(vocabulary.embeddings.shape, nnx.Rngs(seed))
    self.table = jnp.asarray(vocabulary.embeddings)
    self._encode_fn = None
    self._decode_fns: dict[int, Any] = {}
    self.refresh()

  @property
  def codebook(self) -> jax.Array:
    """[V, d] the codes the quantizer searches: the frozen table as scored by `config.codebook`."""
    return self._codes

  # ------------------------------------------------------------------ encode / decode
  def preprocess(self, images: Any) -> tuple[np.ndarray, bool]:
    """Images -> float [B, S, S, 3] in [0, 1] at the tokenizer's size (see `TokenizerConfig.fit`)."""
    x, single = _images.as_float_batch(images)
    return _images.fit_to_size(x, self.config.image_size, self.config.fit), single

  def encode(self, images: Any) -> TokenPyramid:
    x, _ = self.preprocess(images)
    if self._encode_fn is None:
      spec, chunk = self.config.pyramid, self.config.vocab_chunk

      @jax.jit
      def fn(state, codebook, x):
        model = nnx.merge(self._graphdef, state)
        z = model.encoder(x * 2.0 - 1.0)
        ids, _ = saq_quantize(z, codebook, spec, vocab_chunk=chunk)
        return ids

      self._encode_fn = fn
    ids = self._encode_fn(self._state, self.codebook, jnp.asarray(x))
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
      def fn(state, codebook, ids):
        model = nnx.merge(self._graphdef, state)
        r = reconstruct_from_ids(ids, codebook, hw)[-1]
        return jnp.clip((model.decoder(r) + 1.0) / 2.0, 0.0, 1.0)

      self._decode_fns[k] = fn
    out = self._decode_fns[k](self._state, self.codebook, [jnp.asarray(a) for a in pyr.ids[:k]])
    return np.asarray(out)

  def refresh(self) -> None:
    """Re-reads the model's parameters after they were changed in place (e.g. by training)."""
    self._graphdef, self._state = nnx.split(self.model)
    graphdef = self._graphdef
    self._codes = jax.jit(lambda state, table: nnx.merge(graphdef, state).codes(table))(self._state, self.table)

  # ------------------------------------------------------------------ persistence
  def save(self, directory: str | os.PathLike) -> Path:
    """Writes config.json, params/ (orbax) and vocab/ atomically: a crash leaves no half bundle."""
    import orbax.checkpoint as ocp

    directory = Path(directory)
    with atomic_path(directory) as tmp:
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
    import orbax.checkpoint as ocp

    directory = Path(directory)
    if not directory.is_dir():
      raise SpaeInputError(f"tokenizer directory {str(directory)!r} does not exist.")
    for name in _FILES + (("vocab",) if not (directory / VOCAB_REF).is_file() else ()):
      if not (directory / name).exists():
        raise SpaeInputError(f"tokenizer directory {directory} is missing {name!r}; "
                             "it is incomplete or not a spae tokenizer (save one with Tokenizer.save).")
    try:
      meta = json.loads((directory / "config.json").read_text())
    except json.JSONDecodeError as e:
      raise SpaeInputError(f"{directory}/config.json is not valid JSON: {e}") from e
    if meta.get("kind") != "spae-tokenizer" or meta.get("format") != TOKENIZER_FORMAT:
      raise SpaeInputError(f"{directory} holds tokenizer format {meta.get('format')!r} "
                           f"(kind {meta.get('kind')!r}); this spae reads format {TOKENIZER_FORMAT}. "
                           "Re-export it with a matching spae version.")
    config = TokenizerConfig.from_dict(meta["config"])
    vocab = _load_vocab(directory)
    if meta.get("vocabulary") != vocab.fingerprint():
      raise SpaeInputError(f"{directory}: vocab/ does not match the vocabulary recorded in config.json.")
    abstract = nnx.eval_shape(lambda: config.make_autoencoder(vocab.embeddings.shape, nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    target = nnx.state(abstract, nnx.Param).to_pure_dict()
    try:
      restored = ocp.StandardCheckpointer().restore((directory / "params").absolute(), target)
    except Exception as e:  # orbax raises many types for shape/structure mismatches
      raise SpaeInputError(f"{directory}/params does not match config.json ({type(e).__name__}: {e}).") from e
    nnx.replace_by_pure_dict(state, restored)
    model = nnx.merge(graphdef, state)
    return cls(config, vocab, model)


def _load_vocab(directory: Path) -> Vocabulary:
  if (directory / "vocab").is_dir():
    return Vocabulary.load(directory / "vocab")
  ref = json.loads((directory / VOCAB_REF).read_text())
  if ref.get("builtin") != "default":
    raise SpaeInputError(f"{directory}/{VOCAB_REF} names an unknown vocabulary {ref.get('builtin')!r}.")
  from spae import assets

  vocab = assets.default_vocabulary()
  if vocab.fingerprint() != ref.get("fingerprint"):
    raise SpaeInputError(f"{directory} was trained on a default vocabulary with fingerprint {ref.get('fingerprint')}, "
                         f"but this spae ships {vocab.fingerprint()}; use the matching spae version.")
  return vocab


def share_default_vocabulary(directory: str | os.PathLike) -> bool:
  """Replaces a bundle's vocab/ copy by a reference to the shipped default vocabulary, if it is that one."""
  from spae import assets

  directory = Path(directory)
  vocab = Vocabulary.load(directory / "vocab")
  if vocab.fingerprint() != assets.default_vocabulary().fingerprint():
    return False
  with atomic_path(directory / VOCAB_REF) as tmp:
    tmp.write_text(json.dumps({"builtin": "default", "fingerprint": vocab.fingerprint()}))
  import shutil

  shutil.rmtree(directory / "vocab")
  return True
