"""Few-shot prompting: episodes, prompts, probes, scoring/generation agreement, resume, CLI."""

import argparse
import json

import numpy as np
import pytest

import spae
from spae.prompting import (Episode, FewShotConfig, PromptTemplate, TokenMap, confidence_interval, evaluate_fewshot,
                            jaccard, jaccard_probe, read_episodes, ridge_probe, sample_episodes, write_episodes)
from spae.prompting import _fewshot_cli, fewshot
from spae.prompting import _cli
from spae.prompting.testing import FunctionLM, WordTokenizer, copy_label_model, prefer_model


class BlobSource:
  """Classes are colours; each image is its class colour plus noise, so tokens carry class information."""

  def __init__(self, n_classes=6, per_class=6, seed=0, names=None):
    rng = np.random.default_rng(seed)
    self.classes = list(names or [f"class{i}" for i in range(n_classes)])
    self.images = {}
    for c in self.classes:
      base = rng.random(3)
      for j in range(per_class):
        self.images[f"{c}/{j}"] = np.clip(base + rng.normal(0, 0.15, (32, 32, 3)), 0, 1).astype(np.float32)

  def images_of(self, name):
    return [k for k in self.images if k.rsplit("/", 1)[0] == name]

  def load(self, key):
    return self.images[key]


LABELS = ["cat", "dog", "zebra", "zebrafish", "red circle", "blue star"]


@pytest.fixture(scope="module")
def src():
  return BlobSource(names=LABELS)


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory):
  from spae.lm import testing as lmt
  return lmt.tiny_lm(tmp_path_factory.mktemp("lm"))


@pytest.fixture(scope="module")
def wtok(tiny_tok):
  return WordTokenizer(tiny_tok.vocabulary.words(np.arange(len(tiny_tok.vocabulary))))


# ------------------------------------------------------------------------------------ episodes
def test_sampler_is_deterministic_and_disjoint(src):
  a = sample_episodes(src, 3, 2, 8, seed=1)
  b = sample_episodes(src, 3, 2, 8, seed=1)
  assert [e.to_json() for e in a] == [e.to_json() for e in b]
  # episode i does not depend on how many are drawn, and another seed gives other episodes
  assert [e.to_json() for e in sample_episodes(src, 3, 2, 3, seed=1)] == [e.to_json() for e in a[:3]]
  assert [e.to_json() for e in sample_episodes(src, 3, 2, 8, seed=2)] != [e.to_json() for e in a]
  for e in a:
    sup = {k for _, k in e.support}
    qry = {k for _, k in e.query}
    assert not sup & qry and len(sup) == 6
    assert all(sum(c == k for c, _ in e.support) == 2 for k in range(3))
    for c, k in list(e.support) + list(e.query):
      assert k in src.images_of(e.classes[c])  # every image belongs to the class it is labelled with
  nonsense = sample_episodes(src, 3, 1, 2, seed=1, names="nonsense")
  assert all(set(e.labels).isdisjoint(LABELS) and len(set(e.labels)) == 3 for e in nonsense)


def test_sampler_errors_name_the_class(src):
  small = BlobSource(names=["a", "b", "thin"], per_class=3)
  small.images = {k: v for k, v in small.images.items() if k != "thin/2" and k != "thin/1"}
  with pytest.raises(spae.SpaeInputError, match="'thin' has 1 images"):
    sample_episodes(small, 2, 1, 1)
  with pytest.raises(spae.SpaeInputError, match="3 classes .* need at least 5"):
    sample_episodes(BlobSource(3), 5, 1, 1)
  with pytest.raises(spae.SpaeInputError, match="class 'class0' has 6 images but 6-shot"):
    sample_episodes(BlobSource(3), 2, 6, 1)


