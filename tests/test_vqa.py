"""In-context VQA: questions from scene attributes, constrained / free answers, oracle and baselines, resume, CLI."""

import dataclasses
import re

import numpy as np
import pytest

from spae import cli
from spae.data import SceneSource, _scenes
from spae.prompting import _scene_tasks as st
from spae.prompting import vqa
from spae.prompting.testing import FunctionLM, WordTokenizer

from _scene_lm import scene_model

QUESTION_WORDS = tuple(w for q, _ in vqa.QUESTIONS.values() for w in q.split())
EXTRA = (*_scenes.COLOURS, *_scenes.SHAPES, *_scenes.SIZES, "light", "dark", "top", "bottom", "left", "right",
         "center", *st.COUNT_WORDS, "Image:", "Question:", "Answer:", *QUESTION_WORDS)
CFG = vqa.VQAConfig(shots=(1, 3), layers=(1, 2), episodes=4)


@pytest.fixture(scope="module")
def pools():
  return st.ScenePools(SceneSource(300, 32, split="test"), SceneSource(40, 32))


@pytest.fixture(scope="module")
def wtok(tiny_tok):
  return WordTokenizer(tiny_tok.vocabulary.words(np.arange(len(tiny_tok.vocabulary))), EXTRA)


def _model(wtok, rule):
  answers = {tuple(wtok.encode(f"Question: {q}\n")): [wtok.encode(a) for a in cands]
             for q, cands in vqa.QUESTIONS.values()}
  return FunctionLM(wtok, scene_model(wtok, rule, "Image:", "Answer:", answers))


def _first_answer(words, candidates):
  """The attribute rule of the fake LM, on words: earliest start, then the longest candidate."""
  for start in range(len(words)):
    for c in sorted(candidates, key=lambda c: len(c.split()), reverse=True):
      if words[start:start + len(c.split())] == c.split():
        return c
  return None


# ------------------------------------------------------------------------------------ questions
def test_every_answer_is_a_candidate_and_majority_breaks_ties_by_order():
  for i in range(200):
    attrs = _scenes.sample_scene(_scenes.scene_rng(0, "test", i))
    for q, (_, cands) in vqa.QUESTIONS.items():
      assert vqa.answer_truth(q, attrs) in cands
    assert vqa.answer_truth("count", attrs) == st.COUNT_WORDS[len(attrs["objects"]) - 1]
    assert vqa.answer_truth("position", attrs) == attrs["region"]
  assert vqa.majority_answer(["red", "blue", "blue", "red", "green"]) == "red"
  assert vqa.majority_answer(["red", "blue", "blue"]) == "blue"
  assert vqa.majority_answer(["top left"]) == "top left"


# ------------------------------------------------------------------------------------ the evaluation
def test_nearest_copying_lm_equals_the_nearest_answer_baseline(tiny_tok, pools, wtok):
  res = vqa.evaluate_vqa(CFG, tiny_tok, _model(wtok, "nearest"), pools, progress=False)
  rows = [r for r in res["rows"] if r["layers"] is not None]
  assert len(rows) == 5 * 2 * 2 * 4
  for r in rows:
    near = r["results"]["nearest"]
    assert r["results"]["lm/constrained"]["prediction"] == near["prediction"]  # scored with the spliced ids
    assert r["results"]["lm/free"]["prediction"] == near["prediction"]  # stopped at the newline
    assert r["prompts"]["lm"].count("Answer:") == r["shots"] + 1
  by = {(s["method"], s["question"], s["shots"], s["layers"]): s for s in res["summary"]}
  for q in vqa.QUESTION_TYPES:
    for k in CFG.shots:
      for layers in CFG.layers:
        accs = {m: (by[m, q, k, layers]["accuracy"], by[m, q, k, layers]["accuracy_ci95"])
                for m in ("lm/constrained", "lm/free", "nearest")}
        assert len(set(map(str, accs.values()))) == 1 and by["nearest", q, k, layers]["n"] == 4


def test_oracle_and_majority_on_the_same_episodes(tiny_tok, pools, wtok):
  res = vqa.evaluate_vqa(CFG, tiny_tok, _model(wtok, "attribute"), pools, progress=False)
  by = {(r["question"], r["shots"], r["layers"], r["episode"]): r for r in res["rows"]}
  words = tiny_tok.vocabulary.words(np.arange(len(tiny_tok.vocabulary)))
  seen = 0
  for (q, k, layers, ep), r in by.items():
    ref = by[q, k, None, ep]
    assert (r["query"], r["support"], r["truth"], r["support_answers"]) == (
        ref["query"], ref["support"], ref["truth"], ref["support_answers"])
    assert r["support_answers"] == [vqa.answer_truth(q, pools.attributes(("s", j))) for j in r["support"]]
    if layers is None:  # the oracle's words hold every answer; the fake LM copies the right one
      assert r["results"]["oracle/constrained"]["correct"] == 1 and r["results"]["oracle/free"]["correct"] == 1
      assert r["results"]["majority"]["prediction"] == vqa.majority_answer(r["support_answers"])
      continue
    # the same answers follow the tokens and the oracle words
    answers = lambda p: [line for line in p.split("\n") if line.startswith("Answer:")]
    assert answers(r["prompts"]["lm"]) == answers(ref["prompts"]["oracle"])
    q_words = r["prompts"]["lm"].split("Image:")[-1].split("\n")[0].split()
    expected = _first_answer(q_words, vqa.QUESTIONS[q][1])
    assert r["results"]["lm/free"]["prediction"] == (expected or "")
    assert r["results"]["lm/free"]["correct"] == int(expected == r["truth"])
    if expected is not None:
      assert r["results"]["lm/constrained"]["prediction"] == expected
      seen += 1
    assert len(q_words) == (1 if layers == 1 else 5)
  assert seen > 0  # the random tokenizer's words do name some attributes: the check above ran
  acc = {(s["method"], s["question"]): s["accuracy"] for s in res["summary"] if s["shots"] == 3}
  assert all(acc["oracle/constrained", q] == acc["oracle/free", q] == 1.0 for q in vqa.QUESTION_TYPES)


