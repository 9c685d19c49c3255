"""CI smoke runs of every benchmark in benchmarks/: each runs with --smoke in its own subprocess (all in parallel, so
the file costs about as much as the slowest one) and must exit 0 and write well-formed JSON with its expected keys.

Nothing is timed here; the numbers inside the JSON are not checked beyond being finite where they must be. Torch is
optional: speed.py must then skip its PyTorch baselines with a note, which is checked too.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
TIMEOUT_S = 240

# name -> (script, extra args, top-level keys its JSON must have)
CASES: dict[str, tuple[str, list[str], set[str]]] = {
    "quantizer": ("quantizer.py", [], {"benchmark", "machine", "args", "rows"}),
    "lm_scoring": ("lm_scoring.py", [], {"benchmark", "seconds_per_query", "speedup_vs_uncached", "machine"}),
    "sweep_scoring": ("sweep_scoring.py", [], {"benchmark", "requests", "seconds_per_request",
                                                "speedup_batched_vs_per_call", "ranking_changes", "machine"}),
    "fewshot": ("fewshot.py", [], {"summary", "oracle_probes", "machine", "load_avg", "timing", "args"}),
    "train_step": ("train_step.py", ["--breakdown"], {"benchmark", "machine", "matmul_gflops", "rows", "breakdown"}),
    "recon": ("recon.py", [], {"benchmark", "machine", "load_avg", "datasets", "cumulative_tokens", "notes"}),
    # the tokenizer-choosing mode: validation-split scenes in place of the test split's
    "recon_validation": ("recon.py", ["--scenes-split", "validation", "--no-skimage"], {"datasets"}),
    "speed": ("speed.py", [], {"benchmark", "machine", "load_avg", "rows", "parity", "notes", "matmul_gflops"}),
    "speed_no_torch": ("speed.py", ["--no-torch"], {"benchmark", "rows", "parity", "notes"}),
    # Two rows keep the smoke cheap; every row's config is built in tests/test_codebook.py.
    "teacher_words": ("teacher_words.py", ["--vocab-from-captions", "16"],
                      {"benchmark", "machine", "args", "vocab_size", "rows"}),
    # --caption-bank on a teacher without captions: that reading is skipped with a note, the rest runs
    "teacher_probe": ("teacher_probe.py", ["--caption-bank", "8", "--split", "validation"],
                      {"benchmark", "machine", "load_avg", "args", "candidates", "classes", "rows", "notes"}),
    "generate_real": ("generate_real.py", [], {"benchmark", "machine", "settings", "rows", "summary"}),
    "layer_readout": ("layer_readout.py", [], {"benchmark", "machine", "load_avg", "args", "tokenizer", "rows"}),
    # --split validation: the recipe-choosing mode (the test split is recon's default path, smoked above).
    "tokenizer_ablation": ("tokenizer_ablation.py", ["--rows", "no-quantizer,projected-rq", "--split", "validation"],
                           {"benchmark", "machine", "args", "results"}),
}
HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_VQ = HAS_TORCH and importlib.util.find_spec("vector_quantize_pytorch") is not None


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
  """Starts every existing benchmark's smoke run at once; returns name -> (returncode, output, json path, seconds,
  what the run left in its own temporary folder)."""
  out_dir = tmp_path_factory.mktemp("bench")
  procs = {}
  for name, (script, extra, _) in CASES.items():
    if not (BENCH / script).exists():
      continue
    out = out_dir / f"{name}.json"
    log = open(out_dir / f"{name}.log", "w+")
    tmp = out_dir / "tmp" / name  # each run's TMPDIR: whatever it leaves there, it left behind
    tmp.mkdir(parents=True)
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu"), "TMPDIR": str(tmp)}
    cmd = [sys.executable, str(BENCH / script), "--smoke", "--out", str(out), *extra]
    procs[name] = (subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT), log, out,
                   time.perf_counter(), tmp)
  done: dict[str, tuple] = {}
  while len(done) < len(procs):
    for name, (proc, log, out, t0, tmp) in procs.items():
      if name in done:
        continue
      rc = proc.poll()
      if rc is None and time.perf_counter() - t0 > TIMEOUT_S:
        proc.kill()
        proc.wait()
        rc = "timeout"
      if rc is not None:
        log.seek(0)
        done[name] = (rc, log.read()[-4000:], out, time.perf_counter() - t0, sorted(p.name for p in tmp.iterdir()))
        log.close()
    time.sleep(0.2)
  results = done
  print("smoke seconds:", {k: round(v[3], 1) for k, v in results.items()})  # shown with pytest -s
  return results


def _load(smoke_runs, name):
  if name not in smoke_runs:
    pytest.skip(f"benchmarks/{CASES[name][0]} does not exist")
  rc, output, out, _, _ = smoke_runs[name]
  assert rc == 0, f"{name} --smoke failed ({rc}):\n{output}"
  assert out.exists(), f"{name} --smoke wrote no JSON:\n{output}"
  data = json.loads(out.read_text())
  assert isinstance(data, dict)
  missing = CASES[name][2] - set(data)
  assert not missing, f"{name} JSON lacks {sorted(missing)}; has {sorted(data)}"
  return data


@pytest.mark.parametrize("name", sorted(CASES))
def test_smoke_completes_with_json(smoke_runs, name):
  _load(smoke_runs, name)
  left = smoke_runs[name][4]
  assert not left, f"{name} --smoke left {left} in its temporary folder"


def test_sweep_scoring_replays_the_sweep_requests_both_ways_with_the_same_scores(smoke_runs):
  data = _load(smoke_runs, "sweep_scoring")
  # 4 (names x induction) x 1 episode x 2 shot counts x (2 layer counts + the oracle), 2 answers each
  assert data["requests"] == 24 and data["scored_answers"] == 24 * 2
  assert data["max_abs_score_diff"] < 1e-4 and data["ranking_changes"] == 0
  assert set(data["seconds_per_request"]) == {"per_call", "batched"}


def test_recon_scores_validation_scenes_instead_of_the_test_split(smoke_runs):
  """--scenes-split validation is for choosing a tokenizer: the test split's scenes are never scored then."""
  data = _load(smoke_runs, "recon_validation")["datasets"]
  assert sorted(data) == ["scenes-validation", "shapes-heldout"]
  assert "split 'validation'" in data["scenes-validation"]["source"]
  assert "main_named" in data["scenes-validation"]
  lo, hi = data["scenes-validation"]["main_named_ci95"]
  assert lo <= data["scenes-validation"]["main_named"] <= hi


