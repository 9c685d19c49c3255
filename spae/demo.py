"""`spae demo`: images -> words of a real language model's vocabulary -> images, offline, on the shipped default.

Writes OUT/report.html (each image, its words per layer and its reconstruction after every prefix of
layers), OUT/grid.png, OUT/tokens.json, and runs a few-shot episode on held-out synthetic classes with the
LLM-free probe, printing the exact prompt an LLM would get.
"""

from __future__ import annotations

import argparse
import html
import time
from pathlib import Path
from typing import Any

import numpy as np

from spae._images import image_grid, load_image, save_image
from spae._io import SpaeInputError, atomic_path, write_json_atomic

# Real photographs shipped inside scikit-image's wheel (no download); used when scikit-image is installed.
_SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


def bundled_images(image_size: int, num_synthetic: int = 4, seed: int = 7) -> list[tuple[str, np.ndarray, str]]:
  """(name, uint8 image, caption) for a few held-out synthetic scenes plus the real photos available."""
  from spae import data

  out = []
  src = data.render_shapes_source(num_synthetic, image_size, seed=seed, split="test")
  for i in range(num_synthetic):
    out.append((f"shapes-{i}", src.load(i), src.caption(i)))
  try:
    from skimage import data as skdata
  except ImportError:
    return out
  for name in _SKIMAGE_PHOTOS:
    try:
      out.append((name, np.asarray(getattr(skdata, name)())[..., :3], ""))
    except Exception:  # an image that needs a download (pooch) in this scikit-image version is skipped
      continue
  return out


def _layer_words(pyr, layer: int, image: int, limit: int = 64) -> str:
  words = pyr.words(layer, image)
  text = " ".join(words[:limit])
  return text + (f" … (+{len(words) - limit})" if len(words) > limit else "")


def run_demo(tokenizer: Any, images: list[tuple[str, np.ndarray, str]], out: Path, *, episode: bool = True,
             ways: int = 2, shots: int = 1, layers: int = 2, seed: int = 0, printer=print) -> dict[str, Any]:
  """Encodes, prints and decodes `images`; writes the report. Returns a summary dict (also in tokens.json)."""
  from spae import metrics

  out.mkdir(parents=True, exist_ok=True)
  arrays = [img for _, img, _ in images]
  batch = np.concatenate([tokenizer.preprocess(a)[0] for a in arrays])  # each image may have its own size
  pyr = tokenizer.encode(batch)
  n_layers = pyr.num_layers
  recons = [tokenizer.decode(pyr, layers=k) for k in range(1, n_layers + 1)]
  counts = tokenizer.config.pyramid.cumulative_tokens()
  psnr = np.stack([np.asarray(metrics.psnr(r, batch)) for r in recons], axis=1)  # [B, L]
  entries = []
  for i, (name, _, caption) in enumerate(images):
    printer(f"\n{name}" + (f"  ({caption})" if caption else ""))
    for l in range(1, n_layers + 1):
      s = pyr.grids[l - 1]
      printer(f"  layer {l} ({s}x{s}): {_layer_words(pyr, l, i, 32)}")
    entries.append({"name": name, "caption": caption, "psnr_per_prefix": [float(v) for v in psnr[i]]})
  img_dir = out / "images"
  img_dir.mkdir(exist_ok=True)
  for i, (name, _, _) in enumerate(images):
    save_image(img_dir / f"{name}-input.png", batch[i])
    for l in range(1, n_layers + 1):
      save_image(img_dir / f"{name}-layers{l}.png", recons[l - 1][i])
  save_image(out / "grid.png", image_grid([[batch[i]] + [r[i] for r in recons] for i in range(len(images))]))
  doc = {"tokenizer_vocabulary": tokenizer.vocabulary.metadata, "grids": list(pyr.grids),
         "tokens_per_prefix": counts, **pyr.to_json(), "images": [e["name"] for e in entries],
         "psnr_per_prefix": {e["name"]: e["psnr_per_prefix"] for e in entries}}
  write_json_atomic(out / "tokens.json", doc)
  fewshot = None
  if episode:
    fewshot = _episode(tokenizer, ways, shots, layers, seed, printer)
    write_json_atomic(out / "fewshot.json", fewshot)
  _write_report(out, images, pyr, psnr, counts, fewshot)
  printer(f"\nmean PSNR by prefix ({' / '.join(str(c) for c in counts)} tokens): "
          + " / ".join(f"{v:.1f}" for v in psnr.mean(0)) + " dB")
  printer(f"wrote {out / 'report.html'}, {out / 'grid.png'}, {out / 'tokens.json'}")
  return {"psnr_per_prefix": psnr.mean(0).tolist(), "fewshot": fewshot, "out": str(out)}


