"""The Teacher interface: relevance, the vocabulary-embedding cache, the jittable path, loading and bad input."""

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import spae
from spae import teachers
from spae._tensors import open_tensors

PARITY = Path(__file__).parent / "fixtures" / "parity"
TEMPLATES = ("a photo of a {}.", "art of the {}.")


@pytest.fixture(scope="module")
def images():
  with np.load(PARITY / "clip" / "reference.npz", allow_pickle=False) as f:
    return f["images"]  # the parity batch of 3: its compiled shapes are shared with the parity tests


def _vocab(words, seed=0):
  rows = np.random.default_rng(seed).normal(size=(len(words), 8)).astype(np.float32)
  return spae.Vocabulary.from_arrays(words, rows)


VOCAB_WORDS = ["cat", "\u2581dog", "##s", "red bird"]


# ------------------------------------------------------------------------------------------------ relevance
def test_relevance_is_cosine_with_template_averaged_words(clip, images, tmp_path):
  vocab = _vocab(VOCAB_WORDS)
  rel = np.asarray(clip.relevance(images, vocab, TEMPLATES, cache_dir=tmp_path))
  assert rel.shape == (3, len(vocab))
  # By hand: display strings ('▁dog' -> 'dog', '##s' -> 's'), normalised per template, averaged, renormalised.
  words = ["cat", "dog", "s", "red bird"]
  rows = []
  for w in words:
    z = np.asarray(clip.text_embeddings([t.format(w) for t in TEMPLATES]))
    m = z.mean(0)
    rows.append(m / np.linalg.norm(m))
  img = np.array(clip.image_embeddings(images, normalize=False))
  img /= np.linalg.norm(img, axis=1, keepdims=True)
  np.testing.assert_allclose(rel, img @ np.stack(rows).T, atol=1e-5)
  assert np.all(np.abs(rel) <= 1 + 1e-5)


def test_vocabulary_cache_hits_and_keys(clip, images, tmp_path):
  vocab = _vocab(VOCAB_WORDS)
  before = clip.text_tower_calls
  first = np.asarray(clip.relevance(images, vocab, TEMPLATES, cache_dir=tmp_path))
  assert clip.text_tower_calls > before
  path = clip.cache_path(vocab, TEMPLATES, tmp_path)
  assert path.is_file() and path.parent == tmp_path / "teacher_text"
  with np.load(path, allow_pickle=False) as f:
    assert f["embeddings"].shape == (len(vocab), clip.dim)

  calls = clip.text_tower_calls
  np.testing.assert_array_equal(np.asarray(clip.relevance(images, vocab, TEMPLATES, cache_dir=tmp_path)), first)
  assert clip.text_tower_calls == calls  # in-memory hit

  fresh = teachers.CLIPTeacher.from_pretrained(PARITY / "clip", cache_dir=tmp_path)
  np.testing.assert_allclose(np.asarray(fresh.relevance(images, vocab, TEMPLATES)), first, atol=1e-6)
  assert fresh.text_tower_calls == 0  # disk hit: the text tower never ran

  other_rows = _vocab(VOCAB_WORDS, seed=1)  # same words, other embedding rows -> other fingerprint
  keys = {clip.cache_key(vocab, TEMPLATES), clip.cache_key(other_rows, TEMPLATES),
          clip.cache_key(_vocab(VOCAB_WORDS[:3]), TEMPLATES), clip.cache_key(vocab, TEMPLATES[:1]),
          clip.cache_key(vocab)}
  assert len(keys) == 5
  assert clip.cache_key(vocab, TEMPLATES) == fresh.cache_key(vocab, TEMPLATES)


