"""The trainer: really trains the tiny config, resumes exactly, guards NaNs, survives SIGKILL."""

import dataclasses
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import spae
from spae import train as T

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_cfg():
  return T.load_config(ROOT / "configs" / "tiny.py")


class ToyTeacher:
  """relevance(images) -> [B, V]: mean-colour dot product with fixed random word colours (deterministic)."""

  def __init__(self, v):
    self.colours = jnp.asarray(np.random.default_rng(0).random((v, 3)), jnp.float32)

  def __call__(self, images):
    return images.mean(axis=(1, 2)) @ self.colours.T


def _tree_equal(a, b):
  la, lb = jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))
  assert len(la) == len(lb)
  return all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def trained(tiny_cfg, tmp_path_factory):
  """The tiny config with a toy teacher, 6 steps uninterrupted (GAN from step 3)."""
  wd = tmp_path_factory.mktemp("run_full")
  tr = T.Trainer(tiny_cfg, wd, teacher=ToyTeacher(len(spae.tiny_vocabulary())))
  tr.run(progress=False)
  return tr, wd


def test_tiny_run_writes_everything(trained, tiny_cfg):
  tr, wd = trained
  lines = [json.loads(l) for l in (wd / "metrics.jsonl").read_text().splitlines()]
  assert [l["step"] for l in lines] == list(range(1, tiny_cfg.steps + 1))
  for key in ("l2", "commitment", "semantic", "semantic_l1", "semantic_l2", "g_loss", "images_per_s",
              "usage_l1", "perplexity_l4", "top_mass_l2"):
    assert key in lines[-1], key
  assert "d_loss" in lines[-1] and "r1" in lines[-1] and "lecam" in lines[-1]  # GAN active after disc_start
  assert "d_loss" not in lines[0]
  assert all(np.isfinite(l["g_loss"]) for l in lines)
  assert list((wd / "tb").glob("events.out.tfevents.*"))
  assert sorted(p.name for p in (wd / "images").glob("*.png")) == ["recon_0000003.png", "recon_0000006.png"]
  # The reused preview tokenizer drew the last grid with the final (not the first) generator parameters.
  preview = jax.device_get(spae._tokenizer.nnx.state(tr._preview.model).to_pure_dict())
  assert _tree_equal(preview, tr.state["g_params"])
  tok = spae.Tokenizer.load(wd / "tokenizer")
  pyr = tok.encode(np.zeros((32, 32, 3), np.uint8))
  assert pyr.grids == (1, 2, 4, 8)
  # The export holds the EMA parameters.
  ema = jax.device_get(tr.state["ema_params"])
  exported = jax.device_get(spae._tokenizer.nnx.state(tok.model).to_pure_dict())
  assert _tree_equal(ema, exported)


def test_resume_equals_uninterrupted(trained, tiny_cfg, tmp_path):
  tr_full, _ = trained
  teacher = ToyTeacher(len(spae.tiny_vocabulary()))
  a = T.Trainer(tiny_cfg, tmp_path, teacher=teacher)
  a.run(progress=False, stop_after=4)  # crosses disc_start, stops with a checkpoint at step 4
  assert int(a.state["step"]) == 4
  # What a run killed after its step-4 checkpoint leaves: rows past it, the last one half-written.
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write(json.dumps({"step": 5, "g_loss": 1.0}) + "\n" + '{"step": 6, "g_lo')
  b = T.Trainer(tiny_cfg, tmp_path, teacher=teacher)
  b.run(progress=False)
  assert int(b.state["step"]) == tiny_cfg.steps
  for key in ("g_params", "d_params", "ema_params", "g_opt", "d_opt", "lecam", "rng"):
    assert _tree_equal(b.state[key], tr_full.state[key]), key
  assert b.data.get_state() == tr_full.data.get_state()
  rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == list(range(1, tiny_cfg.steps + 1))  # each step logged once
  assert rows[4]["g_loss"] != 1.0


def test_semantic_pull_moves_what_it_names(tiny_cfg):
  """semantic.pull: 'targets' moves the encoder only, 'codes' the trainable code map only, 'both' both."""
  from spae.train._step import Models, init_state, make_train_step

  vocab = spae.tiny_vocabulary()
  table = jnp.asarray(vocab.embeddings, jnp.float32)
  images = jnp.asarray(np.random.default_rng(0).random((2, 32, 32, 3)), jnp.float32)
  idx, probs = spae.losses.teacher_distribution(ToyTeacher(len(vocab))(images), 4, 0.1)
  after = {}
  for pull in ("targets", "both", "codes"):
    cfg = tiny_cfg
    # No clipping: a global-norm clip would rescale every update by the other parameters' gradients too.
    for o in ("tokenizer.codebook.mode=projected", "tokenizer.codebook.dim=8", "tokenizer.pyramid.grids=[1, 2]",
              "semantic.weight=100", "optim.grad_clip=1e9", f"semantic.pull={pull}"):
      cfg = T.apply_override(cfg, o)
    models = Models(cfg, table.shape)
    state = init_state(cfg, models)
    step = jax.jit(make_train_step(cfg, models, use_gan=False, semantic=True))
    for _ in range(2):  # the learning rate warms up from 0 at step 0
      state, metrics, _ = step(state, images, table, {"teacher_idx": idx, "teacher_probs": probs})
      assert np.isfinite(float(metrics["semantic"]))
    after[pull] = jax.device_get(state["g_params"])
  # Same data, seed and losses, and the parameters are still equal when the second step's gradients are taken, so
  # each part's update depends only on whether the CE reaches it (the codebook term moves the codes in every run).
  enc = {p: after[p]["encoder"] for p in after}
  codes = {p: after[p]["codebook"]["weight"] for p in after}
  assert _tree_equal(enc["targets"], enc["both"]) and not _tree_equal(enc["targets"], enc["codes"])
  assert np.array_equal(codes["both"], codes["codes"]) and not np.array_equal(codes["targets"], codes["codes"])


