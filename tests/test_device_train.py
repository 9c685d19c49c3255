"""tools/device_train.py: a packed folder carries exactly what training needs (codebook, teacher, word embeddings),
so a run from it matches a run with the real vocabulary and text tower."""

import importlib.util
import json
from pathlib import Path

import jax
import numpy as np
import pytest

import spae
from spae.teachers._lit import LiTConfig, LiTTeacher, init_lit_params

ROOT = Path(__file__).resolve().parents[1]
BERT = ROOT / "tests" / "fixtures" / "parity" / "bert"  # the tiny random BERT standing in for all-MiniLM-L6-v2


def _tool():
  spec = importlib.util.spec_from_file_location("device_train", ROOT / "tools" / "device_train.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def _q8_vocab(n=64, d=64, seed=0):
  """A vocabulary whose rows are Q8_0 data, as Gemma's table in its GGUF file is; some words are whole BERT words."""
  from spae._gguf_file import _dequantize_q8_0

  rng = np.random.default_rng(seed)
  codes = rng.integers(-127, 128, (n, d // 32, 32)).astype(np.int8)
  codes[..., 0] = 127  # each block reaches the full code range, as a quantizer writes it
  scales = rng.uniform(1e-3, 1e-2, (n, d // 32, 1)).astype(np.float16)
  blocks = np.concatenate([scales.view(np.uint8), codes.view(np.uint8)], axis=-1).reshape(n, -1)  # 34 B per block
  words = ["red", "cat", "dog", "tree", "car", "house", "bird", "small", "large", "world"]
  pieces = ["\u2581" + (words[i] if i < len(words) else f"zq{i}") for i in range(n)]
  return spae.Vocabulary.from_arrays(pieces, _dequantize_q8_0(blocks), np.arange(n) + 1000)


def test_q8_0_round_trip_is_bit_exact_and_other_rows_are_refused(tmp_path, monkeypatch):
  import gguf

  from spae._gguf_file import _dequantize_q8_0

  tool = _tool()
  vocab = _q8_vocab()
  blocks = gguf.quants.quantize(vocab.embeddings, gguf.GGMLQuantizationType.Q8_0)  # what pack stores
  assert blocks.dtype == np.uint8 and blocks.shape == (64, 2 * 34)
  again = _dequantize_q8_0(blocks)  # what train reads
  assert np.array_equal(again.view(np.uint32), vocab.embeddings.view(np.uint32))
  # Rows that are not Q8_0 data would change on the way: pack refuses them instead of training on other rows.
  plain = spae.Vocabulary.from_arrays(vocab.pieces, np.random.default_rng(1).normal(size=(64, 64)) * 0.01)
  monkeypatch.setattr(spae.assets, "builtin_vocabulary", lambda name: plain)
  with pytest.raises(SystemExit, match="not Q8_0"):
    tool.main(["pack", "--minilm-dir", str(BERT), "--out", str(tmp_path / "p")])
  narrow = spae.Vocabulary.from_arrays(vocab.pieces, np.zeros((64, 40), np.float32))
  monkeypatch.setattr(spae.assets, "builtin_vocabulary", lambda name: narrow)
  with pytest.raises(SystemExit, match="blocks"):
    tool.main(["pack", "--minilm-dir", str(BERT), "--out", str(tmp_path / "p")])
  assert not (tmp_path / "p").exists()


def test_a_run_from_the_pack_matches_a_run_with_the_text_tower(tmp_path, monkeypatch):
  """pack -> train (no text tower, no package) gives the parameters a direct run with the real pieces gives."""
  from flax import nnx

  from spae import train as T

  tool = _tool()
  monkeypatch.setenv("SPAE_CACHE_DIR", str(tmp_path / "cache"))
  vocab = _q8_vocab()
  monkeypatch.setattr(spae.assets, "builtin_vocabulary", lambda name: vocab)
  bert = spae.teachers.BertTextEncoder.from_pretrained(BERT, normalize=False)
  cfg_lit = LiTConfig(image_size=16, stem=4, widths=(8, 8), dim=32)
  LiTTeacher(cfg_lit, init_lit_params(cfg_lit, jax.random.key(0)), text_tower_identity=bert.identity,
             templates=("a photo of a {}.",)).save(tmp_path / "teacher")
  sets = [f"semantic.teacher=lit:{tmp_path / 'teacher'}", "semantic.whole_words=true", "steps=3",
          "logging.image_every=0", "gan.disc_start=100"]
  config = str(ROOT / "configs" / "tiny.py")
  flags = [x for s in sets for x in ("--set", s)]
  assert tool.main(["pack", "--minilm-dir", str(BERT), "--out", str(tmp_path / "pack"), "--config", config,
                    *flags]) == 0
  assert (tmp_path / "pack" / "minilm_vocab.txt").is_file() and (tmp_path / "pack" / "teacher").is_dir()
  # A pack replaces an earlier pack only; another non-empty folder is left as it is.
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "notes.txt").write_text("mine")
  with pytest.raises(spae.SpaeInputError):
    tool.main(["pack", "--minilm-dir", str(BERT), "--out", str(tmp_path / "other"), "--config", config, *flags])
  assert (tmp_path / "other" / "notes.txt").read_text() == "mine"
  assert tool.main(["pack", "--minilm-dir", str(BERT), "--out", str(tmp_path / "pack"), "--config", config,
                    *flags]) == 0
  # There: no package, no text tower weights, an empty default cache.
  monkeypatch.setattr(spae.assets, "builtin_vocabulary", lambda name: pytest.fail("train read the package"))
  monkeypatch.setenv("SPAE_CACHE_DIR", str(tmp_path / "empty"))
  assert tool.main(["train", "--pack", str(tmp_path / "pack"), "--workdir", str(tmp_path / "w"), "--config",
                    config, "--chunk", "2", *flags]) == 0
  assert not (tmp_path / "empty").exists()  # every word embedding came from the pack
  assert json.loads((tmp_path / "w" / "config.json").read_text())["steps"] == 3
  # Here: the same recipe with the real vocabulary and text tower.
  cfg = T.load_config(config, sets)
  ref = T.Trainer(cfg, tmp_path / "ref", vocabulary=vocab,
                  teacher=LiTTeacher.load(tmp_path / "teacher", text_tower=bert, cache_dir=tmp_path / "c2"))
  ref.run(progress=False)
  a = nnx.state(spae.Tokenizer.load(tmp_path / "w" / "tokenizer").model).to_pure_dict()
  b = nnx.state(spae.Tokenizer.load(tmp_path / "ref" / "tokenizer").model).to_pure_dict()
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  # A pack whose codebook no longer matches its fingerprint is refused.
  with np.load(tmp_path / "pack" / "codebook.npz") as f:
    arrays = dict(f)
  arrays["q8_0"] = arrays["q8_0"].copy()
  arrays["q8_0"][:, 1] ^= 0x04  # one scale's exponent bit: every row of that block doubles or halves
  np.savez(tmp_path / "pack" / "codebook.npz", **arrays)
  with pytest.raises(SystemExit, match="another fingerprint"):
    tool.main(["train", "--pack", str(tmp_path / "pack"), "--workdir", str(tmp_path / "w2"), "--config", config])
  with pytest.raises(SystemExit, match="not a complete pack"):
    tool.main(["train", "--pack", str(tmp_path / "other"), "--workdir", str(tmp_path / "w3"), "--config", config])
