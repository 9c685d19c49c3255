"""Does the semantic teacher name what is in an image? Its own top-k words over a codebook, on held-out scenes.

The tokenizer's top layers are trained toward the teacher's word distribution (docs/method.md, semantic guidance),
so they can only name the main object if the teacher does. For each teacher spec, on test-split `scenes` (never
trained on by tokenizer or teacher): the share of images whose teacher top-k words (cosine relevance over the
whole codebook) include the main object's colour name / shape name / either. Baselines in the same run:

  chance    k words drawn uniformly from the codebook: 1 - prod(1 - m/V), m = how many of the image's main words
            the codebook holds
  caption   the same top-k read from the frozen text tower's embedding of the image's true caption in place of
            the image tower (what a perfect image tower could reach through this text tower; needs the text tower)

  python benchmarks/teacher_words.py --vocab gemma3-270m \\
      --teacher "lit:default#text_tower=MINILM" --teacher "lit:runs/teacher_scenes#text_tower=MINILM" --out tw.json
  python benchmarks/teacher_words.py --smoke --out /tmp/tw.json     # CI: shipped teacher and vocabulary, 8 images
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common  # noqa: E402
import recon  # noqa: E402

import numpy as np  # noqa: E402


def _load_teacher(spec: str) -> Any:
  from spae import teachers

  return teachers.load(spec)


def _hits(scores: np.ndarray, words: list[str], attrs: list[dict[str, Any]], k: int) -> dict[str, float]:
  top = np.argsort(-scores, axis=1)[:, :k]
  col = [a["colour"] in {words[t] for t in row} for row, a in zip(top, attrs)]
  shp = [a["shape"] in {words[t] for t in row} for row, a in zip(top, attrs)]
  return {"colour": float(np.mean(col)), "shape": float(np.mean(shp)),
          "either": float(np.mean([c or s for c, s in zip(col, shp)]))}


def measure(teacher: Any, vocab: Any, images: np.ndarray, attrs: list[dict[str, Any]], k: int) -> dict[str, Any]:
  from spae.data import _scenes

  words = list(vocab.words(np.arange(len(vocab))))
  table = np.asarray(teacher.vocabulary_embeddings(vocab), np.float32)  # [V, D], unit rows
  z = np.concatenate([np.asarray(teacher.image_embeddings(images[i:i + 64].astype(np.float32) / 255.0))
                      for i in range(0, len(images), 64)])
  out: dict[str, Any] = {"image": _hits(z @ table.T, words, attrs, k)}
  try:
    cap = np.asarray(teacher.text_embeddings([_scenes.caption_for(a) for a in attrs]), np.float32)
    out["caption"] = _hits(cap @ table.T, words, attrs, k)
  except Exception as e:  # a teacher without its text tower embeds only its shipped word table
    out["caption_note"] = f"caption baseline skipped: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
  present = set(words)
  V = len(words)
  ch = []
  for a in attrs:
    m = len({a["colour"], a["shape"]} & present)
    ch.append(1.0 - float(np.prod([(V - m - j) / (V - j) for j in range(k)])))
  out["chance_either"] = float(np.mean(ch))
  out["example"] = {"caption": _scenes.caption_for(attrs[0]),
                    "top": [words[t] for t in np.argsort(-(z[:1] @ table.T)[0])[:k]]}
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--teacher", action="append", default=[], help="a teacher spec (spae.teachers.load); repeatable")
  p.add_argument("--vocab", default="default", help="a vocabulary spec: 'default', 'gemma3-270m', a folder")
  p.add_argument("--num-images", type=int, default=200)
  p.add_argument("--top", type=int, default=5, help="k: the demo's 'top words' are 5 (layers 1-2)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--smoke", action="store_true", help="the shipped teacher and vocabulary, 8 images (CI)")
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  from spae import train as T

  if a.smoke:
    a.teacher, a.vocab, a.num_images = ["lit:default"], "default", 8
  teachers = a.teacher or ["lit:default"]
  vocab = T.build_vocabulary(a.vocab)
  images, attrs = recon.new_scenes(a.num_images, 64, a.seed)
  rows = []
  for spec in teachers:
    res = measure(_load_teacher(spec), vocab, images, attrs, a.top)
    rows.append({"teacher": spec, **res})
    _common.write_json(a.out, {"benchmark": "teacher_words", "machine": _common.machine_info(), "args": vars(a),
                               "vocab_size": len(vocab), "rows": rows})
  info = _common.machine_info()
  print(f"# teacher top-{a.top} words over {a.vocab} (V={len(vocab)}) on {a.num_images} held-out test-split scenes; "
        f"{info.get('cpu', '')} ({info['cpu_count']} cores), load avg {os.getloadavg()[0]:.2f}")
  table = []
  for r in rows:
    t, c = r["image"], r.get("caption")
    table.append({"teacher": r["teacher"], "colour": f"{100 * t['colour']:.0f}%", "shape": f"{100 * t['shape']:.0f}%",
                  "either": f"{100 * t['either']:.0f}%", "chance (either)": f"{100 * r['chance_either']:.1f}%",
                  "caption ceiling (either)": f"{100 * c['either']:.0f}%" if c else "n/a",
                  "e.g.": f"{r['example']['caption']!r} -> {' '.join(r['example']['top'])}"})
  _common.print_table(table, list(table[0]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
