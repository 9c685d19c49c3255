"""MAGVIT-style 2-D CNN encoder/decoder and a StyleGAN-style discriminator (flax.nnx).

Images inside the networks are NHWC floats in [-1, 1].
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import nnx

from spae._codebook import Codebook, CodebookConfig, unit_rows
from spae._head import SemanticHead


@dataclasses.dataclass(frozen=True)
class AutoencoderConfig:
  """Encoder/decoder shape.

  Attributes:
    channels: base filters.
    channel_multipliers: one entry per resolution level; len-1 average-pool downsamplings, so the latent
      is image_size / 2**(len-1).
    num_res_blocks: residual blocks per level (and in the middle).
    latent_dim: codebook dimension d (set from the vocabulary).
    norm_groups: GroupNorm groups (reduced to a divisor of the channel count where needed).
    pixel_skip: add a linear patch path around each network: the encoder adds a 1×1 map of the f×f pixel
      patch under each latent cell, the decoder adds a 3×3 map of the latent to f×f×3 pixel patches. The
      convolutions then learn a residual over a linear patch codec, which a 16×16 thumbnail already is.
    lean_upsample: each decoder upsampling convolution outputs the next level's width instead of keeping its
      input's. With channels 32 and multipliers (1, 2, 2) at 64 px the last one then maps 64→32 channels at full
      resolution and the last level's block needs no shortcut: 28% fewer decoder FLOPs (873 → 630 MFLOP per image).
    semantic_head: the base width of a semantic head (`spae._head.SemanticHead`) that chooses the semantic layers'
      words from the pixels; 0: none (those layers take their nearest codes). Added to a trained tokenizer by
      `spae.train.add_semantic_head`.
  """

  channels: int = 128
  channel_multipliers: tuple[int, ...] = (1, 1, 2, 2, 4)
  num_res_blocks: int = 2
  latent_dim: int = 256
  norm_groups: int = 32
  pixel_skip: bool = False
  lean_upsample: bool = False
  semantic_head: int = 0

  @property
  def downsample_factor(self) -> int:
    return 2 ** (len(self.channel_multipliers) - 1)


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
  channels: int = 64
  channel_multipliers: tuple[int, ...] = (2, 4, 4, 4)
  blur: bool = True


def _groups(ch: int, want: int) -> int:
  return math.gcd(ch, want)


class ResBlock(nnx.Module):
  """Pre-activation GN→swish→conv3×3 twice; the 1×1 shortcut is applied to the block *input* (MAGVIT fix)."""

  def __init__(self, cin: int, cout: int, groups: int, *, rngs: nnx.Rngs):
    self.norm1 = nnx.GroupNorm(cin, num_groups=_groups(cin, groups), rngs=rngs)
    self.conv1 = nnx.Conv(cin, cout, (3, 3), use_bias=False, rngs=rngs)
    self.norm2 = nnx.GroupNorm(cout, num_groups=_groups(cout, groups), rngs=rngs)
    self.conv2 = nnx.Conv(cout, cout, (3, 3), use_bias=False, rngs=rngs)
    self.shortcut = nnx.Conv(cin, cout, (1, 1), use_bias=False, rngs=rngs) if cin != cout else None

  def __call__(self, x: jax.Array) -> jax.Array:
    h = self.conv1(nnx.swish(self.norm1(x)))
    h = self.conv2(nnx.swish(self.norm2(h)))
    residual = self.shortcut(x) if self.shortcut is not None else x
    return residual + h


def avg_pool2(x: jax.Array) -> jax.Array:
  b, h, w, c = x.shape
  return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))


def space_to_depth(x: jax.Array, f: int) -> jax.Array:
  """[B, H, W, C] -> [B, H/f, W/f, f·f·C]: each cell holds its f×f patch."""
  b, h, w, c = x.shape
  return x.reshape(b, h // f, f, w // f, f, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h // f, w // f, f * f * c)


def depth_to_space(x: jax.Array, f: int) -> jax.Array:
  """Inverse of `space_to_depth`."""
  b, h, w, k = x.shape
  c = k // (f * f)
  return x.reshape(b, h, w, f, f, c).transpose(0, 1, 3, 2, 4, 5).reshape(b, h * f, w * f, c)


def upsample2(x: jax.Array) -> jax.Array:
  # Nearest resize + conv instead of ConvTranspose: the latter's gradient is ~5x slower on XLA:CPU.
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


class Encoder(nnx.Module):
  """[B, H, W, 3] in [-1, 1] -> [B, H/f, W/f, latent_dim]."""

  def __init__(self, cfg: AutoencoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    ch = cfg.channels
    self.conv_in = nnx.Conv(3, ch * cfg.channel_multipliers[0], (3, 3), rngs=rngs)
    blocks = []
    cin = ch * cfg.channel_multipliers[0]
    for mult in cfg.channel_multipliers:
      level = []
      for _ in range(cfg.num_res_blocks):
        level.append(ResBlock(cin, ch * mult, cfg.norm_groups, rngs=rngs))
        cin = ch * mult
      blocks.append(nnx.List(level))
    self.levels = nnx.List(blocks)
    self.mid = nnx.List([ResBlock(cin, cin, cfg.norm_groups, rngs=rngs) for _ in range(cfg.num_res_blocks)])
    self.norm_out = nnx.GroupNorm(cin, num_groups=_groups(cin, cfg.norm_groups), rngs=rngs)
    self.proj = nnx.Conv(cin, cfg.latent_dim, (1, 1), rngs=rngs)  # to the codebook dimension
    f = cfg.downsample_factor
    self.patch_in = nnx.Conv(3 * f * f, cfg.latent_dim, (1, 1), rngs=rngs) if cfg.pixel_skip else None

  def __call__(self, x: jax.Array) -> jax.Array:
    skip = self.patch_in(space_to_depth(x, self.cfg.downsample_factor)) if self.patch_in is not None else 0.0
    h = self.conv_in(x)
    for i, level in enumerate(self.levels):
      for block in level:
        h = block(h)
      if i < len(self.levels) - 1:
        h = avg_pool2(h)
    for block in self.mid:
      h = block(h)
    return self.proj(nnx.swish(self.norm_out(h))) + skip


class Decoder(nnx.Module):
  """[B, h, w, latent_dim] -> [B, h·f, w·f, 3] (unbounded; ~[-1, 1] after training)."""

  def __init__(self, cfg: AutoencoderConfig, *, rngs: nnx.Rngs):
    self.cfg = cfg
    ch = cfg.channels
    cin = ch * cfg.channel_multipliers[-1]
    self.proj = nnx.Conv(cfg.latent_dim, cin, (1, 1), rngs=rngs)  # from the codebook dimension
    self.conv_in = nnx.Conv(cin, cin, (3, 3), rngs=rngs)
    self.mid = nnx.List([ResBlock(cin, cin, cfg.norm_groups, rngs=rngs) for _ in range(cfg.num_res_blocks)])
    levels, ups = [], []
    mults = tuple(reversed(cfg.channel_multipliers))
    for i, mult in enumerate(mults):
      level = []
      for _ in range(cfg.num_res_blocks):
        level.append(ResBlock(cin, ch * mult, cfg.norm_groups, rngs=rngs))
        cin = ch * mult
      levels.append(nnx.List(level))
      if i < len(mults) - 1:
        cout = ch * mults[i + 1] if cfg.lean_upsample else cin
        ups.append(nnx.Conv(cin, cout, (3, 3), rngs=rngs))
        cin = cout
    self.levels = nnx.List(levels)
    self.up_convs = nnx.List(ups)
    self.norm_out = nnx.GroupNorm(cin, num_groups=_groups(cin, cfg.norm_groups), rngs=rngs)
    self.conv_out = nnx.Conv(cin, 3, (3, 3), rngs=rngs)
    f = cfg.downsample_factor
    self.patch_out = nnx.Conv(cfg.latent_dim, 3 * f * f, (3, 3), rngs=rngs) if cfg.pixel_skip else None

  def __call__(self, z: jax.Array) -> jax.Array:
    skip = depth_to_space(self.patch_out(z), self.cfg.downsample_factor) if self.patch_out is not None else 0.0
    h = self.conv_in(self.proj(z))
    for block in self.mid:
      h = block(h)
    for i, level in enumerate(self.levels):
      for block in level:
        h = block(h)
      if i < len(self.up_convs):
        h = self.up_convs[i](upsample2(h))
    return self.conv_out(nnx.swish(self.norm_out(h))) + skip


class SemanticPool(nnx.Module):
  """Attention weights that pool each block of a grid into one value (the pooled layers' quantization input).

    s_p = β·‖z_p − z̄_c‖² + v·tanh(A [z_p ; z_p − z̄_c] + b),   a_p = softmax_{p in c}(s_p)

  with z̄_c the mean of p's block c, so a position scores by what it is and by how it differs from its block (an
  object against its background). The scorer reads stopped latents: it learns where to look (from the semantic
  loss) and never moves the encoder. v starts at zero and β at `contrast`, so the weights start as a contrast
  pooling (toward what differs from the block's mean); `contrast=0` starts from the block mean itself.
  """

  def __init__(self, dim: int, hidden: int, *, contrast: float = 1.0, rngs: nnx.Rngs):
    self.hidden = nnx.Linear(2 * dim, hidden, rngs=rngs)
    self.score = nnx.Linear(hidden, 1, use_bias=False, kernel_init=nnx.initializers.zeros, rngs=rngs)
    self.contrast = nnx.Param(jnp.asarray(contrast, jnp.float32))

  def __call__(self, z: jax.Array, grid: int) -> jax.Array:
    """[B, H, W, d] -> [B, H, W] weights summing to 1 over every block of the grid×grid partition."""
    z = jax.lax.stop_gradient(z)
    b, h, w, d = z.shape
    blocks = z.reshape(b, grid, h // grid, grid, w // grid, d)
    mean = jnp.broadcast_to(blocks.mean(axis=(2, 4), keepdims=True), blocks.shape).reshape(z.shape)
    dev = z - mean
    s = self.contrast.value * jnp.sum(dev * dev, axis=-1) \
        + self.score(jnp.tanh(self.hidden(jnp.concatenate([z, dev], axis=-1))))[..., 0]
    s = s.reshape(b, grid, h // grid, grid, w // grid).transpose(0, 1, 3, 2, 4).reshape(b, grid, grid, -1)
    a = jax.nn.softmax(s, axis=-1)
    return a.reshape(b, grid, grid, h // grid, w // grid).transpose(0, 1, 3, 2, 4).reshape(b, h, w)


class Autoencoder(nnx.Module):
  """Encoder, decoder, (for trainable codebook scoring) the map from the frozen table to codes, and (for a
  pyramid with pooled layers) the attention pooling of their blocks."""

  def __init__(self, cfg: AutoencoderConfig, *, rngs: nnx.Rngs, codebook: CodebookConfig = CodebookConfig(),
               vocab_shape: tuple[int, int] | None = None, pool_grids: tuple[int, ...] = (),
               pool_hidden: int = 32, pool_contrast: float = 1.0, head_words: int = 0):
    self.encoder = Encoder(cfg, rngs=rngs)
    self.decoder = Decoder(cfg, rngs=rngs)
    self.codebook_mode = codebook.mode
    self.pool_grids = tuple(pool_grids)
    if self.pool_grids:  # only pooled pyramids add it, so other bundles keep their parameter tree
      self.pool = SemanticPool(cfg.latent_dim, pool_hidden, contrast=pool_contrast, rngs=rngs)
    if codebook.trainable:
      if vocab_shape is None:
        raise ValueError(f"codebook mode {codebook.mode!r} needs the vocabulary's shape (V, D).")
      # Only trainable scorings add parameters, so 'raw' bundles keep their parameter tree.
      self.codebook = Codebook(codebook, vocab_shape[0], vocab_shape[1], rngs=rngs)
    if cfg.semantic_head:  # only tokenizers with a head add it, so other bundles keep their parameter tree
      self.head = SemanticHead(cfg.semantic_head, head_words, rngs=rngs)

  def semantic_ranked(self, images: jax.Array) -> jax.Array | None:
    """[B, S] the semantic head's ranking of the sub-vocabulary for images [B, H, W, 3] in [0, 1]; None without
    a head."""
    return self.head.ranked(images) if hasattr(self, "head") else None

  def pool_weights(self, z: jax.Array) -> list[jax.Array] | None:
    """One [B, H, W] attention weight map per pooled layer (grids `pool_grids`), or None without pooled layers."""
    return [self.pool(z, g) for g in self.pool_grids] if self.pool_grids else None

  def codes(self, table: jax.Array) -> jax.Array:
    """The frozen table [V, D] as the codes [V, d] the quantizer searches and the decoder reads."""
    if self.codebook_mode in ("projected", "learned"):
      return self.codebook(table)
    table = jax.lax.stop_gradient(jnp.asarray(table, jnp.float32))
    return unit_rows(table) if self.codebook_mode == "normalized" else table

  def semantic_codes(self, table: jax.Array) -> jax.Array | None:
    """[V, d] the codes of the layers that search the semantic sub-vocabulary, when they have a map of their own
    (`CodebookConfig.semantic_map`); None when those layers use `codes(table)`."""
    return self.codebook.semantic(table) if self.codebook_mode == "projected" else None


def _blur_down(x: jax.Array) -> jax.Array:
  """[1,3,3,1]⊗[1,3,3,1]/64 blur then stride 2 (StyleGAN's anti-aliased downsampling), per channel."""
  k1 = jnp.array([1.0, 3.0, 3.0, 1.0]) / 8.0
  k = jnp.outer(k1, k1).astype(x.dtype)
  c = x.shape[-1]
  kernel = jnp.tile(k[:, :, None, None], (1, 1, 1, c))  # HWIO with feature_group_count=c
  return jax.lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)),
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)


