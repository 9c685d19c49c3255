"""`spae demo`: images -> words of a real language model's vocabulary -> images, offline, on the shipped default.

Writes OUT/report.html (per image: its reconstruction after every prefix of layers next to the thumbnail of the
same budget, both with PSNR, and each layer's words laid as a grid over the image region each word encodes),
OUT/images/, OUT/grid.png, OUT/tokens.json, and runs a few-shot episode on held-out synthetic classes with the
LLM-free probe, printing the exact prompt an LLM would get. With a real LLM (`gguf:gemma3-270m` when the models
extra is installed, or --lm SPEC) it also runs one classification, caption and question episode on held-out
scenes (`spae._demo_llm`), prints each prompt, answer and truth, and adds them to the report and OUT/llm.json.
"""

from __future__ import annotations

import argparse
import html
import time
from pathlib import Path
from typing import Any

import numpy as np

from spae import _demo_llm
from spae._images import image_grid, load_image, save_image
from spae._io import SpaeInputError, atomic_path, check_can_create, write_json_atomic

__all__ = ["TOP_WORD_LAYERS", "add_args", "bundled_images", "run_cli", "run_demo", "top_words"]

TOP_WORD_LAYERS = 2  # "top words": layers 1-2 (1 + 4 tokens with the default pyramid)
VIEW_PX = 176  # on-page size of the input, reconstructions and thumbnails (64 px images, pixelated); the
# input and six prefixes (7 columns, 12 px gaps) fit one row of a 1400 px window (checked in headless Chromium)


def bundled_images(image_size: int, num_scenes: int = 3, num_shapes: int = 2,
                   seed: int = 7) -> list[tuple[str, np.ndarray, str]]:
  """(name, uint8 image, caption): held-out `scenes`, held-out `shapes` scenes, and held-out photos if available.

  Scenes come from the test split of spae.data's `scenes` renderer, shapes from the test split of `shapes`; the
  photos are scikit-image photographs that spae.data keeps out of training (whole, centre-cropped).
  """
  from spae import data

  out = []
  scenes = data.SceneSource(num_scenes, image_size, seed=seed, split="test")
  out += [(f"scenes-{i}", scenes.load(i), scenes.caption(i)) for i in range(num_scenes)]
  shapes = data.render_shapes_source(num_shapes, image_size, seed=seed, split="test")
  out += [(f"shapes-{i}", shapes.load(i), shapes.caption(i)) for i in range(num_shapes)]
  for name in data.HELDOUT_PHOTOS[:3]:
    try:
      out.append((name, data.load_photo(name), data.PHOTOS[name]))
    except SpaeInputError:  # scikit-image is not installed
      break
  return out


def _layer_words(pyr, layer: int, image: int, limit: int = 64) -> str:
  words = pyr.words(layer, image)
  text = " ".join(words[:limit])
  return text + (f" … (+{len(words) - limit})" if len(words) > limit else "")


def top_words(pyr, image: int, layers: int = TOP_WORD_LAYERS) -> list[list[str]]:
  """The words of layers 1..`layers` of one image (row-major per layer)."""
  return [pyr.words(l, image) for l in range(1, min(layers, pyr.num_layers) + 1)]


