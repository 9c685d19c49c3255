"""SigLIP from a big_vision two_towers `.npz` checkpoint, in pure JAX, with its sentencepiece tokenizer."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import string
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from spae._io import SpaeInputError
from spae.teachers._base import Teacher
from spae.teachers._bpe import pad_batch
from spae.teachers._layers import attention, encoder, layer_norm, mlp, patchify, resize
from spae._tensors import Tensors, open_tensors
from spae.teachers._weights import stack_layers

_ACT = "gelu_pytorch_tanh"  # flax nn.gelu defaults to the tanh approximation
_EPS = 1e-6  # flax nn.LayerNorm default
_TOKENIZER_NAMES = ("tokenizer.model", "spiece.model", "sentencepiece.model")


@dataclasses.dataclass(frozen=True)
class SigLIPTowerConfig:
  hidden: int
  layers: int
  heads: int
  mlp: int


@dataclasses.dataclass(frozen=True)
class SigLIPConfig:
  """Architecture read off the checkpoint's tensor shapes (big_vision npz files carry no config)."""

  vision: SigLIPTowerConfig
  text: SigLIPTowerConfig
  image_size: int
  patch_size: int
  vocab_size: int
  max_length: int
  out_dim: int
  pool: str  # image pooling: "map" (SigLIP) or "gap"
  image_head: bool  # an `img/head` Dense after pooling
  text_head: bool


class SigLIPTokenizer:
  """sentencepiece ids in big_vision's SigLIP layout: pieces, then a "sticky" EOS, padded with EOS to
  `max_length` (truncation keeps the EOS last).

  Text is canonicalised first as transformers' `SiglipTokenizer` does: lowercased, ASCII punctuation removed,
  whitespace collapsed (lowercase / strip_punctuation turn these off).
  """

  def __init__(self, model_file: str | os.PathLike, max_length: int, *, lowercase: bool = True,
               strip_punctuation: bool = True):
    import sentencepiece as spm

    model_file = Path(model_file)
    if not model_file.is_file():
      raise SpaeInputError(f"sentencepiece model {str(model_file)!r} does not exist.")
    self.sp = spm.SentencePieceProcessor()
    try:
      self.sp.Load(str(model_file))
    except Exception as e:  # sentencepiece raises OSError / RuntimeError depending on the failure
      raise SpaeInputError(f"{model_file} is not a sentencepiece model ({e}).") from e
    self.eos_id = self.sp.eos_id()
    if self.eos_id < 0:
      raise SpaeInputError(f"{model_file}: the sentencepiece model has no EOS piece; SigLIP needs one.")
    self.pad_id = self.eos_id  # big_vision: tokenize(eos="sticky", pad_value=1) with c4_en's EOS = 1
    self.model_file = model_file
    self.max_length = int(max_length)
    self.lowercase, self.strip_punctuation = lowercase, strip_punctuation
    self._punct = str.maketrans("", "", string.punctuation)

  @property
  def vocab_size(self) -> int:
    return self.sp.GetPieceSize()

  def canonicalize(self, text: str) -> str:
    if self.lowercase:
      text = text.lower()
    if self.strip_punctuation:
      text = text.translate(self._punct)
    return re.sub(r"\s+", " ", text).strip()

  def encode(self, text: str) -> list[int]:
    """Piece ids without EOS."""
    return list(self.sp.EncodeAsIds(self.canonicalize(text)))

  def __call__(self, texts: Sequence[str], max_length: int | None = None) -> np.ndarray:
    # encode() gives pieces without EOS; pad_batch appends it and truncates keeping it last.
    return pad_batch(texts, self.encode, max_length or self.max_length, self.pad_id, self.eos_id)