def test_search_chunk_balances_the_vocabulary():
  from spae._pyramid import nearest_tokens
  from spae.train._step import search_chunk

  # 8,195 words in chunks of 8,192 would be padded to 16,384 rows; two equal chunks pad 13.
  assert search_chunk(8195, 8192) == 4104 and search_chunk(8192, 8192) == 8192 and search_chunk(256, 8192) == 256
  for v, cap in ((8195, 8192), (262145, 8192), (100, 7), (5, 8192)):
    c = search_chunk(v, cap)
    n = -(-v // c)
    assert c <= max(cap, 8) and n == -(-v // min(cap, v)) and n * c - v < 8 * n
  rng = np.random.default_rng(0)
  table = jnp.asarray(rng.standard_normal((1000, 8)), jnp.float32)
  q = jnp.asarray(rng.standard_normal((64, 8)), jnp.float32)
  assert np.array_equal(nearest_tokens(q, table, vocab_chunk=search_chunk(1000, 512)),
                        nearest_tokens(q, table, vocab_chunk=512))


@pytest.mark.parametrize("mode,quantizer", [("dilation", "saq"), ("pool", "saq"), ("dilation", "rq")])
def test_semantic_targets_are_the_quantizers_targets(mode, quantizer):
  from spae._pyramid import nearest_tokens, pyramid_quantize

  rng = np.random.default_rng(1)
  table = jnp.asarray(rng.standard_normal((300, 8)), jnp.float32)
  z = jnp.asarray(rng.standard_normal((2, 8, 8, 8)), jnp.float32)
  spec = spae.PyramidSpec((1, 2, 4, 8), subsample=mode)
  ids, recons = pyramid_quantize(z, table, spec, quantizer)
  targets = T.semantic_targets(z, recons, spec.grids, 3, mode, quantizer)
  for l, t in enumerate(targets):
    assert t.shape == (2, spec.grids[l] ** 2, 8)
    assert np.array_equal(nearest_tokens(t.reshape(-1, 8), table).reshape(ids[l].shape), ids[l])
  # t_l = l·z(c) − ... (RQ: z(c) − ...): its gradient to z sums to l (RQ: 1) per sampled position and channel.
  g = jax.grad(lambda z: sum(jnp.sum(t) for t in T.semantic_targets(z, recons, spec.grids, 3, mode, quantizer)))(z)
  scale = (lambda l: l) if quantizer == "saq" else (lambda l: 1)
  assert float(jnp.sum(g)) == pytest.approx(sum(scale(l) * 2 * spec.grids[l - 1] ** 2 * 8 for l in (1, 2, 3)))


def test_loss_decreases(tiny_cfg, tmp_path):
  cfg = T.load_config(ROOT / "configs" / "tiny.py", [
      "steps=40", "gan.disc_start=1000000000", "gan.lecam_weight=0", "semantic.weight=0", "logging.image_every=0",
      "checkpoints.every=1000", "logging.every=1", "optim.lr=3e-3", "optim.warmup_steps=1"])
  tr = T.Trainer(cfg, tmp_path)
  tr.run(progress=False)
  l2 = [json.loads(l)["l2"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert np.mean(l2[-5:]) < 0.6 * np.mean(l2[:5])


def test_nan_guard_skips_update_and_stops_within_a_log_interval(tmp_path, monkeypatch):
  from jax._src.array import ArrayImpl

  cfg = T.load_config(ROOT / "configs" / "tiny.py", ["max_consecutive_nan=2", "semantic.weight=0",
                                                      "gan.disc_start=1000000000", "logging.image_every=0",
                                                      "logging.every=4", "checkpoints.every=1000"])
  tr = T.Trainer(cfg, tmp_path)
  before = jax.device_get(tr.state["g_params"])
  bad = np.full((8, 32, 32, 3), np.nan, np.float32)
  m = tr.train_step(bad)
  assert m["finite"] == 0.0
  assert _tree_equal(tr.state["g_params"], before)  # update skipped
  assert int(tr.state["nan"]["total"]) == 1 and int(tr.state["step"]) == 1

  reads = []  # every host read of a device array goes through ArrayImpl._value or __array__
  value, array = ArrayImpl._value, ArrayImpl.__array__
  monkeypatch.setattr(ArrayImpl, "_value", property(lambda self: (reads.append(1), value.fget(self))[1]))
  monkeypatch.setattr(ArrayImpl, "__array__", lambda self, *a, **k: (reads.append(1), array(self, *a, **k))[1])
  seen = []  # reads so far, each time a batch is drawn

  class NaNData:
    num_skipped = 0

    def __next__(self):
      seen.append(len(reads))
      return {"image": bad}

    def get_state(self):
      return {}

  tr.data = NaNData()
  # The guard's counters live on device: it trips at step 2, and the loop, which reads nothing from the device
  # between log steps, sees it at the next log step, 4.
  with pytest.raises(T.NonFiniteLossError, match="consecutive non-finite losses ending at step 2 .*by step 4"):
    tr.run(progress=False)
  assert int(tr.state["step"]) == 4
  assert len(seen) == 3 and seen[0] == seen[1] == seen[2] < len(reads)  # steps 2, 3: no read; step 4: the fetch


def test_half_written_checkpoint_is_ignored(trained, tiny_cfg, tmp_path):
  import shutil

  _, wd = trained
  shutil.copytree(wd / "checkpoints", tmp_path / "checkpoints")
  # An interrupted async save leaves a tmp directory; it must never be picked up.
  (tmp_path / "checkpoints" / "8.orbax-checkpoint-tmp-123").mkdir()
  tr = T.Trainer(tiny_cfg, tmp_path)
  assert tr.restore_latest() == tiny_cfg.steps


def _damage(checkpoint: Path) -> None:
  """Truncates the largest file of a checkpoint (issue 9's reproduction)."""
  big = max((p for p in checkpoint.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  big.write_bytes(big.read_bytes()[:100])


def test_unreadable_checkpoint_falls_back_then_fails_cleanly(trained, tiny_cfg, tmp_path, caplog):
  import shutil

  _, wd = trained
  ck = tmp_path / "checkpoints"
  shutil.copytree(wd / "checkpoints", ck)  # steps 4 and 6
  _damage(ck / "6")
  tr = T.Trainer(tiny_cfg, tmp_path)
  with caplog.at_level(logging.WARNING, logger="spae.train"):
    assert tr.restore_latest() == 4
  assert "checkpoint at step 6" in caplog.text and "unreadable" in caplog.text
  assert (tmp_path / "checkpoints.unreadable" / "6").is_dir() and not (ck / "6").exists()  # moved, not deleted
  tr.save_checkpoint(step=6, wait=True)  # the step can be saved again
  assert sorted(int(p.name) for p in ck.iterdir() if p.name.isdigit()) == [4, 6]
  for step in (4, 6):
    _damage(ck / str(step))
  listing = sorted(str(p) for p in tmp_path.rglob("*"))
  with pytest.raises(spae.SpaeInputError, match=r"no intact checkpoint in .*step\(s\) 6, 4 cannot be read"):
    T.Trainer(tiny_cfg, tmp_path).restore_latest()
  assert sorted(str(p) for p in tmp_path.rglob("*")) == listing  # nothing moved when nothing can be resumed


def test_sigkill_mid_training_resumes(tmp_path):
  wd = tmp_path / "wd"
  cmd = [sys.executable, "-m", "spae.cli", "train", "--config", str(ROOT / "configs" / "tiny.py"),
         "--workdir", str(wd), "--no-progress", "--set", "steps=400", "--set", "checkpoints.every=2",
         "--set", "logging.image_every=0", "--set", "gan.disc_start=100000", "--set", "semantic.weight=0",
         "--set", "checkpoints.async_save=false"]
  proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
  try:
    deadline = time.time() + 240
    while time.time() < deadline:
      steps = ([int(p.name) for p in (wd / "checkpoints").glob("*") if p.name.isdigit()]
               if (wd / "checkpoints").exists() else [])
      if steps and max(steps) >= 6:
        break
      time.sleep(0.5)
    else:
      pytest.fail("training produced no checkpoints in time")
  finally:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
  logged = [json.loads(l)["step"] for l in (wd / "metrics.jsonl").read_text().splitlines() if l.strip()]
  cfg = T.load_config(ROOT / "configs" / "tiny.py", ["steps=400", "checkpoints.every=2", "gan.disc_start=100000",
                                                      "semantic.weight=0", "checkpoints.async_save=false"])
  tr = T.Trainer(cfg, wd)
  resumed = tr.restore_latest()
  assert resumed is not None and max(logged) - resumed <= cfg.checkpoints.every  # lost at most one interval
  assert int(tr.state["step"]) == resumed
  m = tr.train_step(next(tr.data)["image"])
  assert np.isfinite(m["g_loss"])


def test_config_overrides_and_errors(tmp_path):
  cfg = T.load_config(ROOT / "configs" / "tiny.py", ["steps=3", "tokenizer.image_size=64", "optim.lr=1"])
  assert cfg.steps == 3 and cfg.tokenizer.image_size == 64 and cfg.optim.lr == 1.0
  with pytest.raises(spae.SpaeInputError, match="unknown config field 'nope'"):
    T.load_config(ROOT / "configs" / "tiny.py", ["nope=1"])
  with pytest.raises(spae.SpaeInputError, match="it is now 'optim.lr'"):  # the flat names before the groups
    T.load_config(ROOT / "configs" / "tiny.py", ["lr=1"])
  with pytest.raises(spae.SpaeInputError, match="does not exist"):
    T.load_config(tmp_path / "missing.py")
  # Values are checked against the field types, and the whole config is validated before any work.
  bad = {"optim.lr=abc": "'abc' is not a finite number", "tokenizer=5": "'tokenizer' is a group",
         "steps=-5": "steps = -5 is invalid: it must be a positive integer", "flip=1": "not true or false",
         "steps=2.5": "not an integer", "tokenizer.pyramid.grids=[1,\"a\"]": "not a list of integers",
         "tokenizer.pyramid.subsample=max": "not one of 'dilation', 'pool'", "semantic.tau=0": "semantic.tau",
         "logging.every=0": "logging.every", "crop=diag": "'random' or 'center'",
         "semantic.pull=codes": "with a trainable codebook", "semantic.pull=all": "semantic.pull",
         "tokenizer.pyramid.layer_weights=[1,\"a\"]": "not a list of numbers",
         "tokenizer.pyramid.layer_weights=[1,2]": "one positive number per layer"}
  for item, message in bad.items():
    with pytest.raises(spae.SpaeInputError, match=message):
      T.load_config(ROOT / "configs" / "tiny.py", [item])
  ok = T.load_config(ROOT / "configs" / "tiny.py", ["steps=1e3", "semantic.teacher=null", "optim.d_lr=2",
                                                     "tokenizer.pyramid.grids=[1, 2]", "data=shapes:/d"])
  assert (ok.steps, ok.semantic.teacher, ok.optim.d_lr, ok.tokenizer.pyramid.grids, ok.data) == (
      1000, None, 2.0, (1, 2), "shapes:/d")
  n = len(T.load_config(ROOT / "configs" / "tiny.py").tokenizer.pyramid.grids)
  w = T.load_config(ROOT / "configs" / "tiny.py", [f"tokenizer.pyramid.layer_weights={[1] * (n - 1) + [2.5]}"])
  assert w.tokenizer.pyramid.layer_weights == (1.0,) * (n - 1) + (2.5,) and w.tokenizer.pyramid.weighted
  (tmp_path / "afile").write_text("x")
  with pytest.raises(spae.SpaeInputError, match="exists and is not a directory"):
    T.Trainer(T.load_config(ROOT / "configs" / "tiny.py"), tmp_path / "afile")
  broken = tmp_path / "broken.py"
  broken.write_text("def get_config():\n  return 1 / 0\n")
  with pytest.raises(spae.SpaeInputError, match="broken.py.*ZeroDivisionError"):
    T.load_config(broken)
  with pytest.raises(spae.SpaeInputError, match="needs a vocabulary"):
    T.build_vocabulary(T.load_config(ROOT / "configs" / "imagenet128.py").vocab)


def test_data_specs_expand_home(monkeypatch, tmp_path):
  import tempfile

  from PIL import Image

  from spae import _specs

  monkeypatch.setenv("HOME", str(tmp_path))
  scratch = tmp_path / "tmp"  # the temporary folder meanwhile: an unprepared tfds dataset may leave nothing there
  scratch.mkdir()
  monkeypatch.setattr(tempfile, "tempdir", str(scratch))
  (tmp_path / "imgs" / "cat").mkdir(parents=True)
  Image.new("RGB", (8, 8)).save(tmp_path / "imgs" / "cat" / "a.png")
  src = T.open_data("~/imgs")
  assert src.root == tmp_path / "imgs" and src.classes == ["cat"]
  with pytest.raises(spae.SpaeInputError, match=f"tfds imagenet2012:train@{tmp_path}/tfds"):
    T.open_data("tfds:imagenet2012@~/tfds")
  assert not list(scratch.iterdir())
  assert _specs.parse("data", "shapes:~/d").body == f"{tmp_path}/d"
  with pytest.raises(spae.SpaeInputError, match="shapes-memory:N"):
    T.open_data("shapes-memory:x")


def test_semantic_vocab_is_the_teachers_most_named_words(tiny_cfg, tmp_path):
  """semantic.vocab_size: the top layers search only the words the teacher names most often on the training
  images; the teacher names only those; the exported tokenizer keeps the subset."""
  vocab = spae.tiny_vocabulary()
  teacher = ToyTeacher(len(vocab))
  cfg = T.apply_override(T.apply_override(tiny_cfg, "semantic.vocab_size=5"), "semantic.teacher_top_k=4")
  cfg = T.apply_override(cfg, "semantic.vocab_images=40")
  tr = T.Trainer(cfg, tmp_path, teacher=teacher)
  # The same count, done here: the 5 words most often in the teacher's top 4 over the first 40 images.
  from spae import data as D
  prep = D.Preprocess(32, crop="center", flip=False)
  x = jnp.asarray(np.stack([D.preprocess(tr.data.source.load(i), prep) for i in range(40)]))
  top = np.argsort(-np.asarray(teacher(x)), axis=1, kind="stable")[:, :4]
  counts = np.bincount(top.ravel(), minlength=len(vocab))
  expect = np.lexsort((np.arange(len(vocab)), -counts))[:5]
  assert (counts > 0).sum() > 5  # the toy teacher names 6 words here: the least named one is left out
  pyr = tr.cfg.tokenizer.pyramid
  assert pyr.semantic_layers == 2 and pyr.semantic_vocab == tuple(sorted(expect.tolist()))
  idx, _ = tr._teacher_jit(tr.teacher_fn, tr._teacher_mask, x)
  assert np.isin(np.asarray(idx), expect).all()
  tr.run(progress=False, stop_after=2)
  tok = spae.Tokenizer.load(tr.export(tmp_path / "tok"))
  assert tok.config.pyramid.semantic_vocab == pyr.semantic_vocab
  ids = tok.encode(np.asarray(x[:8])).ids
  assert all(np.isin(a, expect).all() for a in ids[:2])
  assert not all(np.isin(a, expect).all() for a in ids[2:])  # the lower layers search the whole vocabulary


def test_semantic_vocab_from_captions_keeps_to_the_training_captions_words(tiny_cfg, tmp_path):
  """semantic.vocab_from_captions: the sub-vocabulary is the teacher's most named words among those that occur in
  the training captions; without it the same teacher picks words no caption has. Bad settings are one line."""
  from spae.train._semantic import caption_word_mask

  vocab = spae.tiny_vocabulary()
  teacher = ToyTeacher(len(vocab))
  cfg = T.apply_override(T.apply_override(tiny_cfg, "semantic.vocab_size=5"), "semantic.teacher_top_k=4")
  cfg = T.apply_override(cfg, "semantic.vocab_images=40")
  plain = T.Trainer(cfg, tmp_path / "plain", teacher=teacher).cfg.tokenizer.pyramid.semantic_vocab
  tr = T.Trainer(T.apply_override(cfg, "semantic.vocab_from_captions=40"), tmp_path / "caps", teacher=teacher)
  chosen = tr.cfg.tokenizer.pyramid.semantic_vocab
  src = tr.data.source
  said = {w for i in range(40) for w in re.findall(r"[a-z]+", src.caption(i).lower())}
  words = vocab.words(np.arange(len(vocab)))
  assert len(chosen) == 5 and all(words[i] in said for i in chosen)
  assert any(words[i] not in said for i in plain)  # the toy teacher alone names words no caption holds
  mask = caption_word_mask(src, vocab, 40)
  assert {words[i] for i in np.flatnonzero(mask)} == said & set(words)
  with pytest.raises(spae.SpaeInputError, match="semantic.vocab_from_captions"):
    T.apply_override(tiny_cfg, "semantic.vocab_from_captions=8").validate()  # needs vocab_size
  with pytest.raises(spae.SpaeInputError, match="has none"):
    caption_word_mask(D_array_without_captions(), vocab, 8)


def D_array_without_captions():
  from spae import data as D
  return D.ArraySource(np.zeros((2, 8, 8, 3), np.uint8), [0, 1], ["a", "b"], name="bare")


def test_semantic_loss_runs_over_the_sub_vocabulary(tiny_cfg):
  """On a layer that searches a sub-vocabulary, the step's CE is the softmax over that subset alone."""
  from spae._pyramid import layer_target
  from spae.train._step import Models, init_state, make_train_step

  vocab = spae.tiny_vocabulary()
  table = jnp.asarray(vocab.embeddings, jnp.float32)
  rows = np.arange(3, len(vocab), 7)
  images = jnp.asarray(np.random.default_rng(0).random((2, 32, 32, 3)), jnp.float32)
  mask = np.zeros(len(vocab), bool)
  mask[rows] = True
  rel = jnp.where(mask, ToyTeacher(len(vocab))(images), -jnp.inf)
  idx, probs = spae.losses.teacher_distribution(rel, 4, 0.1)
  pyr = dataclasses.replace(tiny_cfg.tokenizer.pyramid, semantic_layers=1, semantic_vocab=tuple(rows.tolist()))
  cfg = dataclasses.replace(tiny_cfg, tokenizer=dataclasses.replace(tiny_cfg.tokenizer, pyramid=pyr))
  models = Models(cfg, table.shape)
  state = init_state(cfg, models)
  ae = models.autoencoder(state["g_params"])
  t1 = layer_target(ae.encoder(images * 2.0 - 1.0), None, 1, 1, pyr.subsample).reshape(2, 1, -1)
  pos = np.full(len(vocab), -1)
  pos[rows] = np.arange(len(rows))
  codes = ae.codes(table)
  want = spae.losses.semantic_loss(t1, codes[rows], jnp.asarray(pos)[idx], probs, cfg.semantic.tau)
  whole = spae.losses.semantic_loss(t1, codes, idx, probs, cfg.semantic.tau)
  _, metrics, _ = jax.jit(make_train_step(cfg, models, use_gan=False, semantic=True))(
      state, images, table, {"teacher_idx": idx, "teacher_probs": probs})
  np.testing.assert_allclose(float(metrics["semantic_l1"]), float(want), rtol=1e-4)
  assert abs(float(want) - float(whole)) > 1e-3  # the subset's softmax is not the whole vocabulary's


def _semantic_map_step(tiny_cfg, rows, overrides):
  """(models, state, jitted step) of a tiny projected tokenizer whose layer 1 searches `rows` through a semantic
  map of its own, with `overrides` on top."""
  from spae.train._step import Models, init_state, make_train_step

  cfg = tiny_cfg
  for o in ("tokenizer.codebook.mode=projected", "tokenizer.codebook.dim=8", "tokenizer.codebook.semantic_map=true",
            "tokenizer.pyramid.grids=[1, 2]", "semantic.layers=1", "semantic.pull=codes", *overrides):
    cfg = T.apply_override(cfg, o)
  pyr = dataclasses.replace(cfg.tokenizer.pyramid, semantic_layers=1, semantic_vocab=rows)
  cfg = dataclasses.replace(cfg, tokenizer=dataclasses.replace(cfg.tokenizer, pyramid=pyr))
  models = Models(cfg, (len(spae.tiny_vocabulary()), spae.tiny_vocabulary().embeddings.shape[1]))
  return cfg, models, init_state(cfg, models), jax.jit(make_train_step(cfg, models, use_gan=False, semantic=True))


def test_code_means_set_the_semantic_codes_to_the_running_class_means(tiny_cfg):
  """`semantic.code_means=γ`: after each step the semantic words' codes (through W_s) are the γ-EMA class means of
  the layer-1 input (the block mean of z at a 1x1 grid) over the images the teacher named them for."""
  from spae._codebook import unit_rows
  from spae.train._step import init_state

  vocab = spae.tiny_vocabulary()
  table = jnp.asarray(vocab.embeddings, jnp.float32)
  images = jnp.asarray(np.random.default_rng(0).random((4, 32, 32, 3)), jnp.float32)
  rows = tuple(range(0, 40, 5))  # 8 words, fewer than the table's 32 dims: their codes can be set exactly
  named = [0, 0, 1, 2]  # positions in `rows` of each image's teacher word (top 1)
  idx, probs = jnp.asarray(rows)[jnp.asarray(named)][:, None], jnp.ones((4, 1), jnp.float32)
  cfg, models, state, step = _semantic_map_step(tiny_cfg, rows, (
      "tokenizer.pyramid.subsample=pool", "semantic.weight=1", "semantic.teacher_top_k=1", "semantic.code_means=0.5"))
  sums, counts = np.zeros((len(rows), 8)), np.zeros(len(rows))
  for _ in range(2):
    z = np.asarray(models.autoencoder(state["g_params"]).encoder(images * 2.0 - 1.0)).mean((1, 2))  # [B, d]
    onehot = np.eye(len(rows))[named]
    sums, counts = 0.5 * sums + 0.5 * onehot.T @ z, 0.5 * counts + 0.5 * onehot.sum(0)
    state, metrics, _ = step(state, images, table, {"teacher_idx": idx, "teacher_probs": probs})
  codes = np.asarray(unit_rows(table[np.asarray(rows)]) @ state["g_params"]["codebook"]["semantic_weight"])
  np.testing.assert_allclose(codes[:3], sums[:3] / counts[:3, None], atol=2e-4)
  np.testing.assert_allclose(np.asarray(state["sem_means"]["count"]), counts, atol=1e-6)
  assert np.all(np.isfinite(codes))
  # Off by default, and only with a semantic map of their own.
  assert "sem_means" not in init_state(T.apply_override(cfg, "semantic.code_means=0"), models)
  with pytest.raises(spae.SpaeInputError, match="code_means"):
    T.apply_override(T.apply_override(tiny_cfg, "semantic.code_means=0.9"), "steps=2").validate()


def test_subvocab_config_is_gemma64_with_the_semantic_options():
  """The shipped recipe is configs/gemma64.py with the semantic options and more steps, nothing else."""
  base = T.load_config(ROOT / "configs" / "gemma64.py")
  sub = T.load_config(ROOT / "configs" / "gemma64_subvocab.py")
  assert (sub.semantic.vocab_size, sub.semantic.pull, sub.semantic.teacher_top_k) == (512, "codes", 1)
  assert (base.steps, sub.steps) == (1400, 2200)
  assert dataclasses.replace(sub, semantic=base.semantic, steps=base.steps) == base


@pytest.mark.parametrize("learn_pool", [True, False])
def test_pooled_layers_learn_from_the_semantic_loss_without_moving_the_encoder(tiny_cfg, learn_pool):
  """With `pull=codes` and pooled top layers, the semantic CE moves the attention scorer (where to look) and the
  code map, never the encoder: same steps with the CE weighted 100 or 0 leave identical encoders.
  `semantic.learn_pool=false` takes the scorer out of it too (it keeps its initial contrast pooling)."""
  from spae.train._step import Models, init_state, make_train_step

  vocab = spae.tiny_vocabulary()
  table = jnp.asarray(vocab.embeddings, jnp.float32)
  images = jnp.asarray(np.random.default_rng(0).random((2, 32, 32, 3)), jnp.float32)
  idx, probs = spae.losses.teacher_distribution(ToyTeacher(len(vocab))(images), 4, 0.1)
  after = {}
  for w in (0, 100):
    cfg = tiny_cfg
    for o in ("tokenizer.codebook.mode=projected", "tokenizer.codebook.dim=8", "tokenizer.pyramid.grids=[1, 2]",
              "tokenizer.pyramid.pooled_layers=2", f"semantic.weight={w}", "optim.grad_clip=1e9",
              "semantic.pull=codes", f"semantic.learn_pool={str(learn_pool).lower()}"):
      cfg = T.apply_override(cfg, o)
    models = Models(cfg, table.shape)
    state = init_state(cfg, models)
    step = jax.jit(make_train_step(cfg, models, use_gan=False, semantic=True))
    for _ in range(2):
      state, metrics, _ = step(state, images, table, {"teacher_idx": idx, "teacher_probs": probs})
      assert np.isfinite(float(metrics["semantic"]))
    after[w] = jax.device_get(state["g_params"])
  assert _tree_equal(after[0]["encoder"], after[100]["encoder"])
  assert _tree_equal(after[0]["pool"], after[100]["pool"]) != learn_pool
  assert not np.array_equal(after[0]["codebook"]["weight"], after[100]["codebook"]["weight"])
  if not learn_pool:
    with pytest.raises(spae.SpaeInputError, match="learn_pool"):
      T.apply_override(cfg, "semantic.learn_pool=1").validate()


def test_pool_reset_returns_the_scorer_to_contrast_pooling_and_freezes_it(tiny_cfg, tmp_path):
  """`semantic.pool_reset=2`: the scorer learns for two steps, is then set back to its initial weights (trained and
  averaged alike) and stays there while the rest trains on; a run interrupted at the reset step resumes to the
  same state."""
  cfg = tiny_cfg
  for o in ("tokenizer.codebook.mode=projected", "tokenizer.codebook.dim=8", "tokenizer.pyramid.grids=[1, 2, 4]",
            "tokenizer.pyramid.pooled_layers=2", "semantic.weight=100", "semantic.pull=codes", "steps=4",
            "gan.adversarial_weight=0", "semantic.pool_reset=2"):
    cfg = T.apply_override(cfg, o)
  teacher = ToyTeacher(len(spae.tiny_vocabulary()))
  a = T.Trainer(cfg, tmp_path / "a", teacher=teacher)
  initial = jax.device_get(a.models.g_init["pool"])  # before the first step donates it
  a.run(progress=False, stop_after=2)
  assert not _tree_equal(a.state["g_params"]["pool"], initial)  # learned before the reset
  b = T.Trainer(cfg, tmp_path / "a", teacher=teacher)
  b.run(progress=False)  # resumes at step 2: resets, then two frozen steps
  assert int(b.state["step"]) == 4
  assert _tree_equal(b.state["g_params"]["pool"], initial) and _tree_equal(b.state["ema_params"]["pool"], initial)
  assert not _tree_equal(b.state["g_params"]["encoder"], a.state["g_params"]["encoder"])
  c = T.Trainer(cfg, tmp_path / "c", teacher=teacher)
  c.run(progress=False)
  for key in ("g_params", "ema_params", "g_opt"):
    assert _tree_equal(b.state[key], c.state[key]), key
  with pytest.raises(spae.SpaeInputError, match="pool_reset"):
    T.apply_override(cfg, "tokenizer.pyramid.pooled_layers=0").validate()


def test_a_semantic_map_takes_the_semantic_loss_off_the_shared_codes(tiny_cfg):
  """`codebook.semantic_map` with `pull=codes`: the CE moves the semantic layers' own projection and neither the
  encoder nor the projection every other layer uses (same steps with the CE weighted 100 or 0)."""
  vocab = spae.tiny_vocabulary()
  table = jnp.asarray(vocab.embeddings, jnp.float32)
  images = jnp.asarray(np.random.default_rng(0).random((2, 32, 32, 3)), jnp.float32)
  rows = tuple(range(0, len(vocab), 5))
  idx, probs = spae.losses.teacher_distribution(ToyTeacher(len(vocab))(images)[:, np.asarray(rows)], 3, 0.1)
  idx = jnp.asarray(rows)[idx]
  after = {}
  for w in (0, 100):
    _, _, state, step = _semantic_map_step(tiny_cfg, rows, (f"semantic.weight={w}", "optim.grad_clip=1e9"))
    for _ in range(2):  # the learning rate warms up from 0, so the second step's gradients meet equal parameters
      state, metrics, _ = step(state, images, table, {"teacher_idx": idx, "teacher_probs": probs})
      assert np.isfinite(float(metrics["semantic"]))
    after[w] = jax.device_get(state["g_params"])
  assert _tree_equal(after[0]["encoder"], after[100]["encoder"])
  assert np.array_equal(after[0]["codebook"]["weight"], after[100]["codebook"]["weight"])
  assert not np.array_equal(after[0]["codebook"]["semantic_weight"], after[100]["codebook"]["semantic_weight"])
  # A config that asks for the map without semantic layers is refused up front.
  with pytest.raises(spae.SpaeInputError, match="semantic_map"):
    T.apply_override(T.apply_override(tiny_cfg, "tokenizer.codebook.mode=projected"),
                     "tokenizer.codebook.semantic_map=true").validate()


# The tiny recipe the refit tests train (here and in test_tools.py): a projected 8-dim codebook with a semantic map,
# grids 1 and 2, one pooled semantic layer over a 6-word sub-vocabulary, codes pulled by the CE and running means.
REFIT_RECIPE = ("tokenizer.codebook.mode=projected", "tokenizer.codebook.dim=8",
                "tokenizer.codebook.semantic_map=true", "tokenizer.pyramid.grids=[1, 2]",
                "tokenizer.pyramid.subsample=pool", "semantic.layers=1", "semantic.pull=codes", "semantic.weight=1",
                "semantic.teacher_top_k=1", "semantic.vocab_size=6", "semantic.vocab_images=16",
                "semantic.code_means=0.5", "gan.adversarial_weight=0", "logging.image_every=0")


def test_refit_sets_the_semantic_codes_to_the_trained_encoders_class_means(tiny_cfg, tmp_path):
  """`semantic.refit_images=N`: after the last step the semantic words' codes are the exact class means of the final
  encoder's layer-1 inputs (the block mean of z at a 1x1 grid) over the first N training images, grouped by the
  teacher's first word among the semantic sub-vocabulary; a run resumed after its end refits to the same codes, and
  with `tune.steps` its decoder alone then learns them (every token unchanged, reconstructions better)."""
  from flax import nnx

  from spae._codebook import unit_rows
  from spae.train._inputs import reference_images

  cfg = tiny_cfg
  for o in (*REFIT_RECIPE, "semantic.refit_images=40", "steps=2"):
    cfg = T.apply_override(cfg, o)
  vocab = spae.tiny_vocabulary()
  teacher = ToyTeacher(len(vocab))
  tr = T.Trainer(cfg, tmp_path / "a", teacher=teacher)
  tr.run(progress=False)
  tok = spae.Tokenizer.load(tmp_path / "a" / "tokenizer")
  rows = np.asarray(tok.config.pyramid.semantic_vocab)
  images = reference_images(T.open_data(cfg.data), 40, 32, cfg.crop)
  first = np.asarray(teacher(jnp.asarray(images)))[:, rows].argmax(1)
  z = np.asarray(tok.encode_latents(images)).mean((1, 2))  # [N, d]: layer 1's input
  codes = np.asarray(unit_rows(tok.table[rows]) @ tok.model.codebook.semantic_weight.get_value())
  named = np.unique(first)
  assert len(named) >= 2  # the check below compares more than one class
  want = np.stack([z[first == k].mean(0) for k in named])
  np.testing.assert_allclose(codes[named], want, atol=2e-4)
  ema = jax.device_get(tr.state["ema_params"]["codebook"]["semantic_weight"])
  np.testing.assert_array_equal(ema, tok.model.codebook.semantic_weight.get_value())
  # (The running means of two steps at γ = 0.5 are not these means: without the refit the check above fails.)
  # Resuming the finished run refits to the same codes; asked for a decoder tune (`tune.steps`), it also tunes.
  again = T.Trainer(T.apply_override(T.apply_override(cfg, "tune.steps=4"), "tune.lr=1e-3"), tmp_path / "a",
                    teacher=teacher)
  again.run(progress=False)
  for key in ("g_params", "ema_params"):  # the tune starts both from the exported (averaged) weights
    np.testing.assert_array_equal(jax.device_get(again.state[key]["codebook"]["semantic_weight"]), ema)
  # The tune moved the decoder alone: every other weight, so every token, is the refit's; it decodes them better.
  tuned = spae.Tokenizer.load(tmp_path / "a" / "tokenizer")
  before, after = (nnx.state(t.model, nnx.Param).to_pure_dict() for t in (tok, tuned))
  assert not _tree_equal(before.pop("decoder"), after.pop("decoder")) and _tree_equal(before, after)
  pyr0, pyr1 = tok.encode(images[:8]), tuned.encode(images[:8])
  assert all(np.array_equal(a, b) for a, b in zip(pyr0.ids, pyr1.ids))
  err = lambda t, p: float(np.mean((t.decode(p) - images[:8]) ** 2))
  assert err(tuned, pyr1) < err(tok, pyr0)
  rows = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows if "tune_l2" in r] == [3, 4, 5, 6]  # one row a step past the last training step
  with pytest.raises(spae.SpaeInputError, match="refit_images"):
    T.apply_override(cfg, "semantic.code_means=0").validate()
  for bad in ("tune.steps=-1", "tune.lr=0", "tune.monotone=-1", "tune.monotone=1"):  # the last: no tune steps
    with pytest.raises(spae.SpaeInputError, match=bad.split("=")[0]):
      T.apply_override(cfg, bad).validate()
  untaught = T.apply_override(cfg, "semantic.vocab_size=0")
  pyr = dataclasses.replace(untaught.tokenizer.pyramid, semantic_layers=1, semantic_vocab=(0, 5))
  untaught = dataclasses.replace(untaught, tokenizer=dataclasses.replace(untaught.tokenizer, pyramid=pyr))
  with pytest.raises(spae.SpaeInputError, match="refit_images needs a teacher"):
    T.Trainer(untaught, tmp_path / "c")  # no teacher: the refit would have nothing to group the images by


def test_tune_monotone_adds_its_hinge_on_the_drawn_prefix_and_the_one_a_layer_shorter(tiny_cfg):
  """`tune.monotone=w`: the decoder tune's loss gains w × the hinge between the drawn prefix k and prefix k−1
  (spae.losses.monotone_loss), which is zero when prefix 1 is drawn and is what the decoder outputs give."""
  from spae.train._step import Models, init_state, make_train_step, tune_optimizer

  cfg = tiny_cfg
  for o in ("tokenizer.pyramid.grids=[1, 2]", "tune.steps=1", "tune.monotone=2"):
    cfg = T.apply_override(cfg, o)
  cfg.validate()
  vocab = spae.tiny_vocabulary()
  table = jnp.asarray(vocab.embeddings, jnp.float32)
  images = jnp.asarray(np.random.default_rng(0).random((4, 32, 32, 3)), jnp.float32)
  models = Models(cfg, table.shape)
  state = dict(init_state(cfg, models), g_opt=tune_optimizer(cfg).init(models.g_init))
  step = jax.jit(make_train_step(cfg, models, use_gan=False, decoder_only=True))
  by_prefix = {}
  for seed in range(8):
    _, m, ids = step(dict(state, rng=jax.random.key_data(jax.random.key(seed))), images, table, {})
    by_prefix.setdefault(int(m["prefix"]), (m, ids))
  assert set(by_prefix) == {1, 2}
  m1, _ = by_prefix[1]
  assert float(m1["monotone"]) == 0.0
  m2, ids = by_prefix[2]
  want = cfg.loss.l2_weight * m2["l2"] + cfg.loss.commitment_weight * m2["commitment"] + 2 * m2["monotone"]
  assert float(m2["g_loss"]) == pytest.approx(float(want), rel=1e-5)
  # The hinge of what the step's weights decode from the step's own tokens at prefixes 2 and 1.
  from spae._pyramid import reconstruct_from_ids

  tok = spae.Tokenizer(cfg.tokenizer, vocab, models.autoencoder(models.g_init))
  assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(tok.encode(np.asarray(images)).ids, ids))
  hw = (tok.config.latent_size,) * 2
  r = reconstruct_from_ids([jnp.asarray(a) for a in ids], tok.codebook, hw, mode=tok.config.quantizer,
                           semantic_codebook=tok.semantic_codebook, spec=tok.config.pyramid)
  y2, y1 = (tok.model.decoder(r[k - 1]) for k in (2, 1))
  want = spae.losses.monotone_loss(y2, y1, images * 2 - 1, jnp.int32(2))
  assert float(m2["monotone"]) == pytest.approx(float(want), rel=1e-3)


def test_refit_step_refits_during_training_and_then_holds_the_codes(tiny_cfg, tmp_path):
  """`semantic.refit_step=2` of 4: when the loop reaches step 2 the semantic codes become the class means of that
  step's encoder, and stay exactly so while the encoder and decoder train two more steps; a run interrupted at
  step 2 resumes to the same state as one that was not."""
  from spae._codebook import unit_rows
  from spae.train._inputs import reference_images

  cfg = tiny_cfg
  for o in (*REFIT_RECIPE, "semantic.refit_images=40", "semantic.refit_step=2", "steps=4"):
    cfg = T.apply_override(cfg, o)
  teacher = ToyTeacher(len(spae.tiny_vocabulary()))
  a = T.Trainer(cfg, tmp_path / "a", teacher=teacher)
  a.run(progress=False, stop_after=2)
  at_refit = a.tokenizer(ema=False)  # step 2's weights, before the refit
  rows = np.asarray(at_refit.config.pyramid.semantic_vocab)
  images = reference_images(T.open_data(cfg.data), 40, 32, cfg.crop)
  first = np.asarray(teacher(jnp.asarray(images)))[:, rows].argmax(1)
  z = np.asarray(at_refit.encode_latents(images)).mean((1, 2))
  named = np.unique(first)
  assert len(named) >= 2
  b = T.Trainer(cfg, tmp_path / "a", teacher=teacher)
  b.run(progress=False)  # resumes at step 2: refits, then two steps with the codes held
  assert int(b.state["step"]) == 4
  end = jax.device_get(b.state["g_params"])
  codes = np.asarray(unit_rows(at_refit.table[rows]) @ end["codebook"]["semantic_weight"])
  np.testing.assert_allclose(codes[named], np.stack([z[first == k].mean(0) for k in named]), atol=2e-4)
  assert not _tree_equal(end["encoder"], jax.device_get(a.state["g_params"]["encoder"]))  # training went on
  c = T.Trainer(cfg, tmp_path / "c", teacher=teacher)
  c.run(progress=False)
  for key in ("g_params", "ema_params", "g_opt"):
    assert _tree_equal(b.state[key], c.state[key]), key
  # No second refit after the last step: the final encoder's class means are not the codes.
  final = c.tokenizer(ema=False)
  z_end = np.asarray(final.encode_latents(images)).mean((1, 2))
  assert not np.allclose(codes[named], np.stack([z_end[first == k].mean(0) for k in named]), atol=1e-3)
  for bad in ("semantic.refit_step=4", "semantic.refit_images=0"):
    with pytest.raises(spae.SpaeInputError, match="refit_step"):
      T.apply_override(cfg, bad).validate()
  # A refit before the scorer reset is refused (its codes would be means of a pooling the reset discards).
  with pytest.raises(spae.SpaeInputError, match="not before semantic.pool_reset"):
    T.apply_override(T.apply_override(cfg, "tokenizer.pyramid.pooled_layers=1"), "semantic.pool_reset=3").validate()


def test_a_tiny_config_trains_a_tokenizer_whose_pictures_improve_with_layers(tmp_path):
  """Issue 12's behaviour at CI size: 300 steps of configs/tiny.py with the default's kind of codes (a learned
  projection of the frozen rows, 8-dim) give a tokenizer whose full pyramid reconstructs clearly better than its
  one-word layer, with no added layer costing more than noise, and better than the untrained networks, on its
  training data and on held-out `scenes` it never saw."""
  cfg = T.load_config(ROOT / "configs" / "tiny.py", [
      "steps=300", "gan.disc_start=1000000000", "gan.lecam_weight=0", "semantic.weight=0", "logging.image_every=0",
      "checkpoints.every=1000", "logging.every=50", "optim.lr=3e-3", "optim.warmup_steps=1",
      "tokenizer.codebook.mode=projected", "tokenizer.codebook.dim=8", "tokenizer.autoencoder.latent_dim=8"])
  T.Trainer(cfg, tmp_path).run(progress=False)
  tok = spae.Tokenizer.load(tmp_path / "tokenizer")
  untrained = spae.Tokenizer(tok.config, tok.vocabulary, seed=0)
  held_out = spae.data.SceneSource(32, 32, seed=5, split="test")
  for images in (spae.data.make_source(cfg.data), held_out):
    x = np.stack([images.load(i) for i in range(32)])
    psnr, before = ([float(np.mean(spae.metrics.psnr(t.decode(t.encode(x), layers=k), x.astype(np.float32) / 255.0)))
                     for k in range(1, 5)] for t in (tok, untrained))
    assert psnr[-1] > psnr[0] + 0.3 and all(b > a - 0.1 for a, b in zip(psnr, psnr[1:])), psnr
    assert psnr[-1] > before[-1] + 1.0, (psnr, before)
