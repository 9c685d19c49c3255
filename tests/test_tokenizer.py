"""Tokenizer and TokenPyramid: encode/decode, persistence, determinism and bad input."""

import json
import shutil

import numpy as np
import pytest

import spae


def test_encode_shapes_words_and_llm_ids(tiny_tok, sample_images):
  pyr = tiny_tok.encode(sample_images)
  assert pyr.grids == (1, 2, 4, 8) and pyr.batch_size == 2
  assert [len(w) for w in pyr.words(2)] == [4, 4]
  vocab_words = set(tiny_tok.vocabulary.words(range(len(tiny_tok.vocabulary))))
  assert all(w in vocab_words for layer in range(1, 5) for row in pyr.words(layer) for w in row)
  assert pyr.codebook_ids(2).shape == (2, 5)
  assert pyr.codebook_ids(3).shape == (2, 21)
  # Reading order: layer 1, then layer 2 row-major.
  np.testing.assert_array_equal(pyr.codebook_ids(2)[:, 1:], pyr.ids[1].reshape(2, 4))
  np.testing.assert_array_equal(pyr.llm_ids(4), tiny_tok.vocabulary.llm_ids[pyr.codebook_ids(4)])


def test_encode_first_layers_only(tiny_tok, sample_images):
  """encode(layers=k) is a full encode's first k layers (a layer's target depends only on the layers above)."""
  full = tiny_tok.encode(sample_images)
  for k in (1, 3):
    part = tiny_tok.encode(sample_images, layers=k)
    assert part.num_layers == k and part.grids == full.grids[:k]
    np.testing.assert_array_equal(part.codebook_ids(), full.codebook_ids(k))
  for bad in (0, 5, 2.0, True):
    with pytest.raises(spae.SpaeInputError, match="layers must be an integer from 1 to 4"):
      tiny_tok.encode(sample_images, layers=bad)


def test_single_image_uint8_and_float_inputs_agree(tiny_tok, sample_images):
  a = tiny_tok.encode(sample_images[0])
  b = tiny_tok.encode(sample_images[0].astype(np.float32) / 255.0)
  assert a.batch_size == 1
  for x, y in zip(a.ids, b.ids):
    np.testing.assert_array_equal(x, y)


def test_encode_is_deterministic(tiny_tok, sample_images):
  a, b = tiny_tok.encode(sample_images), tiny_tok.encode(sample_images)
  for x, y in zip(a.ids, b.ids):
    np.testing.assert_array_equal(x, y)


def test_every_prefix_decodes(tiny_tok, sample_images):
  pyr = tiny_tok.encode(sample_images)
  outs = [tiny_tok.decode(pyr, layers=k) for k in range(1, 5)]
  for o in outs:
    assert o.shape == (2, 32, 32, 3) and o.min() >= 0.0 and o.max() <= 1.0 and np.all(np.isfinite(o))
  # A prefix decode uses only its layers: changing a deeper layer must not change it.
  changed = spae.TokenPyramid([a.copy() for a in pyr.ids], pyr.vocabulary)
  changed.ids[3][:] = (changed.ids[3] + 1) % len(tiny_tok.vocabulary)
  np.testing.assert_array_equal(tiny_tok.decode(changed, layers=3), outs[2])
  assert not np.array_equal(tiny_tok.decode(changed, layers=4), outs[3])


def test_save_load_gives_identical_tokens_and_images(tiny_tok, tiny_tok_dir, sample_images):
  loaded = spae.Tokenizer.load(tiny_tok_dir)
  a, b = tiny_tok.encode(sample_images), loaded.encode(sample_images)
  for x, y in zip(a.ids, b.ids):
    np.testing.assert_array_equal(x, y)
  np.testing.assert_array_equal(tiny_tok.decode(a, 2), loaded.decode(b, 2))
  assert loaded.config == tiny_tok.config


def test_json_roundtrip(tiny_tok, sample_images):
  pyr = tiny_tok.encode(sample_images)
  doc = json.loads(json.dumps(pyr.to_json()))
  back = spae.TokenPyramid.from_json(doc, tiny_tok.vocabulary)
  for x, y in zip(pyr.ids, back.ids):
    np.testing.assert_array_equal(x, y)
  assert doc["words"][0] == pyr.words(1)
  other = spae.Vocabulary.from_arrays(tiny_tok.vocabulary.pieces, tiny_tok.vocabulary.embeddings * 2)
  with pytest.raises(spae.SpaeInputError, match="different vocabulary"):
    spae.TokenPyramid.from_json(doc, other)


