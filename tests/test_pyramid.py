"""SAQ and the exact chunked nearest-token search, against independent numpy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import spae
from spae._pyramid import neg_dist_logsumexp


def _np_nearest(x, e):
  d = ((x[:, None, :].astype(np.float64) - e[None, :, :].astype(np.float64)) ** 2).sum(-1)
  return d.argmin(1), d  # numpy argmin returns the first (lowest-index) minimum


def _np_saq(z, e, grids, mode="saq", sub=(0, ()), weights=(), sem_e=None):
  """Straight from docs/method.md, with explicit loops (no shared code with spae); `sub`: (layers, rows) of a
  semantic sub-vocabulary the top layers search; `weights`: one [B, H, W] attention map per pooled top layer,
  whose blocks take Σ_p a_p·(l·z − Σq)_p instead of the block centre's value; `sem_e`: the codes those top layers
  search and add instead of `e` (a semantic map of their own)."""
  b, h, w, d = z.shape
  running = np.zeros_like(z, dtype=np.float64)
  ids_all, recons = [], []
  for l, s in enumerate(grids, start=1):
    bh, bw = h // s, w // s
    ids = np.zeros((b, s, s), np.int64)
    q = np.zeros_like(running)
    for n in range(b):
      for i in range(s):
        for j in range(s):
          ci, cj = i * bh + bh // 2, j * bw + bw // 2
          if l <= len(weights):
            blk = (n, slice(i * bh, (i + 1) * bh), slice(j * bw, (j + 1) * bw))
            t = (weights[l - 1][blk][..., None] * (l * z[blk] - running[blk])).sum((0, 1))
          else:
            t = (l * z[n, ci, cj] if mode == "saq" else z[n, ci, cj]) - running[n, ci, cj]
          codes = sem_e if (l <= sub[0] and sem_e is not None) else e
          if l <= sub[0]:
            rows = np.asarray(sub[1])
            k = int(rows[_np_nearest(t[None].astype(np.float32), codes[rows])[0][0]])
          else:
            k = int(_np_nearest(t[None].astype(np.float32), codes)[0][0])
          ids[n, i, j] = k
          q[n, i * bh:(i + 1) * bh, j * bw:(j + 1) * bw] = codes[k]
    running = running + q
    ids_all.append(ids)
    recons.append(running / l if mode == "saq" else running.copy())
  return ids_all, recons


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_chunked_search_equals_brute_force(chunk):
  rng = np.random.default_rng(1)
  e = rng.standard_normal((203, 12)).astype(np.float32)
  x = rng.standard_normal((150, 12)).astype(np.float32)
  got = np.asarray(spae.nearest_tokens(x, e, vocab_chunk=chunk, query_chunk=64))
  want, d = _np_nearest(x, e)
  # Exact up to float rounding: any disagreement must be a numerical near-tie.
  mism = got != want
  assert mism.mean() < 0.01
  rows = np.arange(len(x))
  np.testing.assert_allclose(d[rows, got], d[rows, want], rtol=1e-5)


def test_chunked_search_ties_go_to_lowest_index():
  # Integer-valued rows make distances exact; duplicate rows create ties inside and across chunks.
  rng = np.random.default_rng(2)
  base = rng.integers(-3, 4, size=(20, 4)).astype(np.float32)
  e = np.concatenate([base, base[::-1], base], axis=0)  # every row appears 3 times, far apart
  x = rng.integers(-3, 4, size=(100, 4)).astype(np.float32)
  want, _ = _np_nearest(x, e)
  for chunk in (3, 16, 60):
    got = np.asarray(spae.nearest_tokens(x, e, vocab_chunk=chunk, query_chunk=32))
    np.testing.assert_array_equal(got, want)


def test_saq_matches_numpy_reference():
  rng = np.random.default_rng(3)
  e = rng.standard_normal((57, 6)).astype(np.float32)
  z = rng.standard_normal((2, 8, 8, 6)).astype(np.float32)
  grids = (1, 2, 4, 8)
  ids, recons = spae.saq_quantize(z, e, spae.PyramidSpec(grids), vocab_chunk=16)
  ref_ids, ref_recons = _np_saq(z, e, grids)
  for a, b in zip(ids, ref_ids):
    np.testing.assert_array_equal(np.asarray(a), b)
  for a, b in zip(recons, ref_recons):
    np.testing.assert_allclose(np.asarray(a), b, atol=1e-5)


def test_semantic_vocab_restricts_only_the_top_layers():
  rng = np.random.default_rng(3)
  e = rng.standard_normal((57, 6)).astype(np.float32)
  z = rng.standard_normal((2, 8, 8, 6)).astype(np.float32)
  rows = (0, 5, 9, 30, 31, 44, 56)  # row 0 too: a valid id
  spec = spae.PyramidSpec((1, 2, 4, 8), semantic_layers=2, semantic_vocab=rows)
  ids, recons = spae.saq_quantize(z, e, spec, vocab_chunk=16)
  ref_ids, ref_recons = _np_saq(z, e, spec.grids, sub=(2, rows))
  for a, b in zip(ids, ref_ids):
    np.testing.assert_array_equal(np.asarray(a), b)
  for a, b in zip(recons, ref_recons):
    np.testing.assert_allclose(np.asarray(a), b, atol=1e-5)
  assert all(np.isin(np.asarray(a), rows).all() for a in ids[:2])
  assert not np.isin(np.asarray(ids[3]), rows).all()
  # The whole vocabulary as the subset changes nothing.
  whole = spae.PyramidSpec((1, 2, 4, 8), semantic_layers=4, semantic_vocab=tuple(range(57)))
  plain = spae.saq_quantize(z, e, spae.PyramidSpec((1, 2, 4, 8)), vocab_chunk=16)[0]
  for a, b in zip(spae.saq_quantize(z, e, whole, vocab_chunk=16)[0], plain):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  with pytest.raises(spae.SpaeInputError, match="outside this vocabulary of 57"):
    spae.saq_quantize(z, e, spae.PyramidSpec((1, 2), semantic_layers=1, semantic_vocab=(3, 57)))
  for bad, match in (((1, ()), "set together"), ((0, (1, 2)), "set together"), ((1, (2, 2)), "distinct"),
                     ((1, (-1,)), "distinct"), ((-1, ()), ">= 0")):
    with pytest.raises(spae.SpaeInputError, match=match):
      spae.PyramidSpec((1, 2), semantic_layers=bad[0], semantic_vocab=bad[1])


def test_semantic_codebook_serves_only_the_semantic_layers():
  """A semantic codebook of their own: the sub-vocabulary layers search it and add its codes, the other layers the
  main codebook; the ids stay rows of the one vocabulary, and decoding with the same codes gives the same latents."""
  rng = np.random.default_rng(7)
  e = rng.standard_normal((57, 6)).astype(np.float32)
  sem = rng.standard_normal((57, 6)).astype(np.float32) * 3.0
  z = rng.standard_normal((2, 8, 8, 6)).astype(np.float32)
  rows = (0, 5, 9, 30, 31, 44, 56)
  spec = spae.PyramidSpec((1, 2, 4, 8), semantic_layers=2, semantic_vocab=rows)
  ids, recons = spae.saq_quantize(z, e, spec, vocab_chunk=16, semantic_codebook=sem)
  ref_ids, ref_recons = _np_saq(z, e, spec.grids, sub=(2, rows), sem_e=sem)
  for a, b in zip(ids, ref_ids):
    np.testing.assert_array_equal(np.asarray(a), b)
  for a, b in zip(recons, ref_recons):
    np.testing.assert_allclose(np.asarray(a), b, atol=1e-4)
  # Layer 1's reconstruction is its word's semantic code, not its main code.
  np.testing.assert_allclose(np.asarray(recons[0])[:, 0, 0], sem[np.asarray(ids[0])[:, 0, 0]], atol=1e-6)
  plain_ids, plain_recons = spae.saq_quantize(z, e, spec, vocab_chunk=16)
  assert not np.allclose(np.asarray(plain_recons[0]), np.asarray(recons[0]))
  back = spae.reconstruct_from_ids(ids, e, (8, 8), semantic_codebook=sem, spec=spec)
  for a, b in zip(back, recons):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
  assert not np.allclose(np.asarray(spae.reconstruct_from_ids(ids, e, (8, 8))[-1]), np.asarray(recons[-1]))
  for call, match in ((lambda: spae.saq_quantize(z, e, spec, semantic_codebook=sem[:, :5]), "must be equal"),
                      (lambda: spae.saq_quantize(z, e, spae.PyramidSpec((1, 2, 4, 8)), semantic_codebook=sem),
                       "no semantic sub-vocabulary"),
                      (lambda: spae.reconstruct_from_ids(ids, e, (8, 8), semantic_codebook=sem), "spec=")):
    with pytest.raises(spae.SpaeInputError, match=match):
      call()


def test_rq_ablation_matches_numpy_reference():
  rng = np.random.default_rng(4)
  e = rng.standard_normal((40, 5)).astype(np.float32)
  z = rng.standard_normal((1, 4, 4, 5)).astype(np.float32)
  ids, recons = spae.train.rq_quantize(z, e, spae.PyramidSpec((1, 2, 4)))
  ref_ids, ref_recons = _np_saq(z, e, (1, 2, 4), mode="rq")
  for a, b in zip(ids, ref_ids):
    np.testing.assert_array_equal(np.asarray(a), b)
  np.testing.assert_allclose(np.asarray(recons[-1]), ref_recons[-1], atol=1e-5)


def test_token_counts_and_shapes_default_pyramid():
  spec = spae.PyramidSpec()
  assert spec.tokens_per_layer() == [1, 4, 16, 64, 256, 256]
  assert spec.cumulative_tokens() == [1, 5, 21, 85, 341, 597]
  rng = np.random.default_rng(5)
  e = rng.standard_normal((30, 4)).astype(np.float32)
  z = rng.standard_normal((3, 16, 16, 4)).astype(np.float32)
  ids, recons = spae.saq_quantize(z, e, spec)
  assert [tuple(a.shape) for a in ids] == [(3, s, s) for s in spec.grids]
  assert all(a.dtype == jnp.int32 for a in ids)
  assert [tuple(r.shape) for r in recons] == [(3, 16, 16, 4)] * 6


def test_constant_latent_equal_to_a_codebook_row_is_exact():
  rng = np.random.default_rng(6)
  e = rng.standard_normal((50, 8)).astype(np.float32)
  k = 17
  z = np.broadcast_to(e[k], (2, 8, 8, 8)).copy()
  ids, recons = spae.saq_quantize(z, e, spae.PyramidSpec((1, 2, 4, 8, 8)))
  for a in ids:
    assert np.all(np.asarray(a) == k)
  for r in recons:
    np.testing.assert_allclose(np.asarray(r), z, atol=1e-6)


def test_saq_average_tracks_z_better_with_more_layers():
  rng = np.random.default_rng(7)
  e = rng.standard_normal((400, 8)).astype(np.float32)
  z = 0.5 * rng.standard_normal((4, 8, 8, 8)).astype(np.float32)
  _, recons = spae.saq_quantize(z, e, spae.PyramidSpec((1, 2, 4, 8, 8, 8)))
  errs = [float(np.mean((np.asarray(r) - z) ** 2)) for r in recons]
  assert errs[-1] < errs[0]


def test_dilation_positions_and_pool_variant():
  z = jnp.arange(8 * 8, dtype=jnp.float32).reshape(1, 8, 8, 1)
  from spae._pyramid import subsample

  # Block (i, j) of a 2×2 grid on 8×8 samples position (4i + 2, 4j + 2).
  np.testing.assert_array_equal(np.asarray(subsample(z, 2))[0, :, :, 0], [[18, 22], [50, 54]])
  np.testing.assert_allclose(np.asarray(subsample(z, 2, "pool"))[0, :, :, 0], [[13.5, 17.5], [45.5, 49.5]])


def test_reconstruct_from_ids_equals_quantizer_recon():
  rng = np.random.default_rng(8)
  e = rng.standard_normal((30, 4)).astype(np.float32)
  z = rng.standard_normal((2, 4, 4, 4)).astype(np.float32)
  ids, recons = spae.saq_quantize(z, e, spae.PyramidSpec((1, 2, 4)))
  again = spae.reconstruct_from_ids(ids, e, (4, 4))
  for a, b in zip(again, recons):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)


def test_straight_through_and_commitment_gradients():
  z = jnp.ones((1, 2, 2, 3))
  r = jnp.zeros((1, 2, 2, 3))
  g = jax.grad(lambda z: jnp.sum(spae.losses.straight_through(z, r) * 2.0))(z)
  np.testing.assert_allclose(np.asarray(g), 2.0)  # identity gradient
  np.testing.assert_allclose(np.asarray(spae.losses.straight_through(z, r)), 0.0)  # value of r
  gc = jax.grad(lambda z: spae.losses.commitment_loss(z, [r, r]))(z)
  assert np.all(np.asarray(gc) > 0)  # descending moves z toward sg(r) = 0


def test_neg_dist_logsumexp_matches_dense_and_gradient():
  rng = np.random.default_rng(9)
  e = rng.standard_normal((37, 5)).astype(np.float32)
  x = rng.standard_normal((6, 5)).astype(np.float32)

  def dense(x):
    d = jnp.sum((x[:, None] - e[None]) ** 2, -1)
    return jax.nn.logsumexp(-d / 0.7, axis=1)

  np.testing.assert_allclose(np.asarray(neg_dist_logsumexp(x, e, 0.7, vocab_chunk=8)),
                             np.asarray(dense(x)), rtol=1e-5)
  g1 = jax.grad(lambda x: neg_dist_logsumexp(x, e, 0.7, vocab_chunk=8).sum())(x)
  g2 = jax.grad(lambda x: dense(x).sum())(x)
  np.testing.assert_allclose(np.asarray(g1), np.asarray(g2), rtol=1e-4, atol=1e-5)


def test_bad_shapes_raise_clear_errors():
  e = np.zeros((10, 4), np.float32)
  with pytest.raises(spae.SpaeInputError, match="not divisible"):
    spae.saq_quantize(np.zeros((1, 6, 6, 4), np.float32), e, spae.PyramidSpec((1, 4)))
  with pytest.raises(spae.SpaeInputError, match="codebook dim"):
    spae.saq_quantize(np.zeros((1, 4, 4, 3), np.float32), e, spae.PyramidSpec((1, 2)))
  with pytest.raises(spae.SpaeInputError):
    spae.PyramidSpec((0, 2))


def test_pooled_layers_quantize_the_attention_pooling():
  """Pooled layers search Σ a_p·(l·z − Σq)_p per block; uniform weights are the block mean; the rest are unchanged."""
  from spae._pyramid import attention_pool, subsample

  rng = np.random.default_rng(3)
  z = rng.standard_normal((2, 8, 8, 4)).astype(np.float32)
  e = rng.standard_normal((50, 4)).astype(np.float32)
  uniform = np.full((2, 8, 8), 1 / 64, np.float32)
  np.testing.assert_allclose(np.asarray(attention_pool(jnp.asarray(z), 1, jnp.asarray(uniform))),
                             np.asarray(subsample(jnp.asarray(z), 1, "pool")), rtol=1e-5, atol=1e-6)
  logits = rng.standard_normal((2, 8, 8)) * 3
  w1 = np.exp(logits) / np.exp(logits).sum((1, 2), keepdims=True)  # one block: the whole grid
  blocks = np.exp(logits).reshape(2, 2, 4, 2, 4).sum((2, 4))
  w2 = np.exp(logits) / np.repeat(np.repeat(blocks, 4, 1), 4, 2)  # 2×2 blocks
  spec = spae.PyramidSpec((1, 2, 4), pooled_layers=2)
  ids, _ = spae.saq_quantize(z, e, spec, pool_weights=[jnp.asarray(w1, jnp.float32), jnp.asarray(w2, jnp.float32)])
  ref, _ = _np_saq(z, e, (1, 2, 4), weights=[w1, w2])
  for a, r in zip(ids, ref):
    np.testing.assert_array_equal(np.asarray(a), r)
  # All weight on one position: layer 1 quantizes that position's latent, not the image's.
  one = np.zeros((2, 8, 8), np.float32)
  one[:, 5, 2] = 1.0
  ids1, _ = spae.saq_quantize(z, e, spae.PyramidSpec((1,), pooled_layers=1), pool_weights=[jnp.asarray(one)])
  np.testing.assert_array_equal(np.asarray(ids1[0])[:, 0, 0], _np_nearest(z[:, 5, 2], e)[0])
  with pytest.raises(spae.SpaeInputError, match="pool_weights"):
    spae.saq_quantize(z, e, spec)
  with pytest.raises(spae.SpaeInputError, match=r"\[B, H, W\]"):
    spae.saq_quantize(z, e, spec, pool_weights=[jnp.asarray(w1[:, :4]), jnp.asarray(w2)])
  with pytest.raises(spae.SpaeInputError, match="pooled_layers"):
    spae.PyramidSpec((1, 2), pooled_layers=3)


# ------------------------------------------------------------------------------------------ weighted SAQ
def _np_weighted_saq(z, e, grids, w):
  """Weighted SAQ from its definition, not its target formula: each block of layer l takes the code that brings the
  weighted average r_l = Σ_{i≤l} w_i q_i / W_l at the block centre closest to z there (dilation subsampling)."""
  b, h, _, d = z.shape
  acc = np.zeros_like(z, dtype=np.float64)  # Σ_{i<l} w_i q_i
  ids_all, recons = [], []
  for l, s in enumerate(grids, start=1):
    bh, total = h // s, sum(w[:l])
    ids = np.zeros((b, s, s), np.int64)
    for n in range(b):
      for i in range(s):
        for j in range(s):
          c = (n, i * bh + bh // 2, j * bh + bh // 2)
          err = (((acc[c] + w[l - 1] * e.astype(np.float64)) / total - z[c]) ** 2).sum(-1)
          ids[n, i, j] = int(err.argmin())
    for n in range(b):
      for i in range(s):
        for j in range(s):
          acc[n, i * bh:(i + 1) * bh, j * bh:(j + 1) * bh] += w[l - 1] * e[ids[n, i, j]]
    ids_all.append(ids)
    recons.append(acc / total)
  return ids_all, recons


def test_weighted_saq_picks_the_codes_that_bring_each_weighted_average_closest():
  rng = np.random.default_rng(11)
  e = rng.standard_normal((41, 5)).astype(np.float32)
  z = rng.standard_normal((2, 8, 8, 5)).astype(np.float32)
  grids, w = (1, 2, 4, 8), (1.0, 1.0, 2.0, 3.0)
  spec = spae.PyramidSpec(grids, layer_weights=w)
  ids, recons = spae.saq_quantize(z, e, spec, vocab_chunk=16)
  ref_ids, ref_recons = _np_weighted_saq(z, e, grids, w)
  for a, b in zip(ids, ref_ids):
    np.testing.assert_array_equal(np.asarray(a), b)
  for a, b in zip(recons, ref_recons):
    np.testing.assert_allclose(np.asarray(a), b, atol=1e-5)
  # Decoding the ids alone gives the same averages; without the spec (plain SAQ) it does not.
  again = spae.reconstruct_from_ids(ids, e, (8, 8), spec=spec)
  for a, b in zip(again, recons):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
  plain = spae.reconstruct_from_ids(ids, e, (8, 8))
  assert not np.allclose(np.asarray(plain[-1]), np.asarray(recons[-1]), atol=1e-3)
  # The weights change which codes the weighted layers take.
  plain_ids, _ = spae.saq_quantize(z, e, spae.PyramidSpec(grids), vocab_chunk=16)
  assert any((np.asarray(a) != np.asarray(b)).any() for a, b in zip(ids[2:], plain_ids[2:]))


def test_unit_layer_weights_are_plain_saq_exactly():
  rng = np.random.default_rng(12)
  e = rng.standard_normal((33, 4)).astype(np.float32)
  z = rng.standard_normal((2, 8, 8, 4)).astype(np.float32)
  ones = spae.PyramidSpec((1, 2, 4, 8), layer_weights=(1, 1, 1, 1))
  assert not ones.weighted and ones.saq_weight(3) is None
  a_ids, a_rec = spae.saq_quantize(z, e, ones)
  b_ids, b_rec = spae.saq_quantize(z, e, spae.PyramidSpec((1, 2, 4, 8)))
  for x, y in zip(a_ids + a_rec, b_ids + b_rec):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_layer_weights_are_checked_and_follow_a_prefix():
  spec = spae.PyramidSpec((1, 2, 4), layer_weights=(1, 2, 4))
  assert spec.saq_weight(2) == (2.0, 3.0) and spec.saq_weight(3) == (4.0, 7.0)
  part = spec.prefix(2)
  assert part.grids == (1, 2) and part.layer_weights == (1.0, 2.0)
  for bad in [(1, 2), (1, 0, 1), (1, -1, 1), (1, float("nan"), 1), (True, 1, 1), "112"]:
    with pytest.raises(spae.SpaeInputError, match="layer_weights"):
      spae.PyramidSpec((1, 2, 4), layer_weights=bad)


def test_semantic_targets_follow_the_layer_weights():
  from spae.train import semantic_targets

  rng = np.random.default_rng(13)
  e = rng.standard_normal((29, 4)).astype(np.float32)
  z = jnp.asarray(rng.standard_normal((1, 4, 4, 4)).astype(np.float32))
  spec = spae.PyramidSpec((1, 2, 4), layer_weights=(1, 3, 2))
  _, recons = spae.saq_quantize(z, e, spec)
  t = semantic_targets(z, recons, spec.grids, 3, "dilation", "saq", None, spec)
  # t_l = (W_l z(c) − W_{l−1} r_{l−1}(c)) / w_l at the block centres c
  c2, c3 = np.array([1, 3]), np.array([0, 1, 2, 3])
  want2 = (4 * z[:, c2][:, :, c2] - 1 * recons[0][:, c2][:, :, c2]) / 3
  want3 = (6 * z[:, c3][:, :, c3] - 4 * recons[1][:, c3][:, :, c3]) / 2
  np.testing.assert_allclose(np.asarray(t[1]), np.asarray(want2).reshape(1, 4, 4), atol=1e-5)
  np.testing.assert_allclose(np.asarray(t[2]), np.asarray(want3).reshape(1, 16, 4), atol=1e-5)