def run_demo(tokenizer: Any, images: list[tuple[str, np.ndarray, str]], out: Path, *, episode: bool = True,
             ways: int = 2, shots: int = 1, layers: int = 2, seed: int = 0, printer=print, lm: Any = None,
             lm_name: str = "", lm_note: str = "") -> dict[str, Any]:
  """Encodes, prints and decodes `images`; writes the report. Returns a summary dict (also in tokens.json).

  `lm`: a language model for one real-LLM episode of each kind (None: `lm_note` says why there are none).
  """
  from spae import metrics

  out.mkdir(parents=True, exist_ok=True)
  arrays = [img for _, img, _ in images]
  batch = np.concatenate([tokenizer.preprocess(a)[0] for a in arrays])  # each image may have its own size
  pyr = tokenizer.encode(batch)
  n_layers = pyr.num_layers
  recons = [tokenizer.decode(pyr, layers=k) for k in range(1, n_layers + 1)]
  counts = tokenizer.config.pyramid.cumulative_tokens()
  # The anchor of each prefix's budget: the thumbnail whose side is the prefix's deepest grid.
  sides = [int(max(pyr.grids[:k])) for k in range(1, n_layers + 1)]
  thumbs = {s: metrics.thumbnail(batch, s) for s in set(sides)}
  psnr = np.stack([np.asarray(metrics.psnr(r, batch)) for r in recons], axis=1)  # [B, L]
  thumb_psnr = np.stack([np.asarray(metrics.psnr(thumbs[s], batch)) for s in sides], axis=1)  # [B, L]
  entries = []
  for i, (name, _, caption) in enumerate(images):
    printer(f"\n{name}" + (f"  ({caption})" if caption else ""))
    printer(f"  top words (layers 1-{min(TOP_WORD_LAYERS, n_layers)}): "
            + " | ".join(" ".join(ws) for ws in top_words(pyr, i)))
    for l in range(1, n_layers + 1):
      s = pyr.grids[l - 1]
      printer(f"  layer {l} ({s}x{s}): {_layer_words(pyr, l, i, 32)}")
    printer("  PSNR spae / same-budget thumbnail: " + ", ".join(
        f"{counts[k]} tok {psnr[i, k]:.1f}/{thumb_psnr[i, k]:.1f} ({sides[k]}x{sides[k]})" for k in range(n_layers))
            + " dB")
    entries.append({"name": name, "caption": caption, "psnr_per_prefix": [float(v) for v in psnr[i]],
                    "thumbnail_psnr_per_prefix": [float(v) for v in thumb_psnr[i]]})
  img_dir = out / "images"
  img_dir.mkdir(exist_ok=True)
  for i, (name, _, _) in enumerate(images):
    save_image(img_dir / f"{name}-input.png", batch[i])
    for l in range(1, n_layers + 1):
      save_image(img_dir / f"{name}-layers{l}.png", recons[l - 1][i])
      save_image(img_dir / f"{name}-thumb{l}.png", thumbs[sides[l - 1]][i])
  save_image(out / "grid.png", image_grid([[batch[i]] + [r[i] for r in recons] for i in range(len(images))]))
  doc = {"tokenizer_vocabulary": tokenizer.vocabulary.metadata, "grids": list(pyr.grids),
         "tokens_per_prefix": counts, "thumbnail_side_per_prefix": sides, **pyr.to_json(),
         "images": [e["name"] for e in entries],
         "psnr_per_prefix": {e["name"]: e["psnr_per_prefix"] for e in entries},
         "thumbnail_psnr_per_prefix": {e["name"]: e["thumbnail_psnr_per_prefix"] for e in entries}}
  write_json_atomic(out / "tokens.json", doc)
  fewshot = None
  if episode:
    fewshot = _episode(tokenizer, ways, shots, layers, seed, printer, lm is not None)
    write_json_atomic(out / "fewshot.json", fewshot)
  llm: list[dict[str, Any]] = []
  if lm is not None:
    llm = _demo_llm.run_episodes(tokenizer, lm, lm_name, image_size=tokenizer.config.image_size, seed=seed,
                                 printer=printer)
    write_json_atomic(out / "llm.json", {"lm": lm_name, "episodes": llm})
  elif lm_note:
    printer(f"\n{lm_note}")
  write_report(out, images, pyr, psnr, thumb_psnr, counts, sides, fewshot, llm, lm_name, lm_note)
  printer(f"\nmean PSNR by prefix ({' / '.join(str(c) for c in counts)} tokens): "
          + " / ".join(f"{v:.1f}" for v in psnr.mean(0)) + " dB; same-budget thumbnails ("
          + " / ".join(f"{s}x{s}" for s in sides) + "): " + " / ".join(f"{v:.1f}" for v in thumb_psnr.mean(0))
          + " dB")
  printer(f"wrote {out / 'report.html'}, {out / 'grid.png'}, {out / 'tokens.json'}")
  return {"psnr_per_prefix": psnr.mean(0).tolist(), "thumbnail_psnr_per_prefix": thumb_psnr.mean(0).tolist(),
          "fewshot": fewshot, "llm": llm, "out": str(out)}


