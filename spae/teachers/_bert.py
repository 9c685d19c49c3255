"""A BERT / MiniLM sentence encoder (HF safetensors + WordPiece vocab.txt) in pure JAX, with mean pooling."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from spae._io import SpaeInputError
from spae._vocab import Vocabulary
from spae.teachers._layers import activation, encoder, l2_normalize, layer_norm
from spae._tensors import Tensors, open_tensors
from spae.teachers._weights import read_json, stack_layers
from spae.teachers._wordpiece import WordPieceTokenizer


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The parts of an HF `BertConfig` the encoder needs (hashable: a static jit argument)."""

  vocab_size: int
  hidden: int
  layers: int
  heads: int
  intermediate: int
  max_positions: int
  type_vocab_size: int
  eps: float
  act: str

  @classmethod
  def from_hf(cls, cfg: dict, where: str) -> "BertConfig":
    if cfg.get("position_embedding_type", "absolute") != "absolute":
      raise SpaeInputError(f"{where}: position_embedding_type {cfg['position_embedding_type']!r} is not "
                           "supported; only absolute position embeddings.")
    try:
      c = cls(int(cfg["vocab_size"]), int(cfg.get("hidden_size", 768)), int(cfg.get("num_hidden_layers", 12)),
              int(cfg.get("num_attention_heads", 12)), int(cfg.get("intermediate_size", 3072)),
              int(cfg.get("max_position_embeddings", 512)), int(cfg.get("type_vocab_size", 2)),
              float(cfg.get("layer_norm_eps", 1e-12)), activation(cfg.get("hidden_act", "gelu"), where))
    except KeyError as e:
      raise SpaeInputError(f"{where}: missing {e.args[0]!r}; is this a BERT config.json?") from e
    if c.hidden % c.heads:
      raise SpaeInputError(f"{where}: hidden_size {c.hidden} is not divisible by {c.heads} attention heads.")
    return c