def test_size_mismatch_is_center_cropped_or_rejected(tiny_tok):
  rng = np.random.default_rng(3)
  img = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
  x, _ = tiny_tok.preprocess(img)
  assert x.shape == (1, 32, 32, 3)
  # center_crop keeps the middle 48×48 square: a change outside it does not affect the tokens.
  img2 = img.copy()
  img2[:, :5] = 0
  for a, b in zip(tiny_tok.encode(img).ids, tiny_tok.encode(img2).ids):
    np.testing.assert_array_equal(a, b)
  import dataclasses

  strict = spae.Tokenizer(dataclasses.replace(tiny_tok.config, fit="reject"), tiny_tok.vocabulary, tiny_tok.model)
  with pytest.raises(spae.SpaeInputError, match="expects 32×32"):
    strict.encode(img)


def test_bad_arrays_are_clear_errors(tiny_tok):
  with pytest.raises(spae.SpaeInputError, match="in \\[0, 1\\]"):
    tiny_tok.encode(np.full((32, 32, 3), 3.0, np.float32))
  with pytest.raises(spae.SpaeInputError, match="channels"):
    tiny_tok.encode(np.zeros((32, 32, 2), np.uint8))
  with pytest.raises(spae.SpaeInputError, match="layers must be in"):
    tiny_tok.decode(tiny_tok.encode(np.zeros((32, 32, 3), np.uint8)), layers=9)


def test_grayscale_rgba_and_16bit_files_are_converted(tiny_tok, tmp_path):
  from PIL import Image

  rng = np.random.default_rng(4)
  rgb = (rng.random((32, 32, 3)) * 255).astype(np.uint8)
  gray = rgb[..., 0]
  Image.fromarray(gray, "L").save(tmp_path / "g.png")
  rgba = np.concatenate([rgb, np.full((32, 32, 1), 255, np.uint8)], -1)
  Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
  Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "w.png")  # 16-bit grayscale
  g = spae.load_image(tmp_path / "g.png")
  a = spae.load_image(tmp_path / "a.png")
  w = spae.load_image(tmp_path / "w.png")
  assert g.shape == a.shape == w.shape == (32, 32, 3) and g.dtype == np.uint8
  np.testing.assert_array_equal(a, rgb)  # opaque alpha: identical colours
  np.testing.assert_array_equal(w, g)  # 16-bit scaled to 8 bits, not clipped
  tiny_tok.encode(np.stack([g, a, w]))


