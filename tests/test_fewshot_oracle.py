"""The oracle row of `spae fewshot`: the same LM, episodes and template with the images' attribute words."""

import argparse
import dataclasses
import json

import numpy as np
import pytest

import spae
from spae.data import SceneSource
from spae.prompting import FewShotConfig, evaluate_fewshot, fewshot, format_table
from spae.prompting import _cli, _fewshot_cli, _tokencache
from spae.prompting._scene_tasks import COUNT_WORDS, REGIONS, oracle_words
from spae.prompting.testing import FunctionLM, WordTokenizer, _segments

CLASSES = ["blue hexagon", "cyan diamond", "pink star", "orange arrow"]  # 8-10 scenes each in the first 600


@pytest.fixture(scope="module")
def scenes():
  return SceneSource(600, 32, split="test").subset(CLASSES)


@pytest.fixture(scope="module")
def wtok(tiny_tok):
  extra = [w for c in CLASSES for w in c.split()] + ["small", "medium", "large", "light", "dark", *COUNT_WORDS,
                                                      *(w for r in REGIONS for w in r.split())]
  return WordTokenizer(tiny_tok.vocabulary.words(np.arange(len(tiny_tok.vocabulary))), extra)


def attribute_reader(tok, labels, bonus=20.0):
  """Answers with the first label whose words all appear in the query's input (else the first label)."""
  inp, outp, nl = tok.index["Input:"], tok.index["Output:"], tok.newline_id
  label_ids = [tok.encode(" " + l) for l in labels]

  def fn(ids):
    out = np.zeros(tok.vocab_size, np.float32)
    starts = [i for i, t in enumerate(ids) if t == inp]
    if not starts:
      return out
    query = ids[starts[-1] + 1:]
    if outp not in query:
      return out
    cut = query.index(outp)
    seen, written = set(query[:cut]), query[cut + 1:]
    target = next((l for l in label_ids if set(l) <= seen), label_ids[0]) + [nl]
    out[target[len(written)] if len(written) < len(target) else nl] += bonus
    return out

  return fn


def test_oracle_rows_read_the_attribute_words_of_the_same_episodes(tiny_tok, scenes, wtok, monkeypatch):
  lm = FunctionLM(wtok, attribute_reader(wtok, CLASSES))
  loaded = []
  orig = _tokencache.load_image_from
  monkeypatch.setattr(_tokencache, "load_image_from", lambda src, k: loaded.append(k) or orig(src, k))
  config = FewShotConfig(ways=(2,), shots=(1, 2), layers=(1, 2), repeats=(1, 2), episodes=3, oracle=True)
  res = evaluate_fewshot(config, tiny_tok, lm, source=scenes, progress=False)
  token_rows = [r for r in res["rows"] if r["layers"] is not None]
  oracle_rows = [r for r in res["rows"] if r["layers"] is None]
  assert len(token_rows) == 2 * 2 * 2 * 3 and len(oracle_rows) == 2 * 2 * 3  # the oracle does not use layers
  # Every image is encoded once for the whole sweep (layers, shots, repeats), plus the setup's probe image.
  assert len(loaded) == len(set(loaded))
  assert set(loaded) == {k for r in token_rows for k in _episode_keys(r, scenes)} | {loaded[0]}
  for row in oracle_rows:
    twin = next(r for r in token_rows if r["episode"] == row["episode"] and r["repeats"] == row["repeats"])
    q, tq = row["queries"][0], twin["queries"][0]
    assert q["truth"] == tq["truth"] and q["oracle_correct"] == 1
    # the same template with words in place of tokens: one "Input: <words> Output: <label>" line per example
    lines = q["prompt"].split("\n")
    assert len(lines) == len(tq["prompt"].split("\n")) and lines[-1].startswith("Input: ")
    assert all(l.split(" Output:")[0][len("Input: "):] in _all_oracle_words(scenes) for l in lines if l)
  summary = {(s["shots"], s["repeats"], s["layers"], s["method"]): s for s in res["summary"]}
  for shots in (1, 2):
    for rep in (1, 2):
      o = summary[(shots, rep, None, "oracle")]
      assert o["accuracy"] == 1.0 and o["episodes"] == 3
      for layers in (1, 2):
        lm_entry = summary[(shots, rep, layers, "lm")]
        assert lm_entry["vs_oracle"] == pytest.approx(lm_entry["accuracy"])
  table = format_table(res["summary"])
  assert " real  words   oracle  1.000" in table and "/oracle" in table


