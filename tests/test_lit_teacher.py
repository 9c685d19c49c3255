"""The LiT teacher and its build tool, with the tiny random BERT fixture standing in for all-MiniLM-L6-v2."""

import importlib.metadata
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import spae
from spae.teachers import BertTextEncoder
from spae.teachers._lit import LiTConfig, LiTTeacher, init_lit_params, lit_image_features

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
import build_default_vocab as bdv  # noqa: E402
import train_default_teacher as tdt  # noqa: E402

BERT = ROOT / "tests" / "fixtures" / "parity" / "bert"
CFG = LiTConfig(image_size=16, stem=4, widths=(8, 8), dim=32)  # the tiny BERT is 32 wide
TEMPLATES = ("a photo of a {}.", "art of the {}.")


@pytest.fixture(scope="module")
def bert():
  return BertTextEncoder.from_pretrained(BERT, normalize=False)


@pytest.fixture(scope="module")
def scenes():
  return tdt.render_scenes(8, split="train", seed=0, size=32, classes=spae.data.SHAPES_TRAIN_CLASSES)


@pytest.fixture(scope="module")
def trained(bert, scenes, tmp_path_factory):
  images, captions, _ = scenes
  cache = tmp_path_factory.mktemp("lit-cache")
  emb = tdt.embed_texts(bert, captions, batch_size=4, cache_dir=cache)
  params, history = tdt.train(images, emb, config=CFG, steps=2, batch_size=4, lr=1e-2, warmup=1, log_every=1,
                              log=lambda s: None)
  return params, history, emb, cache


@pytest.fixture(scope="module")
def teacher(trained, bert):
  vocab = spae.Vocabulary.from_arrays(["red", "blue", "circle", "square"], np.eye(4, dtype=np.float32))
  t = LiTTeacher(CFG, trained[0], text_tower_identity=bert.identity, text_tower=bert, templates=TEMPLATES)
  return t.with_word_table(vocab), vocab


def _images(n=3, size=32, seed=0):
  return np.random.default_rng(seed).random((n, size, size, 3)).astype(np.float32)


# ------------------------------------------------------------------------------------------------ build tools
def test_filter_lexical_keeps_whole_lowercase_words_in_id_order_and_adds_required():
  pieces = ["[PAD]", "[unused0]", "[CLS]", "the", "##s", "a", "Cat", "dog", "caf\u00e9", "x2y", "of", "zebra",
            "##gon", "hexa", "dotted"]
  ids, missing = bdv.filter_lexical(pieces, min_length=3, max_size=3, required=["dotted", "hexagon", "the"])
  # Cap 3 -> the, dog, zebra; 'dotted' (beyond the cap) is added; 'hexagon' is no whole piece.
  assert [pieces[i] for i in ids] == ["the", "dog", "zebra", "dotted"]
  assert ids == sorted(ids) and missing == ["hexagon"]
  ids, _ = bdv.filter_lexical(pieces, min_length=2, max_size=None)
  assert [pieces[i] for i in ids] == ["the", "dog", "of", "zebra", "hexa", "dotted"]
  with pytest.raises(spae.SpaeInputError):
    bdv.filter_lexical(pieces, max_size=0)


def test_shapes_words_cover_the_caption_grammar():
  words = set(bdv.shapes_words())
  assert set(spae.data.SHAPES) | set(spae.data.COLOUR_NAMES) | set(spae.data.SIZES) <= words
  assert {"striped", "dotted", "above", "left", "background"} <= words


def test_embed_texts_is_normalised_mean_pooling_deduplicated_and_cached(bert, scenes, trained):
  _, captions, _ = scenes
  texts = captions[:3] + [captions[0]]
  direct = np.asarray(bert.encode(texts, normalize=True))
  cache = trained[3]
  got = tdt.embed_texts(bert, texts, batch_size=4, cache_dir=cache)
  np.testing.assert_allclose(got, direct, atol=2e-5)
  np.testing.assert_array_equal(got[0], got[3])
  files = sorted(cache.glob("lit-captions-*.npy"))
  assert len(files) == 2  # one per distinct text list; a repeat call reads its file back
  np.testing.assert_array_equal(tdt.embed_texts(bert, texts, batch_size=4, cache_dir=cache), got)