def test_recon_reports_every_prefix(smoke_runs):
  data = _load(smoke_runs, "recon")
  cum = data["cumulative_tokens"]
  assert cum == sorted(cum) and len(cum) == len(data["pyramid"])
  assert "shapes-heldout" in data["datasets"]
  for name, res in data["datasets"].items():
    assert [r["tokens"] for r in res["rows"]] == cum, name
    for r in res["rows"]:
      assert math.isfinite(r["psnr"]) and -1.0 <= r["ssim"] <= 1.0 and 0.0 < r["usage"] <= 1.0
      assert r["saq_mse"] >= 0.0 and r["rq_mse"] >= 0.0
    # dips: the share of images a layer made worse; none at the first prefix, and a mean that falls needs one.
    rows = res["rows"]
    assert rows[0]["dips"] == 0.0 and all(0.0 <= r["dips"] <= 1.0 for r in rows)
    for prev, r in zip(rows, rows[1:]):
      assert r["dips"] > 0.0 or r["psnr"] >= prev["psnr"] - 1e-4, name
      assert r["dips"] < 1.0 or r["psnr"] < prev["psnr"], name
      # rise_db: the mean per-image change, which is the change of the means, inside its interval.
      lo, hi = r["rise_ci95"]
      assert r["rise_db"] == pytest.approx(r["psnr"] - prev["psnr"], abs=1e-4) and lo <= r["rise_db"] <= hi, name
    assert "rise_db" not in rows[0]
    # bits: what each prefix can carry grows with every layer; the thumbnail's are 24 per cell.
    assert all(b["bits"] > a["bits"] for a, b in zip(rows, rows[1:]))
    assert all(r["thumb_bits"] == 24 * r["thumb_side"] ** 2 for r in rows), name
    # SAQ and RQ pick the same first-layer token (both target z at layer 1): equal latent error there.
    assert res["rows"][0]["saq_mse"] == pytest.approx(res["rows"][0]["rq_mse"], rel=1e-5)
    # The decoder on the latent's own thumbnail (recon.latent_thumbnail, tested below), for every prefix.
    assert all(math.isfinite(r["latent_thumb_psnr"]) for r in rows), name
  sem = data["datasets"]["shapes-heldout"]["semantic_precision"]
  assert all(0.0 <= s["precision"] <= 1.0 and s["chance"] > 0.0 for s in sem)
  by_layer = data["datasets"]["shapes-heldout"]["names_by_layer"]
  assert [r["layer"] for r in by_layer] == [s["layer"] for s in sem]
  assert all(0.0 <= r[role] <= 1.0 for r in by_layer for role in ("background colour", "main colour", "main shape"))
  # Without weight files the perceptual metrics are skipped with a note, never computed from random weights.
  assert any("lpips" in n for n in data["notes"]) and any("rfid" in n for n in data["notes"])