# ------------------------------------------------------------------------------------------------ weights
def _bv_layers(tf: Tensors, prefix: str, tw: SigLIPTowerConfig, scan: bool) -> dict[str, np.ndarray]:
  """big_vision Encoder1DBlock tensors (`encoderblock_{i}` or scanned `encoderblock` with a leading depth
  axis) -> stacked [L, ...] arrays with [in, out] kernels."""
  d, h, m = tw.hidden, tw.heads, tw.mlp
  hd = d // h
  shapes = {
      "LayerNorm_0/scale": (d,), "LayerNorm_0/bias": (d,), "LayerNorm_1/scale": (d,), "LayerNorm_1/bias": (d,),
      "MlpBlock_0/Dense_0/kernel": (d, m), "MlpBlock_0/Dense_0/bias": (m,),
      "MlpBlock_0/Dense_1/kernel": (m, d), "MlpBlock_0/Dense_1/bias": (d,),
      **{f"MultiHeadDotProductAttention_0/{n}/kernel": (d, h, hd) for n in ("query", "key", "value")},
      **{f"MultiHeadDotProductAttention_0/{n}/bias": (h, hd) for n in ("query", "key", "value")},
      "MultiHeadDotProductAttention_0/out/kernel": (h, hd, d), "MultiHeadDotProductAttention_0/out/bias": (d,),
  }
  if scan:
    raw = {k: tf.get(f"{prefix}/encoderblock/{k}", (tw.layers, *s)) for k, s in shapes.items()}
  else:
    raw = stack_layers([{k: tf.get(f"{prefix}/encoderblock_{i}/{k}", s) for k, s in shapes.items()}
                        for i in range(tw.layers)])
  return _rename_block(raw, tw.layers)


def _rename_block(raw: dict[str, np.ndarray], lead: int) -> dict[str, np.ndarray]:
  """flax names/shapes -> the shared layout of `_layers.encoder` / `attention` (leading axis `lead`)."""
  a = "MultiHeadDotProductAttention_0"
  out = {
      "ln1_scale": raw.get("LayerNorm_0/scale"), "ln1_bias": raw.get("LayerNorm_0/bias"),
      "ln2_scale": raw.get("LayerNorm_1/scale"), "ln2_bias": raw.get("LayerNorm_1/bias"),
      "fc1_w": raw["MlpBlock_0/Dense_0/kernel"], "fc1_b": raw["MlpBlock_0/Dense_0/bias"],
      "fc2_w": raw["MlpBlock_0/Dense_1/kernel"], "fc2_b": raw["MlpBlock_0/Dense_1/bias"],
  }
  for ours, theirs in (("q", "query"), ("k", "key"), ("v", "value")):
    w = raw[f"{a}/{theirs}/kernel"]
    out[f"{ours}_w"] = w.reshape(lead, w.shape[1], -1)  # [L, D, H, hd] -> [L, D, H*hd]
    out[f"{ours}_b"] = raw[f"{a}/{theirs}/bias"].reshape(lead, -1)
  w = raw[f"{a}/out/kernel"]
  out["o_w"] = w.reshape(lead, -1, w.shape[-1])  # [L, H, hd, D] -> [L, H*hd, D]
  out["o_b"] = raw[f"{a}/out/bias"]
  return {k: v for k, v in out.items() if v is not None}


def _depth(tf: Tensors, prefix: str) -> tuple[int, bool]:
  """(number of blocks, scanned?) of the encoder under `prefix`."""
  stacked = f"{prefix}/encoderblock/LayerNorm_0/scale"
  if stacked in tf:
    return int(tf.shape(stacked)[0]), True
  n = 0
  while f"{prefix}/encoderblock_{n}/LayerNorm_0/scale" in tf:
    n += 1
  if n == 0:
    raise SpaeInputError(f"{tf.where}: missing tensor {prefix + '/encoderblock_0/LayerNorm_0/scale'!r}; "
                         "no transformer blocks found. Is this a big_vision SigLIP (two_towers) checkpoint?")
  return n, False


def _heads(tf: Tensors, prefix: str, scan: bool) -> int:
  name = f"{prefix}/encoderblock{'' if scan else '_0'}/MultiHeadDotProductAttention_0/query/kernel"
  shape = tf.get(name).shape
  if len(shape) != (4 if scan else 3):
    raise SpaeInputError(f"{tf.where}: tensor {name!r} has shape {shape}; expected a flax [D, heads, head_dim] "
                         "attention kernel.")
  return int(shape[-2])