def test_train_two_steps_is_deterministic_and_learns(bert, scenes, trained):
  params, history, emb, _ = trained
  assert [h["step"] for h in history] == [1, 2]
  assert all(np.isfinite(h["loss"]) for h in history)
  init = init_lit_params(CFG, jax.random.key(0))
  assert set(params) == set(init)
  assert not np.allclose(params["proj_w"], init["proj_w"])  # the image tower moved
  again, _ = tdt.train(scenes[0], emb, config=CFG, steps=2, batch_size=4, lr=1e-2, warmup=1, log_every=1,
                       log=lambda s: None)
  for k in params:
    np.testing.assert_array_equal(np.asarray(params[k]), np.asarray(again[k]))
  with pytest.raises(spae.SpaeInputError, match="width"):
    tdt.train(scenes[0], emb[:, :16], config=CFG, steps=1, batch_size=4)
  with pytest.raises(spae.SpaeInputError, match="batch_size"):
    tdt.train(scenes[0], emb, config=CFG, steps=1, batch_size=64)
  with pytest.raises(spae.SpaeInputError, match="views"):
    tdt.train(scenes[0], emb, config=CFG, steps=1, batch_size=4, views=np.full((8, 2), 99))
  with pytest.raises(spae.SpaeInputError, match="view_probs"):
    tdt.train(scenes[0], emb, config=CFG, steps=1, batch_size=4, views=np.zeros((8, 2), int), view_probs=[1.0])


def test_train_with_text_views(scenes, trained):
  emb = trained[2]
  views = np.stack([np.arange(8), (np.arange(8) + 1) % 8], 1)  # two candidate texts per scene
  params, history = tdt.train(scenes[0], emb, config=CFG, steps=2, batch_size=4, views=views, view_probs=[0.5, 0.5],
                              lr=1e-2, warmup=1, log_every=1, log=lambda s: None)
  assert len(history) == 2 and all(np.isfinite(h["loss"]) for h in history)


def test_gray_shape_views_change_training_only_when_asked(scenes, trained):
  """gray_prob > 0 shows some 'a {shape}' rows in grayscale, so the tower trains differently; gray_prob 0 draws
  nothing more and is the run without the option, bit for bit."""
  emb = trained[2]
  views = np.stack([np.arange(8), (np.arange(8) + 1) % 8], 1)
  kw = dict(config=CFG, steps=2, batch_size=4, views=views, view_probs=[0.5, 0.5], lr=1e-2, warmup=1,
            log=lambda s: None)
  plain, _ = tdt.train(scenes[0], emb, **kw)
  off, _ = tdt.train(scenes[0], emb, gray_view=1, gray_prob=0.0, **kw)
  gray, _ = tdt.train(scenes[0], emb, gray_view=1, gray_prob=1.0, **kw)
  np.testing.assert_array_equal(np.asarray(plain["proj_w"]), np.asarray(off["proj_w"]))
  assert not np.allclose(np.asarray(plain["proj_w"]), np.asarray(gray["proj_w"]))
  with pytest.raises(spae.SpaeInputError, match="gray_prob"):
    tdt.train(scenes[0], emb, gray_prob=0.5, **kw)  # no view column to gray


@pytest.mark.parametrize("argv, says", [(["--widths", "32,x"], "--widths '32,x'"),
                                         (["--gray-shape", "1.5"], "--gray-shape 1.5")])
def test_tool_refuses_bad_tower_options_in_one_line(argv, says, capsys):
  with pytest.raises(SystemExit) as e:
    tdt.main(argv)
  assert e.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert says in err[-1] and "Traceback" not in "".join(err)


