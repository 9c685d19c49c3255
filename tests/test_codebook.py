"""Codebook scoring: the frozen table stays frozen and the ids stay words, whatever the codes are."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import spae
from spae._codebook import Codebook, CodebookConfig, unit_rows  # noqa: F401


def _tok(mode: str, dim: int = 8) -> spae.Tokenizer:
  vocab = spae.tiny_vocabulary(dim=32)
  cfg = spae.tiny_config(dim=32)
  cb = CodebookConfig(mode, dim)
  cfg = dataclasses.replace(cfg, codebook=cb,
                            autoencoder=dataclasses.replace(cfg.autoencoder, latent_dim=cb.latent_dim(32)))
  return spae.Tokenizer(cfg, vocab, seed=1)


@pytest.mark.parametrize("mode", ["normalized", "projected", "learned"])
def test_modes_encode_decode_and_round_trip(mode, tmp_path, sample_images):
  tok = _tok(mode)
  d = 32 if mode == "normalized" else 8
  assert tok.codebook.shape == (len(tok.vocabulary), d)
  pyr = tok.encode(sample_images)
  assert pyr.grids == (1, 2, 4, 8)
  assert all(int(a.max()) < len(tok.vocabulary) for a in pyr.ids)
  assert tok.decode(pyr, layers=2).shape == (2, 32, 32, 3)
  again = spae.Tokenizer.load(tok.save(tmp_path / mode))
  np.testing.assert_array_equal(np.asarray(again.codebook), np.asarray(tok.codebook))
  for a, b in zip(again.encode(sample_images).ids, pyr.ids):
    np.testing.assert_array_equal(a, b)


def test_projected_codes_are_a_linear_map_of_unit_rows():
  table = jax.random.normal(jax.random.key(0), (50, 12)) * 3.0
  cb = Codebook(CodebookConfig("projected", 4), 50, 12, rngs=nnx.Rngs(0))
  codes = cb(table)
  np.testing.assert_allclose(np.asarray(codes), np.asarray(unit_rows(table) @ cb.weight.value), rtol=1e-5, atol=1e-6)
  # Scaling a row does not change its code: only the direction of a word's embedding matters.
  np.testing.assert_allclose(np.asarray(cb(table.at[3].multiply(7.0))[3]), np.asarray(codes[3]), rtol=1e-5)


def test_gradient_reaches_the_projection_never_the_table():
  table = jax.random.normal(jax.random.key(1), (20, 6))
  cb = Codebook(CodebookConfig("projected", 3), 20, 6, rngs=nnx.Rngs(0))
  graphdef, params = nnx.split(cb)

  def loss(params, table):
    return jnp.sum(jnp.square(nnx.merge(graphdef, params)(table)))

  g_params, g_table = jax.grad(loss, argnums=(0, 1))(params, table)
  assert float(jnp.abs(g_params["weight"].value).sum()) > 0
  assert float(jnp.abs(g_table).sum()) == 0.0


def test_raw_mode_adds_no_parameters(tiny_tok):
  params = nnx.state(tiny_tok.model, nnx.Param).to_pure_dict()
  assert set(params) == {"encoder", "decoder"}
  np.testing.assert_array_equal(np.asarray(tiny_tok.codebook), tiny_tok.vocabulary.embeddings)


def test_bad_configs_are_one_line_errors():
  with pytest.raises(spae.SpaeInputError, match="codebook.mode"):
    CodebookConfig("cosine")
  with pytest.raises(spae.SpaeInputError, match="latent_dim"):
    cfg = spae.tiny_config(dim=32)
    spae.Tokenizer(dataclasses.replace(cfg, codebook=CodebookConfig("projected", 8)), spae.tiny_vocabulary(dim=32))


def test_semantic_map_is_a_second_projection_only_when_asked(sample_images, tmp_path):
  """`semantic_map`: the semantic sub-vocabulary's layers get their own projection W_s of the unit rows (a
  parameter only when asked for); a tokenizer with one encodes and decodes through it and round-trips."""
  table = jax.random.normal(jax.random.key(0), (50, 12))
  plain = Codebook(CodebookConfig("projected", 4), 50, 12, rngs=nnx.Rngs(0))
  assert plain.semantic(table) is None and not hasattr(plain, "semantic_weight")
  cb = Codebook(CodebookConfig("projected", 4, semantic_map=True), 50, 12, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(np.asarray(cb.semantic(table)), np.asarray(unit_rows(table) @ cb.semantic_weight.value),
                             rtol=1e-5, atol=1e-6)
  assert not np.allclose(np.asarray(cb.semantic(table)), np.asarray(cb(table)))
  with pytest.raises(spae.SpaeInputError, match="semantic_map needs codebook.mode 'projected'"):
    CodebookConfig("learned", 4, semantic_map=True)
  cfg = spae.tiny_config(dim=32)
  cb_cfg = CodebookConfig("projected", 8, semantic_map=True)
  cfg = dataclasses.replace(cfg, codebook=cb_cfg, autoencoder=dataclasses.replace(cfg.autoencoder, latent_dim=8))
  with pytest.raises(spae.SpaeInputError, match="needs semantic layers"):
    spae.Tokenizer(cfg, spae.tiny_vocabulary(dim=32))
  cfg = dataclasses.replace(cfg, pyramid=dataclasses.replace(cfg.pyramid, semantic_layers=2,
                                                             semantic_vocab=tuple(range(0, 40, 3))))
  tok = spae.Tokenizer(cfg, spae.tiny_vocabulary(dim=32), seed=1)
  assert tok.semantic_codebook.shape == tok.codebook.shape
  pyr = tok.encode(sample_images)
  ids, recons = spae.saq_quantize(tok.encode_latents(sample_images), tok.codebook, cfg.pyramid,
                                  semantic_codebook=tok.semantic_codebook)
  for a, b in zip(pyr.ids, ids):
    np.testing.assert_array_equal(a, np.asarray(b))
  want = np.clip((np.asarray(tok.model.decoder(recons[1])) + 1) / 2, 0, 1)
  np.testing.assert_allclose(tok.decode(pyr, layers=2), want, atol=1e-5)
  again = spae.Tokenizer.load(tok.save(tmp_path / "sem"))
  assert again.config.codebook.semantic_map
  np.testing.assert_array_equal(np.asarray(again.semantic_codebook), np.asarray(tok.semantic_codebook))
  for a, b in zip(again.encode(sample_images).ids, pyr.ids):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_allclose(again.decode(pyr), tok.decode(pyr), atol=1e-6)


def test_saq_reconstruction_is_differentiable_in_the_codes_only():
  """The codebook loss trains a code map through r_l; the search itself passes no gradient to z."""
  codes = jax.random.normal(jax.random.key(2), (30, 4))
  z = jax.random.normal(jax.random.key(3), (1, 4, 4, 4))
  spec = spae.PyramidSpec((1, 2, 4))
  f = lambda c, z: jnp.sum(spae.saq_quantize(z, c, spec)[1][-1] ** 2)
  g_codes, g_z = jax.grad(f, argnums=(0, 1))(codes, z)
  ids = spae.saq_quantize(z, codes, spec)[0]
  used = np.unique(np.concatenate([np.asarray(a).ravel() for a in ids]))
  assert np.all(np.abs(np.asarray(g_codes))[used].sum(axis=1) > 0)
  unused = np.setdiff1d(np.arange(30), used)
  assert np.all(np.asarray(g_codes)[unused] == 0)
  assert float(jnp.abs(g_z).sum()) == 0.0


def test_trainer_learns_the_projection_and_exports_it(tmp_path):
  """Two real steps of the tiny config with projected codes: W moves, the table does not, the bundle round-trips."""
  from pathlib import Path

  from spae import train as T

  cfg = T.load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.py")
  tok_cfg = dataclasses.replace(cfg.tokenizer, codebook=CodebookConfig("projected", 8))
  cfg = dataclasses.replace(cfg, tokenizer=tok_cfg, steps=2,
                            gan=dataclasses.replace(cfg.gan, disc_start=10**9),
                            semantic=dataclasses.replace(cfg.semantic, weight=0.0),
                            logging=dataclasses.replace(cfg.logging, every=1, image_every=0),
                            checkpoints=dataclasses.replace(cfg.checkpoints, every=1000))
  tr = T.Trainer(cfg, tmp_path)
  w0 = np.asarray(tr.state["g_params"]["codebook"]["weight"])
  table0 = np.asarray(tr.vocab.embeddings).copy()
  tr.run(progress=False)
  assert not np.allclose(np.asarray(tr.state["g_params"]["codebook"]["weight"]), w0)
  np.testing.assert_array_equal(np.asarray(tr.vocab.embeddings), table0)
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert all("codebook" in r and np.isfinite(r["codebook"]) for r in rows)
  tok = spae.Tokenizer.load(tr.export())
  assert tok.config.codebook.mode == "projected" and tok.codebook.shape == (len(tok.vocabulary), 8)


def test_filter_word_initial_lowercase_and_max_size_keeps_table_order():
  pieces = ["<pad>", "▁the", "ing", "▁Paris", "▁cat", "Ġdog", "▁a", "▁über", "▁red", "▁blue"]
  v = spae.Vocabulary.from_arrays(pieces, np.eye(len(pieces), dtype=np.float32))
  out = v.filter(word_initial=True, lowercase_only=True, alphabetic_only=True, ascii_only=True, min_length=3)
  assert out.pieces == ["▁the", "▁cat", "Ġdog", "▁red", "▁blue"]
  assert list(out.llm_ids) == [1, 4, 5, 8, 9]
  assert v.filter(word_initial=True, lowercase_only=True, min_length=3, max_size=2).pieces == ["▁the", "▁cat"]


def test_rq_quantizer_tokenizer_decodes_residual_sums(sample_images):
  tok = _tok("projected")
  rq = spae.Tokenizer(dataclasses.replace(tok.config, quantizer="rq"), tok.vocabulary, tok.model)
  pyr = rq.encode(sample_images)
  z = rq.encode_latents(sample_images)
  ids, recon = spae.train.rq_quantize(z, rq.codebook, rq.config.pyramid)
  for a, b in zip(pyr.ids, ids):
    np.testing.assert_array_equal(a, np.asarray(b))
  # Decoding goes through the residual sum r_L = Σ q_l, not the SAQ average.
  want = np.clip((np.asarray(rq.model.decoder(recon[-1])) + 1) / 2, 0, 1)
  np.testing.assert_allclose(rq.decode(pyr), want, atol=1e-5)
  with pytest.raises(spae.SpaeInputError, match="quantizer"):
    spae.Tokenizer(dataclasses.replace(tok.config, quantizer="vq"), tok.vocabulary)


def test_training_without_the_quantizer_and_with_rq(tmp_path):
  from pathlib import Path

  from spae import train as T

  base = T.load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.py")
  for name, tok_cfg, loss in (("noq", base.tokenizer, dataclasses.replace(base.loss, quantize=False)),
                              ("rq", dataclasses.replace(base.tokenizer, quantizer="rq"), base.loss)):
    cfg = dataclasses.replace(base, tokenizer=tok_cfg, loss=loss, steps=2,
                              gan=dataclasses.replace(base.gan, disc_start=10**9),
                              logging=dataclasses.replace(base.logging, every=1, image_every=0),
                              checkpoints=dataclasses.replace(base.checkpoints, every=1000))
    tr = T.Trainer(cfg, tmp_path / name)
    tr.run(progress=False)
    row = json.loads((tmp_path / name / "metrics.jsonl").read_text().splitlines()[-1])
    if name == "noq":  # no commitment in the loss: g_loss is the reconstruction alone
      assert row["commitment"] == 0.0 and row["g_loss"] == pytest.approx(row["l2"], rel=1e-5)
    else:
      assert row["commitment"] > 0 and spae.Tokenizer.load(tr.export()).config.quantizer == "rq"


def test_every_ablation_row_changes_one_thing_and_builds():
  import sys
  from pathlib import Path

  from spae import train as T

  root = Path(__file__).resolve().parents[1]
  sys.path.insert(0, str(root / "benchmarks"))
  import tokenizer_ablation as A

  base = T.load_config(root / "configs" / "tiny.py")
  vocab = spae.tiny_vocabulary()
  seen = set()
  for row in A.ROWS:
    cfg = A.row_config(base, row, vocab.dim)
    tc = cfg.tokenizer
    seen.add((tc.codebook.mode, tc.quantizer, tc.pyramid.subsample, cfg.loss.quantize, tc.autoencoder.pixel_skip))
    T.Models(cfg, vocab.embeddings.shape)  # validates latent dims against the codes
  assert len(seen) == len(A.ROWS)  # no two rows are the same experiment
