"""How far can a tokenizer that follows its teacher go on the few-shot probe? The probe on the teacher's own words.

Issue 12's probe (5-way 1-shot, held-out classes, bags of the top words, Jaccard or ridge: benchmarks/fewshot.py) reads
the tokenizer's layers 1-2, which the semantic loss trains toward the teacher's words. This script runs the same
probes, on the same episodes as `fewshot.py --data scenes` (held-out `scenes` classes of the test split; with
`--split validation` the validation split's, for choosing), on bags of the teacher's own top-k words, read the
trainer's way (relevance centred on --centre-images training scenes, whole text-tower words) among the words of the
first --caption-words training captions (the candidates of `semantic.vocab_from_captions`). Beside them, in the same
run:

  caption   the same top-k read from the frozen text tower's embedding of each image's true caption in place of the
            image tower, centred on the training scenes' captions: what a perfect image tower, matching its
            captions exactly, would give through this text tower (needs the text tower; left out without it)
  oracles   fewshot.py's oracle probes on the images' true attribute words (the labelled object's colour, ...)
  chance    1 / ways

  python benchmarks/teacher_probe.py --vocab gemma3-270m --teacher "lit:runs/teacher_scenes#text_tower=MINILM" \\
      --episodes 200 --out tp.json
  python benchmarks/teacher_probe.py --smoke --out /tmp/tp.json    # CI: shipped teacher and vocabulary, 4 episodes
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common  # noqa: E402
import fewshot  # noqa: E402
import teacher_words  # noqa: E402

import numpy as np  # noqa: E402


def ranked_words(scores: np.ndarray, allowed: np.ndarray) -> np.ndarray:
  """[N, A]: each row's allowed word ids (`allowed` [V] bool), highest score first (ties in id order)."""
  ids = np.flatnonzero(allowed)
  return ids[np.argsort(-scores[:, ids], axis=1, kind="stable")]


def top_k_bags(keys: list[Any], ranked: np.ndarray, k: int) -> Callable[[Any], list[int]]:
  """image key -> the ids of its k highest-scoring allowed words (`ranked`'s row for that key)."""
  row = {key: i for i, key in enumerate(keys)}
  return lambda key: ranked[row[key], :k].tolist()