def test_generate_reports_both_baselines(smoke_runs):
  data = _load(smoke_runs, "generate_real")
  denoise = next(r for r in data["summary"] if r["task"] == "denoise")
  for name in ("generation", "condition", "cleanest_example"):
    for key in ("psnr", "ssim", "token_accuracy"):
      mean, lo, hi = denoise[f"{name}/{key}"]
      assert math.isfinite(mean) and lo <= mean <= hi
  # the majority-vote test LM copies the condition back, so it ties that baseline exactly
  assert denoise["generation/psnr"][0] == pytest.approx(denoise["condition/psnr"][0])
  cls = next(r for r in data["summary"] if r["task"] == "class")
  assert 0.0 <= cls["hit"][0] <= 1.0 and cls["chance"] == pytest.approx(1 / 4)


def test_teacher_words_reports_shares_and_chance(smoke_runs):
  data = _load(smoke_runs, "teacher_words")
  (row,) = data["rows"]
  assert set(row["variants"]) >= {"raw, all words", "centred, all words"}
  for v in row["variants"].values():
    assert all(0.0 <= v[k] <= 1.0 for k in ("colour", "shape", "either"))
    assert v["either"] >= max(v["colour"], v["shape"]) and len(v["example"]) == data["args"]["top"]
  assert 0.0 < row["chance_either"] < 0.05
  # --smoke: a 4-word sub-vocabulary chosen on 16 training images, among all words and among their captions' words
  first, from_captions = row["first_word"]
  assert (first["candidates"], from_captions["candidates"]) == ("all words", "caption words")
  for f in (first, from_captions):
    assert f["size"] == len(f["words"]) <= 4 and set(f["roles"]) == {"background colour", "main colour", "main shape"}
    assert all(0.0 <= v <= 1.0 for v in (*f["roles"].values(), f["main object"], f["main object, other image"],
                                         f["top five name the main object"], f["top five, other image"]))
    assert f["top five name the main object"] >= f["main object"]
  from spae import train as T

  mix = T.open_data(data["args"]["data"])
  said = {w for i in range(16) for w in re.findall(r"[a-z]+", mix.caption(i).lower())}
  assert set(from_captions["words"]) <= said
  # --smoke also asks whether the shipped tokenizer's layer-1 word is the teacher's first word.
  held, train = row["follows"]
  assert (held["set"], held["images"], train["set"], train["images"]) == ("held-out scenes", 8, "training images", 16)
  assert all(0.0 <= f[k] <= 1.0 for f in (held, train) for k in f if k.startswith("layer 1 ="))
  assert 0.0 <= held["layer-1 word names the main object"] <= 1.0
  assert all(0.0 <= f["teacher's first word survives a mirror"] <= 1.0 for f in (held, train))
  # --smoke also reads the teacher the refit's four ways, on 8 training-split scenes and the held-out ones.
  assert [r["reading"] for r in row["readings"]] == ["centred (training's)", "mirrored", "standardised",
                                                     "mirrored + standardised"]
  for r in row["readings"]:
    assert set(r) == {"reading", "training scenes (seed 1)", "training scenes (seed 1), another image's",
                      "test scenes", "test scenes, another image's"}
    assert all(0.0 <= v <= 1.0 for k, v in r.items() if k != "reading")


