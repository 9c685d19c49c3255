"""Metrics against known values: PSNR/SSIM, codebook health windows, Fréchet distance, evaluators."""

import jax.numpy as jnp
import numpy as np
import pytest

import spae
from spae import metrics as M


# ------------------------------------------------------------------------------------ PSNR / SSIM
def test_psnr_known_values():
  x = jnp.zeros((2, 4, 4, 3))
  y = x.at[0].set(0.1).at[1].set(0.01)  # MSE 1e-2 and 1e-4 with max 1 -> 20 and 40 dB
  np.testing.assert_allclose(M.psnr(x, y), [20.0, 40.0], rtol=1e-5)
  np.testing.assert_allclose(M.psnr(x, y * 255, max_val=255.0), [20.0, 40.0], rtol=1e-5)
  assert np.isinf(np.asarray(M.psnr(x, x))).all()
  with pytest.raises(spae.SpaeInputError, match="equal shape"):
    M.psnr(x, y[:1])


def _numpy_ssim(a, b, size=11, sigma=1.5, max_val=1.0):
  """Direct windowed SSIM (2-D Gaussian window, every valid position, per channel), float64."""
  r = np.arange(size) - (size - 1) / 2
  g = np.exp(-0.5 * (r / sigma) ** 2)
  w = np.outer(g, g) / np.outer(g, g).sum()
  c1, c2 = (0.01 * max_val) ** 2, (0.03 * max_val) ** 2
  bsz, h, wd, ch = a.shape
  out = np.zeros(bsz)
  for n in range(bsz):
    vals = []
    for c in range(ch):
      for i in range(h - size + 1):
        for j in range(wd - size + 1):
          pa, pb = a[n, i:i + size, j:j + size, c], b[n, i:i + size, j:j + size, c]
          ma, mb = (w * pa).sum(), (w * pb).sum()
          va, vb = (w * pa * pa).sum() - ma ** 2, (w * pb * pb).sum() - mb ** 2
          cov = (w * pa * pb).sum() - ma * mb
          vals.append((2 * ma * mb + c1) * (2 * cov + c2) / ((ma ** 2 + mb ** 2 + c1) * (va + vb + c2)))
    out[n] = np.mean(vals)
  return out


def test_ssim_identity_reference_and_noise():
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, (2, 14, 13, 2)).astype(np.float32)
  np.testing.assert_allclose(M.ssim(x, x), 1.0, rtol=1e-6)
  y = np.clip(x + rng.normal(0, 0.1, x.shape), 0, 1).astype(np.float32)
  np.testing.assert_allclose(M.ssim(x, y), _numpy_ssim(x.astype(np.float64), y.astype(np.float64)), rtol=1e-4)
  vals = [float(M.ssim(x, np.clip(x + s * rng.normal(size=x.shape), 0, 1).astype(np.float32))[0])
          for s in (0.02, 0.1, 0.3)]
  assert 1.0 > vals[0] > vals[1] > vals[2]
  with pytest.raises(spae.SpaeInputError, match="at least 11"):
    M.ssim(x[:, :8, :8], x[:, :8, :8])


def test_ssim_constant_images_closed_form():
  # Zero variance everywhere: SSIM = (2ab + c1) / (a² + b² + c1).
  a, b = 0.3, 0.6
  x, y = jnp.full((1, 12, 12, 3), a), jnp.full((1, 12, 12, 3), b)
  c1 = 0.01 ** 2
  np.testing.assert_allclose(float(M.ssim(x, y)[0]), (2 * a * b + c1) / (a * a + b * b + c1),
                             rtol=1e-4)  # f32 variance rounding


