"""The few-shot sweep: nested episodes, the prefix-friendly job order, names x induction in one run, the
`--sweep standard` preset."""

import argparse
import json

import numpy as np
import pytest

from spae.prompting import FewShotConfig, fewshot, read_episodes, sample_episodes
from spae.prompting import _cli, _fewshot_cli
from spae.prompting import sample_nested_episodes
from spae.prompting.testing import FunctionLM, WordTokenizer, copy_label_model

from test_prompting import BlobSource  # noqa: F401  (the blob classes of the prompting tests)

LABELS = ["cat", "dog", "zebra", "red circle"]


@pytest.fixture(scope="module")
def src():
  return BlobSource(names=LABELS, per_class=7)


@pytest.fixture(scope="module")
def wtok(tiny_tok):
  return WordTokenizer(tiny_tok.vocabulary.words(np.arange(len(tiny_tok.vocabulary))))


def test_nested_episodes_share_classes_query_and_a_support_prefix(src):
  nested = sample_nested_episodes(src, 3, [5, 1, 3], 4, seed=2)
  assert sorted(nested) == [1, 3, 5]
  for i in range(4):
    one, three, five = (nested[k][i] for k in (1, 3, 5))
    assert one.classes == three.classes == five.classes and one.labels == five.labels
    assert one.query == three.query == five.query
    assert (one.shots, three.shots, five.shots) == (1, 3, 5) and five.id == f"3w5s-n{i}"
    assert five.support[:3] == one.support and five.support[:9] == three.support
    # every round shows each class once, and support and query images are distinct
    assert all(sorted(c for c, _ in five.support[3 * r:3 * r + 3]) == [0, 1, 2] for r in range(5))
    keys = five.image_keys()
    assert len(keys) == len(set(keys))
  # deterministic, episode i independent of how many are drawn, names do not change the images
  again = sample_nested_episodes(src, 3, [1, 3, 5], 2, seed=2, start=2)
  assert [e.to_json() for e in again[5]] == [e.to_json() for e in nested[5][2:]]
  nonsense = sample_nested_episodes(src, 3, [1, 3, 5], 4, seed=2, names="nonsense")[5]
  assert [e.support for e in nonsense] == [e.support for e in nested[5]]
  assert all(set(e.labels).isdisjoint(LABELS) for e in nonsense)
  # a different stream from the independent sampler
  assert nested[1][0].support != sample_episodes(src, 3, 1, 1, seed=2)[0].support or \
      nested[1][0].query != sample_episodes(src, 3, 1, 1, seed=2)[0].query


class RecordingLM(FunctionLM):
  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.prefixes = []

  def score(self, prefix_ids, continuations):
    self.prefixes.append(list(prefix_ids))
    return super().score(prefix_ids, continuations)


def _common(a, b):
  n = 0
  while n < min(len(a), len(b)) and a[n] == b[n]:
    n += 1
  return n


def test_a_nested_sweep_runs_each_episode_shots_back_to_back_extending_the_prompt(tiny_tok, src, wtok):
  lm = RecordingLM(wtok, copy_label_model(wtok, tiny_tok.vocabulary.llm_ids))
  config = FewShotConfig(ways=(2,), shots=(1, 2, 3), layers=(1, 2), episodes=3, nested=True, probes=False)
  res = fewshot.evaluate_fewshot(config, tiny_tok, lm, source=src, progress=False)
  order = [(r["episode"], r["layers"]) for r in res["rows"]]
  assert order[:3] == [("2w1s-n0", 1), ("2w2s-n0", 1), ("2w3s-n0", 1)]
  assert len(lm.prefixes) == 3 * 2 * 3
  # within an episode and layers, each prompt starts with the previous one's support (all but its query line)
  for k in range(0, len(lm.prefixes), 3):
    a, b, c = lm.prefixes[k:k + 3]
    query = len(a) - _common(a, b)
    assert query > 0 and _common(b, c) >= len(b) - query and len(a) < len(b) < len(c)
  # the same cells as independent episodes would give, paired
  assert {(s["shots"], s["layers"]) for s in res["summary"]} == {(s, l) for s in (1, 2, 3) for l in (1, 2)}


def test_one_run_sweeps_names_and_induction_into_separate_cells(tiny_tok, src, wtok):
  lm = FunctionLM(wtok, copy_label_model(wtok, tiny_tok.vocabulary.llm_ids))
  configs = [FewShotConfig(ways=(2,), shots=(1,), layers=(1,), episodes=2, names=n, induction=i, probes=False)
             for n in ("real", "nonsense") for i in (False, True)]
  res = fewshot.sweep_fewshot(configs, tiny_tok, lm, source=src, progress=False)
  assert len(res["setup"]) == len(set(res["setup"])) == 4 and len(res["rows"]) == 8
  cells = {(s["names"], s["induction"]): s["episodes"] for s in res["summary"]}
  assert cells == {(n, i): 2 for n in ("real", "nonsense") for i in (False, True)}
  nonsense = [r for r in res["rows"] if r["names"] == "nonsense"]
  assert all(set(r["labels"]).isdisjoint(LABELS) for r in nonsense)
  induced = [r for r in res["rows"] if r["induction"]]
  assert all(r["queries"][0]["prompt"].startswith(configs[1].template.instruction.split("{")[0]) for r in induced)


