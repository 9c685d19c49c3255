"""The autoencoder's options: the linear pixel-patch path (pixel_skip), the lean upsampling (lean_upsample), and
the pooled layers' attention scorer."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import spae
from spae._nets import Autoencoder, AutoencoderConfig, depth_to_space, space_to_depth

CFG = AutoencoderConfig(channels=8, channel_multipliers=(1, 2, 2), num_res_blocks=1, latent_dim=48, norm_groups=4,
                        pixel_skip=True)  # latent_dim = 3·4·4: one latent cell can hold its whole 4×4 patch


def test_space_to_depth_is_a_patch_layout_and_depth_to_space_inverts_it():
  x = jnp.arange(2 * 8 * 8 * 3, dtype=jnp.float32).reshape(2, 8, 8, 3)
  cells = space_to_depth(x, 4)
  assert cells.shape == (2, 2, 2, 48)
  np.testing.assert_array_equal(cells[1, 0, 1].reshape(4, 4, 3), x[1, 0:4, 4:8])
  np.testing.assert_array_equal(depth_to_space(cells, 4), x)


def test_the_patch_path_alone_is_a_lossless_linear_codec():
  """With the convolutional paths silenced and identity patch maps, decode(encode(x)) == x: the skip is wired to
  the right pixels in both networks."""
  ae = Autoencoder(CFG, rngs=nnx.Rngs(0))
  eye_in = jnp.eye(48)[None, None]
  eye_out = jnp.zeros((3, 3, 48, 48)).at[1, 1].set(jnp.eye(48))  # a 3×3 conv whose centre tap is the identity
  ae.encoder.patch_in.kernel.value, ae.encoder.patch_in.bias.value = eye_in, jnp.zeros(48)
  ae.decoder.patch_out.kernel.value, ae.decoder.patch_out.bias.value = eye_out, jnp.zeros(48)
  for conv in (ae.encoder.proj, ae.decoder.conv_out):
    conv.kernel.value, conv.bias.value = jnp.zeros_like(conv.kernel.value), jnp.zeros_like(conv.bias.value)
  x = jax.random.uniform(jax.random.key(1), (2, 16, 16, 3), minval=-1.0, maxval=1.0)
  np.testing.assert_allclose(np.asarray(ae.decoder(ae.encoder(x))), np.asarray(x), atol=1e-5)


def test_without_the_skip_there_are_no_patch_parameters_and_old_configs_load():
  plain = Autoencoder(dataclasses.replace(CFG, pixel_skip=False), rngs=nnx.Rngs(0))
  assert plain.encoder.patch_in is None and plain.decoder.patch_out is None
  d = json.loads(json.dumps(spae.TokenizerConfig(image_size=16, autoencoder=CFG).to_dict()))
  del d["autoencoder"]["pixel_skip"]  # a bundle written before the option existed
  assert spae.TokenizerConfig.from_dict(d).autoencoder.pixel_skip is False


def _decoder_flops(cfg: AutoencoderConfig, size: int) -> float:
  """FLOPs of one decoder forward pass on one image, from XLA's cost analysis."""
  ae = Autoencoder(cfg, rngs=nnx.Rngs(0))
  z = jnp.zeros((1, size // cfg.downsample_factor, size // cfg.downsample_factor, cfg.latent_dim))
  graphdef, params = nnx.split(ae.decoder)
  cost = jax.jit(lambda p, z: nnx.merge(graphdef, p)(z)).lower(params, z).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def test_lean_upsampling_narrows_each_upsampling_conv_to_the_next_level_and_old_configs_load():
  lean_cfg = dataclasses.replace(CFG, lean_upsample=True)
  lean, full = Autoencoder(lean_cfg, rngs=nnx.Rngs(0)), Autoencoder(CFG, rngs=nnx.Rngs(0))
  # (1, 2, 2) reversed: 16 → 16 channels, then 16 → 8 at full resolution (the full decoder keeps 16 there).
  assert [c.kernel.value.shape[-1] for c in lean.decoder.up_convs] == [16, 8]
  assert [c.kernel.value.shape[-1] for c in full.decoder.up_convs] == [16, 16]
  z = jax.random.normal(jax.random.key(0), (2, 8, 8, 48))
  assert lean.decoder(z).shape == full.decoder(z).shape == (2, 32, 32, 3)
  # The point of it: the decoder costs about a quarter less (the gemma64 recipes' shape at 64 px: 873 → 630 MFLOP).
  ratio = _decoder_flops(lean_cfg, 32) / _decoder_flops(CFG, 32)
  assert 0.6 < ratio < 0.8, ratio
  d = json.loads(json.dumps(spae.TokenizerConfig(image_size=32, autoencoder=lean_cfg).to_dict()))
  assert spae.TokenizerConfig.from_dict(d).autoencoder.lean_upsample is True
  del d["autoencoder"]["lean_upsample"]  # a bundle written before the option existed
  assert spae.TokenizerConfig.from_dict(d).autoencoder.lean_upsample is False


@pytest.mark.parametrize("skip", [False, True])
def test_output_shapes(skip):
  ae = Autoencoder(dataclasses.replace(CFG, pixel_skip=skip, latent_dim=8), rngs=nnx.Rngs(0))
  z = ae.encoder(jnp.zeros((1, 32, 32, 3)))
  assert z.shape == (1, 8, 8, 8) and ae.decoder(z).shape == (1, 32, 32, 3)


def test_semantic_pool_weights_sum_to_one_per_block_and_start_as_a_contrast_pooling():
  from spae._nets import SemanticPool

  z = np.array(jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 4)))
  z[:, 1, 6] += 3.0  # an outlier in the top-right 4×4 block
  z = jnp.asarray(z)
  flat = SemanticPool(4, 8, contrast=0.0, rngs=nnx.Rngs(0))
  pool = SemanticPool(4, 8, rngs=nnx.Rngs(0))
  for grid in (1, 2, 4):
    a = np.asarray(pool(z, grid))
    assert a.shape == (2, 8, 8)
    np.testing.assert_allclose(a.reshape(2, grid, 8 // grid, grid, 8 // grid).sum((2, 4)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(flat(z, grid)), 1.0 / (8 // grid) ** 2, rtol=1e-5)  # block mean
  # The contrast term starts the weights on what differs from its block's mean.
  a1, a2 = np.asarray(pool(z, 1)), np.asarray(pool(z, 2))
  assert (a1.reshape(2, -1).argmax(1) == 1 * 8 + 6).all() and (a2[:, 1, 6] > 1 / 16).all()


def test_semantic_pool_learns_to_find_an_object_the_block_mean_dilutes():
  """Trained to pool toward a marked position's value, the scorer finds it from the latent (it differs from its
  block), which the block mean cannot: the pooled layers' reason to exist."""
  import optax

  from spae._nets import SemanticPool
  from spae._pyramid import attention_pool

  rng = np.random.default_rng(0)
  n, h, d = 64, 8, 4
  background = rng.standard_normal((n, 1, 1, d))
  obj = rng.standard_normal((n, d))
  z = np.broadcast_to(background, (n, h, h, d)).copy() + 0.05 * rng.standard_normal((n, h, h, d))
  pos = rng.integers(0, h, (n, 2))
  z[np.arange(n), pos[:, 0], pos[:, 1]] = obj + 4.0  # the object: one position, far from its background
  z = jnp.asarray(z, jnp.float32)
  target = jnp.asarray(obj + 4.0, jnp.float32)
  model = SemanticPool(d, 16, contrast=0.0, rngs=nnx.Rngs(0))  # from the block mean: the scorer must learn
  graphdef, params = nnx.split(model)
  loss = lambda p: jnp.mean(jnp.square(attention_pool(z, 1, nnx.merge(graphdef, p)(z, 1))[:, 0, 0] - target))
  tx = optax.adam(3e-2)
  opt = tx.init(params)
  before = float(loss(params))
  for _ in range(150):
    g = jax.grad(loss)(params)
    u, opt = tx.update(g, opt, params)
    params = optax.apply_updates(params, u)
  after = float(loss(params))
  assert after < 0.05 * before, (before, after)
