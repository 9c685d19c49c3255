"""Pure jnp building blocks shared by the frozen towers (parameters are plain dicts of arrays)."""

from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp

from spae._io import SpaeInputError

Params = dict[str, Any]


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float) -> jax.Array:
  mean = x.mean(-1, keepdims=True)
  var = jnp.square(x - mean).mean(-1, keepdims=True)
  return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


def quick_gelu(x: jax.Array) -> jax.Array:
  return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "quick_gelu": quick_gelu,
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_fast": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def activation(name: str, where: str) -> str:
  """Validates an activation name from a config (kept as a string so configs stay hashable)."""
  if name not in ACTIVATIONS:
    raise SpaeInputError(f"{where}: unsupported hidden_act {name!r}; supported: {sorted(ACTIVATIONS)}.")
  return name


def l2_normalize(x: jax.Array, eps: float = 1e-12) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(x), -1, keepdims=True), eps * eps))


def attention(q_in: jax.Array, kv_in: jax.Array, p: Params, heads: int,
              mask: jax.Array | None = None) -> jax.Array:
  """Multi-head attention. q_in [B, Lq, D], kv_in [B, Lk, D]; mask bool, broadcastable to [B, H, Lq, Lk].

  p holds q_w/k_w/v_w [D, H*hd], q_b/k_b/v_b [H*hd], o_w [H*hd, D], o_b [D].
  """
  b, lq, _ = q_in.shape
  lk = kv_in.shape[1]
  q = (q_in @ p["q_w"] + p["q_b"]).reshape(b, lq, heads, -1)
  k = (kv_in @ p["k_w"] + p["k_b"]).reshape(b, lk, heads, -1)
  v = (kv_in @ p["v_w"] + p["v_b"]).reshape(b, lk, heads, -1)
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
  if mask is not None:
    # finfo.min (not -inf) as in transformers: a fully masked row stays finite.
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
  w = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, lq, -1)
  return out @ p["o_w"] + p["o_b"]


def mlp(x: jax.Array, p: Params, act: str) -> jax.Array:
  return ACTIVATIONS[act](x @ p["fc1_w"] + p["fc1_b"]) @ p["fc2_w"] + p["fc2_b"]


def encoder(x: jax.Array, layers: Params, *, heads: int, eps: float, act: str, pre_norm: bool,
            mask: jax.Array | None = None) -> jax.Array:
  """A stack of transformer blocks; `layers` holds every tensor with a leading [L] axis (scanned).

  pre_norm: x + attn(ln1(x)); x + mlp(ln2(x))   (CLIP, SigLIP / big_vision ViT)
  post_norm: ln1(x + attn(x)); ln2(x + mlp(x))  (BERT)
  """

  def block(x, p):
    if pre_norm:
      y = layer_norm(x, p["ln1_scale"], p["ln1_bias"], eps)
      x = x + attention(y, y, p, heads, mask)
      x = x + mlp(layer_norm(x, p["ln2_scale"], p["ln2_bias"], eps), p, act)
    else:
      x = layer_norm(x + attention(x, x, p, heads, mask), p["ln1_scale"], p["ln1_bias"], eps)
      x = layer_norm(x + mlp(x, p, act), p["ln2_scale"], p["ln2_bias"], eps)
    return x, None

  x, _ = jax.lax.scan(block, x, layers)
  return x


def patchify(images: jax.Array, patch: int) -> jax.Array:
  """[B, H, W, C] -> [B, (H/p)*(W/p), p*p*C] in (row, col, channel) order, matching an HWIO conv kernel."""
  b, h, w, c = images.shape
  x = images.reshape(b, h // patch, patch, w // patch, patch, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, (h // patch) * (w // patch), patch * patch * c)


def resize(images: jax.Array, size: tuple[int, int], method: str) -> jax.Array:
  """Antialiased resize; a no-op at the target size, so parity inputs pass through untouched."""
  if images.shape[1:3] == tuple(size):
    return images
  return jax.image.resize(images, (images.shape[0], *size, images.shape[3]), method=method, antialias=True)


def resize_short_side_center_crop(images: jax.Array, size: int, method: str) -> jax.Array:
  """CLIP preprocessing geometry: shortest side to `size`, then a central `size` x `size` crop."""
  h, w = images.shape[1:3]
  scale = size / min(h, w)
  nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
  x = resize(images, (nh, nw), method)
  top, left = (nh - size) // 2, (nw - size) // 2
  return x[:, top:top + size, left:left + size]