def load_bert_params(tf: Tensors, cfg: BertConfig) -> dict[str, Any]:
  """Params from transformers' BertModel names, with or without the `bert.` prefix (sentence-transformers
  saves none) and with `LayerNorm.weight/bias` or the older `LayerNorm.gamma/beta`."""
  pre = "bert." if "bert.embeddings.word_embeddings.weight" in tf else ""
  d, m = cfg.hidden, cfg.intermediate

  def ln(name: str) -> tuple[np.ndarray, np.ndarray]:
    if f"{pre}{name}.weight" not in tf and f"{pre}{name}.gamma" in tf:
      return tf.get(f"{pre}{name}.gamma", (d,)), tf.get(f"{pre}{name}.beta", (d,))
    return tf.get(f"{pre}{name}.weight", (d,)), tf.get(f"{pre}{name}.bias", (d,))

  def dense(name: str, n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    return tf.get(f"{pre}{name}.weight", (n_out, n_in)).T, tf.get(f"{pre}{name}.bias", (n_out,))

  layers = []
  for i in range(cfg.layers):
    p = f"encoder.layer.{i}"
    layer = {}
    for ours, theirs in (("q", "attention.self.query"), ("k", "attention.self.key"),
                         ("v", "attention.self.value"), ("o", "attention.output.dense")):
      layer[f"{ours}_w"], layer[f"{ours}_b"] = dense(f"{p}.{theirs}", d, d)
    layer["fc1_w"], layer["fc1_b"] = dense(f"{p}.intermediate.dense", d, m)
    layer["fc2_w"], layer["fc2_b"] = dense(f"{p}.output.dense", m, d)
    layer["ln1_scale"], layer["ln1_bias"] = ln(f"{p}.attention.output.LayerNorm")
    layer["ln2_scale"], layer["ln2_bias"] = ln(f"{p}.output.LayerNorm")
    layers.append(layer)
  emb_scale, emb_bias = ln("embeddings.LayerNorm")
  return {
      "word": tf.get(f"{pre}embeddings.word_embeddings.weight", (cfg.vocab_size, d)),
      "pos": tf.get(f"{pre}embeddings.position_embeddings.weight", (cfg.max_positions, d)),
      "type": tf.get(f"{pre}embeddings.token_type_embeddings.weight", (cfg.type_vocab_size, d)),
      "emb_ln_scale": emb_scale, "emb_ln_bias": emb_bias,
      "layers": stack_layers(layers),
  }


def bert_hidden_states(cfg: BertConfig, params: dict, ids: jax.Array, mask: jax.Array) -> jax.Array:
  """ids, mask [T, L] (mask 1 = real token) -> last hidden states [T, L, D] (token type 0 throughout)."""
  x = params["word"][ids] + params["pos"][:ids.shape[1]] + params["type"][0]
  x = layer_norm(x, params["emb_ln_scale"], params["emb_ln_bias"], cfg.eps)
  keys = (mask > 0)[:, None, None, :]  # padding is masked as a key only, as in transformers
  return encoder(x, params["layers"], heads=cfg.heads, eps=cfg.eps, act=cfg.act, pre_norm=False, mask=keys)


def bert_embed(cfg: BertConfig, params: dict, ids: jax.Array, mask: jax.Array, normalize: bool = True) -> jax.Array:
  """ids, mask [T, L] -> [T, D]: attention-mask-weighted mean of the last hidden states (sentence-transformers
  pooling), L2-normalised when `normalize`. Pure and jittable (params are an argument)."""
  h = bert_hidden_states(cfg, params, ids, mask)
  w = mask.astype(h.dtype)[..., None]
  pooled = (h * w).sum(1) / jnp.maximum(w.sum(1), 1e-9)
  return l2_normalize(pooled) if normalize else pooled


_hidden_jit = jax.jit(bert_hidden_states, static_argnums=0)
_embed_jit = jax.jit(bert_embed, static_argnums=(0, 4))


class BertTextEncoder:
  """A frozen BERT-family sentence encoder (e.g. sentence-transformers/all-MiniLM-L6-v2).

  Folder layout: config.json, model.safetensors, vocab.txt, optional sentence_bert_config.json
  (`max_seq_length`) and tokenizer_config.json (`do_lower_case`, default true). Tokenization is BERT's
  BasicTokenizer + WordPiece; it is verified for uncased models (lowercase + accent stripping).

  As a text tower: `encode(texts)` gives [T, D] embeddings; `bert_embed(config, params, ids, mask)` is the
  pure function behind it (params is a pytree argument, so it can sit inside a jitted training step);
  `tokenize` gives the (ids, mask) it takes. `vocabulary()` turns the word-embedding table into a codebook.
  """

  def __init__(self, config: BertConfig, params: dict, tokenizer: WordPieceTokenizer, *, normalize: bool = True,
               identity: str = "bert", vocab_file: str | os.PathLike | None = None, batch_size: int = 64):
    self.config = config
    self.params = jax.tree.map(jnp.asarray, params)
    self.tokenizer = tokenizer
    self.normalize = normalize
    self.identity = identity
    self.vocab_file = Path(vocab_file) if vocab_file is not None else None
    self.batch_size = int(batch_size)

  @classmethod
  def from_pretrained(cls, path: str | os.PathLike, *, normalize: bool = True, max_length: int | None = None,
                      **kw) -> "BertTextEncoder":
    path = Path(path)
    if not path.is_dir():
      raise SpaeInputError(f"BERT folder {str(path)!r} does not exist (expected config.json, model.safetensors, "
                           "vocab.txt).")
    cfg = BertConfig.from_hf(read_json(path / "config.json", "a BERT folder needs the HF config.json"),
                             str(path / "config.json"))
    tf = open_tensors(path / "model.safetensors" if (path / "model.safetensors").is_file() else path,
                      format="safetensors", dtype=np.float32)
    params = load_bert_params(tf, cfg)
    if max_length is None:
      st = path / "sentence_bert_config.json"
      max_length = cfg.max_positions
      if st.is_file():
        max_length = int(read_json(st, "").get("max_seq_length", cfg.max_positions))
    if not 2 <= max_length <= cfg.max_positions:
      raise SpaeInputError(f"max_length {max_length} must lie in [2, {cfg.max_positions}] (the position table).")
    tok_cfg = path / "tokenizer_config.json"
    lowercase = bool(read_json(tok_cfg, "").get("do_lower_case", True)) if tok_cfg.is_file() else True
    tok = WordPieceTokenizer.from_file(path / "vocab.txt", max_length=max_length, lowercase=lowercase)
    if len(tok.pieces) > cfg.vocab_size:
      raise SpaeInputError(f"{path}/vocab.txt has {len(tok.pieces)} pieces but the embedding table has "
                           f"{cfg.vocab_size} rows; tokenizer and weights do not match.")
    return cls(cfg, params, tok, normalize=normalize, identity=f"bert-{tf.fingerprint()}",
               vocab_file=path / "vocab.txt", **kw)

  @property
  def dim(self) -> int:
    return self.config.hidden

  apply = staticmethod(bert_embed)

  def tokenize(self, texts: Sequence[str], pad_to: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids, mask) [T, L] int32; see `WordPieceTokenizer.__call__`."""
    return self.tokenizer(texts, pad_to=pad_to)

  def hidden_states(self, ids: Any, mask: Any) -> jax.Array:
    return _hidden_jit(self.config, self.params, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32))

  def embed_ids(self, ids: Any, mask: Any, *, normalize: bool | None = None) -> jax.Array:
    norm = self.normalize if normalize is None else normalize
    return _embed_jit(self.config, self.params, jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32), norm)

  def encode(self, texts: Sequence[str], *, normalize: bool | None = None) -> jax.Array:
    """Texts -> [T, D] mean-pooled (and, by default, L2-normalised) sentence embeddings."""
    if isinstance(texts, str):
      raise SpaeInputError("encode takes a list of strings, not a single string.")
    texts = list(texts)
    if not texts:
      return jnp.zeros((0, self.dim), jnp.float32)
    size = min(self.batch_size, max(8, 1 << (len(texts) - 1).bit_length()))
    out = []
    for start in range(0, len(texts), size):
      chunk = texts[start:start + size]
      ids, mask = self.tokenize(chunk + [""] * (size - len(chunk)))
      out.append(self.embed_ids(ids, mask, normalize=normalize)[:len(chunk)])
    return jnp.concatenate(out) if len(out) > 1 else out[0]

  __call__ = encode
  text_embeddings = encode  # the text-tower half of the `Teacher` interface

  def vocabulary(self) -> Vocabulary:
    """The WordPiece vocabulary with the input word-embedding rows as a frozen codebook."""
    pieces = self.tokenizer.pieces
    table = np.asarray(self.params["word"])[:len(pieces)]
    meta = {"model": self.identity, "row_scale": 1.0}
    if self.vocab_file is not None:
      return Vocabulary.from_wordpiece(self.vocab_file, table, metadata=meta)
    return Vocabulary.from_arrays(pieces, table, metadata={"source": "wordpiece", **meta})