def test_teacher_probe_reads_the_oracles_and_the_teachers_top_words(smoke_runs):
  data = _load(smoke_runs, "teacher_probe")
  rows = data["rows"]
  assert {r["reading"] for r in rows} == {"oracle", "teacher"}  # the shipped teacher has no text tower: no caption
  cells = {(r["ways"], r["shots"]) for r in rows}
  assert cells == {(5, 1), (5, 5)}
  teacher = [r for r in rows if r["reading"] == "teacher"]
  assert {r["words"] for r in teacher} == {"top 1", "top 2", "top 3", "top 5"}
  assert len(teacher) == 4 * 2 * 2  # bag sizes x cells x (jaccard, ridge)
  for r in rows:
    lo, hi = r["ci95"]
    assert 0.0 <= lo <= r["accuracy"] <= hi <= 1.0 and r["queries"] == data["args"]["episodes"]
  assert 0 < data["candidates"] <= 64
  assert data["args"]["split"] == "validation"
  (note,) = data["notes"]
  assert note.startswith("lit:default: no training captions")


def test_teacher_probe_bags_follow_the_scores():
  """fewshot.probe_bags scores bags that name the class at 1.0 and bags that name the wrong one at 0.0;
  teacher_probe.top_k_bags takes the highest-scoring allowed words."""
  import numpy as np

  sys.path.insert(0, str(BENCH))
  import fewshot
  import teacher_probe

  from spae.prompting._episodes import make_episode

  eps = [make_episode(f"e{i}", ["a", "b", "c"], ["a", "b", "c"], [(0, 0), (1, 1), (2, 2)], [(i % 3, 3 + i % 3)])
         for i in range(6)]
  named = fewshot.probe_bags([eps], lambda key: [key % 3])
  assert [r["accuracy"] for r in named] == [1.0, 1.0]
  wrong = fewshot.probe_bags([eps], lambda key: [(key + (key >= 3)) % 3])  # queries name the next class
  assert [r["accuracy"] for r in wrong] == [0.0, 0.0]
  scores = np.array([[0.9, 0.1, 0.5, 0.7], [0.0, 0.3, 0.3, 0.1]])
  ranked = teacher_probe.ranked_words(scores, np.array([False, True, True, True]))
  bag = teacher_probe.top_k_bags(["x", "y"], ranked, 2)
  assert bag("x") == [3, 2] and bag("y") == [1, 2]  # a tie keeps id order


def test_class_queries_cycle_through_the_classes_with_two_scenes():
  """generate_real.py asks the held-out classes with two or more test scenes in turn; more queries than such classes
  wrap around instead of indexing past them (it raised IndexError from the 7th query on the test split's classes)."""
  sys.path.insert(0, str(BENCH))
  import generate_real

  by_class = {"a": [0, 1], "b": [2], "c": [3, 4, 5], "z": [6, 7]}  # 'b' has one scene; 'z' is not held out
  asked = [generate_real._asked_class(("a", "b", "c", "d"), by_class, q) for q in range(5)]
  assert asked == ["a", "c", "a", "c", "a"]


def test_mirror_agreement_counts_first_words_a_left_right_mirror_keeps():
  import numpy as np

  sys.path.insert(0, str(BENCH))
  import teacher_words

  # word 0 scores the left half's brightness, word 1 the right half's, word 2 is never first
  rel = lambda x: np.stack([x[:, :, :2].mean((1, 2, 3)), x[:, :, 2:].mean((1, 2, 3)), -np.ones(len(x))], 1)
  left = np.zeros((3, 4, 4, 3)); left[:, :, :2] = 1.0  # bright on the left: the mirror is bright on the right
  even = np.full((2, 4, 4, 3), 0.5); even[:, 1:3] = 0.9  # symmetric: a mirror changes nothing
  sub = np.array([0, 1, 2])
  assert teacher_words.mirror_agreement(rel, left, sub) == 0.0
  assert teacher_words.mirror_agreement(rel, np.concatenate([left, even]), sub) == 0.4
  assert teacher_words.mirror_agreement(rel, left, np.array([0, 2])) == 1.0  # without word 1, word 0 stays first