def test_episode_files_round_trip(tmp_path, src):
  eps = sample_episodes(src, 2, 1, 4, seed=3, names="nonsense")
  write_episodes(tmp_path / "e.jsonl", eps)
  back = read_episodes(tmp_path / "e.jsonl")
  assert [e.to_json() for e in back] == [e.to_json() for e in eps]
  (tmp_path / "e.csv").write_text("episode,role,class,image\n1,support,cat,cat/0\n1,support,dog,dog/1\n"
                                  "1,query,dog,dog/2\n")
  (e,) = read_episodes(tmp_path / "e.csv")
  assert e.classes == ("cat", "dog") and e.support == ((0, "cat/0"), (1, "dog/1")) and e.query == ((1, "dog/2"),)
  (tmp_path / "bad.jsonl").write_text('{"id": 1, "classes": ["a"], "support": [["b", 0]], "query": [["a", 1]]}\n')
  with pytest.raises(spae.SpaeInputError, match="unknown class"):
    read_episodes(tmp_path / "bad.jsonl")


# ------------------------------------------------------------------------------------ probes and statistics
def test_probes():
  assert jaccard([1, 2, 3], [2, 3, 4]) == pytest.approx(0.5)
  assert jaccard_probe([[1, 2], [3, 4], [3, 4, 5]], [0, 1, 2], [3, 4, 9]) == 1  # tie -> earliest
  support = [[1, 1, 2], [7, 8, 8], [1, 2, 2], [8, 9]]
  classes = [0, 1, 0, 1]
  assert ridge_probe(support, classes, [[2, 1, 5], [9, 8]], 2).tolist() == [0, 1]
  # restricting features to the support's tokens is exact: compare with the full-vocabulary primal solution
  rng = np.random.default_rng(0)
  sup = [list(rng.integers(0, 30, 6)) for _ in range(6)]
  qry = [list(rng.integers(0, 30, 6)) for _ in range(5)]
  cls = [0, 1, 2, 0, 1, 2]
  from spae.prompting import bag_of_tokens
  cols = np.arange(30)
  xs = bag_of_tokens(sup, cols)
  xq = bag_of_tokens(qry, cols)
  # L2 normalisation uses each image's own counts, including tokens outside the support set
  xs = np.concatenate([xs, np.ones((6, 1))], 1)
  xq = np.concatenate([xq, np.ones((5, 1))], 1)
  y = -np.ones((6, 3))
  y[np.arange(6), cls] = 1
  w = np.linalg.solve(xs.T @ xs + 0.1 * np.eye(31), xs.T @ y)
  assert ridge_probe(sup, cls, qry, 3).tolist() == np.argmax(xq @ w, 1).tolist()


def test_confidence_interval():
  lo, hi = confidence_interval([1] * 50 + [0] * 50)
  assert (lo, hi) == pytest.approx((0.4038, 0.5962), abs=1e-3)  # Wilson interval
  lo, hi = confidence_interval([1.0] * 10)
  assert hi == 1.0 and 0.6 < lo < 0.75
  lo, hi = confidence_interval([0.5, 0.75, 0.25, 0.5])
  assert lo < 0.5 < hi
  # Unbounded values (dB): mean ± 1.96 standard errors, not clipped to [0, 1]; the bounded one clips the same interval.
  from spae.prompting._stats import normal_interval

  v = [-0.4, 0.3, 0.1, -0.2]
  half = 1.96 * np.std(v, ddof=1) / 2
  assert normal_interval(v) == pytest.approx((-0.05 - half, -0.05 + half))
  assert confidence_interval(v) == pytest.approx((0.0, -0.05 + half))
  assert normal_interval([2.0]) == (-np.inf, np.inf)


