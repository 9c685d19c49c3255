"""CLIP (ViT image tower + causal text tower) from an HF-format folder, in pure JAX."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from spae._io import SpaeInputError
from spae.teachers._base import Teacher
from spae.teachers._bpe import CLIPTokenizer
from spae.teachers._layers import activation, encoder, layer_norm, patchify, resize_short_side_center_crop
from spae._tensors import Tensors, open_tensors
from spae.teachers._weights import read_json, stack_layers

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclasses.dataclass(frozen=True)
class CLIPTowerConfig:
  hidden: int
  layers: int
  heads: int
  intermediate: int
  eps: float
  act: str


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
  """The parts of an HF `CLIPConfig` the forward pass needs (hashable: it is a static jit argument)."""

  text: CLIPTowerConfig
  vision: CLIPTowerConfig
  vocab_size: int
  max_length: int  # text max_position_embeddings
  image_size: int
  patch_size: int
  projection_dim: int
  mean: tuple[float, float, float] = OPENAI_MEAN
  std: tuple[float, float, float] = OPENAI_STD

  @classmethod
  def from_hf(cls, cfg: dict, where: str, preprocessor: dict | None = None) -> "CLIPConfig":
    # Defaults are transformers' CLIPTextConfig / CLIPVisionConfig defaults (config.json may omit them).
    t, v = cfg.get("text_config") or {}, cfg.get("vision_config") or {}
    if not isinstance(t, dict) or not isinstance(v, dict):
      raise SpaeInputError(f"{where}: text_config / vision_config must be objects.")

    def tower(c: dict, hidden, inter, layers, heads, name):
      return CLIPTowerConfig(int(c.get("hidden_size", hidden)), int(c.get("num_hidden_layers", layers)),
                             int(c.get("num_attention_heads", heads)), int(c.get("intermediate_size", inter)),
                             float(c.get("layer_norm_eps", 1e-5)),
                             activation(c.get("hidden_act", "quick_gelu"), f"{where} {name}"))

    text = tower(t, 512, 2048, 12, 8, "text_config")
    vision = tower(v, 768, 3072, 12, 12, "vision_config")
    for name, tw in (("text", text), ("vision", vision)):
      if tw.hidden % tw.heads:
        raise SpaeInputError(f"{where}: {name} hidden_size {tw.hidden} is not divisible by {tw.heads} heads.")
    pre = preprocessor or {}
    return cls(text, vision, int(t.get("vocab_size", 49408)), int(t.get("max_position_embeddings", 77)),
               int(v.get("image_size", 224)), int(v.get("patch_size", 32)), int(cfg.get("projection_dim", 512)),
               tuple(float(x) for x in pre.get("image_mean", OPENAI_MEAN)),
               tuple(float(x) for x in pre.get("image_std", OPENAI_STD)))

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2


# ------------------------------------------------------------------------------------------------ weights
def _hf_layers(tf: Tensors, prefix: str, tw: CLIPTowerConfig) -> dict[str, np.ndarray]:
  """transformers' CLIPEncoderLayer tensors -> stacked [L, ...] arrays with [in, out] kernels."""
  d, m = tw.hidden, tw.intermediate
  layers = []
  for i in range(tw.layers):
    p = f"{prefix}.encoder.layers.{i}"
    layer = {
        "ln1_scale": tf.get(f"{p}.layer_norm1.weight", (d,)), "ln1_bias": tf.get(f"{p}.layer_norm1.bias", (d,)),
        "ln2_scale": tf.get(f"{p}.layer_norm2.weight", (d,)), "ln2_bias": tf.get(f"{p}.layer_norm2.bias", (d,)),
        "fc1_w": tf.get(f"{p}.mlp.fc1.weight", (m, d)).T, "fc1_b": tf.get(f"{p}.mlp.fc1.bias", (m,)),
        "fc2_w": tf.get(f"{p}.mlp.fc2.weight", (d, m)).T, "fc2_b": tf.get(f"{p}.mlp.fc2.bias", (d,)),
    }
    for ours, theirs in (("q", "q_proj"), ("k", "k_proj"), ("v", "v_proj"), ("o", "out_proj")):
      layer[f"{ours}_w"] = tf.get(f"{p}.self_attn.{theirs}.weight", (d, d)).T
      layer[f"{ours}_b"] = tf.get(f"{p}.self_attn.{theirs}.bias", (d,))
    layers.append(layer)
  return stack_layers(layers)