def test_unreadable_and_corrupt_images(tmp_path):
  (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
  with pytest.raises(spae.SpaeInputError, match="cannot read image"):
    spae.load_image(tmp_path / "bad.png")
  with pytest.raises(spae.SpaeInputError, match="does not exist"):
    spae.load_image(tmp_path / "missing.png")


def test_tokenizer_dir_missing_file_or_other_version(tiny_tok_dir, tmp_path):
  broken = tmp_path / "broken"
  shutil.copytree(tiny_tok_dir, broken)
  shutil.rmtree(broken / "params")
  with pytest.raises(spae.SpaeInputError, match="missing 'params'"):
    spae.Tokenizer.load(broken)
  old = tmp_path / "old"
  shutil.copytree(tiny_tok_dir, old)
  meta = json.loads((old / "config.json").read_text())
  meta["format"] = 0
  (old / "config.json").write_text(json.dumps(meta))
  with pytest.raises(spae.SpaeInputError, match="format 0"):
    spae.Tokenizer.load(old)
  with pytest.raises(spae.SpaeInputError, match="does not exist"):
    spae.Tokenizer.load(tmp_path / "nowhere")


def test_mismatched_params_are_a_clear_error(tiny_tok_dir, tmp_path):
  other = tmp_path / "other"
  shutil.copytree(tiny_tok_dir, other)
  meta = json.loads((other / "config.json").read_text())
  meta["config"]["autoencoder"]["channels"] = 8
  (other / "config.json").write_text(json.dumps(meta))
  with pytest.raises(spae.SpaeInputError, match="does not match config.json"):
    spae.Tokenizer.load(other)


def test_save_is_atomic(tiny_tok, tmp_path, monkeypatch):
  target = tmp_path / "tok"

  def boom(*a, **k):
    raise RuntimeError("disk full")

  monkeypatch.setattr(spae.Vocabulary, "save", boom)
  with pytest.raises(RuntimeError):
    tiny_tok.save(target)
  assert not target.exists()
  assert list(tmp_path.iterdir()) == []  # no temporary leftovers either


def test_bundle_can_reference_the_shipped_default_vocabulary(tmp_path):
  from spae import assets
  from spae._tokenizer import VOCAB_REF, share_default_vocabulary

  vocab = assets.default_vocabulary()
  tok = spae.Tokenizer(spae.tiny_config(dim=vocab.dim), vocab)
  tok.save(tmp_path / "t")
  assert share_default_vocabulary(tmp_path / "t")
  assert not (tmp_path / "t" / "vocab").exists() and (tmp_path / "t" / VOCAB_REF).is_file()
  assert share_default_vocabulary(tmp_path / "t")  # a second stage sharing the same bundle: no error
  assert spae.Tokenizer.load(tmp_path / "t").vocabulary.fingerprint() == vocab.fingerprint()
  ref = json.loads((tmp_path / "t" / VOCAB_REF).read_text())
  ref["fingerprint"] = "0" * 16
  (tmp_path / "t" / VOCAB_REF).write_text(json.dumps(ref))
  with pytest.raises(spae.SpaeInputError, match="fingerprint"):
    spae.Tokenizer.load(tmp_path / "t")
  # A bundle over another vocabulary keeps its own copy.
  spae.tiny_tokenizer().save(tmp_path / "tiny")
  assert not share_default_vocabulary(tmp_path / "tiny") and (tmp_path / "tiny" / "vocab").is_dir()


def test_pooled_layers_survive_save_load_and_prefix_encodes(sample_images, tmp_path):
  """A pyramid with pooled top layers: its scorer is saved with the bundle, reloads to identical tokens, a k-layer
  encode gives the full encode's first k layers, and the scorer really steers the top words."""
  import dataclasses

  import jax
  import jax.numpy as jnp
  from flax import nnx

  cfg = spae.tiny_config()
  cfg = dataclasses.replace(cfg, pyramid=dataclasses.replace(cfg.pyramid, pooled_layers=2, pool_hidden=8))
  tok = spae.Tokenizer(cfg, spae.tiny_vocabulary(), seed=0)
  # A scorer that is not uniform: a random score vector (the initial one is zero, i.e. the block mean).
  tok.model.pool.score.kernel.value = jax.random.normal(jax.random.PRNGKey(0), (8, 1)) * 20.0
  tok.refresh()
  full = tok.encode(sample_images)
  tok.save(tmp_path / "t")
  back = spae.Tokenizer.load(tmp_path / "t")
  assert back.config.pyramid.pooled_layers == 2
  for a, b in zip(full.ids, back.encode(sample_images).ids):
    np.testing.assert_array_equal(a, b)
  for k in (1, 2, 3):
    part = tok.encode(sample_images, layers=k)
    for a, b in zip(part.ids, full.ids[:k]):
      np.testing.assert_array_equal(a, b)
  uniform = spae.Tokenizer(cfg, spae.tiny_vocabulary(), model=tok.model, seed=0)
  uniform.model.pool.score.kernel.value = jnp.zeros((8, 1))
  uniform.refresh()
  assert any((a != b).any() for a, b in zip(uniform.encode(sample_images).ids[:2], full.ids[:2]))


def test_image_arrays_of_every_accepted_kind_become_rgb_floats():
  """Arrays passed to encode: grey and RGBA (composited on white) become RGB; uint8 and uint16 are scaled to [0, 1];
  anything else is one line saying what was wrong."""
  from spae._images import as_float_batch

  grey = np.full((4, 4, 1), 51, np.uint8)
  x, single = as_float_batch(grey)
  assert single and x.shape == (1, 4, 4, 3) and np.allclose(x, 0.2)
  rgba = np.zeros((2, 4, 4, 4), np.uint8)
  rgba[0, ..., 0], rgba[0, ..., 3] = 255, 255  # opaque red
  rgba[1, ..., 1], rgba[1, ..., 3] = 255, 0  # fully transparent green: the white behind it
  x, single = as_float_batch(rgba)
  assert not single and np.allclose(x[0], [1, 0, 0]) and np.allclose(x[1], [1, 1, 1])
  x, _ = as_float_batch(np.full((4, 4, 3), 65535, np.uint16))
  assert np.allclose(x, 1.0)
  for bad, why in ((np.zeros((4, 4)), r"\[H, W, C\] or \[B, H, W, C\], got shape \(4, 4\)"),
                   (np.zeros((4, 4, 5)), "1, 3 or 4 channels, got 5"),
                   (np.full((4, 4, 3), 2.0), r"float images must be in \[0, 1\], got range \[2, 2\]"),
                   (np.full((4, 4, 3), np.nan), "NaN or Inf"),
                   (np.zeros((4, 4, 3), np.int32), "uint8 or float, got int32")):
    with pytest.raises(spae.SpaeInputError, match=why):
      as_float_batch(bad)


def test_token_pyramids_built_by_hand_are_checked_before_use(tiny_tok):
  """TokenPyramid and decode take ids from users: the wrong shapes, batch sizes, ranges or grids are one line each,
  and a pyramid without a vocabulary says it cannot name its words."""
  v = len(tiny_tok.vocabulary)
  good = [np.zeros((2, 1, 1), np.int32), np.ones((2, 2, 2), np.int32)]
  pyr = spae.TokenPyramid(good, tiny_tok.vocabulary)
  assert len(pyr) == 2 and pyr.grids == (1, 2) and pyr[1].batch_size == 1
  for ids, message in (([], "needs at least one layer"),
                       ([np.zeros((2, 1, 1)), np.zeros((3, 2, 2))], r"layer 2 ids must be \[B, s, s\] with B=2"),
                       ([np.zeros((2, 1, 2))], r"layer 1 ids must be \[B, s, s\]"),
                       ([np.full((1, 1, 1), v)], f"out of range for a vocabulary of {v} entries"),
                       ([np.full((1, 1, 1), -1)], f"out of range for a vocabulary of {v} entries"),
                       ([[["a"]]], "token ids must be int32 arrays")):
    with pytest.raises(spae.SpaeInputError, match=message):
      spae.TokenPyramid(ids, tiny_tok.vocabulary)
  bare = spae.TokenPyramid([np.full((1, 1, 1), v + 5, np.int32), np.zeros((1, 2, 2), np.int32)])
  with pytest.raises(spae.SpaeInputError, match="no vocabulary attached; words are unknown"):
    bare.words(1)
  with pytest.raises(spae.SpaeInputError, match="no vocabulary attached; LLM ids are unknown"):
    bare.llm_ids()
  with pytest.raises(spae.SpaeInputError, match="layer must be in 1..2, got 3"):
    pyr.words(3)
  with pytest.raises(spae.SpaeInputError, match=f"token ids exceed this tokenizer's vocabulary of {v}"):
    tiny_tok.decode(bare)
  with pytest.raises(spae.SpaeInputError, match=r"token grids \(1, 4\) do not match this tokenizer's pyramid \(1, 2\)"):
    tiny_tok.decode(spae.TokenPyramid([np.zeros((1, 1, 1)), np.zeros((1, 4, 4))], tiny_tok.vocabulary))


def test_saq_layer_weights_survive_save_load_and_set_encode_and_decode(sample_images, tmp_path):
  """A pyramid with SAQ layer weights: the bundle keeps them, a k-layer encode gives the full encode's first k layers,
  and decode(layers=k) decodes the weighted average of those k layers (docs/method.md, "Weighted SAQ")."""
  import dataclasses

  import jax.numpy as jnp

  cfg = spae.tiny_config()
  cfg = dataclasses.replace(cfg, pyramid=dataclasses.replace(cfg.pyramid, layer_weights=(1, 1, 3, 3)))
  tok = spae.Tokenizer(cfg, spae.tiny_vocabulary(), seed=0)
  plain = spae.Tokenizer(spae.tiny_config(), spae.tiny_vocabulary(), model=tok.model, seed=0)
  full = tok.encode(sample_images)
  tok.save(tmp_path / "t")
  back = spae.Tokenizer.load(tmp_path / "t")
  assert back.config.pyramid.layer_weights == (1.0, 1.0, 3.0, 3.0)
  for a, b in zip(full.ids, back.encode(sample_images).ids):
    np.testing.assert_array_equal(a, b)
  for k in (1, 3):
    for a, b in zip(tok.encode(sample_images, layers=k).ids, full.ids[:k]):
      np.testing.assert_array_equal(a, b)
  # Layers 1-2 keep their weight 1, so their ids are plain SAQ's; the weighted layers' ids differ.
  other = plain.encode(sample_images)
  for a, b in zip(full.ids[:2], other.ids[:2]):
    np.testing.assert_array_equal(a, b)
  assert any((a != b).any() for a, b in zip(full.ids[2:], other.ids[2:]))
  # decode(layers=3) is the decoder of (q1 + q2 + 3 q3) / 5.
  codes = [np.asarray(tok.codebook)[a] for a in full.ids[:3]]
  up = lambda q: np.repeat(np.repeat(q, 8 // q.shape[1], axis=1), 8 // q.shape[2], axis=2)
  r3 = (up(codes[0]) + up(codes[1]) + 3 * up(codes[2])) / 5
  want = np.clip((np.asarray(tok.model.decoder(jnp.asarray(r3))) + 1) / 2, 0, 1)
  np.testing.assert_allclose(tok.decode(full, layers=3), want, atol=1e-4)
  assert not np.allclose(plain.decode(full, layers=3), want, atol=1e-3)