def _episode(tokenizer, ways, shots, layers, seed, printer) -> dict[str, Any]:
  """One N-way K-shot episode on held-out synthetic classes, scored by the LLM-free Jaccard probe."""
  from spae import data
  from spae.prompting import FewShotConfig, evaluate_fewshot

  src = data.render_shapes_source(200, tokenizer.config.image_size, seed=seed + 1, split="test")
  held = [c for c in data.SHAPES_HELDOUT_CLASSES if len(src.images_of(c)) >= shots + 1]
  if len(held) < ways:
    raise SpaeInputError("not enough held-out classes rendered for the demo episode.")
  src = src.subset(held)
  cfg = FewShotConfig(ways=(ways,), shots=(shots,), layers=(layers,), episodes=1, seed=seed, induction=True)
  res = evaluate_fewshot(cfg, tokenizer, None, source=src, progress=False)
  q = res["rows"][0]["queries"][0]
  printer(f"\nfew-shot ({ways}-way {shots}-shot, top {layers} layers, held-out synthetic classes):")
  printer("  prompt an LLM would get:\n" + "\n".join("    " + line for line in q["prompt"].splitlines()))
  printer(f"  truth: {q['truth']}   LLM-free Jaccard probe: {q['jaccard']}   ridge probe: {q['ridge']}")
  printer("  to ask a real LLM: spae demo --lm hf:PATH (HF Gemma/LLaMA folder), gemma:PATH (orbax) or "
          "openai:URL#model; or spae fewshot --tokenizer DIR --lm SPEC ...")
  return {"classes": res["rows"][0]["classes"], **q}


def _write_report(out: Path, images, pyr, psnr, counts, fewshot) -> None:
  e = html.escape
  parts = ["<!doctype html><meta charset='utf-8'><title>spae demo</title>",
           "<style>body{font-family:sans-serif;margin:2em}img{width:96px;height:96px;image-rendering:pixelated}"
           "td{vertical-align:top;padding:4px}.w{font-family:monospace;font-size:12px;max-width:60em}</style>",
           "<h1>spae demo</h1><p>Each image is encoded into a pyramid of words from a frozen language model's "
           "vocabulary; each column decodes the first <i>k</i> layers back to pixels.</p>"]
  for i, (name, _, caption) in enumerate(images):
    parts.append(f"<h2>{e(name)}</h2>" + (f"<p>caption: {e(caption)}</p>" if caption else ""))
    parts.append("<table><tr><td>input<br><img src='images/" + e(name) + "-input.png'></td>")
    for l in range(1, pyr.num_layers + 1):
      parts.append(f"<td>{l} layer{'s' if l > 1 else ''} ({counts[l - 1]} tokens)<br>"
                   f"<img src='images/{e(name)}-layers{l}.png'><br>PSNR {psnr[i, l - 1]:.1f} dB</td>")
    parts.append("</tr></table><table>")
    for l in range(1, pyr.num_layers + 1):
      s = pyr.grids[l - 1]
      parts.append(f"<tr><td>layer {l} ({s}×{s})</td><td class='w'>{e(' '.join(pyr.words(l, i)))}</td></tr>")
    parts.append("</table>")
  if fewshot:
    parts.append("<h2>Few-shot episode (held-out synthetic classes)</h2><pre>" + e(fewshot["prompt"]) + "</pre>"
                 f"<p>truth: {e(fewshot['truth'])}; Jaccard probe: {e(fewshot['jaccard'])}; "
                 f"ridge probe: {e(fewshot['ridge'])}</p>")
  with atomic_path(out / "report.html") as tmp:
    tmp.write_text("\n".join(parts), encoding="utf-8")


# ------------------------------------------------------------------------------------ CLI
def add_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("images", nargs="*", help="your own images (default: bundled synthetic scenes and photos)")
  p.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the shipped default)")
  p.add_argument("-o", "--out", default="demo", help="output folder (default ./demo)")
  p.add_argument("--lm", default=None, help="also score the few-shot episode with an LLM: hf:PATH, gemma:PATH, "
                                           "openai:URL#model")
  p.add_argument("--no-fewshot", action="store_true")


def run_cli(args: argparse.Namespace) -> int:
  import spae

  t0 = time.perf_counter()
  if args.tokenizer:
    tok = spae.Tokenizer.load(args.tokenizer)
  else:
    from spae import assets

    tok = assets.default_tokenizer()
  if args.images:
    images = [(Path(p).stem, load_image(p), "") for p in args.images]
  else:
    images = bundled_images(tok.config.image_size)
  print(f"tokenizer: {tok.config.image_size}px, pyramid {tok.config.pyramid.grids} "
        f"({tok.config.pyramid.cumulative_tokens()[-1]} tokens), vocabulary of {len(tok.vocabulary)} words "
        f"({tok.vocabulary.metadata.get('model', tok.vocabulary.metadata.get('source', '?'))})")
  run_demo(tok, images, Path(args.out), episode=not args.no_fewshot)
  if args.lm:
    from spae import data, lm, prompting
    from spae.prompting import FewShotConfig, evaluate_fewshot

    model = lm.load(args.lm)
    src = data.render_shapes_source(200, tok.config.image_size, seed=1, split="test")
    src = src.subset([c for c in data.SHAPES_HELDOUT_CLASSES if len(src.images_of(c)) >= 2])
    res = evaluate_fewshot(FewShotConfig(ways=(2,), shots=(1,), layers=(2,), episodes=20), tok, model, source=src,
                           lm_name=args.lm, progress=True)
    print(prompting.format_table(res["summary"]))
  print(f"done in {time.perf_counter() - t0:.1f} s")
  return 0