def test_grayscale_replaces_only_the_chosen_rows_by_their_luma():
  x = jax.random.uniform(jax.random.key(1), (3, 4, 4, 3))
  out = np.asarray(tdt.grayscale(x, jnp.array([True, False, True])))
  np.testing.assert_array_equal(out[1], np.asarray(x[1]))
  luma = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
  for i in (0, 2):
    for c in range(3):
      np.testing.assert_allclose(out[i, ..., c], np.asarray(luma[i]), rtol=1e-6)


def test_contrastive_loss_prefers_matching_pairs():
  rng = np.random.default_rng(0)
  params = init_lit_params(CFG, jax.random.key(1))
  images = (rng.random((4, 16, 16, 3)) * 255).astype(np.uint8)
  z = np.array(lit_image_features(CFG, params, images.astype(np.float32) / 255))
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  loss = jax.jit(tdt.contrastive_loss, static_argnums=1)
  matched, _ = loss(params, CFG, images, z)
  shuffled, _ = loss(params, CFG, images, z[::-1].copy())
  assert float(matched) < float(shuffled)
  # Two identical scenes with identical texts: a match with either text counts as correct given text_ids.
  images[1] = images[0]
  z = np.array(lit_image_features(CFG, params, images.astype(np.float32) / 255))
  z /= np.linalg.norm(z, axis=1, keepdims=True)
  l_apart, apart = loss(params, CFG, images, z, np.arange(4, dtype=np.int32))
  l_shared, shared = loss(params, CFG, images, z, np.array([0, 0, 2, 3], np.int32))
  assert float(apart["acc"]) == 0.75 and float(shared["acc"]) == 1.0
  np.testing.assert_allclose(float(l_shared), float(l_apart), rtol=1e-5)  # identical texts: same InfoNCE


def test_object_phrases_describe_one_object_of_the_scene(scenes):
  _, _, attrs = scenes
  rng = np.random.default_rng(0)
  for at in attrs:
    short, pair, full = tdt.object_phrases(at, rng)
    shape = short[2:]
    obj = [o for o in at["objects"] if o["shape"] == shape and pair == f"a {o['colour']} {shape}"]
    assert obj and full.startswith(f"a {obj[0]['size']} {obj[0]['colour']}") and full.endswith(shape)


def test_tool_word_table_matches_teacher_prompt_ensemble(bert, teacher):
  t, vocab = teacher
  table = tdt.word_table(bert, vocab.words(range(len(vocab))), TEMPLATES)
  np.testing.assert_allclose(table, t.word_table, atol=2e-5)
  np.testing.assert_allclose(np.linalg.norm(table, axis=1), 1.0, atol=1e-5)


# ------------------------------------------------------------------------------------------------ the teacher
def test_save_load_round_trip_and_offline_relevance(teacher, tmp_path):
  t, vocab = teacher
  images = _images()
  t.metadata = {"note": "test"}
  t.save(tmp_path / "lit")
  loaded = LiTTeacher.load(tmp_path / "lit")  # no text tower
  assert loaded.templates == TEMPLATES and loaded.metadata == {"note": "test"}
  assert loaded.identity == t.identity
  np.testing.assert_allclose(np.asarray(loaded.image_embeddings(images)), np.asarray(t.image_embeddings(images)),
                             atol=1e-6)
  # The float16 word table answers offline; a subset of the vocabulary too.
  rel = np.asarray(loaded.relevance(images, vocab))
  np.testing.assert_allclose(rel, np.asarray(t.relevance(images, vocab)), atol=2e-3)
  sub = vocab.subset([2, 0])
  np.testing.assert_allclose(np.asarray(loaded.relevance(images, sub)), rel[:, [2, 0]], atol=1e-6)
  assert json.loads((tmp_path / "lit" / "teacher.json").read_text())["kind"] == "lit"


def test_relevance_fn_is_jittable_pytree(teacher):
  t, vocab = teacher
  images = _images(2, size=24)
  fn = t.relevance_fn(vocab)
  out = jax.jit(lambda f, x: f(x))(fn, images)
  assert out.shape == (2, len(vocab))
  np.testing.assert_allclose(np.asarray(out), np.asarray(t.relevance(images, vocab)), atol=1e-5)