# ------------------------------------------------------------------------------------ prompts
def test_prompt_ids_splice_llm_ids_and_templates(tiny_tok, src, wtok):
  tmap = TokenMap(tiny_tok.vocabulary, wtok)
  assert tmap.mode == "ids"
  ep = sample_episodes(src, 2, 1, 1, seed=0)[0]
  cache = fewshot.TokenCache(tiny_tok, src)
  cfg = FewShotConfig(induction=True, template=PromptTemplate(example="Input: {tokens} | {label}\n"))
  labels = fewshot.LabelIds.of(tmap, ep.labels, cfg.template)
  segs = fewshot.build_prompt(ep, ep.support, ep.query[0][1], cache.episode(ep, 2), labels, cfg)
  ids, text = spae.prompting.render(segs, tmap).ids, spae.prompting.render(segs, tmap).text
  assert text.startswith(f"For each of the following input output pairs, output is one of [{', '.join(ep.labels)}].")
  assert text.count("Input:") == 3 and text.endswith("|")
  # image tokens reach the LM as the vocabulary's llm ids, exactly in reading order
  q = cache.ids(ep.query[0][1], 2)
  assert len(q) == 5
  llm = [int(i) for i in tiny_tok.vocabulary.llm_ids[q]]
  bar = wtok.index["|"]
  assert ids[-len(llm) - 1:] == llm + [bar]
  assert ids[0] == wtok.bos_id
  with pytest.raises(spae.SpaeInputError, match="before"):
    PromptTemplate(example="{label}: {tokens}\n").validate()


def test_token_cache_encodes_only_as_deep_as_asked(tiny_tok, src, monkeypatch):
  ep = sample_episodes(src, 2, 1, 1, seed=0)[0]
  keys = ep.image_keys()
  asked = []
  orig = type(tiny_tok).encode
  monkeypatch.setattr(type(tiny_tok), "encode",
                      lambda self, x, layers=None: asked.append(layers) or orig(self, x, layers))
  cache = fewshot.TokenCache(tiny_tok, src)
  cache.encode_all(keys, progress=False, layers=2)
  assert asked == [2] and all(cache._pyr[k].num_layers == 2 for k in keys)
  two = cache.ids(keys[0], 2)
  assert asked == [2]  # already deep enough: nothing re-encoded
  three = cache.ids(keys[0], 3)  # deeper: re-encoded, and the first layers agree
  assert asked == [2, 3] and three[:5] == two and len(three) == 21
  assert cache.all_ids(keys[1]) == [int(t) for t in tiny_tok.encode(
      tiny_tok.preprocess(spae.prompting._episodes.load_image_from(src, keys[1]))[0]).codebook_ids()[0]]


def test_text_token_mode_when_vocabularies_differ(tiny_tok, src):
  words = tiny_tok.vocabulary.words(np.arange(len(tiny_tok.vocabulary)))
  other = WordTokenizer(list(reversed(words)))  # same words, other ids: not a shared vocabulary
  tmap = TokenMap(tiny_tok.vocabulary, other)
  assert tmap.mode == "text"
  assert tmap.encode_tokens([0, 1]) == other.encode(f"{words[0]} {words[1]}")
  with pytest.raises(spae.SpaeInputError, match="do not share"):
    TokenMap(tiny_tok.vocabulary, WordTokenizer(words[:10]), "ids")


# ------------------------------------------------------------------------------------ LM decisions
@pytest.mark.parametrize("wanted", ["zebra", "zebrafish", "red circle"])
def test_score_and_generate_agree_when_lm_prefers_a_label(tiny_tok, src, wtok, wanted):
  """Labels the tokenizer splits into characters, one a token-prefix of another, still decide correctly."""
  assert len(wtok.encode("zebrafish")) == 9  # not a word of the LM: split into characters
  lm = FunctionLM(wtok, prefer_model(wtok.vocab_size, wtok.encode(wanted) + [wtok.newline_id]))
  ep = Episode("e", ("zebra", "zebrafish", "red circle"), ("zebra", "zebrafish", "red circle"),
               ((0, "zebra/0"), (1, "zebrafish/0"), (2, "red circle/0")), ((1, "zebrafish/1"),))
  preds = {}
  for mode, constrained in (("score", True), ("generate", True), ("generate", False)):
    res = evaluate_fewshot(FewShotConfig(mode=mode, constrained=constrained), tiny_tok, lm, source=src,
                           episodes=[ep], progress=False)
    q = res["rows"][0]["queries"][0]
    preds[(mode, constrained)] = q["prediction"]
    assert q["lm_correct"] == int(wanted == "zebrafish")
  assert {spae.prompting.normalize_label(p) for p in preds.values()} == {wanted}