def test_cache_dir_from_environment_and_corrupt_file(clip, tmp_path, monkeypatch):
  vocab = _vocab(["tree", "house"])
  monkeypatch.setenv("SPAE_CACHE_DIR", str(tmp_path / "env"))
  fresh = teachers.CLIPTeacher.from_pretrained(PARITY / "clip")
  table = fresh.vocabulary_embeddings(vocab, TEMPLATES)
  path = fresh.cache_path(vocab, TEMPLATES)
  assert path.is_relative_to(tmp_path / "env") and path.is_file()
  path.write_bytes(b"not an npz")  # a damaged cache file is recomputed, not trusted
  again = teachers.CLIPTeacher.from_pretrained(PARITY / "clip").vocabulary_embeddings(vocab, TEMPLATES)
  np.testing.assert_allclose(again, table, atol=1e-6)
  with np.load(path, allow_pickle=False) as f:
    np.testing.assert_allclose(f["embeddings"], table, atol=1e-6)


def test_text_batches_of_fixed_size(clip):
  small = teachers.CLIPTeacher.from_pretrained(PARITY / "clip", text_batch_size=4)
  vocab = _vocab(VOCAB_WORDS)
  table = small.vocabulary_embeddings(vocab, TEMPLATES, use_cache=False)
  assert small.text_tower_calls == 2  # 4 words x 2 templates in batches of 4 texts
  np.testing.assert_allclose(table, clip.vocabulary_embeddings(vocab, TEMPLATES, use_cache=False), atol=1e-5)
  texts = [f"a photo of a {w}" for w in ("cat", "dog", "tree", "car", "bird")]
  np.testing.assert_allclose(np.asarray(small.text_embeddings(texts)), np.asarray(clip.text_embeddings(texts)),
                             atol=1e-5)


def test_relevance_fn_is_jittable_pytree(siglip, images, tmp_path):
  vocab = _vocab(VOCAB_WORDS)
  eager = np.asarray(siglip.relevance(images, vocab, TEMPLATES, cache_dir=tmp_path))
  fn = siglip.relevance_fn(vocab, TEMPLATES, cache_dir=tmp_path)
  assert any(leaf.shape == (len(vocab), siglip.dim) for leaf in jax.tree.leaves(fn))
  as_argument = jax.jit(lambda f, x: f(x))(fn, jnp.asarray(images))
  closed_over = jax.jit(fn)(jnp.asarray(images))
  np.testing.assert_allclose(np.asarray(as_argument), eager, atol=1e-5)
  np.testing.assert_allclose(np.asarray(closed_over), eager, atol=1e-5)
  # Gradients reach the images (for losses on reconstructions) but never the frozen tables.
  g_img, g_fn = jax.jit(jax.grad(lambda x, f: f(x)[:, 0].sum(), argnums=(0, 1)))(jnp.asarray(images), fn)
  assert np.isfinite(np.asarray(g_img)).all() and np.abs(np.asarray(g_img)).max() > 0
  assert all(np.abs(np.asarray(leaf)).max() == 0 for leaf in jax.tree.leaves(g_fn))


# ------------------------------------------------------------------------------------------------ images
@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_images_of_any_size_are_resized(name, request):
  teacher = request.getfixturevalue(name)
  colour = np.array([0.2, 0.5, 0.7], np.float32)
  native = np.broadcast_to(colour, (3, 32, 32, 3))
  other = np.broadcast_to(colour, (3, 48, 40, 3))  # non-square and larger: resized (and cropped for CLIP)
  a = np.asarray(teacher.image_embeddings(native))
  b = np.asarray(teacher.image_embeddings(other))
  assert b.shape == (3, teacher.dim)
  np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
  np.testing.assert_allclose(b, a, atol=1e-5)  # a flat colour survives any resize
  # ...while a resized textured image must not (the resize really happens): its embedding moves.
  rng = np.random.default_rng(0)
  tex = rng.random((3, 48, 40, 3)).astype(np.float32)
  c = np.asarray(teacher.image_embeddings(tex))
  assert np.isfinite(c).all() and np.abs(c - b).max() > 1e-3


