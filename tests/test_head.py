"""The semantic head: word placement, the pyramid with a head's ranking, and `add_semantic_head` on a tiny tokenizer."""

import dataclasses
import itertools
import re

import jax.numpy as jnp
import numpy as np
import pytest

import spae
import spae.data
from spae._codebook import CodebookConfig
from spae._head import place_words
from spae.train import HeadConfig, add_semantic_head
from spae.train._head import caption_candidates, caption_targets


class WordTeacher:
  """A text tower that embeds a text as the normalised count of its words in a fixed word list: each word's
  embedding is its one-hot row, so a caption reads exactly the words it contains."""

  text_tower = "bag of words"

  def __init__(self, vocab):
    self.words = vocab.words(np.arange(len(vocab)))
    self.index = {w: i for i, w in enumerate(self.words)}

  def vocabulary_embeddings(self, vocab):
    return np.eye(len(self.words), dtype=np.float32)

  def text_embeddings(self, texts):
    out = np.zeros((len(texts), len(self.words)), np.float32)
    for n, t in enumerate(texts):
      for w in re.findall(r"[a-z]+", t.lower()):
        if w in self.index:
          out[n, self.index[w]] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-6)


def test_place_words_takes_the_cheapest_assignment():
  rng = np.random.default_rng(0)
  codes = rng.standard_normal((9, 3)).astype(np.float32)
  words = np.array([[0, 4, 7, 2], [8, 1, 3, 5]], np.int32)
  targets = rng.standard_normal((2, 4, 3)).astype(np.float32)
  got = np.asarray(place_words(jnp.asarray(words), jnp.asarray(targets), jnp.asarray(codes)))
  for b in range(2):
    cost = lambda order: sum(np.sum((targets[b, i] - codes[w]) ** 2) for i, w in enumerate(order))
    best = min(itertools.permutations(words[b]), key=cost)
    assert sorted(got[b]) == sorted(words[b])  # the same words, only placed
    assert cost(got[b]) == pytest.approx(cost(best))
  # A target that is exactly one word's code gets that word.
  targets = codes[words[:, ::-1]]
  got = np.asarray(place_words(jnp.asarray(words), jnp.asarray(targets), jnp.asarray(codes)))
  np.testing.assert_array_equal(got, words[:, ::-1])


def test_pyramid_takes_the_ranked_words_in_turn():
  rng = np.random.default_rng(1)
  e = rng.standard_normal((40, 6)).astype(np.float32)
  z = rng.standard_normal((2, 8, 8, 6)).astype(np.float32)
  rows = tuple(range(3, 40, 4))  # 10 words
  spec = spae.PyramidSpec((1, 2, 4, 8), semantic_layers=2, semantic_vocab=rows)
  ranked = np.stack([rng.permutation(10) for _ in range(2)]).astype(np.int32)
  ids, recons = spae.saq_quantize(z, e, spec)
  from spae._pyramid import pyramid_quantize

  hid, hrec = pyramid_quantize(z, e, spec, semantic_ranked=jnp.asarray(ranked))
  sub = np.asarray(rows)
  for b in range(2):
    assert int(hid[0][b, 0, 0]) == sub[ranked[b, 0]]
    assert sorted(np.asarray(hid[1][b]).ravel()) == sorted(sub[ranked[b, 1:5]])
  assert not all(np.array_equal(a, b) for a, b in zip(ids[:2], hid[:2]))
  with pytest.raises(spae.SpaeInputError, match="semantic_ranked must be"):
    pyramid_quantize(z, e, spec, semantic_ranked=jnp.asarray(ranked[:, :4]))
  # The lower layers still quantize what the semantic words left: the full pyramid tracks z either way.
  err = lambda r: float(np.mean((np.asarray(r) - z) ** 2))
  assert err(hrec[-1]) < err(hrec[1]) and err(hrec[-1]) < 1.2 * err(recons[-1])


def test_config_refuses_a_head_without_room_for_its_words():
  cfg = spae.tiny_config()
  with pytest.raises(spae.SpaeInputError, match="semantic_head needs semantic layers"):
    dataclasses.replace(cfg, autoencoder=dataclasses.replace(cfg.autoencoder, semantic_head=8)).validate(32)
  spec = dataclasses.replace(cfg.pyramid, semantic_layers=3, semantic_vocab=tuple(range(30)))
  with pytest.raises(spae.SpaeInputError, match="at most 4 blocks"):
    dataclasses.replace(cfg, pyramid=spec,
                        autoencoder=dataclasses.replace(cfg.autoencoder, semantic_head=8)).validate(32)