@pytest.mark.parametrize("written, correct", [("zebrafish ,", 1), ("[ zebrafish ]", 1), ("giraffe", 0)])
def test_free_generation_matches_a_label_after_normalising_the_text(tiny_tok, src, wtok, written, correct):
  """Free (unconstrained) generation that writes a label inside punctuation still answers that label
  (`normalize_label`); text that is no label is a miss, kept as written."""
  lm = FunctionLM(wtok, prefer_model(wtok.vocab_size, wtok.encode(written) + [wtok.newline_id]))
  ep = Episode("e", ("zebra", "zebrafish", "red circle"), ("zebra", "zebrafish", "red circle"),
               ((0, "zebra/0"), (1, "zebrafish/0"), (2, "red circle/0")), ((1, "zebrafish/1"),))
  res = evaluate_fewshot(FewShotConfig(mode="generate", constrained=False), tiny_tok, lm, source=src, episodes=[ep],
                         progress=False)
  q = res["rows"][0]["queries"][0]
  assert q["lm_correct"] == correct and q["prediction"].strip() == written


def test_copy_lm_reaches_the_jaccard_probe_accuracy(tiny_tok, src, wtok):
  lm = FunctionLM(wtok, copy_label_model(wtok, tiny_tok.vocabulary.llm_ids))
  for mode in ("score", "generate"):
    res = evaluate_fewshot(FewShotConfig(ways=(3,), shots=(1, 2), layers=(1, 2), episodes=4, mode=mode,
                                         induction=True), tiny_tok, lm, source=src, progress=False)
    for row in res["rows"]:
      q = row["queries"][0]
      assert spae.prompting.normalize_label(q["prediction"]) == q["jaccard"]
    by = {(s["shots"], s["layers"], s["method"]): s["accuracy"] for s in res["summary"]}
    assert all(by[(k, l, "lm")] == by[(k, l, "jaccard")] for k in (1, 2) for l in (1, 2))
  # the probes see the classes in the tokens: well above chance (1/3) on these colour classes
  assert by[(2, 2, "ridge")] > 0.5


def test_prefix_cache_gives_the_same_scores(tiny_tok, src, tiny_gemma):
  lm = tiny_gemma
  eps = sample_episodes(src, 2, 1, 1, seed=5)
  rows = {}
  for cache in (True, False):
    res = evaluate_fewshot(FewShotConfig(prefix_cache=cache, token_mode="ids", probes=False), tiny_tok, lm,
                           source=src, episodes=eps, progress=False)
    rows[cache] = [q["scores"] for r in res["rows"] for q in r["queries"]]
  np.testing.assert_allclose(rows[True], rows[False], rtol=1e-4, atol=1e-4)


def test_prompt_longer_than_the_lm_context_is_an_error(tiny_tok, src, wtok):
  lm = FunctionLM(wtok, prefer_model(wtok.vocab_size, [0]), max_length=20)
  with pytest.raises(spae.SpaeInputError, match="max_length 20"):
    evaluate_fewshot(FewShotConfig(ways=(2,), episodes=1), tiny_tok, lm, source=src, progress=False)


# ------------------------------------------------------------------------------------ resume and CLI
def test_resume_skips_finished_episodes_and_repairs_a_torn_line(tmp_path, tiny_tok, src, wtok):
  out = tmp_path / "r.jsonl"
  lm = FunctionLM(wtok, copy_label_model(wtok, tiny_tok.vocabulary.llm_ids))
  cfg = FewShotConfig(ways=(2,), episodes=3)
  first = evaluate_fewshot(cfg, tiny_tok, lm, source=src, out=out, progress=False)
  assert lm.calls == 3 and len(out.read_text().splitlines()) == 3
  with open(out, "a") as f:
    f.write('{"key": "torn", "queries": [')  # a crash in the middle of a write
  lm.calls = 0
  second = evaluate_fewshot(dataclasses_replace(cfg, episodes=5), tiny_tok, lm, source=src, out=out, progress=False)
  assert lm.calls == 2 and second["resumed"] == 3
  lines = out.read_text().splitlines()
  assert len(lines) == 5 and len({json.loads(l)["key"] for l in lines}) == 5
  assert [r["queries"] for r in second["rows"][:3]] == [r["queries"] for r in first["rows"]]
  # another setting (here: the mode) is a different setup and is not skipped
  lm.calls = 0
  evaluate_fewshot(dataclasses_replace(cfg, mode="generate"), tiny_tok, lm, source=src, out=out, progress=False)
  assert lm.calls == 3