def load_clip_params(tf: Tensors, cfg: CLIPConfig) -> dict[str, Any]:
  """{'vision': ..., 'text': ..., 'logit_scale': ...} from transformers' CLIPModel tensor names."""
  dv, dt, p = cfg.vision.hidden, cfg.text.hidden, cfg.patch_size
  vision = {
      "class_embedding": tf.get("vision_model.embeddings.class_embedding", (dv,)),
      # torch conv [D, 3, p, p] -> HWIO [p, p, 3, D] -> [p*p*3, D] to multiply flattened patches.
      "patch_w": tf.get("vision_model.embeddings.patch_embedding.weight", (dv, 3, p, p))
                 .transpose(2, 3, 1, 0).reshape(p * p * 3, dv),
      "pos": tf.get("vision_model.embeddings.position_embedding.weight", (cfg.num_patches + 1, dv)),
      "pre_ln_scale": tf.get("vision_model.pre_layrnorm.weight", (dv,)),
      "pre_ln_bias": tf.get("vision_model.pre_layrnorm.bias", (dv,)),
      "layers": _hf_layers(tf, "vision_model", cfg.vision),
      "post_ln_scale": tf.get("vision_model.post_layernorm.weight", (dv,)),
      "post_ln_bias": tf.get("vision_model.post_layernorm.bias", (dv,)),
      "proj": tf.get("visual_projection.weight", (cfg.projection_dim, dv)).T,
  }
  text = {
      "tok": tf.get("text_model.embeddings.token_embedding.weight", (cfg.vocab_size, dt)),
      "pos": tf.get("text_model.embeddings.position_embedding.weight", (cfg.max_length, dt)),
      "layers": _hf_layers(tf, "text_model", cfg.text),
      "final_ln_scale": tf.get("text_model.final_layer_norm.weight", (dt,)),
      "final_ln_bias": tf.get("text_model.final_layer_norm.bias", (dt,)),
      "proj": tf.get("text_projection.weight", (cfg.projection_dim, dt)).T,
  }
  scale = tf.get("logit_scale").reshape(()) if "logit_scale" in tf else np.float32(np.log(100.0))
  return {"vision": vision, "text": text, "logit_scale": np.asarray(scale, np.float32)}


# ------------------------------------------------------------------------------------------------ forward
def clip_preprocess(cfg: CLIPConfig, images: jax.Array) -> jax.Array:
  """[B, H, W, 3] in [0, 1] -> shortest side resized (bicubic, antialiased) to image_size, centre crop,
  normalised with the checkpoint's mean/std. At exactly image_size x image_size only the normalisation runs."""
  x = resize_short_side_center_crop(images.astype(jnp.float32), cfg.image_size, "cubic")
  return (x - jnp.asarray(cfg.mean)) / jnp.asarray(cfg.std)


def clip_image_features(cfg: CLIPConfig, vision: dict, images: jax.Array) -> jax.Array:
  """[B, H, W, 3] in [0, 1] -> [B, projection_dim] (unnormalised, as `CLIPModel.get_image_features`)."""
  x = patchify(clip_preprocess(cfg, images), cfg.patch_size) @ vision["patch_w"]
  cls = jnp.broadcast_to(vision["class_embedding"], (x.shape[0], 1, x.shape[-1]))
  x = jnp.concatenate([cls, x], axis=1) + vision["pos"]
  tw = cfg.vision
  x = layer_norm(x, vision["pre_ln_scale"], vision["pre_ln_bias"], tw.eps)
  x = encoder(x, vision["layers"], heads=tw.heads, eps=tw.eps, act=tw.act, pre_norm=True)
  pooled = layer_norm(x[:, 0], vision["post_ln_scale"], vision["post_ln_bias"], tw.eps)
  return pooled @ vision["proj"]