def test_centred_relevance_removes_each_words_mean_and_masks_words(teacher):
  t, vocab = teacher
  fn = t.relevance_fn(vocab)
  ref, query = _images(6, size=24, seed=1), _images(2, size=24, seed=2)
  plain = np.asarray(fn(ref))
  centred = fn.centred(ref)
  # On the reference set itself every word's mean score is zero; elsewhere scores shift by that mean.
  np.testing.assert_allclose(np.asarray(centred(ref)).mean(0), 0.0, atol=1e-5)
  np.testing.assert_allclose(np.asarray(centred(query)), np.asarray(fn(query)) - plain.mean(0), atol=1e-5)
  allowed = np.array([True, False, True, False])
  masked = np.asarray(jax.jit(lambda f, x: f(x))(fn.centred(ref).restricted(allowed), query))
  assert set(np.argmax(masked, axis=1)) <= {0, 2} and (masked[:, ~allowed] < -1e3).all()
  with pytest.raises(spae.SpaeInputError, match="mask"):
    fn.centred(ref).restricted(np.zeros(4, bool))


def test_standardised_and_mirror_averaged_readings(teacher):
  """standardised: (rel - mean_r) / std_r per word, so on the reference set every word has mean 0 and spread 1;
  mirror_averaged: the mean of an image's and its left-right mirror's scores, the same for an image and its mirror.
  A later `centred` drops the scale; mirroring after an offset is refused."""
  t, vocab = teacher
  fn = t.relevance_fn(vocab)
  ref, query = _images(6, size=24, seed=1), _images(2, size=24, seed=2)
  plain_ref, plain_q = np.asarray(fn(ref)), np.asarray(fn(query))
  std = fn.standardised(ref)
  on_ref = np.asarray(jax.jit(lambda f, x: f(x))(std, ref))
  np.testing.assert_allclose(on_ref.mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(on_ref.std(0), 1.0, atol=1e-3)
  np.testing.assert_allclose(np.asarray(std(query)), (plain_q - plain_ref.mean(0)) / plain_ref.std(0), rtol=1e-3,
                             atol=1e-4)
  np.testing.assert_allclose(np.asarray(std.centred(ref)(query)), plain_q - plain_ref.mean(0), atol=1e-5)
  mirror = fn.mirror_averaged()
  flipped = query[:, :, ::-1]
  np.testing.assert_allclose(np.asarray(mirror(query)), 0.5 * (plain_q + np.asarray(fn(flipped))), atol=1e-5)
  np.testing.assert_allclose(np.asarray(mirror(query)), np.asarray(mirror(flipped)), atol=1e-5)
  assert not np.allclose(plain_q, np.asarray(fn(flipped)), atol=1e-5)  # the towers see the mirror as another image
  with pytest.raises(spae.SpaeInputError, match="mirror_averaged must come before"):
    fn.centred(ref).mirror_averaged()


def test_through_captions_reads_the_image_as_a_mixture_of_its_nearest_captions(teacher, bert):
  """rel(x, k) = (softmax(z . C / tau) C) . u_k: a cold softmax gives the nearest caption's word scores, a hot
  one their mean; gradients still reach the images; offsets must come after, not before."""
  t, vocab = teacher
  fn = t.relevance_fn(vocab)
  bank = np.asarray(bert.embed_ids(*bert.tokenize(["a red circle", "a blue square", "a red square"]), normalize=True))
  images = _images(4, size=24, seed=3)
  z = np.asarray(t.image_embeddings(images))
  table = np.asarray(t.vocabulary_embeddings(vocab))
  cold = np.asarray(jax.jit(lambda f, x: f(x))(fn.through_captions(bank, 1e-4), images))
  np.testing.assert_allclose(cold, bank[np.argmax(z @ bank.T, axis=1)] @ table.T, atol=1e-4)
  hot = np.asarray(fn.through_captions(bank, 1e4)(images))
  np.testing.assert_allclose(hot, np.broadcast_to(bank.mean(0) @ table.T, hot.shape), atol=1e-4)
  grad = jax.grad(lambda x: fn.through_captions(bank, 0.1)(x)[:, 0].sum())(jnp.asarray(images))
  assert np.abs(np.asarray(grad)).max() > 0
  ref = _images(6, size=24, seed=1)
  np.testing.assert_allclose(np.asarray(fn.through_captions(bank, 0.1).centred(ref)(ref)).mean(0), 0.0, atol=1e-5)
  with pytest.raises(spae.SpaeInputError, match="before centred"):
    fn.centred(ref).through_captions(bank, 0.1)
  with pytest.raises(spae.SpaeInputError, match="caption bank must be"):
    fn.through_captions(bank[:, :5], 0.1)
  with pytest.raises(spae.SpaeInputError, match="temperature"):
    fn.through_captions(bank, 0.0)


def test_captions_round_trip_and_the_trainer_reads_through_them(teacher, trained, bert, tmp_path):
  from spae import train as T

  t, vocab = teacher
  captions = ["a red circle", "a blue square", "a red square"]
  emb = tdt.embed_texts(bert, captions)
  saved = LiTTeacher(CFG, trained[0], text_tower_identity=bert.identity, text_tower=bert, templates=TEMPLATES,
                     captions=(captions, emb), cache_dir=tmp_path)
  saved.save(tmp_path / "lit")
  loaded = LiTTeacher.load(tmp_path / "lit", text_tower=BERT, cache_dir=tmp_path)
  assert loaded.caption_texts == captions
  np.testing.assert_allclose(loaded.caption_bank, emb, atol=2e-3)
  cfg = T.load_config(ROOT / "configs" / "tiny.py", ["semantic.weight=1.0", "semantic.caption_bank=2",
                                                      "semantic.caption_tau=0.05"])
  tiny = spae.tiny_vocabulary()
  tr = T.Trainer(cfg, tmp_path / "run", vocabulary=tiny, teacher=loaded)
  assert tr.teacher_fn.bank.shape == (2, CFG.dim) and tr.teacher_fn.bank_tau == 0.05  # the first 2 captions
  np.testing.assert_allclose(np.asarray(tr.teacher_fn.bank), loaded.caption_bank[:2], atol=1e-6)
  with pytest.raises(spae.SpaeInputError, match="keeps 3 captions"):
    T.Trainer(T.load_config(ROOT / "configs" / "tiny.py", ["semantic.weight=1.0", "semantic.caption_bank=4"]),
              tmp_path / "run2", vocabulary=tiny, teacher=loaded)
  with pytest.raises(spae.SpaeInputError, match="keeps its training captions"):
    T.Trainer(cfg, tmp_path / "run3", vocabulary=tiny, teacher=t)
  with pytest.raises(spae.SpaeInputError, match="caption_bank"):
    T.load_config(ROOT / "configs" / "tiny.py", ["semantic.caption_bank=-1"]).validate()


def test_whole_word_mask_reads_the_text_tokenizer(teacher, bert):
  t, _ = teacher
  vocab = spae.Vocabulary.from_arrays(["red", "qzxv", "circle"], np.eye(3, dtype=np.float32))
  expect = [w in bert.tokenizer.vocab for w in ("red", "qzxv", "circle")]
  assert list(t.whole_word_mask(vocab)) == expect and not expect[1]


def test_any_image_size_and_non_square(teacher):
  t, _ = teacher
  z = t.image_embeddings(np.random.default_rng(0).random((2, 20, 28, 3)).astype(np.float32))
  assert z.shape == (2, 32)
  np.testing.assert_allclose(np.linalg.norm(np.asarray(z), axis=1), 1.0, atol=1e-5)


def test_foreign_vocabulary_and_text_need_the_text_tower(teacher, bert, tmp_path):
  t, vocab = teacher
  t.save(tmp_path / "lit")
  offline = LiTTeacher.load(tmp_path / "lit")
  foreign = spae.Vocabulary.from_arrays(["red", "zebra"], np.eye(2, dtype=np.float32))
  with pytest.raises(spae.SpaeInputError, match="text_tower=.*"):
    offline.relevance(_images(1), foreign)
  with pytest.raises(spae.SpaeInputError, match="zebra"):
    offline.relevance_fn(foreign)
  with pytest.raises(spae.SpaeInputError, match="templates"):
    offline.relevance(_images(1), vocab, templates=("itap of a {}.",))
  with pytest.raises(spae.SpaeInputError, match="text tower"):
    offline.text_embeddings(["a red circle"])
  # With the text tower the same calls work and agree with the online teacher.
  online = LiTTeacher.load(tmp_path / "lit", text_tower=BERT, cache_dir=tmp_path / "cache")
  np.testing.assert_allclose(np.asarray(online.relevance(_images(1), foreign)),
                             np.asarray(t.relevance(_images(1), foreign, cache_dir=tmp_path / "cache")), atol=1e-5)
  assert online.text_embeddings(["a red circle"]).shape == (1, 32)


def test_wrong_text_tower_and_corrupt_files_are_named(teacher, bert, tmp_path):
  t, _ = teacher
  other = BertTextEncoder(bert.config, bert.params, bert.tokenizer, identity="bert-someotherweights")
  with pytest.raises(spae.SpaeInputError, match="not the one"):
    LiTTeacher(CFG, t.params, text_tower_identity=bert.identity, text_tower=other)
  with pytest.raises(spae.SpaeInputError, match="no teacher.json"):
    LiTTeacher.load(tmp_path)
  t.save(tmp_path / "lit")
  with np.load(tmp_path / "lit" / "image_tower.npz") as f:
    params = {k: f[k] for k in f.files}
  params["proj_b"] = params["proj_b"] + 1.0
  np.savez(tmp_path / "lit" / "image_tower.npz", **params)
  with pytest.raises(spae.SpaeInputError, match="fingerprint"):
    LiTTeacher.load(tmp_path / "lit")
  with pytest.raises(spae.SpaeInputError, match="divisible"):
    LiTConfig(image_size=30, widths=(8, 8))


def test_scene_set_for_the_teacher_keeps_heldout_classes_out_of_training():
  from spae.data import _scenes

  images, captions, attrs = tdt.render_scene_set(12, split="train", seed=0, size=32)
  assert images.shape == (12, 32, 32, 3) and len(captions) == len(attrs) == 12
  lead = [f"{a['objects'][0]['colour']} {a['objects'][0]['shape']}" for a in attrs]
  assert not set(lead) & set(_scenes.HELDOUT_CLASSES)
  assert all(c in _scenes.COLOURS for a in attrs for c in [o["colour"] for o in a["objects"]])
  assert all(f"{a['objects'][0]['colour']}" in cap for a, cap in zip(attrs, captions))  # main object first
  _, _, held = tdt.render_scene_set(6, split="test", seed=1, size=32, heldout_only=True)
  assert all(f"{a['objects'][0]['colour']} {a['objects'][0]['shape']}" in _scenes.HELDOUT_CLASSES for a in held)


def test_word_table_cache_is_shared_by_image_towers_of_one_text_tower(trained, bert):
  vocab = spae.Vocabulary.from_arrays(["red", "blue"], np.eye(2, dtype=np.float32))
  a = LiTTeacher(CFG, trained[0], text_tower_identity=bert.identity, text_tower=bert)
  other_params = jax.tree.map(lambda x: x + 1.0, trained[0])
  b = LiTTeacher(CFG, other_params, text_tower_identity=bert.identity, text_tower=bert)
  assert a.identity != b.identity  # different image towers ...
  assert a.cache_key(vocab) == b.cache_key(vocab)  # ... read the same words through the same text tower
  c = LiTTeacher(CFG, trained[0], text_tower_identity="bert-someotherweights")
  assert c.cache_key(vocab) != a.cache_key(vocab)


def test_a_teacher_without_text_tower_reads_a_table_its_text_tower_cached(trained, bert, tmp_path):
  vocab = spae.Vocabulary.from_arrays(["zebra", "violin", "red"], np.eye(3, dtype=np.float32))
  with_tower = LiTTeacher(CFG, trained[0], text_tower_identity=bert.identity, text_tower=bert, templates=TEMPLATES)
  table = with_tower.vocabulary_embeddings(vocab, cache_dir=tmp_path)
  retrained = jax.tree.map(lambda x: x * 0.5, trained[0])  # another image tower, no text tower
  offline = LiTTeacher(CFG, retrained, text_tower_identity=bert.identity, templates=TEMPLATES)
  np.testing.assert_array_equal(offline.vocabulary_embeddings(vocab, cache_dir=tmp_path), table)
  with pytest.raises(spae.SpaeInputError, match="cannot score this vocabulary offline"):
    offline.vocabulary_embeddings(vocab, cache_dir=tmp_path / "empty")


def test_trainer_centres_the_teacher_on_training_images_and_keeps_whole_words(trained, bert, tmp_path):
  from spae import data as D
  from spae import train as T

  cfg = T.load_config(ROOT / "configs" / "tiny.py", ["semantic.centre_images=4", "semantic.whole_words=true",
                                                      "semantic.weight=1.0"])
  vocab = spae.tiny_vocabulary()
  t = LiTTeacher(CFG, trained[0], text_tower_identity=bert.identity, text_tower=bert, templates=TEMPLATES,
                 cache_dir=tmp_path)
  tr = T.Trainer(cfg, tmp_path / "run", vocabulary=vocab, teacher=t)
  offset = np.asarray(tr.teacher_fn.offset)
  mask = t.whole_word_mask(vocab)
  assert 0 < mask.sum() < len(vocab) and (offset[~mask] == 1e4).all()
  src = T.open_data(cfg.data)
  prep = D.Preprocess(cfg.tokenizer.image_size, crop="center" if cfg.crop == "random" else cfg.crop)
  ref = np.stack([D.preprocess(src.load(i), prep) for i in range(4)])
  np.testing.assert_allclose(offset[mask], np.asarray(t.relevance(ref, vocab)).mean(0)[mask], atol=1e-5)
  idx, _ = tr.extras_for(jnp.asarray(ref)).values()
  assert mask[np.asarray(idx)].all()  # the teacher's top-k words are all whole words
  # A teacher without a text tokenizer cannot say which words are whole: one-line error, before any centring.
  offline = LiTTeacher(CFG, trained[0], text_tower_identity=bert.identity, templates=TEMPLATES, cache_dir=tmp_path)
  with pytest.raises(spae.SpaeInputError, match="needs a teacher with a text tokenizer"):
    T.Trainer(cfg, tmp_path / "run2", vocabulary=vocab, teacher=offline)


def test_the_refit_reads_the_teacher_mirrored_and_standardised_where_asked(trained, bert, tmp_path):
  """`semantic.refit_mirrored` / `refit_standardised` change the refit's reading alone: the codes become the class
  means of the layer-1 inputs grouped by the mirror-averaged, standardised first word, while training reads the
  teacher centred as before. A plain-callable teacher cannot be read that way: one-line error."""
  from spae import train as T
  from spae._codebook import unit_rows
  from spae.train._refit import layer1_inputs_fn
  from spae.train._inputs import reference_images
  from test_train import REFIT_RECIPE

  vocab = spae.tiny_vocabulary()
  cfg = T.load_config(ROOT / "configs" / "tiny.py", [*REFIT_RECIPE, "semantic.centre_images=4",
                                                      "semantic.whole_words=true", "semantic.refit_images=24",
                                                      "semantic.refit_mirrored=true",
                                                      "semantic.refit_standardised=true"])
  t = LiTTeacher(CFG, trained[0], text_tower_identity=bert.identity, text_tower=bert, templates=TEMPLATES,
                 cache_dir=tmp_path)
  tr = T.Trainer(cfg, tmp_path / "run", vocabulary=vocab, teacher=t)
  assert not tr.teacher_fn.mirrored and tr.teacher_fn.scale is None  # training's reading is the centred one
  src = T.open_data(cfg.data)
  images = reference_images(src, 24, cfg.tokenizer.image_size, cfg.crop)
  mask = t.whole_word_mask(vocab)
  want = t.relevance_fn(vocab).mirror_averaged().standardised(images[:4]).restricted(mask)
  rows = np.asarray(tr.models.tokenizer_config.pyramid.semantic_vocab)
  first = rows[np.asarray(want(images))[:, rows].argmax(1)]
  centred = rows[np.asarray(tr.teacher_fn(images))[:, rows].argmax(1)]
  assert (first != centred).any()  # the two readings disagree here, so the check below tells them apart
  tr.refit_codes()
  params = jax.device_get(tr.state["g_params"])
  z = np.asarray(layer1_inputs_fn(tr.models.tokenizer_config.pyramid, tr.models.tokenizer_config.quantizer)(
      tr.models.autoencoder(jax.tree.map(jnp.asarray, params)), jnp.asarray(images)))
  codes = np.asarray(unit_rows(tr.codebook[rows]) @ params["codebook"]["semantic_weight"])
  for k in np.unique(first):
    np.testing.assert_allclose(codes[list(rows).index(k)], z[first == k].mean(0), atol=2e-4)
  with pytest.raises(spae.SpaeInputError, match="plain callable"):
    T.Trainer(cfg, tmp_path / "run2", vocabulary=vocab, teacher=lambda x: jnp.zeros((len(x), len(vocab))))
  for bad in ("semantic.refit_images=0", "semantic.centre_images=0"):
    with pytest.raises(spae.SpaeInputError, match="refit_mirrored|refit_standardised"):
      T.apply_override(cfg, bad).validate()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # 4 evaluation scenes leave some metrics' slices empty
def test_tool_writes_a_teacher_with_its_training_captions(tmp_path):
  """tools/train_default_teacher.py --captions (tiny BERT, 8 scenes, 2 steps) saves the captions it trained
  against, in training order, with their text-tower embeddings: the bank `semantic.caption_bank` reads through.
  Without --captions (the shipped teacher's recipe) the folder has none."""
  vocab = spae.Vocabulary.from_arrays(["red", "blue", "circle", "square"], np.eye(4, dtype=np.float32))
  vocab.save(tmp_path / "vocab")
  out = tmp_path / "lit"
  assert tdt.main(["--model-dir", str(BERT), "--vocab", str(tmp_path / "vocab"), "--out", str(out), "--data",
                   "scenes", "--num-train", "8", "--num-eval", "4", "--steps", "2", "--batch-size", "4",
                   "--image-size", "16", "--cache-dir", str(tmp_path / "cache"), "--captions"]) == 0
  loaded = LiTTeacher.load(out)
  _, captions, _ = tdt.render_scene_set(8, split="train", seed=0)
  assert loaded.caption_texts == captions
  bert = BertTextEncoder.from_pretrained(BERT, normalize=False)
  np.testing.assert_allclose(loaded.caption_bank, tdt.embed_texts(bert, captions), atol=2e-3)
  meta = json.loads((out / "teacher.json").read_text())["metadata"]
  assert meta["captions"]["count"] == 8
  assert meta["training"]["packages"]["jaxlib"] == importlib.metadata.version("jaxlib")  # what its bits depend on
  assert tdt.main(["--model-dir", str(BERT), "--vocab", str(tmp_path / "vocab"), "--out", str(tmp_path / "plain"),
                   "--data", "scenes", "--num-train", "8", "--num-eval", "4", "--steps", "2", "--batch-size", "4",
                   "--image-size", "16", "--cache-dir", str(tmp_path / "cache")]) == 0
  assert not (tmp_path / "plain" / "captions.npz").exists() and LiTTeacher.load(tmp_path / "plain").caption_bank is None