def _episode(tokenizer, ways, shots, layers, seed, printer, with_lm: bool = False) -> dict[str, Any]:
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
  if not with_lm:
    printer("  to ask a real LLM: install the models extra (spae demo then uses gguf:gemma3-270m) or pass --lm "
            "gguf:PATH, hf:PATH, gemma:PATH or openai:URL#model; or spae fewshot --tokenizer DIR --lm SPEC ...")
  return {"classes": res["rows"][0]["classes"], **q}


# ------------------------------------------------------------------------------------ HTML report
_CSS = f"""
body{{font-family:system-ui,sans-serif;margin:24px;color:#222}}
h2{{margin:28px 0 4px}} .cap{{margin:2px 0;color:#555}} .top{{margin:6px 0 10px;font-size:15px}}
img.px{{width:{VIEW_PX}px;height:{VIEW_PX}px;image-rendering:pixelated;display:block}}
.strip,.layers{{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}}
figure{{margin:0;font-size:12px;text-align:center}} figcaption{{margin:3px 0 8px}}
.win{{color:#070;font-weight:bold}} .lose{{color:#b00;font-weight:bold}} .anchor{{color:#444;font-weight:bold}}
.layers{{margin-top:8px}} .board{{position:relative}}
.board img{{position:absolute;inset:0;width:100%;height:100%;image-rendering:pixelated}}
.cells{{position:absolute;inset:0;display:grid}}
.cells span{{box-sizing:border-box;border:1px solid rgba(255,255,255,.3);background:rgba(0,0,0,.3);color:#fff;
 overflow:hidden;display:flex;align-items:center;justify-content:center;text-align:center;line-height:1;
 text-shadow:0 0 3px #000;white-space:nowrap;cursor:default}}
.cells span:hover{{background:transparent;outline:3px solid #ff0;outline-offset:-3px;z-index:1}}
.hov{{display:block;min-height:1.3em;font-family:monospace;font-size:13px}}
"""
# Hovering a word cell names it (with its grid position) under its layer; CSS outlines its image region.
_JS = """
document.querySelectorAll('.cells').forEach(function (g) {
  var out = g.closest('figure').querySelector('.hov');
  g.addEventListener('mouseover', function (e) {
    var t = e.target.closest('span');
    if (t) out.textContent = 'row ' + t.dataset.r + ', col ' + t.dataset.c + ': ' + t.title;
  });
  g.addEventListener('mouseleave', function () { out.textContent = ''; });
});
"""


def _board_px(side: int) -> int:
  return max(256, 24 * side)  # words stay legible: cells of at least 24 px


def _word_grid(e, src: str, words: list[str], layer: int, side: int) -> str:
  px = _board_px(side)
  cell = px / side
  spans = []
  for k, w in enumerate(words):
    fs = int(max(7, min(18, (cell - 3) / (0.6 * max(2, len(w))))))  # fit the cell; hover shows it whole
    spans.append(f"<span class='c' data-r='{k // side}' data-c='{k % side}' title='{e(w)}' "
                 f"style='font-size:{fs}px'>{e(w)}</span>")
  return (f"<figure class='wg'><div class='board' style='width:{px}px;height:{px}px'><img src='{src}' alt=''>"
          f"<div class='cells' data-layer='{layer}' data-side='{side}' style='grid-template-columns:"
          f"repeat({side},1fr);grid-template-rows:repeat({side},1fr)'>{''.join(spans)}</div></div>"
          f"<figcaption>layer {layer}: {side}×{side} word{'s' if side > 1 else ''}, each over the region it "
          "encodes"
          f"<span class='hov'></span></figcaption></figure>")


