"""Sign/direction tests of every training loss, and the perceptual network's loading and behaviour."""

import logging

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import spae
from spae import losses
from spae import perceptual as pc
from spae._nets import Discriminator, DiscriminatorConfig


# ------------------------------------------------------------------------------------ reconstruction
def test_l1_l2_zero_at_equality_and_grow_with_error():
  x = jax.random.normal(jax.random.key(0), (2, 8, 8, 3))
  noise = jax.random.normal(jax.random.key(1), x.shape)
  assert float(losses.l2_loss(x, x)) == 0.0 and float(losses.l1_loss(x, x)) == 0.0
  l2 = [float(losses.l2_loss(x, x + s * noise)) for s in (0.1, 0.5, 1.0)]
  l1 = [float(losses.l1_loss(x, x + s * noise)) for s in (0.1, 0.5, 1.0)]
  assert l2[0] < l2[1] < l2[2] and l1[0] < l1[1] < l1[2]
  np.testing.assert_allclose(l2[2], float(jnp.mean(noise ** 2)), rtol=1e-5)
  np.testing.assert_allclose(l1[2], float(jnp.mean(jnp.abs(noise))), rtol=1e-5)


# ------------------------------------------------------------------------------------ adversarial
def test_d_loss_signs():
  real, fake = jnp.array([0.3, -0.2]), jnp.array([0.1, 0.4])
  base = float(losses.d_loss_nonsaturating(real, fake))
  assert float(losses.d_loss_nonsaturating(real + 1.0, fake)) < base  # real logits rise -> D loss falls
  assert float(losses.d_loss_nonsaturating(real, fake - 1.0)) < base  # fake logits fall -> D loss falls
  g_real, g_fake = jax.grad(losses.d_loss_nonsaturating, argnums=(0, 1))(real, fake)
  assert (g_real < 0).all() and (g_fake > 0).all()
  # Known value: at zero logits both terms are log 2.
  np.testing.assert_allclose(float(losses.d_loss_nonsaturating(jnp.zeros(3), jnp.zeros(3))), 2 * np.log(2), rtol=1e-6)
  # -log sigmoid(real) - log(1 - sigmoid(fake)).
  ref = np.mean(-np.log(1 / (1 + np.exp(-np.array(real))))) + np.mean(-np.log(1 - 1 / (1 + np.exp(-np.array(fake)))))
  np.testing.assert_allclose(base, ref, rtol=1e-5)


def test_g_loss_signs():
  fake = jnp.array([0.1, -1.0, 2.0])
  assert float(losses.g_loss_nonsaturating(fake + 1.0)) < float(losses.g_loss_nonsaturating(fake))
  assert (jax.grad(losses.g_loss_nonsaturating)(fake) < 0).all()
  ref = np.mean(-np.log(1 / (1 + np.exp(-np.array(fake)))))
  np.testing.assert_allclose(float(losses.g_loss_nonsaturating(fake)), ref, rtol=1e-5)


def test_r1_zero_for_constant_d_and_exact_for_linear_d():
  x = jax.random.normal(jax.random.key(0), (3, 4, 4, 3))
  pen, logits = losses.r1_penalty(lambda im: jnp.full((im.shape[0],), 2.0) + 0.0 * im.sum((1, 2, 3)), x)
  assert float(pen) == 0.0 and logits.shape == (3,)
  # D(x)_b = <a, x_b> has gradient a for every sample: penalty = ½||a||².
  a = jax.random.normal(jax.random.key(1), (4, 4, 3))
  pen, logits = losses.r1_penalty(lambda im: jnp.sum(im * a, axis=(1, 2, 3)), x)
  np.testing.assert_allclose(float(pen), 0.5 * float(jnp.sum(a * a)), rtol=1e-5)
  np.testing.assert_allclose(logits, jnp.sum(x * a, axis=(1, 2, 3)), rtol=1e-5)
  # Per-sample, not batch-summed: D(x)_b = ||x_b||² gives mean_b ½||2 x_b||².
  pen, _ = losses.r1_penalty(lambda im: jnp.sum(im ** 2, axis=(1, 2, 3)), x)
  np.testing.assert_allclose(float(pen), float(jnp.mean(0.5 * jnp.sum((2 * x) ** 2, axis=(1, 2, 3)))), rtol=1e-5)