def dataclasses_replace(cfg, **kw):
  import dataclasses
  return dataclasses.replace(cfg, **kw)


def _write_folder(root, src, classes):
  for c in classes:
    for k in src.images_of(c):
      p = root / c / (k.rsplit("/", 1)[1] + ".png")
      spae.save_image(p, src.load(k))


def test_cli_probes_only_on_an_image_folder_and_episode_file(tmp_path, tiny_tok, src, monkeypatch, capsys):
  monkeypatch.setattr(_cli, "load_tokenizer", lambda spec: tiny_tok)  # the session's compiled tokenizer
  _write_folder(tmp_path / "imgs", src, ["cat", "dog", "zebra"])
  p = argparse.ArgumentParser()
  _fewshot_cli.add_fewshot_args(p)
  args = p.parse_args(["--tokenizer", "tiny", "--lm", "none", "--data", str(tmp_path / "imgs"), "--ways", "2",
                       "--shots", "1", "2", "--episodes", "3", "--out", str(tmp_path / "o.jsonl"), "--no-progress",
                       "--save-episodes", str(tmp_path / "eps.jsonl")])
  assert _fewshot_cli.run_fewshot(args) == 0
  printed = capsys.readouterr().out
  assert "jaccard" in printed and "ridge" in printed
  summary = json.loads((tmp_path / "o.summary.json").read_text())
  assert {(s["shots"], s["method"]) for s in summary["summary"]} == {(1, "jaccard"), (1, "ridge"), (2, "jaccard"),
                                                                     (2, "ridge")}
  assert all(s["episodes"] == 3 for s in summary["summary"])
  assert len(read_episodes(tmp_path / "eps.jsonl")) == 6
  # replay an episode file whose images are paths relative to it, without --data
  (tmp_path / "files.jsonl").write_text(json.dumps(
      {"id": "x", "classes": ["cat", "dog"], "support": [["cat", "imgs/cat/0.png"], ["dog", "imgs/dog/0.png"]],
       "query": [["dog", "imgs/dog/3.png"]]}) + "\n")
  args = p.parse_args(["--tokenizer", "tiny", "--episodes-file", str(tmp_path / "files.jsonl"),
                       "--out", str(tmp_path / "f.jsonl"), "--no-progress", "--layers", "1", "2", "3"])
  assert _fewshot_cli.run_fewshot(args) == 0
  rows = [json.loads(l) for l in (tmp_path / "f.jsonl").read_text().splitlines()]
  assert [r["layers"] for r in rows] == [1, 2, 3] and rows[0]["queries"][0]["truth"] == "dog"
  with pytest.raises(spae.SpaeInputError, match="--data"):
    _fewshot_cli.run_fewshot(p.parse_args(["--tokenizer", "tiny", "--out", str(tmp_path / "z.jsonl")]))


def test_an_episode_asks_for_each_image_tokens_once(tiny_tok, src, wtok, monkeypatch):
  """Probes, prompts and every query of an episode share one lookup per image (per layers setting)."""
  asked = []
  orig = fewshot.TokenCache.ids
  monkeypatch.setattr(fewshot.TokenCache, "ids", lambda self, key, layers: asked.append((key, layers))
                      or orig(self, key, layers))
  lm = FunctionLM(wtok, copy_label_model(wtok, tiny_tok.vocabulary.llm_ids))
  eps = sample_episodes(src, 3, 2, 2, seed=4, queries=2)
  evaluate_fewshot(FewShotConfig(layers=(1, 2)), tiny_tok, lm, source=src, episodes=eps, progress=False)
  want = [(k, layers) for layers in (1, 2) for e in eps for k in e.image_keys()]
  assert sorted(asked, key=str) == sorted(want, key=str)