# ------------------------------------------------------------------------------------ codebook health
def test_thumbnail_is_the_box_average_scaled_back_up():
  from spae._images import resize

  rng = np.random.default_rng(0)
  x = rng.random((2, 64, 64, 3)).astype(np.float32)
  one = M.thumbnail(x, 1)
  assert one.shape == x.shape and one.dtype == np.float32
  # 1×1: every pixel is the image's mean colour, rounded to 8 bits.
  mean = np.round(x.mean((1, 2), keepdims=True) * 255) / 255
  np.testing.assert_allclose(one, np.broadcast_to(mean, x.shape), atol=1e-6)
  # s dividing the side: block means, rounded to 8 bits, then the one bicubic resize back up.
  cells = np.round(x.reshape(2, 4, 16, 4, 16, 3).mean((2, 4)) * 255).astype(np.uint8)
  np.testing.assert_allclose(M.thumbnail(x, 4), resize(cells, 64), atol=1e-6)
  # box_average is those cell colours before rounding.
  np.testing.assert_allclose(M.box_average(x, 4), x.reshape(2, 4, 16, 4, 16, 3).mean((2, 4)), atol=1e-6)
  # Any size: area weights when the cells do not divide the side; a constant image stays constant.
  flat = np.full((30, 45, 3), 200, np.uint8)
  np.testing.assert_allclose(M.thumbnail(flat, 7), 200 / 255, atol=1e-6)
  # Finer thumbnails are closer to the image: PSNR rises with the side.
  smooth = resize(rng.random((8, 8, 3)).astype(np.float32), 64)[None]
  p = [float(M.psnr(M.thumbnail(smooth, s), smooth)[0]) for s in (1, 2, 4, 8, 16)]
  assert all(b > a for a, b in zip(p, p[1:])), p
  for bad in (0, 65, 2.5):
    with pytest.raises(spae.SpaeInputError, match="thumbnail side"):
      M.thumbnail(x, bad)


def test_usage_counts_unique_ids_of_3d_tensor_without_overcounting():
  win = M.UsageWindow(num_layers=2, vocab_size=100, window=1000)
  ids0 = (np.arange(2 * 4 * 4) % 5).reshape(2, 4, 4)  # [B, s, s] with 5 distinct tokens
  ids1 = np.zeros((2, 1, 1), np.int64)  # one token
  ids1[1] = 7
  win.update([ids0, ids1])
  np.testing.assert_allclose(win.usage(), [0.05, 0.02])
  # Each row a different token but constant along the row: still 4 distinct tokens, not 4·s.
  rows = np.broadcast_to(np.arange(4)[None, :, None] + 10, (2, 4, 4))
  win2 = M.UsageWindow(1, 100, 1000)
  win2.update([rows])
  np.testing.assert_allclose(win2.usage(), [0.04])
  np.testing.assert_array_equal(np.nonzero(win2.counts(0))[0], [10, 11, 12, 13])


def test_usage_window_is_a_ring_over_batches():
  win = M.UsageWindow(1, 50, window=8)
  win.update([np.arange(6)])  # 0..5
  np.testing.assert_allclose(win.usage(), [6 / 50])
  win.update([np.arange(10, 14)])  # window now 2..5, 10..13 (8 ids)
  np.testing.assert_allclose(win.usage(), [8 / 50])
  np.testing.assert_array_equal(np.nonzero(win.counts(0))[0], [2, 3, 4, 5, 10, 11, 12, 13])
  win.update([np.arange(20, 40)])  # more than the window: only the newest 8 stay
  np.testing.assert_array_equal(np.nonzero(win.counts(0))[0], np.arange(32, 40))
  assert win.counts(0).sum() == 8
  with pytest.raises(spae.SpaeInputError, match="outside"):
    win.update([np.array([50])])
  empty = M.UsageWindow(1, 50, 8)
  assert np.isnan(empty.usage()).all() and np.isnan(empty.perplexity()).all()


