"""Frozen's mini-ImageNet files as published: the reader, the prompt layout, bad folders, the table command."""

import argparse
import json

import numpy as np
import pytest
from PIL import Image

import spae
from spae.prompting import (FROZEN_TABLE, FewShotConfig, evaluate_fewshot, fewshot, read_episodes, read_frozen,
                            split_caption)
from spae.prompting import _cli, _fewshot_cli
from spae.prompting.testing import FunctionLM, WordTokenizer

QUESTION = "Q: What is this? A: This is a"
NONSENSE = ("dax", "blicket", "slation")
REAL = ("eagle", "golden retriever", "ant")
WORDS = ("This", "is", "a", "an", "Q:", "What", "this?", "A:", "Answer", "with", "or", "dax.", "blicket.", "slation.",
         "eagle.", "golden", "retriever.", "ant.", "blicket,")


def write_frozen(root, task, shots, ways, questions, names, write_json=True, seed=0):
  """A folder in the published layout: tiny JPEGs (one colour per name, plus noise) and the questions JSON.
  Returns the JSON's entries."""
  root.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng([seed, shots, ways])
  colour = {n: np.random.default_rng(sum(map(ord, n))).integers(0, 256, 3) for n in names}

  def jpeg(name, label):
    img = np.clip(colour[label] + rng.normal(0, 12, (24, 24, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(img).save(root / name, quality=90)

  entries = []
  for x in range(1, questions + 1):
    labels = [names[(x + j) % len(names)] for j in range(ways)]
    support = [labels[j] for j in rng.permutation(np.repeat(np.arange(ways), shots))]
    entry = {"question_id": x}
    stem = f"{task}_shots_{shots}_ways_{ways}_id_{x}"
    for i, lab in enumerate(support, 1):
      entry[f"image_{i}"] = f"{stem}_image_{i}.jpg"
      entry[f"caption_{i}"] = f"This is {'an' if lab[0] in 'aeiou' else 'a'} {lab}."
      jpeg(entry[f"image_{i}"], lab)
    answer = labels[x % ways]
    entry.update(question_image=f"{stem}_question.jpg", question=QUESTION, answer=answer)
    jpeg(entry["question_image"], answer)
    entries.append(entry)
  if write_json:
    (root / f"{task}_shots_{shots}_ways_{ways}_all_questions.json").write_text(json.dumps(entries))
  return entries


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
  root = tmp_path_factory.mktemp("frozen")
  for w in (1, 2):
    write_frozen(root / "open_ended_mi", "open_ended_mi", 1, w, 4, NONSENSE)
  # real_name_mi: one JSON without the ways in its name (as the authors' page spells it), both ways mixed
  mixed = [e for w in (2, 1) for e in write_frozen(root / "real_name_mi", "real_name_mi", 1, w, 4, REAL, False)]
  (root / "real_name_mi" / "real_name_mi_shots_1_ways_all_questions.json").write_text(json.dumps(mixed))
  write_frozen(root / "open_ended_mi", "open_ended_mi", 2, 2, 3, NONSENSE)
  return root


@pytest.fixture(scope="module")
def wtok(tiny_tok):
  return WordTokenizer(tiny_tok.vocabulary.words(np.arange(len(tiny_tok.vocabulary))), WORDS)


def copy_caption_model(tok, image_ids, bonus=20.0):
  """Answers with the label of the support image whose tokens overlap the query's most (ties -> the earliest),
  reading the Frozen layout: lines "<image> This is a <label>." and the query "<image> Q: ... This is a"."""
  image, nl = {int(i) for i in image_ids}, tok.newline_id
  articles = {tok.index["a"], tok.index["an"]}

  def fn(ids):
    out = np.zeros(tok.vocab_size, np.float32)
    lines, cur = [], []
    for t in ids:
      (lines.append(cur), cur := []) if t == nl else cur.append(t)
    lines.append(cur)
    *support, query = [l for l in lines if any(t in image for t in l)]
    after = lambda l: l[max(i for i, t in enumerate(l) if t in articles) + 1:]
    q = {t for t in query if t in image}
    sims = [len(q & {t for t in s if t in image}) / max(1, len(q | {t for t in s if t in image})) for s in support]
    target, written = after(support[int(np.argmax(sims))]) + [nl], after(query)
    out[target[len(written)] if len(written) < len(target) else nl] += bonus
    return out

  return fn


# ------------------------------------------------------------------------------------ reading
def test_reader_turns_each_question_into_an_episode(folders):
  eps = read_frozen(folders / "open_ended_mi", ways=[2], shots=[1, 2])
  assert [e.id for e in eps] == [f"open_ended_mi/2w1s/{x}" for x in (1, 2, 3, 4)] + \
      [f"open_ended_mi/2w2s/{x}" for x in (1, 2, 3)]
  entries = json.loads((folders / "open_ended_mi" / "open_ended_mi_shots_2_ways_2_all_questions.json").read_text())
  for ep, entry in zip(eps[4:], entries):
    assert (ep.ways, ep.shots) == (2, 2)
    assert [k for _, k in ep.support] == [entry[f"image_{i}"] for i in range(1, 5)]
    assert list(ep.captions) == [entry[f"caption_{i}"] for i in range(1, 5)]
    assert [ep.labels[c] for c, _ in ep.support] == [split_caption(entry[f"caption_{i}"])[1] for i in range(1, 5)]
    assert ep.query == ((ep.labels.index(entry["answer"]), entry["question_image"]),)
    assert ep.question == QUESTION and set(ep.labels) <= set(NONSENSE)
  assert [e.id for e in read_frozen(folders / "open_ended_mi", [2], [1], limit=2)] == [e.id for e in eps[:2]]
  # the authors' page spells the JSON without the ways: that file is read too, each ways' questions kept apart
  real = read_frozen(folders / "real_name_mi", ways=[1, 2], shots=[1])
  assert [(e.ways, e.id) for e in real] == [(w, f"real_name_mi/{w}w1s/{x}") for w in (1, 2) for x in (1, 2, 3, 4)]
  assert {l for e in real for l in e.labels} == set(REAL)
  assert "This is an eagle." in {c for e in real for c in e.captions}


@pytest.mark.parametrize("caption, parts", [
    ("This is a dax.", ("This is a", "dax", ".")), ("this is an eagle", ("this is an", "eagle", "")),
    ("This is the golden retriever! ", ("This is the", "golden retriever", "!"))])
def test_split_caption(caption, parts):
  assert split_caption(caption) == parts


def test_episodes_with_captions_round_trip_through_episode_files(folders, tmp_path):
  eps = read_frozen(folders / "real_name_mi", [2], [1])
  spae.prompting.write_episodes(tmp_path / "e.jsonl", eps)
  assert read_episodes(tmp_path / "e.jsonl") == eps


# ------------------------------------------------------------------------------------ bad folders: one line
def _broken(folders, tmp_path, edit):
  import shutil

  root = tmp_path / "open_ended_mi"
  shutil.copytree(folders / "open_ended_mi", root)
  path = root / "open_ended_mi_shots_1_ways_2_all_questions.json"
  entries = json.loads(path.read_text())
  edit(root, entries)
  path.write_text(json.dumps(entries))
  return root


@pytest.mark.parametrize("edit, match", [
    (lambda root, e: (root / e[1]["image_2"]).unlink(), r"question 2: image_2 'open_ended_mi_shots_1_ways_2_id_2_"),
    (lambda root, e: e[2].update(difficulty=3), r"question 3: unknown key 'difficulty'"),
    (lambda root, e: e[0].pop("caption_1"), r"question 1: missing key 'caption_1'"),
    (lambda root, e: e[3].update(caption_2="A photo of a wug."), r"question 4: caption_2 caption 'A photo of a wug.'"),
    (lambda root, e: e[0].update(answer="wug"), r"question 1: answer 'wug' is none of"),
    (lambda root, e: e[1].update(caption_1=e[1]["caption_2"]), r"question 2: 2 support images naming 1 labels"),
])
def test_bad_folders_get_one_line_naming_file_and_question(folders, tmp_path, edit, match):
  root = _broken(folders, tmp_path, edit)
  with pytest.raises(spae.SpaeInputError, match="open_ended_mi_shots_1_ways_2_all_questions.json " + match) as e:
    read_frozen(root, [2], [1])
  assert "\n" not in str(e.value)


def test_missing_files_and_folders_get_one_line(folders, tmp_path):
  with pytest.raises(spae.SpaeInputError, match=r"no open_ended_mi_shots_1_ways_5_all_questions.json .* it has "
                     r"open_ended_mi_shots_1_ways_1_all_questions.json"):
    read_frozen(folders / "open_ended_mi", [5], [1])
  with pytest.raises(spae.SpaeInputError, match="pass one of its task folders: .*open_ended_mi"):
    read_frozen(folders, [2], [1])
  with pytest.raises(spae.SpaeInputError, match="does not exist"):
    read_frozen(tmp_path / "nowhere", [2], [1])
  (tmp_path / "bad").mkdir()
  (tmp_path / "bad" / "t_shots_1_ways_2_all_questions.json").write_text("{not json")
  with pytest.raises(spae.SpaeInputError, match="t_shots_1_ways_2_all_questions.json is not valid JSON"):
    read_frozen(tmp_path / "bad", [2], [1])


# ------------------------------------------------------------------------------------ prompts
def test_prompt_is_the_published_text_with_tokens_for_images(folders, tiny_tok):
  eps = read_frozen(folders / "open_ended_mi", [2], [1], limit=1)
  ep = eps[0]
  for induction in (False, True):
    res = evaluate_fewshot(FewShotConfig(layers=(1,), induction=induction), tiny_tok, None,
                           source=spae.prompting.FileImages(folders / "open_ended_mi"), episodes=eps, progress=False)
    cache = fewshot.TokenCache(tiny_tok, spae.prompting.FileImages(folders / "open_ended_mi"))
    word = lambda key: tiny_tok.vocabulary.words(np.asarray(cache.ids(key, 1)))[0]
    lines = [f"{word(k)} {c}" for (_, k), c in zip(ep.support, ep.captions)]
    want = "\n".join(lines + [f"{word(ep.query[0][1])} {QUESTION}"])
    if induction:
      want = f"Answer with {ep.labels[0]} or {ep.labels[1]}.\n" + want
    assert res["rows"][0]["queries"][0]["prompt"] == want


def test_fake_lm_reads_captions_after_their_images(folders, tiny_tok, wtok):
  """An LM that copies the label of the nearest support image answers exactly as the Jaccard probe does, in
  score and in generate mode, with and without repeats: captions follow their own images."""
  lm = FunctionLM(wtok, copy_caption_model(wtok, tiny_tok.vocabulary.llm_ids))
  for task, names in (("open_ended_mi", NONSENSE), ("real_name_mi", REAL)):
    eps = read_frozen(folders / task, [1, 2], [1])
    for mode in ("score", "generate"):
      res = evaluate_fewshot(FewShotConfig(layers=(2,), repeats=(1, 2), mode=mode, induction=True), tiny_tok, lm,
                             source=spae.prompting.FileImages(folders / task), episodes=eps, progress=False)
      for row in res["rows"]:
        q = row["queries"][0]
        assert spae.prompting.normalize_label(q["prediction"]) == q["jaccard"], q["prompt"]
        assert q["prompt"].startswith("Answer with ") and q["prompt"].endswith(QUESTION)
        shown = row["repeats"] * row["shots"] * row["ways"]
        assert q["prompt"].count(QUESTION) == 1 and q["prompt"].count("This is") == 1 + shown
      assert {(s["ways"], s["repeats"]) for s in res["summary"]} == {(1, 1), (1, 2), (2, 1), (2, 2)}


def test_support_labels_have_the_ids_they_are_scored_with(folders, tiny_tok):
  """With a real (random-weight) LM tokenizer, each caption's label is spliced with the ids it is scored with
  after the question, and the prompt's text is the published one."""
  from spae.lm import testing as lmt
  from spae.prompting import TokenMap, render

  lm = lmt.tiny_lm(folders / "lm")
  ep = read_frozen(folders / "real_name_mi", [2], [1], limit=1)[0]
  config = FewShotConfig(layers=(1,), token_mode="ids")
  template = fewshot.episode_template(ep, config)
  tmap = TokenMap(tiny_tok.vocabulary, lm.tokenizer, "ids")
  label_ids = fewshot.LabelIds.of(tmap, ep.labels, template)
  images = {k: [3, 5] for k in ep.image_keys()}
  segs = fewshot.build_prompt(ep, ep.support, ep.query[0][1], images, label_ids, config)
  spliced = [s for s in segs if isinstance(s, spae.prompting.Answer)]
  assert [a.ids for a in spliced] == [label_ids.answers[c].ids for c, _ in ep.support]
  assert [a.text for a in spliced] == [f" {ep.labels[c]}.\n" for c, _ in ep.support]
  text = render(segs, tmap).text
  assert all(caption in text for caption in ep.captions) and text.endswith(QUESTION)
  res = evaluate_fewshot(config, tiny_tok, lm, source=spae.prompting.FileImages(folders / "real_name_mi"),
                         episodes=[ep], progress=False)
  assert np.all(np.isfinite(res["rows"][0]["queries"][0]["scores"]))


# ------------------------------------------------------------------------------------ the command
def _parser():
  p = argparse.ArgumentParser()
  _fewshot_cli.add_fewshot_args(p)
  return p


def test_cli_frozen_table_runs_the_seven_columns_and_resumes(tmp_path, tiny_tok, monkeypatch, capsys):
  monkeypatch.setattr(_cli, "load_tokenizer", lambda spec: tiny_tok)
  root = tmp_path / "open_ended_mi"
  for shots in (1, 3, 5):
    write_frozen(root, "open_ended_mi", shots, 2, 2, NONSENSE)
  argv = ["--tokenizer", "tiny", "--lm", "none", "--data", f"frozen:{root}", "--frozen-table", "--ways", "2",
          "--layers", "1", "--episodes", "all", "--out", str(tmp_path / "t.jsonl"), "--no-progress"]
  assert _fewshot_cli.run_fewshot(_parser().parse_args(argv)) == 0
  printed = capsys.readouterr().out
  rows = [json.loads(l) for l in (tmp_path / "t.jsonl").read_text().splitlines()]
  cells = {(r["induction"], r["shots"], r["repeats"]) for r in rows}
  assert cells == set(FROZEN_TABLE) and len(rows) == 2 * len(FROZEN_TABLE)
  table = printed[printed.index("2-way"):]
  assert "  task induction          off     on     on     on     on     on     on\n" in table
  assert "  inner shots               1      1      3      5      1      1      1\n" in table
  assert "  repeats                   0      0      0      0      1      3      5   mean\n" in table
  assert "jaccard (1 layers)" in table and "ridge (1 layers)" in table
  assert _fewshot_cli.run_fewshot(_parser().parse_args(argv)) == 0
  assert f"resumed: {len(rows)} episode(s)" in capsys.readouterr().out
  with pytest.raises(spae.SpaeInputError, match="frozen: data fixes its own episodes"):
    _fewshot_cli.run_fewshot(_parser().parse_args(argv + ["--classes", "a,b"]))
  with pytest.raises(spae.SpaeInputError, match="--episodes all reads every question"):
    _fewshot_cli.run_fewshot(_parser().parse_args(["--tokenizer", "tiny", "--data", "scenes:10", "--episodes", "all",
                                              "--out", str(tmp_path / "x.jsonl")]))
