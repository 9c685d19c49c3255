"""Few-shot accuracy of SPAE tokens on held-out synthetic classes: LLM-free probes, and an LLM when given.

  python benchmarks/fewshot.py --smoke                      # CI-sized, untrained tiny tokenizer
  python benchmarks/fewshot.py --tokenizer DIR --lm hf:PATH --episodes 200 --out fewshot.json

Episodes are N-way K-shot (2/5-way, 1/3/5-shot) over held-out classes (novel colour/shape pairs) rendered in memory
at the tokenizer's image size, with 1-3 token layers per image: the `shapes` renderer's test split (the default), or
with `--data scenes` the `scenes` renderer's, whose held-out classes never lead a training scene. The Jaccard and
ridge probes measure the class information in the tokens themselves; with `--lm` the same episodes are scored by the
LLM. Accuracies are printed next to chance (1/N), the baseline measured here, as a ratio.

The same probes also read the images' true attribute words in place of the tokens, on the same episodes (the
"oracle probes"): the labelled object's colour alone, the largest object's colour and shape, and every object's
colour and shape. They say what a tokenizer whose top words named exactly that would score. A class is its
labelled object's colour and shape; in `scenes` that object is the main one, the largest; in `shapes` it is the
first object placed, which need not be the largest (a scene has 1-3 objects of random sizes).

An untrained tokenizer (the default) gives near-chance numbers: the point of the default is to exercise the pipeline.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common  # noqa: E402

import numpy as np  # noqa: E402


def object_words(attrs: dict) -> list[tuple[str, str, float]]:
  """(colour name, shape, radius) of every object of a `scenes` or `shapes` scene, the labelled object first."""
  return [(o["colour"]["name"] if isinstance(o["colour"], dict) else o["colour"], o["shape"], float(o["radius"]))
          for o in attrs["objects"]]


# What an oracle's top words would say about a scene: word lists from `object_words`.
ORACLES = {
    "labelled colour": lambda objs: [objs[0][0]],
    "largest object": lambda objs: list(max(objs, key=lambda o: o[2])[:2]),
    "every object": lambda objs: [w for o in objs for w in o[:2]],
}


def probe_bags(episode_sets, bag_of: Callable[[Any], list[int]]) -> list[dict]:
  """The Jaccard and ridge probes on `bag_of(image key)` (word ids) for every episode: one row per (ways, shots,
  method) with its accuracy and 95% interval."""
  from spae.prompting._probes import jaccard_probe, ridge_probe
  from spae.prompting._stats import confidence_interval

  rows = []
  for eps in episode_sets:
    for method in ("jaccard", "ridge"):
      hits = []
      for ep in eps:
        support = [bag_of(k) for _, k in ep.support]
        classes = [c for c, _ in ep.support]
        for c, q in ep.query:
          guess = (jaccard_probe(support, classes, bag_of(q)) if method == "jaccard"
                   else int(ridge_probe(support, classes, [bag_of(q)], ep.ways)[0]))
          hits.append(float(guess == c))
      rows.append({"ways": eps[0].ways, "shots": eps[0].shots, "method": method, "accuracy": float(np.mean(hits)),
                   "ci95": list(confidence_interval(hits)), "queries": len(hits)})
  return rows


def oracle_probes(episode_sets, attributes_of, oracles=None) -> list[dict]:
  """The Jaccard and ridge probes on each oracle's words (`ORACLES`) in place of the tokens, on the same episodes:
  one row per (ways, shots, oracle, method) with its accuracy and 95% interval. attributes_of: image key -> the
  scene's attributes."""
  ids: dict[str, int] = {}
  objects: dict = {}  # key -> object_words, read once per image for every oracle, method and episode
  rows = []
  for eps in episode_sets:
    for name, fn in (oracles or ORACLES).items():
      def words(key, fn=fn):
        if key not in objects:
          objects[key] = object_words(attributes_of(key))
        return [ids.setdefault(w, len(ids)) for w in fn(objects[key])]

      rows += [{"ways": r["ways"], "shots": r["shots"], "oracle": name, **r} for r in probe_bags([eps], words)]
  return rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--tokenizer", default=None, help="tokenizer directory (default: spae.tiny_tokenizer())")
  p.add_argument("--lm", default=None, help="also evaluate this LM (gemma:PATH, hf:PATH, openai:URL#model)")
  p.add_argument("--mode", choices=("score", "generate"), default="score")
  p.add_argument("--episodes", type=int, default=50, help="episodes per (ways, shots)")
  p.add_argument("--data", choices=("shapes", "scenes"), default="shapes",
                 help="the renderer whose held-out classes (of --split) make the episodes")
  p.add_argument("--images", type=int, default=6000,
                 help="scenes rendered (a quarter of shapes', a quarter of scenes' are held-out classes)")
  p.add_argument("--ways", type=int, nargs="+", default=[2, 5])
  p.add_argument("--shots", type=int, nargs="+", default=[1, 3, 5])
  p.add_argument("--layers", type=int, nargs="+", default=[1, 2, 3])
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--split", choices=("test", "validation"), default="test",
                 help="the held-out images' split: 'validation' for choosing a recipe")
  p.add_argument("--smoke", action="store_true", help="tiny sizes for CI")
  p.add_argument("--out", default=None, help="write the results JSON here")
  p.add_argument("--jsonl", default=None, help="per-episode JSONL (resumable)")
  args = p.parse_args(argv)
  if args.smoke:
    args.episodes, args.images = min(args.episodes, 4), min(args.images, 1200)

  load_before = os.getloadavg()
  import spae
  import spae.data
  from spae.prompting import FewShotConfig, evaluate_fewshot, format_table
  from spae.prompting._episodes import scene_attributes
  from spae.prompting.fewshot import sampled_episodes
  from spae.prompting._cli import load_lm

  t0 = time.perf_counter()
  tok = spae.tiny_tokenizer() if args.tokenizer is None else _common.load_tokenizer_bundle(args.tokenizer)
  t_tok = time.perf_counter() - t0
  size = tok.config.image_size
  t0 = time.perf_counter()
  if args.data == "scenes":
    full = spae.data.SceneSource(args.images, image_size=size, seed=args.seed, split=args.split)
    held = full.subset(spae.data.SCENE_HELDOUT_CLASSES)
  else:
    full = spae.data.render_shapes_source(args.images, image_size=size, seed=args.seed, split=args.split)
    # The oracle probes read each image's attributes as SceneSource gives them (scene_attributes, through subsets).
    full.attributes = lambda i: spae.data.shapes_attributes(spae.data.scene_rng(args.seed, args.split, i))
    held = full.subset(spae.data.SHAPES_HELDOUT_CLASSES)
  need = max(args.shots) + 1
  usable = [c for c in held.classes if len(held.images_of(c)) >= need]
  if len(usable) < max(args.ways):
    raise SystemExit(f"only {len(usable)} held-out classes have {need}+ images; raise --images.")
  source = held.subset(usable)
  t_data = time.perf_counter() - t0
  lm = load_lm(args.lm) if args.lm else None
  config = FewShotConfig(ways=tuple(args.ways), shots=tuple(args.shots), layers=tuple(args.layers),
                         episodes=args.episodes, seed=args.seed, mode=args.mode)
  t0 = time.perf_counter()
  res = evaluate_fewshot(config, tok, lm, source=source, out=args.jsonl, lm_name=args.lm or "none",
                         progress=not args.smoke)
  t_eval = time.perf_counter() - t0
  oracles = oracle_probes(sampled_episodes(config, source), functools.partial(scene_attributes, source))
  n_eps = len(res["rows"])
  print(format_table(res["summary"]))
  print("\noracle probes: the same probes on the images' true attribute words, the same episodes:")
  for r in oracles:
    lo, hi = r["ci95"]
    print(f"  {r['ways']}-way {r['shots']}-shot {r['oracle']:>15} {r['method']:>7}: {r['accuracy']:.3f} "
          f"[{lo:.3f}, {hi:.3f}]")
  print("\naccuracy / chance (chance = 1/ways, the baseline):")
  for s in res["summary"]:
    s["chance"] = 1.0 / s["ways"]
    s["ratio_to_chance"] = s["accuracy"] / s["chance"]
  for s in res["summary"]:
    print(f"  {s['ways']}-way {s['shots']}-shot layers={s['layers']} {s['method']:>7}: "
          f"{s['accuracy']:.3f} / {s['chance']:.3f} = {s['ratio_to_chance']:.2f}x")
  info = _common.machine_info()
  load = [load_before, os.getloadavg()]
  timing = {"tokenizer_build_s": t_tok, "render_s": t_data, "eval_s": t_eval, "episode_settings": n_eps,
            "eval_ms_per_episode_setting": 1000 * t_eval / max(1, n_eps)}
  print("\nmachine: " + _common.machine_line(info, *load))
  print(f"held-out classes used: {len(usable)}; timing: " + ", ".join(f"{k}={v:.2f}" if isinstance(v, float)
                                                                      else f"{k}={v}" for k, v in timing.items()))
  if args.out:
    from spae._io import write_json_atomic

    write_json_atomic(args.out, {"summary": res["summary"], "oracle_probes": oracles, "machine": info,
                                 "load_avg": [list(v) for v in load], "timing": timing,
                                 "classes": usable, "args": vars(args), "setup": res["setup"],
                                 "tokenizer": args.tokenizer or "spae.tiny_tokenizer()"})
    print(f"wrote {args.out}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