def test_bad_images_are_rejected(clip):
  img = np.zeros((1, 32, 32, 3), np.float32)
  with pytest.raises(spae.SpaeInputError, match="uint8"):
    clip.image_embeddings(img.astype(np.uint8))
  with pytest.raises(spae.SpaeInputError, match=r"\[B, H, W, 3\]"):
    clip.image_embeddings(img[0])
  with pytest.raises(spae.SpaeInputError, match=r"\[0, 1\]"):
    clip.image_embeddings(img + 255.0)
  with pytest.raises(spae.SpaeInputError, match="placeholder"):
    clip.relevance(img, _vocab(["cat"]), ["a photo"])


# ------------------------------------------------------------------------------------------------ loading
def test_load_specs(tmp_path, images):
  assert isinstance(teachers.load(f"clip:{PARITY / 'clip'}"), teachers.CLIPTeacher)
  beside = teachers.load(f"siglip:{PARITY / 'siglip' / 'siglip.npz'}", cache_dir=tmp_path)
  assert isinstance(beside, teachers.SigLIPTeacher) and beside.cache_dir == tmp_path
  assert beside.logit_scale == pytest.approx(10.0, rel=1e-5) and beside.logit_bias == pytest.approx(-3.0)
  lone = tmp_path / "ckpt" / "webli.npz"  # a checkpoint without a tokenizer beside it
  lone.parent.mkdir()
  shutil.copy(PARITY / "siglip" / "siglip.npz", lone)
  with pytest.raises(spae.SpaeInputError, match="#tokenizer="):
    teachers.load(f"siglip:{lone}")
  explicit = teachers.load(f"siglip:{lone}#tokenizer={PARITY / 'siglip' / 'siglip.model'}")
  np.testing.assert_allclose(np.asarray(explicit.image_embeddings(images)),
                             np.asarray(beside.image_embeddings(images)), atol=1e-6)
  for bad in ("clip", "vit:/x", "siglip:/x/model.bin", f"siglip:{lone}#vocab=x", "clip:"):
    with pytest.raises(spae.SpaeInputError):
      teachers.load(bad)


def test_clip_tokenizer_from_tokenizer_json(clip, tmp_path):
  vocab = json.loads((PARITY / "clip" / "vocab.json").read_text())
  merges = [m for m in (PARITY / "clip" / "merges.txt").read_text().split("\n")[1:] if m]
  (tmp_path / "tokenizer.json").write_text(json.dumps({"model": {"type": "BPE", "vocab": vocab, "merges": merges}}))
  tok = teachers.CLIPTokenizer.from_tokenizer_json(tmp_path / "tokenizer.json", max_length=16)
  texts = ["a photo of the red cat", "itap of 42 dogs!"]
  np.testing.assert_array_equal(tok(texts), clip.tokenize(texts))
  assert tok.tokenize("cats") == clip.tokenizer.tokenize("CATS")  # lowercased


# ------------------------------------------------------------------------------------------------ bad checkpoints
def _copy(src: Path, dst: Path) -> Path:
  shutil.copytree(src, dst)
  return dst


def _rewrite_safetensors(path: Path, edit) -> None:
  from safetensors.numpy import save_file

  tensors = {k: np.array(v) for k, v in open_tensors(path).items()}
  edit(tensors)
  save_file(tensors, str(path))


def test_clip_missing_tensor_is_named(tmp_path):
  d = _copy(PARITY / "clip", tmp_path / "clip")
  name = "vision_model.encoder.layers.1.mlp.fc1.weight"
  _rewrite_safetensors(d / "model.safetensors", lambda t: t.pop(name))
  with pytest.raises(spae.SpaeInputError, match=r"missing tensor .*layers\.1\.mlp\.fc1\.weight") as e:
    teachers.CLIPTeacher.from_pretrained(d)
  assert "model.safetensors" in str(e.value)


def test_clip_config_shape_mismatch_is_named(tmp_path):
  d = _copy(PARITY / "clip", tmp_path / "clip")
  cfg = json.loads((d / "config.json").read_text())
  cfg["vision_config"]["intermediate_size"] = 64
  (d / "config.json").write_text(json.dumps(cfg))
  with pytest.raises(spae.SpaeInputError, match=r"vision_model\.encoder\.layers\.0\.mlp\.fc1\.weight.*\(56, 40\)"
                     r".*\(64, 40\)") as e:
    teachers.CLIPTeacher.from_pretrained(d)
  assert "model.safetensors" in str(e.value)