@pytest.fixture(scope="module")
def headed(tmp_path_factory):
  # The default's scoring: projected codes, the semantic words with a map of their own (whose codes the head's
  # class means set). A 64-dim table, so the ~35 caption words' unit rows are independent and the means exact.
  cfg = spae.tiny_config(dim=64)
  cfg = dataclasses.replace(cfg, codebook=CodebookConfig("projected", 8, semantic_map=True),
                            autoencoder=dataclasses.replace(cfg.autoencoder, latent_dim=8),
                            pyramid=dataclasses.replace(cfg.pyramid, semantic_layers=2, pooled_layers=2,
                                                        semantic_vocab=tuple(range(0, 40, 3))))
  tok = spae.Tokenizer(cfg, spae.tiny_vocabulary(dim=64), seed=0)
  scenes = spae.data.SceneSource(96, 32, seed=1, split="train")
  images = np.stack([scenes.load(i) for i in range(96)]).astype(np.float32) / 255.0
  captions = [scenes.caption(i) for i in range(96)]
  teacher = WordTeacher(tok.vocabulary)
  hcfg = HeadConfig(width=8, steps=30, batch=16, lr=3e-3, warmup=2, centre=32, refit_images=64, caption_words=96)
  out, info = add_semantic_head(tok, teacher, images, captions, images[:64], hcfg)
  return tok, out, info, images, captions, teacher, hcfg


def test_caption_targets_read_the_captions_words(headed):
  tok, _, _, _, captions, teacher, _ = headed
  rows = caption_candidates(captions, tok.vocabulary)
  words = tok.vocabulary.words(rows)
  assert {"red", "blue"} <= set(words) and all(re.fullmatch("[a-z]+", w) for w in words)
  p = caption_targets(teacher, tok.vocabulary, rows, captions[:4], captions, top_k=3, temperature=0.05)
  np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
  assert ((p > 0).sum(1) == 3).all()
  for n in range(4):  # every named word is one of the caption's own
    assert {words[j] for j in np.flatnonzero(p[n])} <= set(re.findall("[a-z]+", captions[n].lower()))


def test_head_learns_and_chooses_layers_1_2(headed, tmp_path):
  tok, out, info, images, captions, _, hcfg = headed
  assert info["losses"][-1] < info["losses"][0]  # a tiny head still learns in 30 steps
  spec = out.config.pyramid
  assert out.config.autoencoder.semantic_head == 8
  assert spec.semantic_vocab == tuple(int(r) for r in caption_candidates(captions[:96], tok.vocabulary))
  x = images[:8]
  pyr = out.encode(x)
  ranked = np.asarray(out.model.head.ranked(jnp.asarray(x)))
  sub = np.asarray(spec.semantic_vocab)
  for b in range(8):
    assert int(pyr.ids[0][b, 0, 0]) == sub[ranked[b, 0]]
    assert sorted(pyr.ids[1][b].ravel()) == sorted(sub[ranked[b, 1:5]])
  # The encoder, the appearance codes and the decoder are the input's.
  np.testing.assert_array_equal(np.asarray(out.encode_latents(x)), np.asarray(tok.encode_latents(x)))
  np.testing.assert_array_equal(np.asarray(out.codebook), np.asarray(tok.codebook))
  # The offset centres the head: its mean centred score over the centring images is 0 for every word.
  centred = np.asarray(out.model.head(jnp.asarray(images[:hcfg.centre])))
  np.testing.assert_allclose(centred.mean(0), 0.0, atol=1e-4)
  # A saved bundle reads back to the same tokens.
  back = spae.Tokenizer.load(out.save(tmp_path / "tok"))
  for a, b in zip(back.encode(x).ids, pyr.ids):
    np.testing.assert_array_equal(a, b)


def test_head_codes_are_class_means_of_layer_1_inputs(headed):
  _, out, info, images, _, _, _ = headed
  from spae.train._refit import layer1_inputs_fn

  spec = out.config.pyramid
  refit = images[:64]
  t = np.asarray(layer1_inputs_fn(spec, out.config.quantizer)(out.model, jnp.asarray(refit)))
  ranked = np.asarray(out.model.head.ranked(jnp.asarray(refit)))[:, :5]
  codes = np.asarray(out.semantic_codebook)[np.asarray(spec.semantic_vocab)]
  counts = np.array(info["named"])
  for j in np.flatnonzero(counts > 0)[:5]:
    member = (ranked == j).any(1)
    np.testing.assert_allclose(codes[j], t[member].mean(0), rtol=1e-3, atol=1e-4)


def test_training_refuses_a_head():
  from spae.train import load_config

  with pytest.raises(spae.SpaeInputError, match="semantic head is added after training"):
    load_config("configs/tiny.py", ["tokenizer.autoencoder.semantic_head=8"])


def test_tool_refuses_a_tokenizer_without_semantic_layers(tiny_tok_dir, tmp_path, capsys):
  import sys
  from pathlib import Path

  sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
  import add_semantic_head

  rc = add_semantic_head.main(["--tokenizer", str(tiny_tok_dir), "--out", str(tmp_path / "out")])
  err = capsys.readouterr().err.strip()
  assert rc == 2 and "\n" not in err and "no semantic layers" in err and str(tiny_tok_dir) in err
  assert not (tmp_path / "out").exists()


