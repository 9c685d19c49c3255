"""Vocabulary: constructors for every embedding source, filtering, persistence and bad input."""

import numpy as np
import pytest

import spae


@pytest.fixture(scope="module")
def sp_model(tmp_path_factory):
  import sentencepiece as spm

  d = tmp_path_factory.mktemp("sp")
  words = ["cat", "dog", "Cat", "red", "blue", "green", "circle", "square", "sky", "tree", "a", "the", "is",
           "running", "jumps", "over", "under", "big", "small", "2024", "x1"]
  rng = np.random.default_rng(0)
  lines = [" ".join(rng.choice(words, size=8)) for _ in range(400)]
  (d / "corpus.txt").write_text("\n".join(lines))
  spm.SentencePieceTrainer.train(input=str(d / "corpus.txt"), model_prefix=str(d / "tok"), vocab_size=300,
                                 hard_vocab_limit=False, byte_fallback=True,
                                 user_defined_symbols=["<unused0>", "<unused1>"],
                                 model_type="unigram", minloglevel=2)
  return d / "tok.model"


@pytest.fixture(scope="module")
def sp_size(sp_model):
  import sentencepiece as spm

  return spm.SentencePieceProcessor(model_file=str(sp_model)).GetPieceSize()


def test_from_arrays_defaults_and_words():
  v = spae.Vocabulary.from_arrays(["\u2581cat", "dog", "##s"], np.eye(3))
  assert v.llm_ids.tolist() == [0, 1, 2]
  assert v.words([0, 2]) == ["cat", "s"]
  assert v.embeddings.dtype == np.float32 and v.dim == 3


def test_mismatched_sizes_are_clear_errors():
  with pytest.raises(spae.SpaeInputError, match="2 pieces but the embedding table has 3 rows"):
    spae.Vocabulary.from_arrays(["a", "b"], np.zeros((3, 4)))
  with pytest.raises(spae.SpaeInputError, match="llm_ids"):
    spae.Vocabulary.from_arrays(["a", "b"], np.zeros((2, 4)), llm_ids=[1])
  with pytest.raises(spae.SpaeInputError, match="NaN"):
    spae.Vocabulary.from_arrays(["a"], np.array([[np.nan]]))


def test_from_sentencepiece_with_array_npy_safetensors_orbax(sp_model, sp_size, tmp_path):
  rng = np.random.default_rng(1)
  table = rng.standard_normal((sp_size, 8)).astype(np.float32)
  np.save(tmp_path / "emb.npy", table)
  from safetensors.numpy import save_file

  save_file({"model.embed_tokens.weight": table, "other": np.zeros(2, np.float32)}, str(tmp_path / "m.safetensors"))
  import orbax.checkpoint as ocp

  ckptr = ocp.PyTreeCheckpointer()
  ckptr.save((tmp_path / "ckpt").absolute(), {"embedder": {"input_embedding": table},
                                               "layer_0": {"w": np.zeros((2, 2), np.float32)}})
  # Released Gemma checkpoints are semi-flat: {'transformer/embedder': {'input_embedding': ...}}.
  ckptr.save((tmp_path / "semiflat").absolute(), {"transformer/embedder": {"input_embedding": table}})
  sources = [(table, None), (tmp_path / "emb.npy", None), (tmp_path / "semiflat", "embedder/input_embedding"),
             (tmp_path / "m.safetensors", "model.embed_tokens.weight"),
             (tmp_path / "ckpt", "embedder/input_embedding")]
  for src, name in sources:
    v = spae.Vocabulary.from_sentencepiece(sp_model, src, name=name)
    assert len(v) == sp_size
    np.testing.assert_array_equal(v.embeddings, table)
  scaled = spae.Vocabulary.from_sentencepiece(sp_model, table, scale=np.sqrt(8))
  np.testing.assert_allclose(scaled.embeddings, table * np.sqrt(8), rtol=1e-6)
  assert scaled.metadata["row_scale"] == pytest.approx(np.sqrt(8))