def test_clip_folder_problems(tmp_path):
  with pytest.raises(spae.SpaeInputError, match="does not exist"):
    teachers.CLIPTeacher.from_pretrained(tmp_path / "nope")
  d = _copy(PARITY / "clip", tmp_path / "clip")
  (d / "vocab.json").unlink()
  with pytest.raises(spae.SpaeInputError, match="vocab.json"):
    teachers.CLIPTeacher.from_pretrained(d)


def _siglip_tensors():
  with np.load(PARITY / "siglip" / "siglip.npz", allow_pickle=False) as f:
    return {k: f[k] for k in f.keys()}


def test_siglip_missing_and_misshapen_tensors_are_named(tmp_path):
  t = _siglip_tensors()
  t.pop("params/txt/Encoder_0/encoderblock_1/MlpBlock_0/Dense_1/bias")
  np.savez(tmp_path / "missing.npz", **t)
  with pytest.raises(spae.SpaeInputError,
                     match=r"missing.npz: missing tensor .*encoderblock_1/MlpBlock_0/Dense_1/bias"):
    teachers.SigLIPTeacher.from_big_vision(tmp_path / "missing.npz", PARITY / "siglip" / "siglip.model")
  t = _siglip_tensors()
  t["params/img/Transformer/encoder_norm/scale"] = np.ones(41, np.float32)
  np.savez(tmp_path / "shape.npz", **t)
  with pytest.raises(spae.SpaeInputError, match=r"shape.npz: tensor 'img/Transformer/encoder_norm/scale' has "
                     r"shape \(41,\)"):
    teachers.SigLIPTeacher.from_big_vision(tmp_path / "shape.npz", PARITY / "siglip" / "siglip.model")


def test_bert_missing_tensor_is_named(tmp_path):
  d = _copy(PARITY / "bert", tmp_path / "bert")
  _rewrite_safetensors(d / "model.safetensors", lambda t: t.pop("encoder.layer.1.output.dense.bias"))
  with pytest.raises(spae.SpaeInputError,
                     match=r"model.safetensors: missing tensor 'encoder.layer.1.output.dense.bias'"):
    teachers.BertTextEncoder.from_pretrained(d)


# ------------------------------------------------------------------------------------------------ BERT as a source
def test_bert_vocabulary_and_text_tower():
  bert = teachers.BertTextEncoder.from_pretrained(PARITY / "bert")
  vocab = bert.vocabulary()
  lines = (PARITY / "bert" / "vocab.txt").read_text().split("\n")[:-1]
  assert vocab.pieces == lines and vocab.dim == bert.dim
  np.testing.assert_array_equal(vocab.embeddings, np.asarray(bert.params["word"]))
  kept = vocab.filter(drop_subword_continuations=True)
  assert "[CLS]" not in kept.pieces and "cat" in kept.pieces and "##s" not in kept.pieces
  # The pure function behind encode() runs inside a user's jit with params as an argument.
  texts = ["a red cat", "dog", "the small house", "art", "a", "b", "c", "d"]
  ids, mask = bert.tokenize(texts)
  fn = jax.jit(lambda p, i, m: (teachers.bert_embed(bert.config, p, i, m),
                                teachers.bert_embed(bert.config, p, i, m, normalize=False)))
  unit, raw = (np.asarray(a) for a in fn(bert.params, ids, mask))
  np.testing.assert_allclose(unit, np.asarray(bert.encode(texts)), atol=1e-6)
  np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, atol=1e-6)  # normalised by default...
  assert np.abs(np.linalg.norm(raw, axis=1) - 1.0).max() > 1e-3  # ...and optionally not
  np.testing.assert_allclose(unit, raw / np.linalg.norm(raw, axis=1, keepdims=True), atol=1e-6)