def _episode_keys(row, scenes):
  """The image keys of a row's episode (sampled again: episode i depends only on the seed and its cell)."""
  eps = spae.prompting.sample_episodes(scenes, row["ways"], row["shots"], 3, seed=0)
  return set(next(e for e in eps if e.id == row["episode"]).image_keys())


def _all_oracle_words(scenes):
  return {oracle_words(scenes.base.attributes(int(i))) for i in scenes.indices}


def test_resume_reruns_only_new_cells(tiny_tok, scenes, wtok, tmp_path):
  lm = FunctionLM(wtok, attribute_reader(wtok, CLASSES))
  out = tmp_path / "o.jsonl"
  config = FewShotConfig(ways=(2,), shots=(1,), layers=(1,), episodes=2, oracle=True)
  evaluate_fewshot(config, tiny_tok, lm, source=scenes, out=out, progress=False)
  assert lm.calls == 4  # 2 token rows and 2 oracle rows
  lm.calls = 0
  res = evaluate_fewshot(dataclasses.replace(config, layers=(1, 2)), tiny_tok, lm, source=scenes, out=out,
                         progress=False)
  assert lm.calls == 2 and res["resumed"] == 4  # only the new layer's rows
  assert len(out.read_text().splitlines()) == 6


def test_oracle_needs_an_lm_and_scene_attributes(tiny_tok, scenes, wtok, tmp_path):
  with pytest.raises(spae.SpaeInputError, match="pass --lm"):
    evaluate_fewshot(FewShotConfig(ways=(2,), oracle=True), tiny_tok, None, source=scenes, progress=False)
  arrays = spae.data.ArraySource(np.zeros((8, 32, 32, 3), np.uint8), [0, 1] * 4, ["a", "b"], name="arrays")
  lm = FunctionLM(wtok, attribute_reader(wtok, CLASSES))
  with pytest.raises(spae.SpaeInputError, match="the oracle needs images whose attributes are known .* 'arrays'"):
    evaluate_fewshot(FewShotConfig(ways=(2,), oracle=True, episodes=1), tiny_tok, lm, source=arrays, progress=False)


