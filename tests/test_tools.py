"""tools/train_default_tokenizer.py reproduces its tokenizer bit for bit from the seed."""

import importlib.util
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
  spec = importlib.util.spec_from_file_location("train_default_tokenizer",
                                                ROOT / "tools" / "train_default_tokenizer.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_default_tokenizer_tool_is_bit_for_bit_reproducible(tmp_path):
  tool = _tool()
  digests = []
  for run in ("a", "b"):
    assert tool.main(["--smoke", "--workdir", str(tmp_path / f"w{run}"), "--out", str(tmp_path / f"t{run}"),
                      "--set", "logging.image_every=0", "--set", "semantic.weight=0", "--set", "gan.disc_start=100",
                      "--set", "steps=3"]) == 0
    rec = json.loads((tmp_path / f"t{run}" / "training.json").read_text())
    digests.append(rec["params_sha256"])
    assert rec["steps"] == 3 and rec["seed"] == 0
    assert rec["machine"]["xla_flags"] == os.environ.get("XLA_FLAGS", "")  # the bits depend on them
  assert digests[0] == digests[1]
  # The digest covers the parameter values: perturbing one weight changes it.

  import spae

  tok = spae.Tokenizer.load(tmp_path / "ta")
  tok.model.encoder.conv_in.kernel.value = tok.model.encoder.conv_in.kernel.value + 1e-6
  tok.save(tmp_path / "tp")
  assert tool.params_digest(tmp_path / "tp") != digests[0]


def test_default_tool_adds_the_semantic_head_after_training(tmp_path, monkeypatch):
  """The shipped default has a semantic head: the tool trains the recipe into WORKDIR/trained_tokenizer, then runs
  tools/add_semantic_head.py on it into --out with --head-args appended; only the shipped recipe as it is does so
  by default."""
  tool = _tool()
  sys.path.insert(0, str(ROOT / "tools"))
  import add_semantic_head

  calls = []
  monkeypatch.setattr(add_semantic_head, "main", lambda argv: calls.append(argv) or 0)
  w, o = tmp_path / "w", tmp_path / "o"
  assert tool.main(["--smoke", "--semantic-head", "--workdir", str(w), "--out", str(o), "--set", "steps=2",
                    "--set", "semantic.weight=0", "--set", "logging.image_every=0",
                    "--head-args", "--images 48 --steps 3"]) == 0
  (argv,) = calls
  assert argv[:4] == ["--tokenizer", str(w / "trained_tokenizer"), "--out", str(o)]
  assert argv[-4:] == ["--images", "48", "--steps", "3"] and "--teacher" not in argv  # the tiny recipe's is built in
  assert json.loads((w / "trained_tokenizer" / "training.json").read_text())["steps"] == 2 and not o.exists()
  default = str(tool.DEFAULT_CONFIG)
  assert tool.adds_head(tool.parse_args([]), default)
  assert not tool.adds_head(tool.parse_args(["--set", "steps=5"]), default)
  tiny = str(ROOT / "configs" / "tiny.py")
  assert not tool.adds_head(tool.parse_args(["--config", tiny]), tiny)
  assert not tool.adds_head(tool.parse_args(["--no-semantic-head"]), default)
  assert not tool.adds_head(tool.parse_args(["--smoke"]), default)
  # the shipped recipe: its teacher is the head's default (not named again), its text tower the one already resolved
  from spae import train as T

  cfg = T.load_config(str(tool.DEFAULT_CONFIG))
  cfg = T.apply_override(cfg, f"semantic.teacher=lit:{tool.lit_teacher_folder(cfg)}#text_tower=/m")
  assert tool._add_head(tmp_path / "tt", cfg, tool.parse_args(["--out", str(o)])) == 0
  assert calls[-1] == ["--tokenizer", str(tmp_path / "tt"), "--out", str(o), "--minilm-dir", "/m"]
  # the head's default teacher is read from the repository root, as the recipe's is, from any directory
  rooted = add_semantic_head._rooted
  assert rooted("lit:runs/teacher_scenes#text_tower=M") == f"lit:{ROOT}/runs/teacher_scenes#text_tower=M"
  assert rooted("lit:default") == "lit:default" and rooted("lit:/x") == "lit:/x"


def test_shipped_tokenizer_is_what_its_training_record_says():
  """The shipped parameters are the ones their record says: tools/add_semantic_head.py with its default options
  applied to the tokenizer the tool's default recipe trained (whose record it keeps under 'trained')."""
  tool = _tool()
  shipped = ROOT / "spae" / "assets" / "default" / "tokenizer"
  rec = json.loads((shipped / "training.json").read_text())
  assert tool.params_digest(shipped) == rec["params_sha256"]
  sys.path.insert(0, str(ROOT / "tools"))
  import add_semantic_head

  defaults = vars(add_semantic_head.parse_args(["--tokenizer", "T", "--out", "O"]))
  # Paths of this machine's checkout (the tune's recipe) compare by file name.
  norm = lambda opts: {k: (Path(v).name if k == "tune_config" else str(v) if isinstance(v, Path) else v)
                       for k, v in opts.items() if k not in ("tokenizer", "out", "minilm_dir")}
  assert norm(rec["options"]) == norm(defaults)
  trained = rec["trained"]
  assert rec["input_params_sha256"] == trained["params_sha256"]
  assert trained["config"] == tool.DEFAULT_CONFIG.name and trained["overrides"] == [] and trained["seed"] == 0
  from spae.train import load_config

  cfg = load_config(tool.DEFAULT_CONFIG)
  assert trained["steps"] == cfg.steps  # a recipe edited since would not match
  assert (trained["refit_images"], trained["tune_steps"]) == (cfg.semantic.refit_images, cfg.tune.steps)


def test_the_recipe_constraints_pin_the_versions_that_trained_the_shipped_parameters():
  """tools/default_recipe_constraints.txt (pip -c) pins exactly the packages and versions the shipped parameters'
  training.json records."""
  rec = json.loads((ROOT / "spae" / "assets" / "default" / "tokenizer" / "training.json").read_text())
  lines = (ROOT / "tools" / "default_recipe_constraints.txt").read_text().splitlines()
  pins = dict(line.split("==") for line in lines if line and not line.startswith("#"))
  assert pins == rec["trained"]["machine"]["packages"] == rec["machine"]["packages"] and pins


def test_the_tool_names_how_this_machine_differs_from_the_one_that_trained_the_shipped_parameters(tmp_path):
  """A run of the shipped recipe on other package versions (or CPU, or XLA flags) says so before it trains."""
  from spae._xla_flags import numerics_record

  tool = _tool()
  here = numerics_record()
  record = tmp_path / "training.json"
  record.write_text(json.dumps({"machine": here}))
  default = str(tool.DEFAULT_CONFIG)
  assert tool.environment_notes(default, [], record) == []
  record.write_text(json.dumps({"machine": dict(here, packages=dict(here["packages"], jaxlib="0.0.1"))}))
  assert tool.environment_notes(default, [], record) == [f"jaxlib {here['packages']['jaxlib']} here, 0.0.1 in the "
                                                         "record"]
  # Two CPUs of one marketing name ("AMD EPYC") but another generation compile other code: named too.
  record.write_text(json.dumps({"machine": dict(here, cpu_type="GenuineIntel family 6 model 85")}))
  assert tool.environment_notes(default, [], record) == [f"CPU type {here['cpu_type']!r} here, 'GenuineIntel family 6 "
                                                         "model 85' in the record"]
  # Another recipe, or the shipped one with overrides, is not the shipped parameters' run.
  assert tool.environment_notes(str(ROOT / "configs" / "tiny.py"), [], record) == []
  assert tool.environment_notes(default, ["steps=3"], record) == []


def test_tool_trains_a_missing_lit_teacher_first_then_reads_words_through_minilm(tmp_path, monkeypatch):
  """A recipe whose teacher is a LiT folder: the tool trains it on `scenes` when the folder is missing (once),
  and points the run at it with the MiniLM text tower."""
  import sys

  from spae import train as T

  tool = _tool()
  sys.path.insert(0, str(ROOT / "tools"))
  import train_default_teacher

  calls = []

  def fake_main(argv):
    calls.append(argv)
    out = Path(argv[argv.index("--out") + 1])
    out.mkdir(parents=True)
    (out / "teacher.json").write_text("{}")
    return 0

  monkeypatch.setattr(train_default_teacher, "main", fake_main)
  folder, minilm = tmp_path / "teacher", tmp_path / "minilm"
  cfg = T.apply_override(T.load_config(ROOT / "configs" / "tiny.py"), f"semantic.teacher=lit:{folder}")
  args = tool.argparse.Namespace(minilm_wheel=None, minilm_dir=minilm)
  for _ in range(2):
    out = tool._lit_teacher(cfg, args, tmp_path / "work")
    assert out.semantic.teacher == f"lit:{folder}#text_tower={minilm}"
  assert len(calls) == 1 and calls[0][:2] == ["--data", "scenes"] and calls[0][-1] == str(folder)
  assert "--image-size" not in calls[0]
  # The 64 px teacher's folder is trained by its own recipe.
  t64 = T.apply_override(cfg, f"semantic.teacher=lit:{tmp_path / 'teacher_scenes64'}")
  tool._lit_teacher(t64, args, tmp_path / "work")
  assert calls[1][:4] == ["--data", "scenes", "--image-size", "64"]
  # So is the teacher trained on 40,000 scenes.
  t40k = T.apply_override(cfg, f"semantic.teacher=lit:{tmp_path / 'teacher_scenes40k'}")
  tool._lit_teacher(t40k, args, tmp_path / "work")
  assert calls[2][:4] == ["--data", "scenes", "--num-train", "40000"] and "--image-size" not in calls[2]
  assert "--captions" in calls[2]  # configs/gemma64_captions.py reads through them
  # A text tower the spec names itself is kept.
  own = T.apply_override(cfg, f"semantic.teacher=lit:{folder}#text_tower={tmp_path / 'own'}")
  assert tool._lit_teacher(own, args, tmp_path / "work").semantic.teacher.endswith(f"#text_tower={tmp_path / 'own'}")
  # The shipped teacher and a spec that is not a LiT folder are left as they are.
  shipped = T.apply_override(cfg, "semantic.teacher=lit:default")
  assert tool._lit_teacher(shipped, args, tmp_path / "work") is shipped


def test_named_recipe_is_the_shipped_recipe_with_five_changes():
  """configs/gemma64_named.py changes configs/gemma64_subvocab.py only in the teacher, its word count, pooled
  layers 1-2, their own code map and its class-mean codes."""
  import dataclasses

  from spae.train import load_config

  base = load_config(ROOT / "configs" / "gemma64_subvocab.py")
  named = load_config(ROOT / "configs" / "gemma64_named.py")
  assert named.semantic.teacher == "lit:runs/teacher_scenes" and named.semantic.vocab_size == 24
  assert named.semantic.code_means == 0.98
  assert named.tokenizer.pyramid.pooled_layers == 2 and named.tokenizer.codebook.semantic_map is True
  tok = dataclasses.replace(named.tokenizer, pyramid=base.tokenizer.pyramid, codebook=base.tokenizer.codebook)
  assert dataclasses.replace(named, tokenizer=tok, semantic=base.semantic) == base


def test_refocus_recipe_is_the_named_recipe_with_a_scorer_reset():
  """configs/gemma64_refocus.py (the shipped recipe) is configs/gemma64_named.py with the pooled layers' scorer reset
  to contrast pooling for its last 200 steps, and nothing else."""
  import dataclasses

  from spae.train import load_config

  named = load_config(ROOT / "configs" / "gemma64_named.py")
  refocus = load_config(ROOT / "configs" / "gemma64_refocus.py")
  assert refocus.semantic.pool_reset == 2000 and refocus.steps == 2200 and named.semantic.pool_reset == 0
  assert dataclasses.replace(refocus, semantic=dataclasses.replace(refocus.semantic, pool_reset=0)) == named
  refocus.validate()


def test_long_recipe_is_the_shipped_recipe_trained_longer_with_the_same_frozen_tail_as_r1800():
  """configs/gemma64_long.py (measured, not shipped) changes the shipped recipe only in its length and reset step:
  3,300 steps, reset at 2,900, i.e. 400 frozen-scorer steps."""
  import dataclasses

  from spae.train import load_config

  refocus = load_config(ROOT / "configs" / "gemma64_refocus.py")
  long = load_config(ROOT / "configs" / "gemma64_long.py")
  assert (long.steps, long.semantic.pool_reset) == (3300, 2900)
  assert dataclasses.replace(long, steps=refocus.steps, semantic=refocus.semantic) == refocus
  long.validate()


def test_teacher64_recipe_is_the_refocus_recipe_with_the_64px_teacher():
  """configs/gemma64_teacher64.py changes configs/gemma64_refocus.py only in its teacher folder, the one
  tools/train_default_tokenizer.py trains at 64 px when missing."""
  import dataclasses

  from spae.train import load_config

  refocus = load_config(ROOT / "configs" / "gemma64_refocus.py")
  t64 = load_config(ROOT / "configs" / "gemma64_teacher64.py")
  assert t64.semantic.teacher == "lit:runs/teacher_scenes64" and refocus.semantic.teacher == "lit:runs/teacher_scenes"
  same_teacher = dataclasses.replace(t64.semantic, teacher=refocus.semantic.teacher)
  assert dataclasses.replace(t64, semantic=same_teacher) == refocus
  assert "--image-size" in _tool().TEACHER_RECIPES["teacher_scenes64"]
  t64.validate()


def test_teacher40k_recipe_is_the_refocus_recipe_with_a_teacher_trained_on_40000_scenes():
  """configs/gemma64_teacher40k.py changes configs/gemma64_refocus.py only in its teacher folder, the one
  tools/train_default_tokenizer.py trains on 40,000 scenes when missing."""
  import dataclasses

  from spae.train import load_config

  refocus = load_config(ROOT / "configs" / "gemma64_refocus.py")
  t40k = load_config(ROOT / "configs" / "gemma64_teacher40k.py")
  assert t40k.semantic.teacher == "lit:runs/teacher_scenes40k"
  assert dataclasses.replace(t40k, semantic=dataclasses.replace(t40k.semantic, teacher=refocus.semantic.teacher)) \
      == refocus
  recipe = _tool().TEACHER_RECIPES["teacher_scenes40k"]
  assert recipe[recipe.index("--num-train") + 1] == "40000" and "--captions" in recipe  # gemma64_captions.py's bank
  t40k.validate()


def test_capvocab_recipe_is_the_shipped_recipe_with_the_40000_scene_teacher_and_caption_words():
  """configs/gemma64_capvocab.py changes the shipped recipe (configs/gemma64_tune1600.py) only in its teacher folder
  (the 40,000-scene one) and in choosing layers 1-2's words among the first 1,024 training captions' words."""
  import dataclasses

  from spae.train import load_config

  shipped = load_config(ROOT / "configs" / "gemma64_tune1600.py")
  cap = load_config(ROOT / "configs" / "gemma64_capvocab.py")
  assert (cap.semantic.teacher, cap.semantic.vocab_from_captions) == ("lit:runs/teacher_scenes40k", 1024)
  assert shipped.semantic.vocab_from_captions == 0
  assert dataclasses.replace(cap, semantic=dataclasses.replace(
      cap.semantic, teacher=shipped.semantic.teacher, vocab_from_captions=0)) == shipped
  cap.validate()


def test_bigteacher_recipe_is_capvocab_with_the_caption_bank_and_the_big_teacher():
  """configs/gemma64_bigteacher.py changes configs/gemma64_capvocab.py only in its teacher folder (the one
  tools/train_default_tokenizer.py trains at 64 px with four stages and grayscale shape views when missing) and in
  reading it through configs/gemma64_captions.py's caption bank; that teacher recipe uses flags the teacher tool
  takes."""
  import dataclasses

  from spae.train import load_config

  cap = load_config(ROOT / "configs" / "gemma64_capvocab.py")
  captions = load_config(ROOT / "configs" / "gemma64_captions.py")
  big = load_config(ROOT / "configs" / "gemma64_bigteacher.py")
  assert big.semantic.teacher == "lit:runs/teacher_scenes_big"
  assert (big.semantic.caption_bank, big.semantic.caption_tau) == (captions.semantic.caption_bank,
                                                                    captions.semantic.caption_tau)
  assert dataclasses.replace(big, semantic=dataclasses.replace(
      big.semantic, teacher=cap.semantic.teacher, caption_bank=0)) == cap
  recipe = list(_tool().TEACHER_RECIPES["teacher_scenes_big"])
  recipe.remove("--captions")  # the bank the recipe reads through
  flags = dict(zip(recipe[::2], recipe[1::2]))
  assert flags == {"--data": "scenes", "--num-train": "40000", "--image-size": "64", "--widths": "32,64,128,256",
                   "--steps": "4000", "--gray-shape": "0.5"}
  teacher_tool = (ROOT / "tools" / "train_default_teacher.py").read_text()
  assert all(f'add_argument("{f}"' in teacher_tool for f in flags)  # flags the teacher tool takes
  big.validate()


def test_captions_recipe_is_the_teacher40k_recipe_read_through_10000_captions():
  """configs/gemma64_captions.py changes configs/gemma64_teacher40k.py only in its caption bank (10,000 captions,
  temperature 0.03)."""
  import dataclasses

  from spae.train import load_config

  t40k = load_config(ROOT / "configs" / "gemma64_teacher40k.py")
  cap = load_config(ROOT / "configs" / "gemma64_captions.py")
  assert (cap.semantic.caption_bank, cap.semantic.caption_tau) == (10000, 0.03) and t40k.semantic.caption_bank == 0
  assert dataclasses.replace(cap, semantic=dataclasses.replace(cap.semantic, caption_bank=0, caption_tau=
                                                               t40k.semantic.caption_tau)) == t40k
  cap.validate()


def test_lean_recipe_is_the_teacher64_recipe_with_a_lean_decoder_trained_longer():
  """configs/gemma64_lean.py changes configs/gemma64_teacher64.py only in its decoder's upsampling convolutions
  (lean_upsample), its length (3,200 steps) and its reset step (2,900: the last 300 steps with a frozen scorer)."""
  import dataclasses

  from spae.train import load_config

  t64 = load_config(ROOT / "configs" / "gemma64_teacher64.py")
  lean = load_config(ROOT / "configs" / "gemma64_lean.py")
  assert lean.tokenizer.autoencoder.lean_upsample and not t64.tokenizer.autoencoder.lean_upsample
  assert (lean.steps, lean.semantic.pool_reset) == (3200, 2900)
  tok = dataclasses.replace(lean.tokenizer, autoencoder=t64.tokenizer.autoencoder)
  assert dataclasses.replace(lean, tokenizer=tok, steps=t64.steps, semantic=t64.semantic) == t64
  lean.validate()


def test_refit_recipe_is_the_refocus_recipe_with_a_refit_of_6400_images():
  """configs/gemma64_refit.py changes configs/gemma64_refocus.py only in its refit after training (6,400 images);
  configs/gemma64_tune.py adds a decoder tune to it, configs/gemma64_monotone.py the tune's hinge,
  configs/gemma64_tune1600.py a tune four times as long, and configs/gemma64_standardised.py the refit's
  mirror-averaged, standardised reading of the teacher."""
  import dataclasses

  from spae.train import load_config

  refocus = load_config(ROOT / "configs" / "gemma64_refocus.py")
  refit = load_config(ROOT / "configs" / "gemma64_refit.py")
  assert refit.semantic.refit_images == 6400 and refocus.semantic.refit_images == 0
  assert dataclasses.replace(refit, semantic=dataclasses.replace(refit.semantic, refit_images=0)) == refocus
  refit.validate()
  # configs/gemma64_tune.py: that refit, then a 400-step decoder tune from 2e-4.
  tune = load_config(ROOT / "configs" / "gemma64_tune.py")
  assert (tune.tune.steps, tune.tune.lr) == (400, 2e-4) and refit.tune.steps == 0
  assert dataclasses.replace(tune, tune=refit.tune) == refit
  # configs/gemma64_monotone.py: that tune with its monotone hinge at weight 1.
  mono = load_config(ROOT / "configs" / "gemma64_monotone.py")
  assert mono.tune.monotone == 1.0 and tune.tune.monotone == 0.0
  assert dataclasses.replace(mono, tune=dataclasses.replace(mono.tune, monotone=0.0)) == tune
  mono.validate()
  # configs/gemma64_tune1600.py (the shipped default): that hinged tune, four times as long.
  long = load_config(ROOT / "configs" / "gemma64_tune1600.py")
  assert long.tune.steps == 1600 and dataclasses.replace(long, tune=mono.tune) == mono
  long.validate()
  std = load_config(ROOT / "configs" / "gemma64_standardised.py")
  assert std.semantic.refit_mirrored and std.semantic.refit_standardised
  assert dataclasses.replace(std, semantic=dataclasses.replace(std.semantic, refit_mirrored=False,
                                                               refit_standardised=False)) == mono
  std.validate()


def test_refit2000_recipe_is_the_refocus_recipe_with_its_refit_at_the_scorer_reset():
  """configs/gemma64_refit2000.py changes configs/gemma64_refocus.py only in its refit: 6,400 images, at step 2,000
  (the scorer reset), the codes held from then on; configs/gemma64_refit1800.py moves reset and refit to 1,800."""
  import dataclasses

  from spae.train import load_config

  refocus = load_config(ROOT / "configs" / "gemma64_refocus.py")
  moved = load_config(ROOT / "configs" / "gemma64_refit2000.py")
  assert (moved.semantic.refit_images, moved.semantic.refit_step) == (6400, 2000) == (6400, refocus.semantic.pool_reset)
  plain = dataclasses.replace(moved.semantic, refit_images=0, refit_step=0)
  assert dataclasses.replace(moved, semantic=plain) == refocus
  moved.validate()
  # configs/gemma64_refit1800.py: the same with both the scorer reset and the refit at step 1,800.
  earlier = load_config(ROOT / "configs" / "gemma64_refit1800.py")
  assert (earlier.semantic.pool_reset, earlier.semantic.refit_step) == (1800, 1800)
  assert dataclasses.replace(earlier, semantic=dataclasses.replace(earlier.semantic, pool_reset=2000,
                                                                    refit_step=2000)) == moved
  earlier.validate()


def test_refit_tool_gives_the_weights_the_recipe_with_the_refit_and_tune_trains_to(tmp_path, capsys):
  """tools/refit_tokenizer.py on a tokenizer trained without the refit and decoder tune equals the same recipe
  trained with them, bit for bit (its steps do not depend on them); a recipe with neither, or a tokenizer of another
  recipe, is one line."""
  import argparse
  import sys

  import numpy as np
  import pytest

  import spae
  from spae import train as T

  sys.path.insert(0, str(ROOT / "tests"))
  from test_train import REFIT_RECIPE, ToyTeacher

  sys.path.insert(0, str(ROOT / "tools"))
  import refit_tokenizer
  import train_default_tokenizer as tool

  over = [*REFIT_RECIPE, "steps=2"]
  tiny = ROOT / "configs" / "tiny.py"
  teacher = ToyTeacher(len(spae.tiny_vocabulary()))
  after = ["semantic.refit_images=40", "tune.steps=2"]  # the refit, then a decoder tune
  for name, extra in (("plain", []), ("full", after)):
    T.Trainer(T.load_config(tiny, over + extra), tmp_path / name, teacher=teacher).run(progress=False)
  args = lambda **kw: argparse.Namespace(**{"config": str(tiny), "tokenizer": tmp_path / "plain" / "tokenizer",
                                            "out": tmp_path / "refit", "overrides": over + after,
                                            "minilm_wheel": None, "minilm_dir": None, **kw})
  assert refit_tokenizer.refit(args(), teacher=teacher) == 0
  full, plain = (tool.params_digest(tmp_path / n / "tokenizer") for n in ("full", "plain"))
  rec = json.loads((tmp_path / "refit" / "training.json").read_text())
  assert rec["params_sha256"] == full != plain and rec["input_params_sha256"] == plain
  assert rec["tune_steps"] == 2 and rec["tune_last"]["step"] == 4 and rec["tune_last"]["tune_l2"] > 0
  w = spae.Tokenizer.load(tmp_path / "refit").model.codebook.semantic_weight.get_value()
  np.testing.assert_array_equal(w, spae.Tokenizer.load(tmp_path / "full" / "tokenizer").model.codebook
                                .semantic_weight.get_value())
  with pytest.raises(SystemExit, match="refit_images and tune.steps are 0"):
    refit_tokenizer.refit(args(overrides=over), teacher=teacher)
  # Its output (and the shipped default, refit and tuned) records both stages: they are not run a second time.
  for done in (tmp_path / "refit", ROOT / "spae" / "assets" / "default" / "tokenizer"):
    with pytest.raises(SystemExit, match="refit_images=.* and tune_steps=.*would run twice"):
      refit_tokenizer.refit(args(tokenizer=done, out=tmp_path / "twice"), teacher=teacher)
  with pytest.raises(SystemExit, match="refit_step=1 refits during training"):
    refit_tokenizer.refit(args(overrides=over + ["semantic.refit_images=40", "semantic.refit_step=1"]),
                          teacher=teacher)
  with pytest.raises(SystemExit, match="not the one"):
    refit_tokenizer.refit(args(overrides=over + ["semantic.refit_images=40", "tokenizer.codebook.dim=4"],
                               out=tmp_path / "other"), teacher=teacher)
  # Other SAQ layer weights are the recipe's to set, but only a decoder tune learns to decode them.
  n = len(spae.Tokenizer.load(tmp_path / "plain" / "tokenizer").config.pyramid.grids)
  with pytest.raises(SystemExit, match=r"SAQ layer weights .* only a decoder tune"):
    refit_tokenizer.refit(args(overrides=over + ["semantic.refit_images=40",
                                                 f"tokenizer.pyramid.layer_weights={[1] * (n - 1) + [2]}"],
                               out=tmp_path / "weighted"), teacher=teacher)


def _step_digest_tool():
  spec = importlib.util.spec_from_file_location("step_digest", ROOT / "tools" / "step_digest.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_step_digest_lists_every_step_program_a_recipe_trains_with():
  """tools/step_digest.py checks the programs the Trainer compiles over a run: with and without the discriminator,
  after the scorer reset and after the refit, and the decoder tune."""
  from spae.train import apply_override, load_config

  tool = _step_digest_tool()
  tiny = load_config(ROOT / "configs" / "tiny.py")  # the discriminator from step 3 of 6
  assert list(tool.programs(tiny)) == ["step", "step+gan"]
  assert tool.programs(tiny)["step+gan"] == dict(use_gan=True, freeze_pool=False, freeze_codes=False, semantic=False)
  cfg = apply_override(tiny, "semantic.teacher=default")  # a teacher (and semantic.weight > 0): the semantic term
  assert tool.programs(cfg)["step"]["semantic"]
  for o in ("gan.disc_start=100", "semantic.pool_reset=2", "semantic.code_means=0.5", "semantic.refit_images=8",
            "semantic.refit_step=4", "tune.steps=3"):
    cfg = apply_override(cfg, o)
  assert list(tool.programs(cfg)) == ["step", "step+frozen_scorer", "step+frozen_scorer+frozen_codes", "tune"]
  shipped = load_config(ROOT / "configs" / "gemma64_tune1600.py")
  assert list(tool.programs(shipped)) == ["step", "step+frozen_scorer", "tune"]


def test_step_digest_is_stable_and_changes_with_the_step(capsys):
  """The same config lowers to the same programs; a changed loss term changes the program it is in."""
  tool = _step_digest_tool()
  tiny = str(ROOT / "configs" / "tiny.py")
  runs = []
  for extra in ([], [], ["--set", "loss.l1_weight=0.5"]):  # with the semantic term: a teacher is named
    assert tool.main(["--config", tiny, "--set", "semantic.teacher=default", *extra]) == 0
    runs.append(dict(line.split() for line in capsys.readouterr().out.splitlines()))
  assert runs[0] == runs[1] and set(runs[0]) == {"step", "step+gan"} and runs[0]["step"] != runs[0]["step+gan"]
  assert all(runs[2][k] != runs[0][k] for k in runs[0])
  assert tool.main(["--config", tiny, "--vocab-shape", "3x"]) == 2
  assert "--vocab-shape '3x': expected ROWS,DIM" in capsys.readouterr().err