def _strip_prefix(tf: Tensors) -> Tensors:
  """Accepts keys with or without big_vision's leading 'params/'."""
  if any(k.startswith("params/") for k in tf.keys()):
    return tf.subset("params/")
  return tf


def load_siglip(tf: Tensors) -> tuple[SigLIPConfig, dict[str, Any]]:
  """Config (from shapes) and params from big_vision two_towers tensors ('img/...', 'txt/...', 't', 'b')."""
  tf = _strip_prefix(tf)
  kernel = tf.get("img/embedding/kernel")
  if kernel.ndim != 4 or kernel.shape[0] != kernel.shape[1] or kernel.shape[2] != 3:
    raise SpaeInputError(f"{tf.where}: tensor 'img/embedding/kernel' has shape {kernel.shape}; expected a "
                         "[patch, patch, 3, width] patch-embedding kernel.")
  p, dv = int(kernel.shape[0]), int(kernel.shape[3])
  pos = tf.get("img/pos_embedding")
  grid = math.isqrt(pos.shape[1]) if pos.ndim == 3 else 0
  if pos.ndim != 3 or pos.shape[0] != 1 or pos.shape[2] != dv or grid * grid != pos.shape[1]:
    raise SpaeInputError(f"{tf.where}: tensor 'img/pos_embedding' has shape {pos.shape}; expected "
                         f"(1, n*n, {dv}) learned position embeddings for a square patch grid.")
  vl, vscan = _depth(tf, "img/Transformer")
  vblock = "img/Transformer/encoderblock" + ("" if vscan else "_0")
  vm = tf.get(f"{vblock}/MlpBlock_0/Dense_0/kernel").shape[-1]
  vision = SigLIPTowerConfig(dv, vl, _heads(tf, "img/Transformer", vscan), int(vm))

  emb = tf.get("txt/Embed_0/embedding")
  if emb.ndim != 2:
    raise SpaeInputError(f"{tf.where}: tensor 'txt/Embed_0/embedding' has shape {emb.shape}; expected [vocab, width].")
  vocab, dt = (int(s) for s in emb.shape)
  tpos = tf.get("txt/pos_embedding")
  if tpos.ndim != 3 or tpos.shape[0] != 1 or tpos.shape[2] != dt:
    raise SpaeInputError(f"{tf.where}: tensor 'txt/pos_embedding' has shape {tpos.shape}; expected (1, length, {dt}).")
  tl, tscan = _depth(tf, "txt/Encoder_0")
  tblock = "txt/Encoder_0/encoderblock" + ("" if tscan else "_0")
  tm = tf.get(f"{tblock}/MlpBlock_0/Dense_0/kernel").shape[-1]
  text = SigLIPTowerConfig(dt, tl, _heads(tf, "txt/Encoder_0", tscan), int(tm))

  pool = "map" if "img/MAPHead_0/probe" in tf else "gap"
  image_head, text_head = "img/head/kernel" in tf, "txt/head/kernel" in tf
  img_out = tf.get("img/head/kernel").shape[1] if image_head else dv
  txt_out = tf.get("txt/head/kernel").shape[1] if text_head else dt
  if img_out != txt_out:
    raise SpaeInputError(f"{tf.where}: image embeddings have width {img_out} but text embeddings {txt_out}; "
                         "the two towers do not share an embedding space.")
  cfg = SigLIPConfig(vision, text, grid * p, p, vocab, int(tpos.shape[1]), int(img_out), pool, image_head, text_head)

  img = {
      "patch_w": kernel.reshape(p * p * 3, dv), "patch_b": tf.get("img/embedding/bias", (dv,)), "pos": pos[0],
      "layers": _bv_layers(tf, "img/Transformer", vision, vscan),
      "norm_scale": tf.get("img/Transformer/encoder_norm/scale", (dv,)),
      "norm_bias": tf.get("img/Transformer/encoder_norm/bias", (dv,)),
  }
  if pool == "map":
    h, hd = vision.heads, dv // vision.heads
    m = "img/MAPHead_0"
    shapes = {
        "LayerNorm_0/scale": (dv,), "LayerNorm_0/bias": (dv,),
        "MlpBlock_0/Dense_0/kernel": (dv, vision.mlp), "MlpBlock_0/Dense_0/bias": (vision.mlp,),
        "MlpBlock_0/Dense_1/kernel": (vision.mlp, dv), "MlpBlock_0/Dense_1/bias": (dv,),
        **{f"MultiHeadDotProductAttention_0/{n}/kernel": (dv, h, hd) for n in ("query", "key", "value")},
        **{f"MultiHeadDotProductAttention_0/{n}/bias": (h, hd) for n in ("query", "key", "value")},
        "MultiHeadDotProductAttention_0/out/kernel": (h, hd, dv), "MultiHeadDotProductAttention_0/out/bias": (dv,),
    }
    raw = {k: tf.get(f"{m}/{k}", s)[None] for k, s in shapes.items()}
    head = {k: v[0] for k, v in _rename_block(raw, 1).items()}
    head["probe"] = tf.get(f"{m}/probe", (1, 1, dv))
    img["map"] = head
  if image_head:
    img["head_w"] = tf.get("img/head/kernel", (dv, img_out))
    img["head_b"] = tf.get("img/head/bias", (img_out,))
  txt = {
      "tok": emb, "pos": tpos[0], "layers": _bv_layers(tf, "txt/Encoder_0", text, tscan),
      "norm_scale": tf.get("txt/Encoder_0/encoder_norm/scale", (dt,)),
      "norm_bias": tf.get("txt/Encoder_0/encoder_norm/bias", (dt,)),
  }
  if text_head:
    txt["head_w"] = tf.get("txt/head/kernel", (dt, txt_out))
    txt["head_b"] = tf.get("txt/head/bias", (txt_out,))
  t = tf.get("t").reshape(-1)[0] if "t" in tf else np.float32(np.log(10.0))
  b = tf.get("b").reshape(-1)[0] if "b" in tf else np.float32(0.0)
  return cfg, {"img": img, "txt": txt, "t": np.float32(t), "b": np.float32(b)}