def test_resume_and_only_what_was_asked(tiny_tok, pools, wtok, tmp_path):
  out = tmp_path / "v.jsonl"
  lm = _model(wtok, "nearest")
  cfg = vqa.VQAConfig(shots=(2,), layers=(1,), episodes=2, questions=("count", "position"), answers=("free",))
  first = vqa.evaluate_vqa(cfg, tiny_tok, lm, pools, out=out, progress=False)
  calls = lm.calls
  assert calls == 2 * 2 * 2  # questions x episodes x (tokens + oracle), one free answer each
  assert {m for r in first["rows"] for m in r["results"]} == {"lm/free", "nearest", "oracle/free", "majority"}
  again = vqa.evaluate_vqa(dataclasses.replace(cfg, episodes=3), tiny_tok, lm, pools, out=out, progress=False)
  assert again["resumed"] == len(first["rows"]) and lm.calls == calls + 2 * 2
  assert [r for r in again["rows"] if r["episode"] != "e2"] == first["rows"]


def test_baselines_only_run(tiny_tok, pools):
  res = vqa.evaluate_vqa(dataclasses.replace(CFG, questions=("size",)), tiny_tok, None, pools, progress=False)
  assert {m for r in res["rows"] for m in r["results"]} == {"majority", "nearest"}
  assert all("prompts" not in r for r in res["rows"])


def test_real_backend(tiny_tok, tmp_path_factory):
  """The tiny random-weight Gemma (SentencePiece, image tokens as text): constrained answers are candidates with
  finite scores, free answers are one line."""
  from spae.lm import testing as lmt

  lm = lmt.tiny_lm(tmp_path_factory.mktemp("lm"))
  pools = st.ScenePools(SceneSource(100, 32, split="test"), SceneSource(20, 32))
  cfg = vqa.VQAConfig(shots=(1,), layers=(1,), episodes=1, questions=("size",), max_new=3, baselines=False)
  res = vqa.evaluate_vqa(cfg, tiny_tok, lm, pools, progress=False)
  assert res["token_mode"] == "text"
  assert {m for r in res["rows"] for m in r["results"]} == {"lm/constrained", "lm/free", "oracle/constrained",
                                                           "oracle/free"}
  for r in res["rows"]:
    for m, v in r["results"].items():
      if m.endswith("constrained"):
        assert v["prediction"] in _scenes.SIZES and np.isfinite(v["scores"]).all() and len(v["scores"]) == 3
      else:
        assert isinstance(v["prediction"], str) and "\n" not in v["prediction"]


# ------------------------------------------------------------------------------------ CLI
def test_cli_runs(tiny_tok_dir, tmp_path, capsys):
  argv = ["vqa", "--tokenizer", str(tiny_tok_dir), "--data", "scenes:test:100@32", "--support-data", "scenes:20@32",
          "--episodes", "2", "--shots", "3", "--layers", "1", "--questions", "colour", "count",
          "--out", str(tmp_path / "v.jsonl"), "--no-progress"]
  assert cli.main(argv) == 0
  out = capsys.readouterr().out
  assert re.search(r"majority +colour +3 +- ", out) and re.search(r"nearest +count +3 +1 ", out)


@pytest.mark.parametrize("extra, expect", [
    (["--questions", "colour", "weight"], "unknown question type 'weight'; choose from colour, shape"),
    (["--answers", "multiple"], "unknown answer mode 'multiple'"),
    (["--tokenizer", "no/such/dir"], "no/such/dir"),
    (["--support-data", "scenes:2@32", "--shots", "3"], "3-shot episodes need 3 support scenes but .* offers 2"),
    (["--template-example", "Image: {tokens} Answer: {answer}\n"], r"\{question\} exactly once"),
    (["--episodes", "99", "--data", "scenes:test:20@32"], "lower --episodes"),
])
def test_cli_bad_input_is_one_line(tiny_tok_dir, tmp_path, capsys, extra, expect):
  argv = ["vqa", "--tokenizer", str(tiny_tok_dir), "--data", "scenes:test:100@32", "--support-data", "scenes:20@32",
          "--episodes", "2", "--out", str(tmp_path / "v.jsonl"), "--no-progress", *extra]
  assert cli.main(argv) == 2
  err = capsys.readouterr().err.strip()
  assert "\n" not in err and err.startswith("spae vqa: error:") and re.search(expect, err), err
  assert not (tmp_path / "v.jsonl").exists()