def test_trainer_relevance_on_a_sub_vocabulary_is_those_columns_of_the_whole_one():
  """teacher_words.follows scores only the tokenizer's semantic words (so a teacher without its text tower can read
  a Gemma tokenizer): every step of the trainer's reading is per word, so the columns must be the same."""
  import numpy as np

  sys.path.insert(0, str(BENCH))
  import teacher_words

  import spae

  teacher, vocab = spae.teachers.load("lit:default"), spae.assets.default_vocabulary()
  rng = np.random.default_rng(0)
  images, reference = rng.random((2, 3, 32, 32, 3), np.float32)
  sub = np.array([5, 17, 400, 8000])
  whole = teacher_words._trainer_relevance(teacher, vocab, reference)(images)
  part = teacher_words._trainer_relevance(teacher, vocab.subset(sub), reference)(images)
  np.testing.assert_allclose(part, whole[:, sub], atol=1e-6)
  assert not np.allclose(part, whole[:, sub[::-1]], atol=1e-3)


def test_speed_baselines_match_or_are_skipped(smoke_runs):
  data = _load(smoke_runs, "speed")
  impls = {r["impl"] for r in data["rows"]}
  assert {"spae (jax)", "spae.nearest_tokens", "spae.saq_quantize"} <= impls
  if not HAS_TORCH:
    assert any("torch is not installed" in n for n in data["notes"])
    assert data["parity"] == {}
    return
  # The PyTorch VQGAN carries spae's weights, so it must compute the same encoder, VQ and decoder.
  p = data["parity"]
  assert p["encoder_max_abs_diff"] <= 1e-4 * max(1.0, p["encoder_output_max_abs"])
  assert p["decoder_max_abs_diff"] <= 1e-3
  assert p["vq_ids_agree"] >= 0.99
  assert any(r["impl"] == "torch" for r in data["rows"])
  spae_rows = [r for r in data["rows"] if r["impl"].startswith("spae")]
  assert all(r["vs_torch"] > 0 for r in spae_rows)
  if HAS_VQ:
    assert p["vector_quantize_ids_agree"] >= 0.99
    assert any(r["impl"] == "vector-quantize-pytorch" for r in data["rows"])
  else:
    assert any("vector-quantize-pytorch" in n for n in data["notes"])


def test_speed_skips_torch_with_a_note(smoke_runs):
  data = _load(smoke_runs, "speed_no_torch")
  assert not any(r["impl"].startswith("torch") or r["impl"] == "vector-quantize-pytorch" for r in data["rows"])
  assert any("skipped" in n for n in data["notes"]) and data["parity"] == {}
  assert all(math.isfinite(r["gflops"]) for r in data["rows"])


def test_latent_thumbnail_is_the_block_means_repeated():
  """recon.py's decoder ceiling reads the latent's block means: side 1 is the latent's mean everywhere, the latent's
  own side gives it back, and a 2×2 block holds its own mean."""
  import numpy as np

  sys.path.insert(0, str(BENCH))
  import recon

  z = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype(np.float32)
  np.testing.assert_allclose(np.asarray(recon.latent_thumbnail(z, 8)), z)
  one = np.asarray(recon.latent_thumbnail(z, 1))
  np.testing.assert_allclose(one, np.broadcast_to(z.mean(axis=(1, 2), keepdims=True), z.shape), rtol=1e-5, atol=1e-6)
  four = np.asarray(recon.latent_thumbnail(z, 4))
  np.testing.assert_allclose(four[:, 2:4, 4:6], np.broadcast_to(z[:, 2:4, 4:6].mean(axis=(1, 2), keepdims=True),
                                                               (2, 2, 2, 3)), rtol=1e-5, atol=1e-6)
  assert not np.allclose(four, z)


def test_ablation_chooses_on_validation_scenes(smoke_runs):
  """--split validation evaluates on validation-split scenes only, never on the test split or held-out photos."""
  import numpy as np

  res = _load(smoke_runs, "tokenizer_ablation")["results"]
  assert res and all("scenes-validation" in r and "scenes-test" not in r and "photos-heldout" not in r for r in res)
  sys.path.insert(0, str(BENCH))
  import recon

  val, _ = recon.new_scenes(3, 32, 0, split="validation")
  test, _ = recon.new_scenes(3, 32, 0)
  assert val.shape == test.shape and not np.array_equal(val, test)