def test_missing_tensor_and_wrong_row_count(sp_model, sp_size, tmp_path):
  from safetensors.numpy import save_file

  save_file({"a": np.zeros((sp_size, 4), np.float32)}, str(tmp_path / "m.safetensors"))
  with pytest.raises(spae.SpaeInputError, match="missing tensor 'embed'"):
    spae.Vocabulary.from_sentencepiece(sp_model, tmp_path / "m.safetensors", name="embed")
  import orbax.checkpoint as ocp

  ocp.PyTreeCheckpointer().save((tmp_path / "ck").absolute(), {"embedder": {"x": np.zeros((2, 2), np.float32)}})
  with pytest.raises(spae.SpaeInputError, match="missing tensor 'embedder/input_embedding'"):
    spae.Vocabulary.from_sentencepiece(sp_model, tmp_path / "ck", name="embedder/input_embedding")
  with pytest.raises(spae.SpaeInputError, match=f"has {sp_size} pieces but the embedding table has {sp_size - 1}"):
    spae.Vocabulary.from_sentencepiece(sp_model, np.zeros((sp_size - 1, 4)))
  with pytest.raises(spae.SpaeInputError, match="allow_extra_rows"):
    spae.Vocabulary.from_sentencepiece(sp_model, np.zeros((sp_size + 5, 4)))
  v = spae.Vocabulary.from_sentencepiece(sp_model, np.ones((sp_size + 5, 4)), allow_extra_rows=True)
  assert len(v) == sp_size
  with pytest.raises(spae.SpaeInputError, match="does not exist"):
    spae.Vocabulary.from_sentencepiece(tmp_path / "nope.model", np.zeros((3, 4)))


def test_filter_drops_special_and_keeps_id_mapping(sp_model, sp_size):
  rng = np.random.default_rng(2)
  v = spae.Vocabulary.from_sentencepiece(sp_model, rng.standard_normal((sp_size, 4)))
  kinds = set(v.kinds)
  assert {"control", "unknown", "byte"} <= kinds
  f = v.filter()
  for piece, i, row in zip(f.pieces, f.llm_ids, f.embeddings):
    assert v.pieces[i] == piece  # id mapping preserved
    np.testing.assert_array_equal(v.embeddings[i], row)
    assert v.kinds[i] == "normal"
  assert not any(p.startswith("<0x") or p in ("<unk>", "<s>", "</s>") for p in f.pieces)
  alpha = v.filter(alphabetic_only=True, min_length=3)
  assert all(w.isalpha() and len(w) >= 3 for w in alpha.words(range(len(alpha))))
  assert "2024" not in alpha.words(range(len(alpha)))


def test_filter_case_and_whitespace_dedupe():
  pieces = ["\u2581cat", "cat", "Cat", "\u2581Cat", "dog", "<unused3>", "<0x41>"]
  v = spae.Vocabulary.from_arrays(pieces, np.eye(7))
  assert v.filter().pieces == pieces[:5]  # kinds guessed from the strings
  assert v.filter(dedupe_whitespace=True).pieces == ["\u2581cat", "Cat", "dog"]
  assert v.filter(dedupe_case=True).pieces == ["\u2581cat", "cat", "dog"]
  both = v.filter(dedupe_case=True, dedupe_whitespace=True)
  assert both.pieces == ["\u2581cat", "dog"] and both.llm_ids.tolist() == [0, 4]
  with pytest.raises(spae.SpaeInputError, match="removed every entry"):
    v.filter(min_length=10)


def test_save_load_roundtrip_and_fingerprint(tmp_path):
  v = spae.tiny_vocabulary(dim=8)
  v.save(tmp_path / "v")
  w = spae.Vocabulary.load(tmp_path / "v")
  assert w.pieces == v.pieces and w.fingerprint() == v.fingerprint()
  np.testing.assert_array_equal(w.embeddings, v.embeddings)
  other = spae.Vocabulary.from_arrays(v.pieces, v.embeddings + 1e-3)
  assert other.fingerprint() != v.fingerprint()
  with pytest.raises(spae.SpaeInputError, match="no vocab.json"):
    spae.Vocabulary.load(tmp_path)