# ------------------------------------------------------------------------------------------------ forward
def siglip_image_features(cfg: SigLIPConfig, img: dict, images: jax.Array) -> jax.Array:
  """[B, H, W, 3] in [0, 1] -> [B, out_dim] unnormalised. Preprocessing as big_vision's SigLIP:
  resize to image_size x image_size (bilinear, antialiased; skipped at that size), then value range [-1, 1]."""
  x = resize(images.astype(jnp.float32), (cfg.image_size, cfg.image_size), "linear") * 2.0 - 1.0
  x = patchify(x, cfg.patch_size) @ img["patch_w"] + img["patch_b"] + img["pos"]
  tw = cfg.vision
  x = encoder(x, img["layers"], heads=tw.heads, eps=_EPS, act=_ACT, pre_norm=True)
  x = layer_norm(x, img["norm_scale"], img["norm_bias"], _EPS)
  if cfg.pool == "map":
    m = img["map"]
    probe = jnp.broadcast_to(m["probe"], (x.shape[0], 1, x.shape[-1]))
    y = attention(probe, x, m, tw.heads)
    x = (y + mlp(layer_norm(y, m["ln1_scale"], m["ln1_bias"], _EPS), m, _ACT))[:, 0]
  else:
    x = x.mean(axis=1)
  if cfg.image_head:
    x = x @ img["head_w"] + img["head_b"]
  return x


def siglip_text_features(cfg: SigLIPConfig, txt: dict, ids: jax.Array) -> jax.Array:
  """ids [T, max_length] -> [T, out_dim] unnormalised; no attention mask (big_vision pads with EOS and
  attends to everything) and the last position is pooled ("last" pooling with a sticky EOS)."""
  x = txt["tok"][ids] + txt["pos"][:ids.shape[1]]
  tw = cfg.text
  x = encoder(x, txt["layers"], heads=tw.heads, eps=_EPS, act=_ACT, pre_norm=True)
  x = layer_norm(x, txt["norm_scale"], txt["norm_bias"], _EPS)[:, -1]
  if cfg.text_head:
    x = x @ txt["head_w"] + txt["head_b"]
  return x