def write_report(out: Path, images, pyr, psnr, thumb_psnr, counts, sides, fewshot, llm=(), lm_name="",
                 lm_note="") -> None:
  """OUT/report.html: plain HTML + inline CSS/JS, no network; images referenced under OUT/images/."""
  e = lambda s: html.escape(str(s), quote=True)
  parts = ["<!doctype html><html lang='en'><meta charset='utf-8'><title>spae demo</title>",
           f"<style>{_CSS}</style>",
           "<h1>spae demo</h1><p>Each image is encoded into a pyramid of words from a frozen language model's "
           "vocabulary. Each column decodes the first <i>k</i> layers back to pixels (top) next to the thumbnail of "
           "the same budget (bottom): the s×s box average, s the side of the prefix's deepest layer, scaled back "
           "up. Below, each layer's words lie over the image region they encode; hover a word.</p>"]
  for i, (name, _, caption) in enumerate(images):
    n = e(name)
    parts.append(f"<section><h2>{n}</h2>" + (f"<p class='cap'>{e(caption)}</p>" if caption else ""))
    tops = [" ".join(ws) for ws in top_words(pyr, i)]
    parts.append("<p class='top'>top words: " + " | ".join(f"<b>{e(t)}</b>" for t in tops) + "</p>")
    parts.append(f"<div class='strip'><figure><img class='px' src='images/{n}-input.png' alt='input'>"
                 "<figcaption>input</figcaption></figure>")
    for l in range(1, pyr.num_layers + 1):
      p, t, s = psnr[i, l - 1], thumb_psnr[i, l - 1], sides[l - 1]
      parts.append(
          f"<figure><img class='px' src='images/{n}-layers{l}.png' alt='{l} layers'>"
          f"<figcaption>{l} layer{'s' if l > 1 else ''}, {counts[l - 1]} word{'s' if counts[l - 1] > 1 else ''}<br>"
          f"spae <span class='{'win' if p > t else 'lose'}' data-psnr='spae'>{p:.1f} dB</span></figcaption>"
          f"<img class='px' src='images/{n}-thumb{l}.png' alt='thumbnail {s}x{s}'>"
          f"<figcaption>thumbnail {s}×{s} ({s * s} colour{'s' if s > 1 else ''})<br>"
          f"<span class='anchor' data-psnr='thumbnail'>{t:.1f} dB</span></figcaption></figure>")
    parts.append("</div><div class='layers'>")
    for l in range(1, pyr.num_layers + 1):
      parts.append(_word_grid(e, f"images/{n}-input.png", pyr.words(l, i), l, pyr.grids[l - 1]))
    parts.append("</div></section>")
  if fewshot:
    parts.append("<h2>Few-shot episode (held-out synthetic classes)</h2><pre>" + e(fewshot["prompt"]) + "</pre>"
                 f"<p>truth: {e(fewshot['truth'])}; Jaccard probe: {e(fewshot['jaccard'])}; "
                 f"ridge probe: {e(fewshot['ridge'])}</p>")
  parts.append(_demo_llm.report_html(list(llm), lm_name, lm_note))
  parts.append(f"<script>{_JS}</script></html>")
  with atomic_path(out / "report.html") as tmp:
    tmp.write_text("\n".join(parts), encoding="utf-8")


# ------------------------------------------------------------------------------------ CLI
def add_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("images", nargs="*", help="your own images (default: bundled synthetic scenes and photos)")
  p.add_argument("--tokenizer", default=None, help="tokenizer directory (default: the shipped default)")
  p.add_argument("-o", "--out", default="demo", help="output folder (default ./demo)")
  p.add_argument("--lm", default=None,
                 help="the LLM of the classification / caption / question episodes: gguf:gemma3-270m (the default "
                      "when the models extra is installed), gguf:PATH, hf:PATH, gemma:PATH, openai:URL#model, or "
                      "'none' to skip them")
  p.add_argument("--no-fewshot", action="store_true")


def run_cli(args: argparse.Namespace) -> int:
  import spae

  t0 = time.perf_counter()
  out = Path(args.out)
  if out.exists() and not out.is_dir():  # the demo adds its files to a folder; it never replaces a file
    raise SpaeInputError(f"output {args.out!r} exists and is not a folder; choose a folder name with -o.")
  check_can_create(out)
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
  spec, note = (args.lm, "") if args.lm else _demo_llm.default_lm()
  model = None
  if spec == "none":
    note = "real-LLM episodes skipped (--lm none)"
  elif spec:
    from spae import lm

    print(f"loading {spec} for the real-LLM episodes ...")
    model = lm.load(spec)
  run_demo(tok, images, out, episode=not args.no_fewshot, lm=model, lm_name=spec or "", lm_note=note)
  print(f"done in {time.perf_counter() - t0:.1f} s")
  return 0
