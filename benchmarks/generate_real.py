"""In-context generation with a real frozen LLM, against the baselines a reader needs (issue: generation).

For every image-to-image task (denoise, inpaint, outpaint, deblur, shift) and every held-out image (test-split
scenes and the held-out photo crops, none seen in training), `spae.prompting.run_image_task` corrupts the image,
encodes it, and the LLM writes the top `--layers` layers in context (the SPAE progressive-denoising prompt, see
docs/method.md). Per task, the mean over images (95% interval) of, against the clean image:

  generation        the LLM's layers, decoded
  condition         the corrupted input's own layers, decoded as they are (baseline 1)
  cleanest example  the least noisy in-context example's layers (the condition with `noise_end` replaced; baseline 2)

PSNR and SSIM of the decoded prefix, and token accuracy against the clean image's own tokens, plus the share of
images where the generation beats the condition's PSNR. Class-conditional generation ('class') gets no clean
target: the LLM is asked for held-out scene classes given reference examples of several classes (one of them the
asked class), and we report how often its layers are closer (token accuracy) to the asked class's example than to
any other example, against chance (1 / number of example classes).

  python benchmarks/generate_real.py --lm gguf:gemma3-270m --out gen.json        # resumes from --out
  python benchmarks/generate_real.py --smoke --out /tmp/gen.json     # CI: the majority-vote test LM, tiny tokenizer
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common  # noqa: E402

import numpy as np  # noqa: E402

IMAGE_TASKS = ("denoise", "inpaint", "outpaint", "deblur", "shift")
BASELINES = ("generation", "condition", "cleanest_example")


def _images(n_scenes: int, n_photos: int, size: int) -> list[tuple[str, np.ndarray]]:
  from spae.data import SceneSource, heldout_photo_crops

  scenes = SceneSource(max(n_scenes, 1), size, split="test")
  out = [(f"scene-{i}", scenes.load(i)) for i in range(n_scenes)]
  crops = heldout_photo_crops(size)
  step = max(1, len(crops) // max(n_photos, 1))
  out += [(f"photo-{i}", crops.load(i)) for i in range(0, len(crops), step)][:n_photos]
  return out


def _load_lm(spec: str, tokenizer: Any) -> Any:
  if spec == "majority":  # smoke runs: the deterministic majority-vote test model over the tokenizer's words
    from spae.prompting import testing

    v = tokenizer.vocabulary
    wtok = testing.WordTokenizer(v.words(np.arange(len(v))))
    return testing.FunctionLM(wtok, testing.majority_model(wtok))
  from spae.prompting import _cli

  return _cli.load_lm(spec)


def _load_tokenizer(spec: str) -> Any:
  if spec == "default":
    from spae import assets

    return assets.default_tokenizer()
  from spae.prompting import _cli

  return _cli.load_tokenizer(spec)


def _asked_class(heldout: Any, by_class: dict[str, list[int]], query: int) -> str:
  """The held-out class the `query`-th class-conditional prompt asks for: the classes with two or more test scenes
  in turn, cycling when there are more queries than such classes."""
  eligible = [c for c in heldout if len(by_class.get(c, [])) >= 2]
  return eligible[query % len(eligible)]


def _class_row(lm: Any, tok: Any, config: Any, query: int, n_refs: int, work: Path) -> dict[str, Any]:
  """One class-conditional generation: held-out class asked, references from `n_refs` classes incl. that one."""
  from spae.data import SceneSource
  from spae.data._scenes import HELDOUT_CLASSES
  from spae.prompting import generate as G

  scenes = SceneSource(400, tok.config.image_size, split="test")
  by_class: dict[str, list[int]] = {}
  for i in range(len(scenes)):
    by_class.setdefault(scenes.attributes(i)["label"], []).append(i)
  rng = np.random.default_rng(query)
  asked = _asked_class(HELDOUT_CLASSES, by_class, query)
  others = [c for c in sorted(by_class) if c != asked]
  names = [asked] + [others[j] for j in rng.permutation(len(others))[:n_refs - 1]]
  names = [names[j] for j in rng.permutation(len(names))]
  refs = [(c, scenes.load(by_class[c][0])) for c in names]
  m = G.run_text_task(lm, tok, asked, refs, work, config=config)
  gen = json.loads((work / "tokens.json").read_text())["generation"]
  gen_ids = [np.asarray(a)[0] for a in gen["ids"]]
  pyr = tok.encode(np.stack([tok.preprocess(im)[0][0] for _, im in refs]))
  acc = [G.token_accuracy(gen_ids, pyr[j]) for j in range(len(refs))]
  best = int(np.argmax(acc))
  return {"task": "class", "asked": asked, "references": names, "token_accuracy": acc,
          "closest": names[best], "hit": float(names[best] == asked and acc.count(acc[best]) == 1),
          "chance": 1.0 / len(refs), "calls": m["calls"]}


def _mean_ci(values: list[float]) -> tuple[float, float, float]:
  """(mean, lo, hi): Wilson for 0/1 outcomes, else mean +- 1.96 standard errors (dB are not clipped to [0, 1])."""
  from spae.prompting._stats import confidence_interval, normal_interval

  v = np.asarray(values, np.float64)
  binary = np.all((v == 0) | (v == 1))
  return (float(v.mean()), *(confidence_interval(v) if binary else normal_interval(v)))


def _summary(rows: list[dict[str, Any]], layers: int) -> list[dict[str, Any]]:
  table = []
  for task in IMAGE_TASKS:
    rs = [r for r in rows if r["task"] == task]
    if not rs:
      continue
    last = [next(m for m in r["metrics"]["layers"] if m["layers"] == layers) for r in rs]
    row: dict[str, Any] = {"task": task, "n": len(rs)}
    for name in BASELINES:
      for key in ("psnr", "ssim", "token_accuracy"):
        row[f"{name}/{key}"] = _mean_ci([m[name][key] for m in last])
    wins = [float(m["generation"]["psnr"] > m["condition"]["psnr"]) for m in last]
    row["beats_condition"] = _mean_ci(wins)
    table.append(row)
  cls = [r for r in rows if r["task"] == "class"]
  if cls:
    hits = [r["hit"] for r in cls]
    table.append({"task": "class", "n": len(cls), "hit": _mean_ci(hits),
                  "chance": float(np.mean([r["chance"] for r in cls]))})
  return table


def _fmt(v: tuple[float, float, float], pct: bool = False) -> str:
  m, lo, hi = v
  return f"{100 * m:.0f}% [{100 * lo:.0f}, {100 * hi:.0f}]" if pct else f"{m:.2f} [{lo:.2f}, {hi:.2f}]"


def print_summary(table: list[dict[str, Any]]) -> None:
  img = [r for r in table if r["task"] != "class"]
  if img:
    out = []
    for r in img:
      row = {"task": r["task"], "n": r["n"]}
      for name, short in zip(BASELINES, ("gen", "cond", "cleanest")):
        row[f"PSNR {short}"] = _fmt(r[f"{name}/psnr"])
        row[f"SSIM {short}"] = f"{r[f'{name}/ssim'][0]:.3f}"
        row[f"tok {short}"] = f"{100 * r[f'{name}/token_accuracy'][0]:.0f}%"
      row["gen > cond"] = _fmt(r["beats_condition"], pct=True)
      out.append(row)
    _common.print_table(out, list(out[0]))
  for r in table:
    if r["task"] == "class":
      print(f"\nclass-conditional: closest to the asked class's example in {_fmt(r['hit'], pct=True)} of "
            f"{r['n']} generations (chance {100 * r['chance']:.0f}%)")


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--lm", default="gguf:gemma3-270m",
                 help="an LM spec (spae.lm.load), or 'majority' (the test model) for a smoke run")
  p.add_argument("--tokenizer", default="default", help="'default' (shipped), 'tiny', or a tokenizer folder")
  p.add_argument("--tasks", default=",".join(IMAGE_TASKS + ("class",)))
  p.add_argument("--scenes", type=int, default=6, help="held-out test-split scenes per task")
  p.add_argument("--photos", type=int, default=3, help="held-out photo crops per task")
  p.add_argument("--class-queries", type=int, default=6)
  p.add_argument("--class-refs", type=int, default=4, help="reference classes per class-conditional prompt")
  p.add_argument("--layers", type=int, default=3)
  p.add_argument("--examples", type=int, default=6)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--out", default=None, help="results JSON; rows already in it (same settings) are kept")
  p.add_argument("--smoke", action="store_true", help="test LM and tiny tokenizer, one image, two tasks (CI)")
  a = p.parse_args(argv)
  if a.smoke:
    a.lm, a.tokenizer, a.tasks, a.scenes, a.photos, a.class_queries, a.layers = (
        "majority", "tiny", "denoise,class", 1, 1, 1, 2)
  from spae.prompting.generate import GenerateConfig, run_image_task

  tasks = [t for t in a.tasks.split(",") if t]
  tok = _load_tokenizer(a.tokenizer)
  lm = _load_lm(a.lm, tok)
  config = GenerateConfig(layers=a.layers, examples=a.examples, seed=a.seed)
  settings = {k: v for k, v in vars(a).items() if k not in ("out", "tasks")}
  rows: list[dict[str, Any]] = []
  if a.out and Path(a.out).is_file():
    old = json.loads(Path(a.out).read_text())
    rows = old["rows"] if old.get("settings") == settings else []
  done = {(r["task"], r.get("image", r.get("query"))) for r in rows}
  images = _images(a.scenes, a.photos, tok.config.image_size)
  jobs = [(t, name) for t in tasks if t != "class" for name, _ in images]
  jobs += [("class", q) for q in range(a.class_queries)] if "class" in tasks else []
  todo = [j for j in jobs if j not in done]
  t0 = time.perf_counter()
  with tempfile.TemporaryDirectory() as tmp:
    for k, (task, what) in enumerate(todo):
      work = Path(tmp) / f"{task}-{what}"
      if task == "class":
        row = _class_row(lm, tok, config, int(what), a.class_refs, work)
        row["query"] = what
      else:
        image = dict(images)[what]
        row = {"task": task, "image": what, "metrics": run_image_task(lm, tok, image, task, work, config=config)}
      rows.append(row)
      _common.write_json(a.out, {"benchmark": "generate_real", "machine": _common.machine_info(),
                                 "settings": settings, "rows": rows})
      el = time.perf_counter() - t0
      print(f"[{k + 1}/{len(todo)}] {task} {what}: {el:.0f}s, ETA {el / (k + 1) * (len(todo) - k - 1):.0f}s",
            flush=True)
  info = _common.machine_info()
  print(f"\n# in-context generation: {a.lm} on the {a.tokenizer} tokenizer; layers 1..{a.layers}; {a.examples} "
        f"examples; {a.scenes} held-out scenes + {a.photos} held-out photo crops per task; "
        f"{info.get('cpu', '')} ({info['cpu_count']} cores), load avg {os.getloadavg()[0]:.2f}")
  table = _summary(rows, a.layers)
  print_summary(table)
  if a.out:
    _common.write_json(a.out, {"benchmark": "generate_real", "machine": info, "settings": settings, "rows": rows,
                               "summary": table})
  return 0


if __name__ == "__main__":
  sys.exit(main())