@pytest.mark.parametrize("renderer", ["shapes", "scenes"])
def test_fewshot_oracle_probes_read_each_episode_images_own_attributes(renderer):
  """The oracle probes find each image's attributes through the class subsets: the labelled object's colour and
  shape, which are its class, classify every query; its colour alone cannot tell classes of one colour apart; in
  `shapes` the largest object is not always the labelled one, in `scenes` it is."""
  sys.path.insert(0, str(BENCH))
  import fewshot

  import spae.data
  from spae.prompting import FewShotConfig
  from spae.prompting._episodes import scene_attributes
  from spae.prompting.fewshot import sampled_episodes

  if renderer == "scenes":
    full = spae.data.SceneSource(1500, image_size=16, seed=0, split="test")
    held = full.subset(spae.data.SCENE_HELDOUT_CLASSES)
  else:
    full = spae.data.render_shapes_source(1200, image_size=16, seed=0, split="test")
    full.attributes = lambda i: spae.data.shapes_attributes(spae.data.scene_rng(0, "test", i))  # as fewshot.py does
    held = full.subset(spae.data.SHAPES_HELDOUT_CLASSES)
  source = held.subset([c for c in held.classes if len(held.images_of(c)) >= 2])
  config = FewShotConfig(ways=(5,), shots=(1,), layers=(1,), episodes=40, seed=0)
  oracles = dict(fewshot.ORACLES, labelled=lambda objs: list(objs[0][:2]))
  rows = fewshot.oracle_probes(sampled_episodes(config, source), lambda k: scene_attributes(source, k), oracles)
  acc = {(r["oracle"], r["method"]): r["accuracy"] for r in rows}
  assert acc["labelled", "jaccard"] == 1.0 and acc["labelled", "ridge"] == 1.0
  assert 0.2 < acc["labelled colour", "jaccard"] < 1.0
  assert (acc["largest object", "jaccard"] == 1.0) == (renderer == "scenes")
  assert all(r["queries"] == 40 and r["ci95"][0] <= r["accuracy"] <= r["ci95"][1] for r in rows)


def test_benchmarks_that_run_an_llm_are_told_apart_by_their_command_line():
  """The AVX2 cap is left out where an LLM's matmuls dominate: the LLM benchmarks, and fewshot.py given an LM."""
  sys.path.insert(0, str(BENCH))
  import _common

  assert _common.runs_an_llm(["benchmarks/sweep_scoring.py", "--smoke"])
  assert _common.runs_an_llm(["benchmarks/fewshot.py", "--lm", "gguf:gemma3-270m"])
  assert _common.runs_an_llm(["fewshot.py", "--lm=gguf:gemma3-270m"])
  assert not _common.runs_an_llm(["benchmarks/fewshot.py", "--episodes", "100"])
  assert not _common.runs_an_llm(["benchmarks/fewshot.py", "--lm", "none"])
  assert not _common.runs_an_llm(["benchmarks/recon.py", "--lm", "x"])


def test_naming_reads_words_as_the_scenes_spell_them():
  """The top-word naming share compares a word with the scenes' attribute names: 'grey' names a gray object."""
  sys.path.insert(0, str(BENCH))
  import recon

  assert [recon._norm_word(w) for w in (" Grey", "gray", "Red", "centre")] == ["gray", "gray", "red", "center"]


