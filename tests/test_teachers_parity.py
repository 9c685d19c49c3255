"""Parity of spae's JAX teachers with PyTorch `transformers` on tiny random checkpoints in official formats.

Fixtures come from tools/_parity_teachers.py (torch is needed only there); these tests only read them.
"""

from pathlib import Path

import numpy as np
import pytest

from spae import teachers
from spae._tensors import open_tensors

PARITY = Path(__file__).parent / "fixtures" / "parity"
ATOL = 2e-5  # measured max abs errors are ~1e-6 on embeddings of magnitude ~1


def _ref(name):
  with np.load(PARITY / name / "reference.npz", allow_pickle=False) as f:
    return {k: f[k] for k in f.keys()}


@pytest.fixture(scope="module")
def bert():
  return teachers.BertTextEncoder.from_pretrained(PARITY / "bert")


# ------------------------------------------------------------------------------------------------ CLIP
def test_clip_tokenizer_matches_transformers(clip):
  ref = _ref("clip")
  texts = [str(t) for t in ref["texts"]]
  assert [len(clip.tokenizer.encode(t)) for t in texts] == ref["token_lengths"].tolist()
  assert max(ref["token_lengths"]) > ref["input_ids"].shape[1]  # the fixture exercises truncation
  np.testing.assert_array_equal(clip.tokenize(texts), ref["input_ids"])


def test_clip_image_and_text_features_match_transformers(clip):
  ref = _ref("clip")
  img = np.asarray(clip.image_embeddings(ref["images"], normalize=False))
  np.testing.assert_allclose(img, ref["image_embeds"], atol=ATOL, rtol=0)
  txt = np.asarray(clip.text_embeddings([str(t) for t in ref["texts"]], normalize=False))
  np.testing.assert_allclose(txt, ref["text_embeds"], atol=ATOL, rtol=0)
  # Normalised embeddings are the reference directions.
  unit = ref["image_embeds"] / np.linalg.norm(ref["image_embeds"], axis=1, keepdims=True)
  np.testing.assert_allclose(np.asarray(clip.image_embeddings(ref["images"])), unit, atol=ATOL)
  assert clip.logit_scale == pytest.approx(float(np.exp(ref["logit_scale"])), rel=1e-6)


# ------------------------------------------------------------------------------------------------ SigLIP
def test_siglip_tokenizer_matches_transformers(siglip):
  ref = _ref("siglip")
  texts = [str(t) for t in ref["texts"]]
  np.testing.assert_array_equal(siglip.tokenize(texts), ref["input_ids"])
  lengths = [len(siglip.tokenizer.encode(t)) + 1 for t in texts]
  assert max(lengths) > ref["input_ids"].shape[1]  # truncation keeps the sticky EOS last
  assert (ref["input_ids"][:, -1] == siglip.tokenizer.eos_id).all()


def test_siglip_features_match_transformers(siglip):
  ref = _ref("siglip")
  img = np.asarray(siglip.image_embeddings(ref["images"], normalize=False))
  np.testing.assert_allclose(img, ref["image_embeds"], atol=ATOL, rtol=0)
  txt = np.asarray(siglip.text_embeddings([str(t) for t in ref["texts"]], normalize=False))
  np.testing.assert_allclose(txt, ref["text_embeds"], atol=ATOL, rtol=0)


def test_siglip_scanned_layout_loads_identically(siglip, tmp_path):
  """big_vision's scan=True checkpoints store `encoderblock/...` with a leading depth axis."""
  with np.load(PARITY / "siglip" / "siglip.npz", allow_pickle=False) as f:
    flat = {k: f[k] for k in f.keys()}
  scanned = {}
  for prefix, depth in (("params/img/Transformer/", 2), ("params/txt/Encoder_0/", 2)):
    for rest in [k[len(prefix + "encoderblock_0/"):] for k in flat if k.startswith(prefix + "encoderblock_0/")]:
      scanned[prefix + "encoderblock/" + rest] = np.stack([flat.pop(f"{prefix}encoderblock_{i}/{rest}")
                                                           for i in range(depth)])
  # Also drop the 'params/' prefix: both spellings occur in the wild.
  tensors = {k.removeprefix("params/"): v for k, v in {**flat, **scanned}.items()}
  np.savez(tmp_path / "scanned.npz", **tensors)
  other = teachers.SigLIPTeacher.from_big_vision(tmp_path / "scanned.npz", PARITY / "siglip" / "siglip.model")
  assert other.config == siglip.config
  ref = _ref("siglip")
  np.testing.assert_allclose(np.asarray(other.image_embeddings(ref["images"], normalize=False)),
                             ref["image_embeds"], atol=ATOL, rtol=0)


# ------------------------------------------------------------------------------------------------ BERT
def test_wordpiece_tokenizer_matches_transformers(bert):
  ref = _ref("bert")
  ids, mask = bert.tokenize([str(t) for t in ref["texts"]], pad_to=ref["input_ids"].shape[1])
  np.testing.assert_array_equal(ids, ref["input_ids"])
  np.testing.assert_array_equal(mask, ref["attention_mask"])
  assert bert.tokenizer.unk_id in ids  # unknown words, CJK and digits outside the vocab are exercised


def test_bert_hidden_states_and_pooling_match_transformers(bert):
  ref = _ref("bert")
  h = np.asarray(bert.hidden_states(ref["input_ids"], ref["attention_mask"]))
  np.testing.assert_allclose(h, ref["last_hidden_state"], atol=ATOL, rtol=0)
  pooled = np.asarray(bert.embed_ids(ref["input_ids"], ref["attention_mask"], normalize=False))
  np.testing.assert_allclose(pooled, ref["mean_pooled"], atol=ATOL, rtol=0)
  # encode() tokenizes itself and pads to its own bucket length: padding must not change the result.
  np.testing.assert_allclose(np.asarray(bert.encode([str(t) for t in ref["texts"]])), ref["normalized"], atol=ATOL)


def test_bert_loads_with_bert_prefix(bert, tmp_path):
  """transformers' BertFor* models save `bert.`-prefixed names; sentence-transformers saves none."""
  from safetensors.numpy import save_file

  tensors = open_tensors(PARITY / "bert" / "model.safetensors")
  assert not any(k.startswith("bert.") for k in tensors)
  d = tmp_path / "prefixed"
  d.mkdir()
  save_file({f"bert.{k}": np.ascontiguousarray(v) for k, v in tensors.items()}, str(d / "model.safetensors"))
  for name in ("config.json", "vocab.txt"):
    (d / name).write_bytes((PARITY / "bert" / name).read_bytes())
  other = teachers.BertTextEncoder.from_pretrained(d, max_length=20)
  ref = _ref("bert")
  np.testing.assert_allclose(np.asarray(other.encode([str(t) for t in ref["texts"]])), ref["normalized"], atol=ATOL)