def test_cli_oracle_on_scene_classes(tiny_tok, wtok, tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(_cli, "load_tokenizer", lambda spec: tiny_tok)
  monkeypatch.setattr(_cli, "load_lm", lambda spec, **kw: FunctionLM(wtok, attribute_reader(wtok, CLASSES)))
  p = argparse.ArgumentParser()
  _fewshot_cli.add_fewshot_args(p)
  args = p.parse_args(["--tokenizer", "tiny", "--lm", "fake", "--data", "scenes:test:600", "--classes",
                       ",".join(CLASSES), "--ways", "2", "--episodes", "2", "--oracle", "--no-progress",
                       "--out", str(tmp_path / "o.jsonl")])
  assert _fewshot_cli.run_fewshot(args) == 0
  assert " words   oracle  1.000" in capsys.readouterr().out
  summary = json.loads((tmp_path / "o.summary.json").read_text())
  assert summary["config"]["oracle"] is True
  assert {s["method"] for s in summary["summary"]} == {"lm", "oracle", "jaccard", "ridge"}
  assert _cli.parse_classes("scenes-heldout") == list(spae.data.SCENE_HELDOUT_CLASSES)


def recency_biased_reader(tok, words, match=4.0, bias=8.0):
  """Continues the label of the support example whose input shares most words with the query's (+`match`), but
  favours the last support example's label more (+`bias`): a prior over the labels that the prompt alone sets,
  as small LMs have. A query without any of `words` (a content-free input) gets the bias alone."""
  known = {tok.index[w] for w in words if w in tok.index}

  def fn(ids):
    out = np.zeros(tok.vocab_size, np.float32)
    pairs = _segments(ids, tok)
    if len(pairs) < 2:
      return out
    *support, (q_in, q_out) = pairs
    q = {t for t in q_in if t in known}
    if q_out:  # inside an answer: every label continues alike, so only the first token decides
      cand = next((o for _, o in support if o[:len(q_out)] == q_out and len(o) > len(q_out)), None)
      out[cand[len(q_out)] if cand else tok.newline_id] += 20.0
      return out
    out[support[-1][1][0]] += bias
    if q:
      best = max(support, key=lambda s: len(q & set(s[0])) / len(q | set(s[0])))
      out[best[1][0]] += match
    return out

  return fn


def test_calibration_removes_the_prior_the_prompt_alone_sets(tiny_tok, scenes, wtok, tmp_path):
  words = [w for c in CLASSES for w in c.split()]
  lm = FunctionLM(wtok, recency_biased_reader(wtok, words))
  base = FewShotConfig(ways=(2,), shots=(1,), layers=(1,), episodes=12, oracle=True, probes=False,
                       template=fewshot.PromptTemplate(example="Input: {tokens}\nOutput: {label}\n"))
  raw = evaluate_fewshot(base, tiny_tok, lm, source=scenes, progress=False)
  cal = evaluate_fewshot(dataclasses.replace(base, calibrate=("N/A",)), tiny_tok, lm, source=scenes, progress=False)
  acc = lambda res, m: next(s["accuracy"] for s in res["summary"] if s["method"] == m)
  # the prompt ends "...Output: <last support label>\nInput: <query words>\nOutput:"
  last_label = np.mean([q["truth"] == q["prompt"].split("\n")[-3].removeprefix("Output: ")
                        for r in raw["rows"] if r["layers"] is None for q in r["queries"]])
  # Uncalibrated, the reader answers the last support label whatever the query; calibrated, the attribute words.
  assert acc(raw, "oracle") == pytest.approx(last_label) and last_label < 0.9
  assert acc(cal, "oracle") == 1.0 and acc(cal, "oracle_raw") == acc(raw, "oracle")
  assert acc(cal, "lm_raw") == acc(raw, "lm")
  assert raw["setup"] != cal["setup"]  # a results file never mixes them
  # Scoring every sequence from scratch (no prefix cache, no batching) gives the same answers.
  cal2 = evaluate_fewshot(dataclasses.replace(base, calibrate=("N/A",), prefix_cache=False), tiny_tok, lm,
                          source=scenes, progress=False)
  assert [s["accuracy"] for s in cal2["summary"]] == [s["accuracy"] for s in cal["summary"]]
  row = next(r for r in cal["rows"] if r["layers"] is None)["queries"][0]
  assert len(row["content_free_scores"]) == 1 and len(row["content_free_scores"][0]) == 2
  entry = next(s for s in cal["summary"] if s["method"] == "lm_raw")
  assert entry["vs_oracle"] == pytest.approx(entry["accuracy"] / acc(cal, "oracle_raw"))
  with pytest.raises(spae.SpaeInputError, match="calibration"):
    dataclasses.replace(base, calibrate=("N/A",), mode="generate").validate()
  with pytest.raises(spae.SpaeInputError, match="pass --lm"):
    evaluate_fewshot(dataclasses.replace(base, calibrate=("N/A",), oracle=False, probes=True), tiny_tok, None,
                     source=scenes, progress=False)


def test_calibrated_scores_divide_by_the_content_free_probabilities():
  scores = np.log([0.6, 0.3, 0.1])
  assert np.argmax(fewshot.calibrated_scores(scores, [np.zeros(3)])) == 0  # a flat prior changes nothing
  c = fewshot.calibrated_scores(scores, [np.log([0.8, 0.1, 0.1]), np.log([0.4, 0.3, 0.3])])  # mean p_cf .6 .2 .2
  np.testing.assert_allclose(c, np.log([0.6, 0.3, 0.1]) - np.log([0.6, 0.2, 0.2]), atol=1e-12)
  assert np.argmax(c) == 1
  np.testing.assert_allclose(fewshot.calibrated_scores(scores + 5.0, [np.log([0.6, 0.2, 0.2]) - 3.0]), c, atol=1e-12)


def test_cli_calibrate_defaults_to_n_a(tiny_tok, wtok, tmp_path, monkeypatch):

  p = argparse.ArgumentParser()
  _fewshot_cli.add_fewshot_args(p)
  base = ["--tokenizer", "tiny", "--data", "scenes:test:600", "--out", str(tmp_path / "o.jsonl")]
  for extra, want in (([], ()), (["--calibrate"], ("N/A",)), (["--calibrate", "", "[MASK]"], ("", "[MASK]"))):
    args = p.parse_args(base + extra)
    _fewshot_cli._resolve(args)
    assert _fewshot_cli._configs(args)[0].calibrate == want