def test_recon_benchmark_reads_the_heads_words(headed):
  import sys
  from pathlib import Path

  sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
  import recon

  _, out, _, images, _, _, _ = headed
  ids, _, _ = recon.make_eval_fn(out)(out._state, out.codebook, out.semantic_codebook, jnp.asarray(images[:4]))
  for a, b in zip(ids, out.encode(images[:4]).ids):
    np.testing.assert_array_equal(np.asarray(a), b)


def test_decoder_tune_keeps_the_heads_words(headed, tmp_path):
  """tools/refit_tokenizer.py's path for a tokenizer with a head: the trainer adopts it and tunes the decoder alone,
  the quantizer taking the head's words as encode does."""
  import jax
  from flax import nnx

  from spae.train import Trainer, load_config
  from spae.train._tune import tune_decoder

  _, out, _, images, _, _, _ = headed
  cfg = load_config("configs/tiny.py", ["vocab=tiny:64", "tune.steps=3", "tune.lr=1e-3"])
  trainer = Trainer(cfg, tmp_path / "w")
  assert trainer.vocab.fingerprint() == out.vocabulary.fingerprint()
  trainer.adopt(out)
  # The tune's step quantizes with the head's words (the step's ids are encode's).
  from spae.train import tune_optimizer

  params = trainer.state["g_params"]
  state = jax.tree.map(jnp.array, dict(trainer.state, ema_params=params, g_opt=tune_optimizer(cfg).init(params)))
  # (copies: the step donates its state)
  x = jnp.asarray(images[:8])
  _, _, ids = trainer.step_fn(False, decoder_only=True)(state, x, trainer.codebook, {})
  for a, b in zip(ids, out.encode(images[:8]).ids):
    np.testing.assert_array_equal(np.asarray(a), b)
  rows = tune_decoder(trainer)
  tuned = trainer.tokenizer(ema=False)
  assert len(rows) == 3 and tuned.config == out.config
  before, after = (nnx.state(t.model, nnx.Param).to_pure_dict() for t in (out, tuned))
  for key in before:
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before[key]), jax.tree.leaves(after[key])))
    assert same == (key != "decoder"), key
  for a, b in zip(tuned.encode(images[:8]).ids, out.encode(images[:8]).ids):
    np.testing.assert_array_equal(a, b)


def test_decoder_tune_can_learn_other_saq_layer_weights(headed, tmp_path):
  """tools/refit_tokenizer.py with `tokenizer.pyramid.layer_weights` on a headed tokenizer: the trainer adopts it
  with the new weights, its quantizer and export use them, the semantic layers (weight 1) keep the head's words,
  and only the decoder learns."""
  import jax
  from flax import nnx

  from spae.train import Trainer, load_config
  from spae.train._tune import tune_decoder

  _, out, _, images, _, _, _ = headed
  weights = (1.0, 1.0, 2.0, 2.0)
  trainer = Trainer(load_config("configs/tiny.py", ["vocab=tiny:64", "tune.steps=2", "tune.lr=1e-3"]), tmp_path / "w")
  trainer.adopt(out, layer_weights=weights)
  assert trainer.models.tokenizer_config.pyramid.layer_weights == weights
  tune_decoder(trainer)
  tuned = trainer.tokenizer(ema=False)
  assert tuned.config.pyramid.layer_weights == weights
  new, old = tuned.encode(images[:8]).ids, out.encode(images[:8]).ids
  for a, b in zip(new[:2], old[:2]):
    np.testing.assert_array_equal(a, b)
  assert any((a != b).any() for a, b in zip(new[2:], old[2:]))
  before, after = (nnx.state(t.model, nnx.Param).to_pure_dict() for t in (out, tuned))
  for key in before:
    same = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before[key]), jax.tree.leaves(after[key])))
    assert same == (key != "decoder"), key


def test_tool_adds_a_head_and_records_it(headed, tmp_path):
  import json
  import sys
  from pathlib import Path

  sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
  import add_semantic_head

  tok, _, _, _, _, teacher, _ = headed
  src = tok.save(tmp_path / "trained")
  args = ["--tokenizer", str(src), "--out", str(tmp_path / "out"), "--images", "48", "--steps", "3", "--batch", "8",
          "--width", "8", "--centre", "16", "--refit-images", "32", "--caption-words", "48", "--tune-steps", "0"]
  a = add_semantic_head.parse_args(args)  # run() then gets the bag-of-words teacher, not --teacher's
  assert add_semantic_head.run(a, teacher=teacher) == 0
  rec = json.loads((tmp_path / "out" / "training.json").read_text())
  out = spae.Tokenizer.load(tmp_path / "out")
  assert out.config.autoencoder.semantic_head == 8 and rec["tune"] is None
  assert rec["words"] == out.vocabulary.words(np.asarray(out.config.pyramid.semantic_vocab))
  assert rec["input_params_sha256"] != rec["params_sha256"] and len(rec["loss_every_100"]) == 2