def test_naming_baseline_uses_other_images_words():
  """The naming baseline gives each image another image's top words: image-blind words score the same as their
  own share, image-specific ones score above it."""
  sys.path.insert(0, str(BENCH))
  import recon

  mains = [{"red", "circle"}, {"blue", "square"}, {"green", "star"}]
  assert recon.other_image_naming([{"red"}, {"blue"}, {"green"}], mains) == 0.0  # each names only its own
  assert recon.other_image_naming([{"red", "blue", "green"}] * 3, mains) == 1.0  # names everything, everywhere
  assert recon.other_image_naming([{"red"}, {"red"}, {"red"}], mains) == 2 / 6  # image 0 named from 1 and 2
  # Its interval: Wilson around the share, narrower with more images, never past [0, 1].
  lo, hi = recon.naming_interval([{"red"}, {"red"}, {"green"}], mains)
  assert 0.0 < lo < 2 / 3 < hi < 1.0
  lo4, hi4 = recon.naming_interval([{"red"}, {"red"}, {"green"}] * 4, mains * 4)
  assert lo < lo4 < 2 / 3 < hi4 < hi
  assert recon.naming_interval([{"red"}, {"blue"}, {"green"}], mains)[1] == 1.0


def test_names_by_role_tells_background_from_main_object():
  """A layer that spells each image's background colour scores on that role only, not on the main object's."""
  sys.path.insert(0, str(BENCH))
  import recon
  from spae.data import SceneSource, render_scene, scene_rng

  src = SceneSource(6, 32, seed=0, split="test")
  roles = [recon.attribute_roles(src.attributes(i)) for i in range(6)]
  assert all(set(r) == set(recon.ROLES) and all(r.values()) for r in roles)
  background_words = [{r["background colour"]} for r in roles]
  shares = recon.role_shares(background_words, roles)
  assert shares["background colour"] == 1.0
  assert shares["main shape"] == 0.0  # shape names are never colour names
  assert recon.role_shares([{r["main shape"], r["main colour"]} for r in roles], roles)["main shape"] == 1.0
  assert recon.role_shares([set()] * 6, roles) == {r: 0.0 for r in recon.ROLES}
  _, _, a = render_scene(scene_rng(0, "test", 0), 32)
  assert recon.attribute_roles(a)["background colour"] == a["background"]  # `shapes` scenes name it directly


def test_layer_readout_reports_every_layer_role_and_feature(smoke_runs):
  data = _load(smoke_runs, "layer_readout")
  rows = data["rows"]
  assert [(r["layer"], r["role"]) for r in rows] == [(l, role) for l in (1, 2) for role in
                                                     ("background colour", "main colour", "main shape")]
  for r in rows:
    assert all(0.0 <= r[f]["accuracy"] <= 1.0 for f in ("latent", "words", "thumbnail"))
    assert ("contrast" in r) == ("pooled" in r) == (r["layer"] == 1)
    assert 0.0 <= r["majority"] <= 1.0 and r["classes"] >= 2


def test_layer_readout_reads_what_features_carry_and_nothing_else():
  """The readout's classifier recovers a class written linearly into the features, and scores near chance when
  the labels are unrelated to them; the ridge strength is chosen on the training set alone."""
  import numpy as np

  sys.path.insert(0, str(BENCH))
  import layer_readout as lr

  rng = np.random.default_rng(0)
  classes, n = 4, 400
  y = rng.integers(0, classes, n)
  centres = rng.normal(size=(classes, 6)) * 3
  x = centres[y] + rng.normal(size=(n, 6))
  got = lr.readout(x[:300], y[:300], x[300:], y[300:], classes)
  assert got["accuracy"] > 0.9 and got["lambda"] in lr.LAMBDAS
  noise = lr.readout(rng.normal(size=(300, 6)), y[:300], rng.normal(size=(100, 6)), y[300:], classes)
  assert noise["accuracy"] < 0.45  # chance is 0.25
  wide = rng.normal(size=(n, 500))  # more features than training scenes: the dual form
  wide[:, 0] += 4 * (y == 1)
  assert lr.readout(wide[:300], (y[:300] == 1).astype(int), wide[300:], (y[300:] == 1).astype(int), 2)["accuracy"] > 0.8
  tr, te = lr.bag(np.array([[5, 7], [7, 7]]), np.array([[7, 9]]))
  assert tr.tolist() == [[1, 1], [0, 2]] and te.tolist() == [[0, 1]]  # id 9 never seen in training