def test_r1_with_nnx_discriminator_is_positive_and_differentiable():
  # Shapes from eval_shape, values from numpy: eager nnx initialisers compile once per shape (~1 s each).
  abstract = nnx.eval_shape(lambda: Discriminator(DiscriminatorConfig(channels=4, channel_multipliers=(1, 1)), 8,
                                                  rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  rng = np.random.default_rng(0)
  state = jax.tree.map(lambda a: jnp.asarray(rng.normal(0, 0.3, a.shape), a.dtype), state)
  disc = nnx.merge(graphdef, state)
  x = jax.random.normal(jax.random.key(2), (2, 8, 8, 3))

  def d_objective(d):
    pen, real_logits = losses.r1_penalty(d, x)
    return pen + 0.0 * real_logits.sum(), pen

  grads, pen = nnx.jit(nnx.grad(d_objective, has_aux=True))(disc)
  assert float(pen) > 0
  leaves = [np.asarray(g) for g in jax.tree.leaves(grads)]
  assert len(leaves) == len(jax.tree.leaves(state)) and all(np.isfinite(g).all() for g in leaves)
  assert sum(np.abs(g).sum() for g in leaves) > 0  # the second-order gradient reaches D's weights


def test_lecam_falls_toward_opposite_ema_and_ema_update():
  ema_real, ema_fake = jnp.array(1.0), jnp.array(-1.0)
  real, fake = jnp.array([2.0, 1.5]), jnp.array([-2.0, -1.5])
  base = float(losses.lecam_loss(real, fake, ema_real, ema_fake))
  assert base > 0
  # Real predictions moving toward the fake EMA, and fake ones toward the real EMA, lower it.
  assert float(losses.lecam_loss(real - 1.0, fake, ema_real, ema_fake)) < base
  assert float(losses.lecam_loss(real, fake + 1.0, ema_real, ema_fake)) < base
  assert float(losses.lecam_loss(jnp.array([-1.0]), jnp.array([1.0]), ema_real, ema_fake)) == 0.0
  np.testing.assert_allclose(base, np.mean(np.array([3.0, 2.5]) ** 2) + np.mean(np.array([3.0, 2.5]) ** 2))
  ema = losses.update_lecam_ema(jnp.array(0.0), jnp.array([1.0, 3.0]), 0.9)
  np.testing.assert_allclose(float(ema), 0.2, rtol=1e-6)


# ------------------------------------------------------------------------------------ semantic
@pytest.fixture(scope="module")
def sem_setup():
  v, d, b, n = 50, 6, 2, 5
  codebook = jax.random.normal(jax.random.key(0), (v, d))
  targets = jax.random.normal(jax.random.key(1), (b, n, d))
  relevance = jax.random.normal(jax.random.key(2), (b, v))
  idx, probs = losses.teacher_distribution(relevance, 4, 0.5)
  return codebook, targets, relevance, idx, probs


def test_teacher_distribution(sem_setup):
  _, _, relevance, idx, probs = sem_setup
  assert idx.shape == probs.shape == (2, 4)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-6)
  r = np.asarray(relevance)
  np.testing.assert_array_equal(np.asarray(idx), np.argsort(-r, axis=1)[:, :4])
  top = np.take_along_axis(r, np.asarray(idx), 1) / 0.5
  ref = np.exp(top - top.max(1, keepdims=True))
  np.testing.assert_allclose(probs, ref / ref.sum(1, keepdims=True), rtol=1e-5)
  assert (np.diff(np.asarray(probs), axis=1) <= 0).all()
  with pytest.raises(spae.SpaeInputError, match="top_k"):
    losses.teacher_distribution(relevance, 0, 1.0)


@pytest.mark.parametrize("vocab_chunk", [7, 50, 4096])
def test_semantic_loss_chunked_equals_dense(sem_setup, vocab_chunk):
  codebook, targets, _, idx, probs = sem_setup
  dense, g_dense = jax.jit(jax.value_and_grad(
      lambda t: losses.semantic_loss_dense(t, codebook, idx, probs, 0.7)))(targets)
  chunked, g_chunk = jax.jit(jax.value_and_grad(
      lambda t: losses.semantic_loss(t, codebook, idx, probs, 0.7, vocab_chunk=vocab_chunk)))(targets)
  np.testing.assert_allclose(float(chunked), float(dense), rtol=1e-5)
  np.testing.assert_allclose(g_chunk, g_dense, rtol=1e-4, atol=1e-6)


def test_semantic_loss_falls_toward_relevant_row(sem_setup):
  codebook, targets, _, idx, probs = sem_setup
  loss = jax.jit(lambda t: losses.semantic_loss(t, codebook, idx, probs, 1.0))
  base = float(loss(targets))
  rel = codebook[idx[:, 0]][:, None, :]  # the most relevant row per image
  for frac in (0.25, 0.5, 1.0):
    assert float(loss(targets + frac * (rel - targets))) < base
  # Sitting on the most relevant row beats sitting on the irrelevant row farthest from the relevant ones.
  e = np.asarray(codebook)
  far = []
  for row in np.asarray(idx):
    d = ((e[:, None] - e[row][None]) ** 2).sum(-1).min(1)
    d[row] = -1
    far.append(e[int(d.argmax())])
  on_far = jnp.broadcast_to(jnp.asarray(np.stack(far))[:, None], targets.shape)
  assert float(loss(jnp.broadcast_to(rel, targets.shape))) < float(loss(on_far))


def test_semantic_toy_optimisation_raises_relevant_probability(sem_setup):
  codebook, targets, _, idx, probs = sem_setup
  tau, lr = 1.0, 0.2
  loss_fn = lambda t: losses.semantic_loss(t, codebook, idx, probs, tau, vocab_chunk=16)

  def relevant_mass(t):  # q mass on the teacher's top-k tokens
    d2 = jnp.sum((t[:, :, None] - codebook[None, None]) ** 2, -1)
    q = jax.nn.softmax(-d2 / tau, -1)
    return float(jnp.mean(jnp.take_along_axis(q, jnp.broadcast_to(idx[:, None], q.shape[:2] + idx.shape[1:]),
                                              2).sum(-1)))

  @jax.jit
  def step(t, _):
    l, g = jax.value_and_grad(loss_fn)(t)
    return t - lr * g, l

  t_final, hist = jax.lax.scan(step, targets, None, length=300)
  assert float(hist[-1]) < float(hist[0])
  before, after = relevant_mass(targets), relevant_mass(t_final)
  assert after > before + 0.3 and after > 5 * before, (before, after)


def test_semantic_loss_codebook_gradient(sem_setup):
  """Off by default (the codes are constants); with codebook_grad the chunked gradient equals the dense one, and
  stepping the codes along it moves the teacher's rows toward the targets (their mass under q rises)."""
  codebook, targets, _, idx, probs = sem_setup
  off = jax.grad(lambda e: losses.semantic_loss(targets, e, idx, probs, 0.7, vocab_chunk=16))(codebook)
  assert not np.asarray(off).any()
  dense = jax.grad(lambda e: losses.semantic_loss_dense(targets, e, idx, probs, 0.7, codebook_grad=True))(codebook)
  loss = lambda e: losses.semantic_loss(targets, e, idx, probs, 0.7, vocab_chunk=16, codebook_grad=True)
  grad = jax.jit(jax.grad(loss))  # one compile for the check and the 50 descent steps
  g = grad(codebook)
  np.testing.assert_allclose(g, dense, rtol=1e-4, atol=1e-6)
  assert np.abs(np.asarray(g)).max() > 1e-3
  e = codebook
  for _ in range(50):
    e = e - 0.1 * grad(e)
  assert float(loss(e)) < float(loss(codebook)) - 0.5


def test_semantic_layer_weights_formula():
  w = losses.semantic_layer_weights(0, 3, base=2.0, decay=0.5)
  np.testing.assert_allclose(w, [2.0, 1.0, 0.5])
  warm = lambda s: np.asarray(losses.semantic_layer_weights(s, 2, 1.0, 0.1, schedule="warmup", warmup_steps=100))
  np.testing.assert_allclose(warm(0), [0.0, 0.0])
  np.testing.assert_allclose(warm(50), [0.5, 0.05], rtol=1e-6)
  np.testing.assert_allclose(warm(1000), [1.0, 0.1], rtol=1e-6)
  cos = lambda s: np.asarray(losses.semantic_layer_weights(s, 2, 1.0, 0.5, schedule="cosine", warmup_steps=10,
                                                          total_steps=110, final_ratio=0.2))
  np.testing.assert_allclose(cos(5), [0.5, 0.25], rtol=1e-6)
  np.testing.assert_allclose(cos(10), [1.0, 0.5], rtol=1e-6)
  np.testing.assert_allclose(cos(60), [0.6, 0.3], rtol=1e-5)  # halfway: 0.2 + 0.8·½
  np.testing.assert_allclose(cos(500), [0.2, 0.1], rtol=1e-5)
  jitted = jax.jit(lambda s: losses.semantic_layer_weights(s, 2, 1.0, 0.5, schedule="cosine", warmup_steps=10,
                                                          total_steps=110, final_ratio=0.2))
  np.testing.assert_allclose(jitted(jnp.int32(60)), cos(60), rtol=1e-6)
  with pytest.raises(spae.SpaeInputError, match="total_steps"):
    losses.semantic_layer_weights(0, 2, schedule="cosine", warmup_steps=10)


# ------------------------------------------------------------------------------------ commitment / progressive
def test_commitment_gradient_pulls_z_toward_recon():
  z = jax.random.normal(jax.random.key(0), (1, 4, 4, 3))
  recons = [jnp.zeros_like(z), jnp.ones_like(z)]
  g = jax.grad(losses.commitment_loss)(z, recons)
  z_new = z - 0.1 * g
  target = 0.5 * (recons[0] + recons[1])  # the mean of the sg(r_l) minimises the mean of the squared errors
  assert float(jnp.sum((z_new - target) ** 2)) < float(jnp.sum((z - target) ** 2))
  # Only z gets gradient: the reconstructions are stop-gradiented.
  g_r = jax.grad(lambda r: losses.commitment_loss(z, [r]))(recons[0])
  assert float(jnp.abs(g_r).sum()) == 0.0


def test_sample_prefix_and_pick_prefix_recon():
  draws = np.asarray(jax.vmap(lambda k: losses.sample_prefix(k, 4))(jax.random.split(jax.random.key(0), 400)))
  assert set(draws.tolist()) == {1, 2, 3, 4} and abs(draws.mean() - 2.5) < 0.2
  draws = np.asarray(jax.vmap(lambda k: losses.sample_prefix(k, 4, min_layers=3))(
      jax.random.split(jax.random.key(1), 50)))
  assert set(draws.tolist()) == {3, 4}
  assert isinstance(int(losses.sample_prefix(jax.random.key(0), 4)), int)
  recons = [jnp.full((1, 2, 2, 3), float(l)) for l in range(1, 5)]
  pick = jax.jit(lambda k: losses.pick_prefix_recon(k, recons))
  seen = set()
  for k in jax.random.split(jax.random.key(2), 12):
    r, prefix = pick(k)
    seen.add(int(prefix))
    np.testing.assert_array_equal(r, recons[int(prefix) - 1])
  assert len(seen) > 1
  with pytest.raises(spae.SpaeInputError):
    losses.sample_prefix(jax.random.key(0), 3, min_layers=4)



def test_monotone_loss_charges_only_images_the_longer_prefix_made_worse():
  """relu(e_k − e_{k−1}) per image, averaged: zero where prefix k is better, its excess where worse; the gradient
  reaches prefix k alone (the shorter prefix is held), and at prefix 1 there is nothing to beat."""
  target = jnp.zeros((2, 2, 2, 3))
  y = jnp.stack([jnp.full((2, 2, 3), 0.5), jnp.full((2, 2, 3), 0.1)])       # errors 0.25 and 0.01
  y_prev = jnp.stack([jnp.full((2, 2, 3), 0.3), jnp.full((2, 2, 3), 0.2)])  # errors 0.09 and 0.04
  loss = lambda a, b, k: losses.monotone_loss(a, b, target, jnp.int32(k))
  assert float(loss(y, y_prev, 2)) == pytest.approx((0.25 - 0.09) / 2)  # only image 0 got worse
  assert float(loss(y_prev, y, 2)) == pytest.approx((0.04 - 0.01) / 2)  # only image 1
  assert float(loss(y, y_prev, 1)) == 0.0 and float(loss(y_prev, y_prev, 3)) == 0.0
  g_k, g_prev = jax.grad(loss, argnums=(0, 1))(y, y_prev, 2)
  assert float(jnp.abs(g_prev).sum()) == 0.0 and float(jnp.abs(g_k[1]).sum()) == 0.0
  assert float(jnp.min(g_k[0])) > 0.0  # image 0's error falls by moving its pixels toward the target
  assert float(loss(y - 0.1 * g_k / jnp.abs(g_k).max(), y_prev, 2)) < float(loss(y, y_prev, 2))

# ------------------------------------------------------------------------------------ perceptual
def _random_lpips_tensors(seed=0, lin=True, slice_names=False):
  """Random weights in the torchvision (OIHW) / LPIPS naming, like a converted vgg16 + lpips file."""
  rng = np.random.default_rng(seed)
  t = {}
  for s, idxs in enumerate(pc.VGG16_SLICES, start=1):
    for i in idxs:
      cin, cout = pc.VGG16_CHANNELS[i]
      pre = f"net.slice{s}.{i}" if slice_names else f"features.{i}"
      t[f"{pre}.weight"] = rng.normal(0, np.sqrt(2 / (cin * 9)), (cout, cin, 3, 3)).astype(np.float32)
      t[f"{pre}.bias"] = rng.normal(0, 0.01, (cout,)).astype(np.float32)
  if lin:
    for j, c in enumerate(pc.LPIPS_CHANNELS):
      t[f"lin{j}.model.1.weight"] = np.abs(rng.normal(size=(1, c, 1, 1))).astype(np.float32)
  return t


def _numpy_lpips(t, x, y, lin=True):
  """Independent reference in torch conventions (NCHW, OIHW cross-correlation), float64."""
  shift = np.array([-0.030, -0.088, -0.188])[None, :, None, None]
  scale = np.array([0.458, 0.448, 0.450])[None, :, None, None]

  def conv(h, w, b):  # h [N, C, H, W], w [O, C, 3, 3], padding 1
    n, c, hh, ww = h.shape
    p = np.pad(h, ((0, 0), (0, 0), (1, 1), (1, 1)))
    cols = np.stack([p[:, :, i:i + hh, j:j + ww] for i in range(3) for j in range(3)], axis=2)  # N C 9 H W
    return np.einsum("nckhw,ock->nohw", cols, w.reshape(w.shape[0], c, 9)) + b[None, :, None, None]

  def feats(img):
    h = (np.transpose(img, (0, 3, 1, 2)).astype(np.float64) - shift) / scale
    out = []
    for s, idxs in enumerate(pc.VGG16_SLICES):
      if s:
        n, c, hh, ww = h.shape
        h = h[:, :, :hh // 2 * 2, :ww // 2 * 2].reshape(n, c, hh // 2, 2, ww // 2, 2).max(axis=(3, 5))
      for i in idxs:
        h = np.maximum(conv(h, t[f"features.{i}.weight"], t[f"features.{i}.bias"]), 0)
      out.append(h)
    return out

  total = 0
  for j, (a, b) in enumerate(zip(feats(x), feats(y))):
    na = a / (np.sqrt((a ** 2).sum(1, keepdims=True)) + 1e-10)
    nb = b / (np.sqrt((b ** 2).sum(1, keepdims=True)) + 1e-10)
    d = (na - nb) ** 2
    d = np.einsum("nchw,c->nhw", d, t[f"lin{j}.model.1.weight"].reshape(-1)) if lin else d.sum(1)
    total = total + d.mean(axis=(1, 2))
  return total


@pytest.fixture(scope="module")
def lpips_setup(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("lpips")
  tensors = _random_lpips_tensors()
  np.savez(tmp / "vgg_lpips.npz", **tensors)
  loss = pc.make_perceptual_loss(tmp / "vgg_lpips.npz")

  # Compiled once per module (all tests use [2, 16, 16, 3] images): distances [B], and with the gradient.
  dist = jax.jit(loss.distance)

  @jax.jit
  def dist_grad(params, x, y):
    """(distances [B], gradient of their sum wrt y)."""
    (_, d), g = jax.value_and_grad(lambda yy: (lambda d: (d.sum(), d))(loss.distance(params, x, yy)),
                                   has_aux=True)(y)
    return d, g

  return tmp, tensors, loss, dist, dist_grad


def _images(seed, shape=(2, 16, 16, 3)):
  rng = np.random.default_rng(seed)
  # Blocky images: a low-res pattern upsampled, so features are image-like rather than pure noise.
  low = rng.uniform(-1, 1, (shape[0], shape[1] // 2, shape[2] // 2, 3))
  return jnp.asarray(np.repeat(np.repeat(low, 2, 1), 2, 2), jnp.float32)


def test_perceptual_zero_at_equality_and_grows_with_distortion(lpips_setup):
  _, _, loss, dist, _ = lpips_setup
  x = _images(0)
  assert loss.use_lin
  np.testing.assert_allclose(dist(loss.params, x, x), 0.0, atol=1e-8)
  noise = jax.random.normal(jax.random.key(3), x.shape)
  d = [np.asarray(dist(loss.params, x, x + s * noise)) for s in (0.02, 0.1, 0.3, 1.0)]
  for lo, hi in zip(d, d[1:]):
    assert (hi > lo).all(), d
  # The loss is the batch mean (pure and jittable, weights as an argument or closed over).
  np.testing.assert_allclose(float(jax.jit(loss.apply)(loss.params, x, x + noise)), d[-1].mean(), rtol=1e-5)


def test_perceptual_matches_numpy_reference(lpips_setup):
  _, tensors, loss, dist, _ = lpips_setup
  x, y = _images(1), _images(2)
  np.testing.assert_allclose(dist(loss.params, x, y), _numpy_lpips(tensors, np.asarray(x), np.asarray(y)),
                             rtol=2e-4)


def test_perceptual_gradient_is_finite_and_reduces_distance(lpips_setup):
  _, _, loss, _, dist_grad = lpips_setup
  x, y = _images(1), _images(2)
  d, g = dist_grad(loss.params, x, y)
  assert np.isfinite(np.asarray(g)).all() and float(jnp.abs(g).sum()) > 0
  step = 0.5 * float(d.sum()) / float(jnp.sum(g * g))
  assert float(dist_grad(loss.params, x, y - step * g)[0].sum()) < float(d.sum())
  # The frozen weights are not nnx.Params: an optimizer with wrt=nnx.Param would not see them.
  net = nnx.merge(loss.graphdef, loss.params)
  assert not jax.tree.leaves(nnx.state(net, nnx.Param))


def test_perceptual_loaders_agree(lpips_setup, tmp_path):
  _, tensors, loss, dist, _ = lpips_setup
  from safetensors.numpy import save_file
  import orbax.checkpoint as ocp
  x, y = _images(4), _images(5)
  want = np.asarray(dist(loss.params, x, y))
  save_file(_random_lpips_tensors(slice_names=True), str(tmp_path / "w.safetensors"))  # LPIPS `net.slice*` names
  nested = {}
  for name, arr in tensors.items():
    node = nested
    *parents, leaf = name.split(".")
    for p in parents:
      node = node.setdefault(p, {})
    node[leaf] = arr
  ocp.PyTreeCheckpointer().save(str(tmp_path / "orbax"), nested)
  for path in (tmp_path / "w.safetensors", tmp_path / "orbax"):
    other = pc.make_perceptual_loss(path)
    np.testing.assert_allclose(dist(other.params, x, y), want, rtol=1e-5)


def test_perceptual_without_lin_heads(lpips_setup, tmp_path):
  _, tensors, _, dist, _ = lpips_setup
  no_lin = {k: v for k, v in tensors.items() if not k.startswith("lin")}
  np.savez(tmp_path / "vgg.npz", **no_lin)
  plain = pc.make_perceptual_loss(tmp_path / "vgg.npz")
  assert not plain.use_lin
  x, y = _images(6), _images(7)
  want = _numpy_lpips(tensors, np.asarray(x), np.asarray(y), lin=False)
  np.testing.assert_allclose(dist(plain.params, x, y), want, rtol=2e-4)
  ignored = pc.make_perceptual_loss(lpips_setup[0] / "vgg_lpips.npz", use_lin=False)  # lin present but ignored
  np.testing.assert_allclose(dist(ignored.params, x, y), want, rtol=2e-4)
  with pytest.raises(spae.SpaeInputError, match="lin0.model.1.weight"):
    pc.PerceptualNet.load(tmp_path / "vgg.npz", use_lin=True)


def test_perceptual_missing_or_misshapen_tensor_errors(lpips_setup, tmp_path):
  _, tensors, _, _, _ = lpips_setup
  missing = dict(tensors)
  del missing["features.12.weight"]
  np.savez(tmp_path / "missing.npz", **missing)
  with pytest.raises(spae.SpaeInputError, match="missing tensor 'features.12.weight'"):
    pc.PerceptualNet.load(tmp_path / "missing.npz")
  bad = dict(tensors)
  bad["features.5.weight"] = np.transpose(bad["features.5.weight"], (2, 3, 1, 0))  # HWIO instead of OIHW
  np.savez(tmp_path / "bad.npz", **bad)
  with pytest.raises(spae.SpaeInputError, match=r"'features.5.weight' has shape \(3, 3, 64, 128\)"):
    pc.PerceptualNet.load(tmp_path / "bad.npz")
  with pytest.raises(spae.SpaeInputError, match="do not exist"):
    pc.make_perceptual_loss(tmp_path / "nope.npz")
  with pytest.raises(spae.SpaeInputError, match="at least 16"):
    pc.PerceptualNet.load(lpips_setup[0] / "vgg_lpips.npz")(jnp.zeros((1, 8, 8, 3)), jnp.zeros((1, 8, 8, 3)))


def test_no_perceptual_weights_warns_and_returns_none(caplog):
  with pytest.warns(UserWarning, match="perceptual loss is OFF"):
    with caplog.at_level(logging.WARNING, logger="spae"):
      assert pc.make_perceptual_loss(None) is None
  assert "perceptual loss is OFF" in caplog.text