_image_jit = jax.jit(siglip_image_features, static_argnums=0)
_text_jit = jax.jit(siglip_text_features, static_argnums=0)


def find_tokenizer(npz: Path) -> Path:
  """The sentencepiece model beside a checkpoint: `<stem>.model`, tokenizer.model, spiece.model,
  sentencepiece.model, or the folder's only `*.model`."""
  candidates = [npz.with_suffix(".model")] + [npz.parent / n for n in _TOKENIZER_NAMES]
  for c in candidates:
    if c.is_file():
      return c
  others = sorted(npz.parent.glob("*.model"))
  if len(others) == 1:
    return others[0]
  raise SpaeInputError(
      f"no sentencepiece tokenizer found beside {npz}: looked for {[c.name for c in candidates]}"
      + (f" and found several *.model files {[o.name for o in others]}" if others else "")
      + f". Pass it explicitly, e.g. 'siglip:{npz}#tokenizer=/path/to/tokenizer.model'.")


class SigLIPTeacher(Teacher):
  """SigLIP from a big_vision two_towers `.npz` (keys `params/img/...`, `params/txt/...`, `params/t`,
  `params/b`; with or without the `params/` prefix; `encoderblock_{i}` or scanned `encoderblock`).

  Images: float [0, 1] NHWC, any size; resized to the checkpoint's square resolution (bilinear,
  antialiased) and mapped to [-1, 1], as big_vision's `resize|value_range(-1, 1)`.
  Texts: see `SigLIPTokenizer`.
  """

  kind = "siglip"

  def __init__(self, config: SigLIPConfig, params: dict, tokenizer: SigLIPTokenizer, *, identity: str,
               cache_dir: str | os.PathLike | None = None, text_batch_size: int = 256):
    super().__init__(cache_dir=cache_dir, text_batch_size=text_batch_size)
    if tokenizer.vocab_size > config.vocab_size:
      raise SpaeInputError(f"tokenizer {tokenizer.model_file} has {tokenizer.vocab_size} pieces but the text "
                           f"tower has {config.vocab_size} embeddings; they do not belong together.")
    if tokenizer.max_length != config.max_length:
      raise SpaeInputError(f"tokenizer max_length {tokenizer.max_length} != the text tower's {config.max_length} "
                           "positions.")
    self.config = config
    self.params = jax.tree.map(jnp.asarray, params)
    self.tokenizer = tokenizer
    self._identity = identity

  @classmethod
  def from_big_vision(cls, npz: str | os.PathLike, tokenizer: str | os.PathLike | None = None, *,
                      lowercase: bool = True, strip_punctuation: bool = True, **kw) -> "SigLIPTeacher":
    npz = Path(npz)
    tf = open_tensors(npz, format="npz", dtype=np.float32)
    config, params = load_siglip(tf)
    tok_path = Path(tokenizer) if tokenizer is not None else find_tokenizer(npz)
    tok = SigLIPTokenizer(tok_path, config.max_length, lowercase=lowercase, strip_punctuation=strip_punctuation)
    identity = f"siglip-{tf.fingerprint()}-{tok_path.stat().st_size}-{int(lowercase)}{int(strip_punctuation)}"
    return cls(config, params, tok, identity=identity, **kw)

  @property
  def identity(self) -> str:
    return self._identity

  @property
  def dim(self) -> int:
    return self.config.out_dim

  @property
  def image_params(self) -> Any:
    return self.params["img"]

  image_apply = staticmethod(siglip_image_features)

  def image_features(self, images: Any) -> jax.Array:
    return _image_jit(self.config, self.params["img"], self._check_images(images))

  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    return self.tokenizer(texts)

  def text_features_from_ids(self, ids: Any) -> jax.Array:
    return _text_jit(self.config, self.params["txt"], jnp.asarray(ids, jnp.int32))

  @property
  def logit_scale(self) -> float:
    """exp(t): SigLIP's learned temperature (logits = scale * cos + bias)."""
    return float(np.exp(self.params["t"]))

  @property
  def logit_bias(self) -> float:
    return float(self.params["b"])