def test_perplexity_and_top_mass_known_values():
  v = 16
  win = M.UsageWindow(3, v, window=64)
  uniform = np.tile(np.arange(v), 4)  # every token 4 times
  constant = np.full(64, 3)
  half = np.concatenate([np.zeros(32, int), np.arange(32) % 2 + 1])  # p = (1/2, 1/4, 1/4)
  win.update([uniform.reshape(4, 4, 4), constant.reshape(4, 4, 4), half.reshape(4, 4, 4)])
  np.testing.assert_allclose(win.perplexity(), [v, 1.0, np.exp(1.5 * np.log(2))], rtol=1e-6)
  np.testing.assert_allclose(win.top_token_mass(), [1 / v, 1.0, 0.5])
  np.testing.assert_allclose(win.usage(), [1.0, 1 / v, 3 / v])
  names = dict(win.metrics())
  assert names["codebook/perplexity_l1"] == pytest.approx(v) and names["codebook/top_mass_l2"] == 1.0
  assert len(names) == 9


# ------------------------------------------------------------------------------------ Fréchet distance
def test_frechet_distance_diagonal_closed_form():
  rng = np.random.default_rng(0)
  d = 5
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  a, b = rng.uniform(0.1, 2, d), rng.uniform(0.1, 2, d)
  want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  np.testing.assert_allclose(M.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)), want, rtol=1e-10)
  # Rotating both covariances by the same orthogonal matrix leaves the distance unchanged.
  q, _ = np.linalg.qr(rng.normal(size=(d, d)))
  got = M.frechet_distance(q @ mu1, q @ np.diag(a) @ q.T, q @ mu2, q @ np.diag(b) @ q.T)
  np.testing.assert_allclose(got, want, rtol=1e-8)


def test_frechet_distance_general_2x2_and_identity():
  rng = np.random.default_rng(1)
  l1, l2 = rng.normal(size=(2, 2)), rng.normal(size=(2, 2))
  s1, s2 = l1 @ l1.T + 0.1 * np.eye(2), l2 @ l2.T + 0.1 * np.eye(2)
  m = s1 @ s2  # 2×2: tr √M = √(tr M + 2√det M)
  tr_sqrt = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
  mu1, mu2 = np.array([1.0, 2.0]), np.array([0.0, -1.0])
  want = 10.0 + np.trace(s1) + np.trace(s2) - 2 * tr_sqrt
  np.testing.assert_allclose(M.frechet_distance(mu1, s1, mu2, s2), want, rtol=1e-9)
  np.testing.assert_allclose(M.frechet_distance(mu2, s2, mu1, s1), want, rtol=1e-9)
  assert abs(M.frechet_distance(mu1, s1, mu1, s1)) < 1e-9
  # Rank-deficient (N < D) covariances, as with few samples: still exactly 0 up to rounding, and >= 0.
  f = rng.normal(size=(5, 64)) * 10
  mu, sig = M.feature_statistics(f)
  assert abs(M.frechet_distance(mu, sig, mu, sig)) < 1e-9 * np.trace(sig)
  mu_b, sig_b = M.feature_statistics(f[:, ::-1])
  assert M.frechet_distance(mu, sig, mu_b, sig_b) > 0
  with pytest.raises(spae.SpaeInputError, match="mu \\[D\\]"):
    M.frechet_distance(mu1, s1, mu2, np.eye(3))