class BatchRecordingLM(FunctionLM):
  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.batches = []

  def score_many(self, requests):
    self.batches.append(len(requests))
    return super().score_many(requests)


def test_the_sweep_scores_jobs_in_batches_with_the_rows_of_one_at_a_time(tiny_tok, src, wtok, monkeypatch,
                                                                         tmp_path):
  """The LM answers `_BATCH` jobs' queries in one score_many call; rows, their order and the file are those of
  one job at a time."""
  config = FewShotConfig(ways=(2,), shots=(1, 2), layers=(1, 2), episodes=5, nested=True)
  runs, big = {}, fewshot._BATCH
  assert 1 < big < 20
  for batch in (big, 1):
    monkeypatch.setattr(fewshot, "_BATCH", batch)
    lm = BatchRecordingLM(wtok, copy_label_model(wtok, tiny_tok.vocabulary.llm_ids))
    out = tmp_path / f"b{batch}.jsonl"
    res = fewshot.evaluate_fewshot(config, tiny_tok, lm, source=src, progress=False, out=out)
    written = [json.loads(line) for line in out.read_text().splitlines()]
    assert written == res["rows"] and len(written) == 5 * 2 * 2
    runs[batch] = (lm.batches, res["rows"])
  assert runs[1][0] == [1] * 20 and runs[big][0] == [big] * (20 // big) + [20 % big] * (20 % big > 0)
  assert runs[big][1] == runs[1][1]

def _args(argv):
  p = argparse.ArgumentParser()
  _fewshot_cli.add_fewshot_args(p)
  args = p.parse_args(["--tokenizer", "tiny", "--out", "x.jsonl", *argv])
  _fewshot_cli._resolve(args)
  return args


def test_sweep_standard_fills_the_grid_and_explicit_options_override_it():
  a = _args(["--sweep", "standard"])
  assert (a.ways, a.shots, a.layers, a.names, a.induction, a.episodes, a.nested_shots) == \
      ([2, 5], [1, 3, 5], [1, 2, 3], ["real", "nonsense"], ["off", "on"], 100, True)
  assert len(_fewshot_cli._configs(a)) == 4
  b = _args(["--sweep", "standard", "--ways", "5", "--episodes", "7", "--induction", "off"])
  assert (b.ways, b.episodes, b.induction, b.shots) == ([5], 7, ["off"], [1, 3, 5])
  plain = _args([])
  assert (plain.ways, plain.shots, plain.names, plain.induction, plain.episodes, plain.nested_shots) == \
      ([5], [1], ["real"], ["off"], 100, False)
  assert _args(["--induction"]).induction == ["on"]  # the bare flag, as before
  assert _args(["--episodes", "all"]).episodes is None
  with pytest.raises(Exception, match="--sweep"):
    _args(["--sweep", "standard", "--frozen-table"])


def test_cli_sweep_writes_one_file_and_resumes(tmp_path, tiny_tok, src, monkeypatch, capsys):
  monkeypatch.setattr(_cli, "load_tokenizer", lambda spec: tiny_tok)
  monkeypatch.setattr(_cli, "load_source", lambda data, classes: src)
  argv = ["--tokenizer", "tiny", "--lm", "none", "--data", "blobs", "--sweep", "standard", "--ways", "2",
          "--shots", "1", "2", "--layers", "1", "--episodes", "2", "--out", str(tmp_path / "s.jsonl"),
          "--no-progress", "--save-episodes", str(tmp_path / "eps.jsonl")]
  p = argparse.ArgumentParser()
  _fewshot_cli.add_fewshot_args(p)
  assert _fewshot_cli.run_fewshot(p.parse_args(argv)) == 0
  rows = [json.loads(l) for l in (tmp_path / "s.jsonl").read_text().splitlines()]
  assert len(rows) == 2 * 2 * 2 * 2  # shots x episodes x names x induction
  assert {r["episode"] for r in rows} == {"2w1s-n0", "2w1s-n1", "2w2s-n0", "2w2s-n1"}
  saved = read_episodes(tmp_path / "eps.jsonl")  # per names: shots x episodes, ids unique
  assert len(saved) == 2 * 2 * 2 and {e.id for e in saved} >= {"2w1s-n0-real", "2w1s-n0-nonsense"}
  capsys.readouterr()
  assert _fewshot_cli.run_fewshot(p.parse_args(argv)) == 0
  assert "resumed: 16" in capsys.readouterr().out
  assert len((tmp_path / "s.jsonl").read_text().splitlines()) == 16
  # replayed episodes fix their own labels: two names settings would run the same prompts twice
  with pytest.raises(Exception, match="--names"):
    _fewshot_cli.run_fewshot(p.parse_args(argv[:-2] + ["--episodes-file", str(tmp_path / "eps.jsonl")]))