def test_attention_readout_finds_an_object_the_block_mean_dilutes():
  """A class written at one marked position of the latent grid is read by the learned pooling, not from the mean."""
  import numpy as np

  sys.path.insert(0, str(BENCH))
  import layer_readout as lr

  rng = np.random.default_rng(1)
  n, classes = 400, 3
  y = rng.integers(0, classes, n)
  z = np.repeat(np.repeat(rng.normal(size=(n, 1, 1, 4)) * 0.5, 8, 1), 8, 2) + rng.normal(size=(n, 8, 8, 4)) * 0.05
  py, px = rng.integers(0, 8, n), rng.integers(0, 8, n)
  z[np.arange(n), py, px, :3] += 3.0 * np.eye(classes)[y]
  z[np.arange(n), py, px, 3] += 3.0  # the object's marker
  pooled = lr.attention_readout(z[:300], y[:300], z[300:], y[300:], classes)["accuracy"]
  mean = lr.readout(z[:300].mean((1, 2)), y[:300], z[300:].mean((1, 2)), y[300:], classes)["accuracy"]
  assert pooled > 0.9 and pooled > mean + 0.2
  c = lr.contrast_pool(z)  # the untrained scorer's pooling weighs the position that differs from the mean
  assert lr.readout(c[:300], y[:300], c[300:], y[300:], classes)["accuracy"] > mean + 0.2


def test_contrast_pool_is_the_pooled_layers_initial_scorer():
  """layer_readout's `contrast` feature is what spae's SemanticPool computes at initialisation on a 1×1 grid."""
  import jax.numpy as jnp
  import numpy as np
  from flax import nnx

  from spae._nets import SemanticPool
  from spae._pyramid import attention_pool

  sys.path.insert(0, str(BENCH))
  import layer_readout as lr

  z = np.random.default_rng(2).normal(size=(3, 4, 4, 5)).astype(np.float32)
  a = SemanticPool(5, 8, contrast=1.0, rngs=nnx.Rngs(0))(jnp.asarray(z), 1)
  want = np.asarray(attention_pool(jnp.asarray(z), 1, a)).reshape(3, 5)
  np.testing.assert_allclose(lr.contrast_pool(z), want, rtol=1e-4, atol=1e-5)


def test_a_bad_tokenizer_bundle_is_one_line_not_a_traceback(tmp_path):
  """recon.py (and the scripts that load through it) and fewshot.py name the bundle and the fix in one line."""
  sys.path.insert(0, str(BENCH))
  import fewshot
  import recon

  (tmp_path / "config.json").write_text("{}")
  for call in (lambda: recon.load_tokenizer(str(tmp_path), False),
               lambda: fewshot.main(["--tokenizer", str(tmp_path)])):
    with pytest.raises(SystemExit) as e:
      call()
    msg = str(e.value)
    assert msg.startswith(f"--tokenizer {tmp_path}: ") and "\n" not in msg


def test_train_step_breakdown_times_the_teacher_and_semantic_loss(tmp_path):
  """--breakdown's semantic rows run only with a teacher, which the CI smoke (tiny config) lacks: time them here on
  the tiny config with the train tests' toy teacher."""
  import spae
  from spae import train as T
  from test_train import ToyTeacher

  sys.path.insert(0, str(BENCH))
  import train_step

  tr = T.Trainer(T.load_config(ROOT / "configs" / "tiny.py"), tmp_path, teacher=ToyTeacher(len(spae.tiny_vocabulary())))
  rows = train_step._breakdown(tr, tr.global_batch(next(tr.data)["image"]), 1)
  names = [r["part"] for r in rows]
  assert any(n.startswith("semantic CE") for n in names) and "teacher relevance (outside the step)" in names
  assert all(math.isfinite(r["seconds"]) and r["seconds"] > 0 for r in rows)


def test_machine_info_names_the_cpu_type_beside_its_name():
  """Benchmark figures of two CPU generations that share a name ("AMD EPYC") must not read as one machine's."""
  sys.path.insert(0, str(BENCH))
  from _common import machine_info, machine_line

  from spae._xla_flags import numerics_record

  here, info = numerics_record(), machine_info()
  for key in ("cpu_type", "cpu_vector"):
    assert info.get(key, "") == here[key]
  line = machine_line(dict(info, cpu="AMD EPYC", cpu_type="AuthenticAMD family 26 model 2"), (0.5,), (1.0,))
  assert line.startswith("AMD EPYC (AuthenticAMD family 26 model 2), ")