def test_feature_statistics_and_streaming_agree():
  f = np.random.default_rng(2).normal(size=(37, 4)) * [1, 2, 3, 4] + [0, 1, 2, 3]
  mu, sig = M.feature_statistics(f)
  np.testing.assert_allclose(mu, f.mean(0))
  np.testing.assert_allclose(sig, np.cov(f.T))
  acc = M.FeatureStats()
  for chunk in np.array_split(f, 5):
    acc.add(chunk)
  mu2, sig2 = acc.stats()
  np.testing.assert_allclose(mu2, mu, rtol=1e-10)
  np.testing.assert_allclose(sig2, sig, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------------ evaluators
def _batches(n=2, b=3, size=12):
  rng = np.random.default_rng(3)
  return [rng.uniform(-1, 1, (b, size, size, 3)).astype(np.float32) for _ in range(n)]


def _decode(images, l):
  # A fake tokenizer whose reconstruction error shrinks with the prefix length: noise of std 0.4 / l.
  noise = np.random.default_rng(100 + l).normal(0, 0.4 / l, images.shape)
  return np.asarray(images) + noise.astype(np.float32)


def test_recon_evaluator_per_prefix():
  ev = M.get_evaluator("recon", decode_fn=_decode, num_layers=3,
                       perceptual_fn=lambda x, y: jnp.mean(jnp.abs(x - y), axis=(1, 2, 3)))
  batches = _batches()
  out = dict(ev.run(batches))
  assert set(out) == {f"recon/{m}_l{l}" for m in ("psnr", "ssim", "lpips") for l in (1, 2, 3)}
  assert out["recon/psnr_l1"] < out["recon/psnr_l2"] < out["recon/psnr_l3"]
  assert out["recon/ssim_l1"] < out["recon/ssim_l2"] < out["recon/ssim_l3"] < 1.0
  assert out["recon/lpips_l1"] > out["recon/lpips_l3"]
  # Value check: mean over all images of the per-image PSNR on [0, 1]-mapped, clipped images.
  xs = np.concatenate(batches)
  x01 = np.clip((xs + 1) / 2, 0, 1)
  y01 = np.clip((np.concatenate([_decode(b, 2) for b in batches]) + 1) / 2, 0, 1)
  want = np.mean(10 * np.log10(1 / np.mean((x01 - y01) ** 2, axis=(1, 2, 3))))
  assert out["recon/psnr_l2"] == pytest.approx(want, rel=1e-5)
  with pytest.raises(spae.SpaeInputError, match="prefixes"):
    M.get_evaluator("recon", decode_fn=_decode, num_layers=3, prefixes=[4])


def test_codebook_evaluator_and_registry():
  def encode(images):  # layer 1: one token per image (its index mod 4); layer 2: 2×2 tokens from pixel signs
    b = images.shape[0]
    top = (np.arange(b) % 4).reshape(b, 1, 1)
    low = (images[:, ::6, ::6, 0] > 0).astype(np.int64) + 2
    return [top, low]
  out = dict(M.get_evaluator("codebook", encode_fn=encode, num_layers=2, vocab_size=10).run(_batches()))
  assert out["codebook/usage_l1"] == pytest.approx(0.3)  # ids {0, 1, 2} over 2 batches of 3
  assert out["codebook/usage_l2"] == pytest.approx(0.2)
  assert out["codebook/top_mass_l1"] == pytest.approx(2 / 6)
  assert "recon" in M.list_evaluators() and "codebook" in M.list_evaluators()
  with pytest.raises(spae.SpaeInputError, match="unknown evaluator 'nope'"):
    M.get_evaluator("nope")


def test_fid_evaluator_with_user_feature_fn():
  feat = lambda im: np.asarray(im).reshape(im.shape[0], -1)[:, :6]  # stands in for a user-loaded network
  batches = _batches(n=4, b=4)
  exact = dict(M.get_evaluator("fid", decode_fn=lambda im, l: im, feature_fn=feat, num_layers=2).run(batches))
  assert list(exact) == ["fid/l2"] and abs(exact["fid/l2"]) < 1e-8
  noisy = dict(M.get_evaluator("fid", decode_fn=_decode, feature_fn=feat, num_layers=2, prefixes=[1, 2]).run(batches))
  assert noisy["fid/l1"] > noisy["fid/l2"] > 0


# ------------------------------------------------------------------------------------ Inception features
def _random_inception_tensors(seed=0):
  """Random weights in pytorch-fid's FID InceptionV3 state-dict layout (OIHW convs + BatchNorm stats)."""
  rng = np.random.default_rng(seed)
  t = {}
  for name, (cin, cout, (kh, kw), _, _) in M.INCEPTION_CONVS.items():
    t[f"{name}.conv.weight"] = (rng.standard_normal((cout, cin, kh, kw), np.float32)
                                * np.float32(np.sqrt(2 / (cin * kh * kw))))
    t[f"{name}.bn.weight"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
    t[f"{name}.bn.bias"] = rng.normal(0, 0.1, cout).astype(np.float32)
    t[f"{name}.bn.running_mean"] = rng.normal(0, 0.1, cout).astype(np.float32)
    t[f"{name}.bn.running_var"] = rng.uniform(0.5, 1.5, cout).astype(np.float32)
  return t


def test_inception_features_load_fold_bn_and_fid(tmp_path):
  t = _random_inception_tensors()
  np.savez(tmp_path / "inception.npz", **t)
  net = M.InceptionFeatures.load(tmp_path / "inception.npz")
  x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  f = net(x)  # resized to 299×299 inside
  assert f.shape == (2, 2048) and np.isfinite(f).all() and (f >= 0).all() and f.std() > 0
  # BatchNorm folding: doubling a conv and compensating in its BN statistics leaves the features unchanged.
  t2 = dict(t)
  for name in ("Conv2d_1a_3x3", "Mixed_6b.branch7x7_2", "Mixed_7c.branch_pool"):
    eps = 1e-3
    t2[f"{name}.conv.weight"] = t[f"{name}.conv.weight"] * 2
    t2[f"{name}.bn.running_mean"] = t[f"{name}.bn.running_mean"] * 2
    t2[f"{name}.bn.running_var"] = 4 * (t[f"{name}.bn.running_var"] + eps) - eps
  f2 = M.InceptionFeatures.from_tensors(t2)(x)
  np.testing.assert_allclose(f2, f, rtol=1e-4, atol=1e-4)
  # Changing a BN statistic does change them (the statistics are really used).
  t2["Mixed_5b.branch1x1.bn.running_mean"] = t["Mixed_5b.branch1x1.bn.running_mean"] + 1.0
  assert np.abs(M.InceptionFeatures.from_tensors(t2)(x) - f).max() > 1e-3
  mu, sig = M.feature_statistics(np.concatenate([f, f + 1, 2 * f])[:, :256])
  assert abs(M.frechet_distance(mu, sig, mu, sig)) < 1e-8 * np.trace(sig)  # rank-deficient covariance
  del t["Mixed_6e.branch7x7dbl_4.bn.running_var"]
  with pytest.raises(spae.SpaeInputError, match="missing tensor 'Mixed_6e.branch7x7dbl_4.bn.running_var'"):
    M.InceptionFeatures.from_tensors(t)


def test_prefix_bits_count_log2_of_each_layers_words_per_token():
  """The default's pyramid: layers 1-2 pick among its 24 semantic words, layers 3-6 among 32,768 (15 bits). Only
  the full pyramid spends more than the 16×16 thumbnail's 24·256 bits; prefix 1 spends less than one 24-bit cell."""
  grids, words = (1, 2, 4, 8, 16, 16), (24, 24, 32768, 32768, 32768, 32768)
  bits = M.prefix_bits(grids, words)
  sem = np.log2(24)
  np.testing.assert_allclose(bits, [sem, 5 * sem, 5 * sem + 240, 5 * sem + 1200, 5 * sem + 5040, 5 * sem + 8880])
  thumb = [24 * max(grids[:l]) ** 2 for l in range(1, 7)]
  assert [b > t for b, t in zip(bits, thumb)] == [False] * 5 + [True]
  assert M.prefix_bits((1, 2), (1, 2)) == [0.0, 4.0]  # one word carries nothing
  for bad in ((1,), (0, 5)):
    with pytest.raises(spae.SpaeInputError, match="prefix_bits"):
      M.prefix_bits((1, 2), bad)