def caption_scores(teacher: Any, vocab: Any, captions: list[str], reference: list[str]) -> np.ndarray | None:
  """[N, V] relevance of each caption's text embedding to each word (the teacher's prompt-ensembled word table),
  centred on the reference captions; None when the teacher has no text tower."""
  if getattr(teacher, "text_tower", None) is None:
    return None
  from spae.train._head import caption_relevance

  return caption_relevance(teacher, vocab, captions, reference)


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--teacher", action="append", default=[], help="a teacher spec (spae.teachers.load); repeatable")
  p.add_argument("--vocab", default="default", help="a vocabulary spec: 'default', 'gemma3-270m', a folder")
  p.add_argument("--data", default="mix:scenes=0.7,photos=0.3", help="training data: centring images, captions")
  p.add_argument("--caption-words", type=int, default=1024, help="candidates: the words of this many captions")
  p.add_argument("--centre-images", type=int, default=256)
  p.add_argument("--top", type=int, nargs="+", default=[1, 2, 3, 5], help="bag sizes k")
  p.add_argument("--episodes", type=int, default=200)
  p.add_argument("--images", type=int, default=6000, help="scenes rendered (as fewshot.py's --images)")
  p.add_argument("--ways", type=int, nargs="+", default=[5])
  p.add_argument("--shots", type=int, nargs="+", default=[1, 5])
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--split", default="test", choices=("test", "validation"),
                 help="the held-out scenes' split: 'validation' for choosing a teacher or recipe")
  p.add_argument("--caption-bank", type=int, nargs="*", default=[], metavar="N",
                 help="also read the teacher through its first N training captions (semantic.caption_bank)")
  p.add_argument("--caption-tau", type=float, default=0.03)
  p.add_argument("--smoke", action="store_true", help="the shipped teacher and vocabulary, tiny sizes (CI)")
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  if a.smoke:
    a.teacher, a.vocab, a.episodes, a.images = ["lit:default"], "default", 4, 1200
    a.centre_images, a.caption_words = 8, 64
  load_before = os.getloadavg()
  import spae.data
  from spae import train as T
  from spae.prompting import FewShotConfig
  from spae.prompting._episodes import scene_attributes
  from spae.prompting.fewshot import sampled_episodes
  from spae.train._semantic import caption_word_mask

  vocab = T.build_vocabulary(a.vocab)
  data = T.open_data(a.data)
  allowed = caption_word_mask(data, vocab, a.caption_words)
  full = spae.data.SceneSource(a.images, image_size=64, seed=a.seed, split=a.split)
  held = full.subset(spae.data.SCENE_HELDOUT_CLASSES)
  source = held.subset([c for c in held.classes if len(held.images_of(c)) >= max(a.shots) + 1])
  config = FewShotConfig(ways=tuple(a.ways), shots=tuple(a.shots), layers=(1,), episodes=a.episodes, seed=a.seed)
  episode_sets = sampled_episodes(config, source)
  keys = sorted({k for eps in episode_sets for ep in eps for k in ep.image_keys()})
  images = np.stack([source.load(k) for k in keys])
  captions = [source.caption(k) for k in keys]
  train = spae.data.SceneSource(a.centre_images, 64, seed=a.seed, split="train")
  reference = np.stack([train.load(i) for i in range(len(train))])
  reference_captions = [train.caption(i) for i in range(len(train))]
  rows = [{"reading": "oracle", "words": r["oracle"], **{k: v for k, v in r.items() if k != "oracle"}}
          for r in fewshot.oracle_probes(episode_sets, lambda key: scene_attributes(source, key))]
  notes: list[str] = []
  x = images.astype(np.float32) / 255.0
  by_captions: dict[tuple, np.ndarray | None] = {}  # teachers of one text tower and templates read captions alike
  for spec in a.teacher or ["lit:default"]:
    teacher = teacher_words._load_teacher(spec)
    banks = a.caption_bank if getattr(teacher, "caption_bank", None) is not None else []
    if len(banks) < len(a.caption_bank):
      notes.append(f"{spec}: no training captions (captions.npz), so no reading through them")
      print(f"note: {notes[-1]}")
    readings = {"teacher": teacher_words._trainer_relevance(teacher, vocab, reference)(x),
                **{f"teacher via {n} captions": teacher_words._trainer_relevance(
                    teacher, vocab, reference, n, a.caption_tau)(x) for n in banks},
                "caption": None}
    text_key = (teacher.text_identity, tuple(getattr(teacher, "templates", ())))
    if text_key not in by_captions:
      by_captions[text_key] = caption_scores(teacher, vocab, captions, reference_captions)
    readings["caption"] = by_captions[text_key]
    for reading, rel in readings.items():
      if rel is None:
        continue
      ranked = ranked_words(rel, allowed)
      for k in a.top:
        rows += [{"teacher": spec, "reading": reading, "words": f"top {k}", **r}
                 for r in fewshot.probe_bags(episode_sets, top_k_bags(keys, ranked, k))]
  info = _common.machine_info()
  load = [load_before, os.getloadavg()]
  _common.write_json(a.out, {"benchmark": "teacher_probe", "machine": info, "load_avg": [list(v) for v in load],
                             "args": vars(a), "candidates": int(allowed.sum()), "classes": source.classes,
                             "rows": rows, "notes": notes})
  print(f"# probes on held-out `scenes` classes ({len(source.classes)}) of the {a.split} split, {a.episodes} episodes "
        f"per cell; {int(allowed.sum())} candidate words (the first {a.caption_words} captions' words in {a.vocab})")
  table = [{"teacher": r.get("teacher", "-").split("#")[0], "reading": r["reading"], "words": r["words"],
            "cell": f"{r['ways']}-way {r['shots']}-shot", "method": r["method"], "accuracy": r["accuracy"],
            "95% CI": r["ci95"], "/ chance": r["accuracy"] * r["ways"]} for r in rows]
  _common.print_table(table, list(table[0]))
  print("machine: " + _common.machine_line(info, *load))
  return 0


if __name__ == "__main__":
  sys.exit(main())