def clip_text_features(cfg: CLIPConfig, text: dict, ids: jax.Array, eos_id: int) -> jax.Array:
  """ids [T, L] (BOS ... EOS, padded) -> [T, projection_dim], pooled at the first EOS.

  The causal mask makes positions before the EOS independent of the padding after it, so no padding mask
  is needed.
  """
  length = ids.shape[1]
  x = text["tok"][ids] + text["pos"][:length]
  causal = jnp.tril(jnp.ones((length, length), bool))[None, None]
  tw = cfg.text
  x = encoder(x, text["layers"], heads=tw.heads, eps=tw.eps, act=tw.act, pre_norm=True, mask=causal)
  x = layer_norm(x, text["final_ln_scale"], text["final_ln_bias"], tw.eps)
  eos_pos = jnp.argmax(ids == eos_id, axis=1)
  return x[jnp.arange(ids.shape[0]), eos_pos] @ text["proj"]


_image_jit = jax.jit(clip_image_features, static_argnums=0)
_text_jit = jax.jit(clip_text_features, static_argnums=(0, 3))


class CLIPTeacher(Teacher):
  """OpenAI-style CLIP from an HF folder: config.json, model.safetensors, vocab.json + merges.txt (or
  tokenizer.json), optional preprocessor_config.json (image_mean / image_std).

  Images: float [0, 1] NHWC, any size; resized so the shortest side is `image_size` (bicubic, antialiased),
  centre-cropped and normalised with the checkpoint's mean/std (OpenAI's by default). transformers' processor
  resizes with PIL bicubic, so embeddings of images at other sizes differ slightly from it; at exactly
  `image_size` the two agree to float precision.
  """

  kind = "clip"

  def __init__(self, config: CLIPConfig, params: dict, tokenizer: CLIPTokenizer, *, identity: str,
               cache_dir: str | os.PathLike | None = None, text_batch_size: int = 256):
    super().__init__(cache_dir=cache_dir, text_batch_size=text_batch_size)
    self.config = config
    self.params = jax.tree.map(jnp.asarray, params)
    self.tokenizer = tokenizer
    self._identity = identity

  @classmethod
  def from_pretrained(cls, path: str | os.PathLike, **kw) -> "CLIPTeacher":
    path = Path(path)
    if not path.is_dir():
      raise SpaeInputError(f"CLIP checkpoint folder {str(path)!r} does not exist (expected an HF-format folder "
                           "with config.json, model.safetensors, vocab.json and merges.txt).")
    raw = read_json(path / "config.json", "a CLIP folder needs the HF config.json")
    pre = path / "preprocessor_config.json"
    cfg = CLIPConfig.from_hf(raw, str(path / "config.json"), read_json(pre, "") if pre.is_file() else None)
    tf = open_tensors(path / "model.safetensors" if (path / "model.safetensors").is_file() else path,
                      format="safetensors", dtype=np.float32)
    params = load_clip_params(tf, cfg)
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
      tok = CLIPTokenizer.from_files(path / "vocab.json", path / "merges.txt", max_length=cfg.max_length)
    elif (path / "tokenizer.json").is_file():
      tok = CLIPTokenizer.from_tokenizer_json(path / "tokenizer.json", max_length=cfg.max_length)
    else:
      raise SpaeInputError(f"{path}: no CLIP tokenizer files; expected vocab.json + merges.txt or tokenizer.json.")
    if max(tok.vocab.values()) >= cfg.vocab_size:
      raise SpaeInputError(f"{path}: tokenizer ids reach {max(tok.vocab.values())} but the text tower has "
                           f"{cfg.vocab_size} embeddings; tokenizer and weights do not match.")
    identity = f"clip-{tf.fingerprint()}-{cfg.image_size}"
    return cls(cfg, params, tok, identity=identity, **kw)

  @property
  def identity(self) -> str:
    return self._identity

  @property
  def dim(self) -> int:
    return self.config.projection_dim

  @property
  def image_params(self) -> Any:
    return self.params["vision"]

  image_apply = staticmethod(clip_image_features)

  def image_features(self, images: Any) -> jax.Array:
    return _image_jit(self.config, self.params["vision"], self._check_images(images))

  def tokenize(self, texts: Sequence[str]) -> np.ndarray:
    return self.tokenizer(texts)

  def text_features_from_ids(self, ids: Any) -> jax.Array:
    """[T, L] token ids (BOS ... EOS, EOS-padded) -> [T, projection_dim] unnormalised."""
    return _text_jit(self.config, self.params["text"], jnp.asarray(ids, jnp.int32), self.tokenizer.eos_id)

  @property
  def logit_scale(self) -> float:
    return float(np.exp(self.params["logit_scale"]))