class _DiscBlock(nnx.Module):
  def __init__(self, cin: int, cout: int, blur: bool, *, rngs: nnx.Rngs):
    self.conv1 = nnx.Conv(cin, cin, (3, 3), rngs=rngs)
    self.conv2 = nnx.Conv(cin, cout, (3, 3), rngs=rngs)
    self.skip = nnx.Conv(cin, cout, (1, 1), use_bias=False, rngs=rngs)
    self.blur = blur

  def __call__(self, x: jax.Array) -> jax.Array:
    down = _blur_down if self.blur else avg_pool2
    h = nnx.leaky_relu(self.conv1(x), 0.2)
    h = nnx.leaky_relu(self.conv2(down(h)), 0.2)
    return (h + self.skip(down(x))) / math.sqrt(2.0)


class Discriminator(nnx.Module):
  """StyleGAN-style residual discriminator: [B, H, W, 3] -> logits [B]."""

  def __init__(self, cfg: DiscriminatorConfig, image_size: int, *, rngs: nnx.Rngs):
    ch = cfg.channels
    self.conv_in = nnx.Conv(3, ch, (3, 3), rngs=rngs)
    blocks, cin = [], ch
    for mult in cfg.channel_multipliers:
      blocks.append(_DiscBlock(cin, ch * mult, cfg.blur, rngs=rngs))
      cin = ch * mult
    self.blocks = nnx.List(blocks)
    side = image_size // 2 ** len(cfg.channel_multipliers)
    if side < 1:
      raise ValueError(f"discriminator has too many levels for {image_size}px images.")
    self.conv_out = nnx.Conv(cin, cin, (3, 3), rngs=rngs)
    self.fc = nnx.Linear(cin * side * side, cin, rngs=rngs)
    self.out = nnx.Linear(cin, 1, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    h = nnx.leaky_relu(self.conv_in(x), 0.2)
    for block in self.blocks:
      h = block(h)
    h = nnx.leaky_relu(self.conv_out(h), 0.2)
    h = nnx.leaky_relu(self.fc(h.reshape(h.shape[0], -1)), 0.2)
    return self.out(h)[:, 0]
