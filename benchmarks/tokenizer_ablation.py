"""How the frozen codebook is scored, and how the pyramid samples, measured by training every variant the same way.

Every row starts from the same config (configs/gemma64.py by default: Gemma 3's vocabulary, 64 px, the same nets,
data, seed and number of steps) and changes one thing:

  no-quantizer    the decoder reads the encoder output itself: the network's own ceiling in this budget
  raw             the paper's scoring: codes are the frozen rows themselves (640-dim latents for Gemma)
  projected       the chosen scoring: unit rows through a learned D -> d projection (spae._codebook)
  learned         a learned-codebook VQGAN of the same size (V x d free rows; its ids are not words)
  projected-rq    residual sums instead of SAQ's streaming average
  projected-dil   dilated (block-centre) subsampling instead of block means
  projected-skip  projected, plus the linear pixel-patch path around encoder and decoder (AutoencoderConfig.pixel_skip)

Each row is trained with spae's trainer, exported, and evaluated with benchmarks/recon.py's `evaluate` on the
held-out scenes (test split) and held-out photo crops: PSNR per prefix next to the same-budget thumbnail anchor
measured in the same run, codebook perplexity per layer, the share of scenes whose top words (layers 1-2) name the
main object's colour or shape, and seconds per training step (with the machine's load).

  python benchmarks/tokenizer_ablation.py --steps 150 --out ablation.json [--rows projected,raw]
  python benchmarks/tokenizer_ablation.py --smoke --out /tmp/ablation.json     # CI: tiny config, 2 steps

To choose a recipe, evaluate on the validation split instead (`--split validation`: validation-split scenes only;
the held-out photographs are test data and are left out), e.g. the code dimension of the default:

  python benchmarks/tokenizer_ablation.py --rows projected-skip --steps 200 --split validation \
      --set "semantic.teacher=lit:default#text_tower=MINILM" --set tokenizer.codebook.dim=8 \
      --workdir runs/dim8 --out dim8.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common  # noqa: E402
import recon  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ROWS = ("no-quantizer", "raw", "projected", "learned", "projected-rq", "projected-dil", "projected-skip")


def row_config(base: Any, row: str, vocab_dim: int) -> Any:
  """`base` (a TrainConfig) changed in the one way `row` names; the latent dim follows the codes."""
  from spae import CodebookConfig

  tok, loss = base.tokenizer, base.loss
  cb = tok.codebook if tok.codebook.trainable else CodebookConfig("projected", 32)
  # Every row uses block means except the one that measures dilation, and plain nets except the skip row.
  tok = dataclasses.replace(tok, pyramid=dataclasses.replace(tok.pyramid, subsample="pool"),
                            autoencoder=dataclasses.replace(tok.autoencoder, pixel_skip=False))
  if row == "no-quantizer":
    tok, loss = dataclasses.replace(tok, codebook=cb), dataclasses.replace(loss, quantize=False)
  elif row == "raw":
    tok = dataclasses.replace(tok, codebook=CodebookConfig("raw"))
  elif row == "projected":
    tok = dataclasses.replace(tok, codebook=cb)
  elif row == "learned":
    tok = dataclasses.replace(tok, codebook=CodebookConfig("learned", cb.dim))
  elif row == "projected-rq":
    tok = dataclasses.replace(tok, codebook=cb, quantizer="rq")
  elif row == "projected-dil":
    tok = dataclasses.replace(tok, codebook=cb, pyramid=dataclasses.replace(tok.pyramid, subsample="dilation"))
  elif row == "projected-skip":
    tok = dataclasses.replace(tok, codebook=cb, autoencoder=dataclasses.replace(tok.autoencoder, pixel_skip=True))
  else:
    raise SystemExit(f"unknown row {row!r}; rows: {', '.join(ROWS)}")
  ae = dataclasses.replace(tok.autoencoder, latent_dim=tok.codebook.latent_dim(vocab_dim))
  return dataclasses.replace(base, tokenizer=dataclasses.replace(tok, autoencoder=ae), loss=loss)


def plain_autoencoder_psnr(tok: Any, images: np.ndarray, bs: int) -> float:
  """PSNR of decoder(encoder(x)) with no quantizer (the no-quantizer row)."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from spae import metrics

  graphdef, state = nnx.split(tok.model)

  @jax.jit
  def fn(state, x):
    m = nnx.merge(graphdef, state)
    return jnp.clip((m.decoder(m.encoder(x * 2.0 - 1.0)) + 1.0) / 2.0, 0.0, 1.0)

  total, seen = 0.0, 0
  for x, n in recon.batches(images, bs):
    y = fn(state, jnp.asarray(x))
    total += float(np.sum(np.asarray(metrics.psnr(jnp.asarray(x[:n]), y[:n]))))
    seen += n
  return total / seen


def run_row(base: Any, row: str, steps: int, workdir: Path, datasets: dict[str, Any], bs: int,
            vocab: Any, teacher: Any) -> dict[str, Any]:
  from spae import train as T

  cfg = dataclasses.replace(row_config(base, row, vocab.dim), steps=steps)
  tr = T.Trainer(cfg, workdir / row, vocabulary=vocab, teacher=teacher)
  t0 = time.perf_counter()
  last = tr.run(progress=False)
  seconds = time.perf_counter() - t0
  tok = tr.tokenizer(ema=cfg.optim.ema_decay > 0)
  ips = last.get("images_per_s")  # measured by the trainer between log steps, so compile time is left out
  sec_per_step = cfg.batch_size / ips if ips else seconds / max(steps, 1)
  out: dict[str, Any] = {"row": row, "steps": steps, "train_seconds": seconds, "sec_per_step": sec_per_step,
                         "final_metrics": {k: v for k, v in last.items() if isinstance(v, (int, float))},
                         "load_avg": list(os.getloadavg())}
  fn = recon.make_eval_fn(tok)
  for name, d in datasets.items():
    res = recon.evaluate(tok, fn, d["images"], bs, attrs=d.get("attrs"))
    if row == "no-quantizer":
      res["plain_psnr"] = plain_autoencoder_psnr(tok, d["images"], bs)
    out[name] = res
  return out


def _finished_rows(out: str | None, args: dict[str, Any], rows: list[str]) -> list[dict[str, Any]]:
  """Rows already measured in `out` by a run with the same settings, so an interrupted ablation resumes."""
  if not out or not Path(out).is_file():
    return []
  try:
    old = json.loads(Path(out).read_text())
  except (OSError, ValueError):
    return []
  same = {k: v for k, v in old.get("args", {}).items() if k != "rows"} == {k: v for k, v in args.items() if k != "rows"}
  return [r for r in old.get("results", []) if same and r.get("row") in rows]


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default=str(ROOT / "configs" / "gemma64.py"))
  p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
  p.add_argument("--rows", default=",".join(ROWS))
  p.add_argument("--steps", type=int, default=150)
  p.add_argument("--num-images", type=int, default=96)
  p.add_argument("--batch-size", type=int, default=16)
  p.add_argument("--workdir", default=None, help="training runs go here (default: a temporary folder)")
  p.add_argument("--split", choices=("test", "validation"), default="test",
                 help="scenes to evaluate on: test (the figures to report, plus the held-out photos) or validation "
                      "(for choosing a recipe: scenes only)")
  p.add_argument("--smoke", action="store_true", help="configs/tiny.py, 2 steps, a few images (CI)")
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  import tempfile

  from spae import train as T

  config = str(ROOT / "configs" / "tiny.py") if a.smoke else a.config
  if a.smoke:
    a.steps, a.num_images, a.batch_size = 2, 4, 4
    a.overrides = ["gan.disc_start=1000000", "logging.image_every=0", "checkpoints.every=1000"] + a.overrides
  base = T.load_config(config, a.overrides)
  rows = [r.strip() for r in a.rows.split(",") if r.strip()]
  vocab = T.build_vocabulary(base.vocab)
  teacher = None
  if base.semantic.teacher and base.semantic.weight:  # loaded once, shared by every row
    from spae import teachers

    spec = base.semantic.teacher
    teacher = teachers.load("lit:default" if spec == "default" else spec)
  size = base.tokenizer.image_size
  imgs, attrs = recon.new_scenes(a.num_images, size, 0, split=a.split)
  datasets: dict[str, Any] = {f"scenes-{a.split}": {"images": imgs, "attrs": attrs}}
  if not a.smoke and a.split == "test":
    from spae.data import heldout_photo_crops

    crops = heldout_photo_crops(size)
    datasets["photos-heldout"] = {"images": np.stack([crops.load(i) for i in range(len(crops))])}
  results = _finished_rows(a.out, vars(a), rows)
  # Without --workdir the rows train in a temporary folder that goes when the run ends: only --out is kept.
  with contextlib.ExitStack() as stack:
    work = Path(a.workdir) if a.workdir else Path(stack.enter_context(
        tempfile.TemporaryDirectory(prefix="spae-ablation-")))
    for row in rows:
      if any(r["row"] == row for r in results):
        print(f"{row}: already in {a.out}, kept", flush=True)
        continue
      res = run_row(base, row, a.steps, work, datasets, a.batch_size, vocab, teacher)
      results.append(res)
      results.sort(key=lambda r: rows.index(r["row"]))
      _common.write_json(a.out, {"benchmark": "tokenizer_ablation", "machine": _common.machine_info(),
                                 "args": vars(a), "vocab_size": len(vocab), "results": results})
      print(json.dumps({"row": row, "sec_per_step": round(res["sec_per_step"], 2)}), flush=True)

  info = _common.machine_info()
  print(f"\n# tokenizer ablation: {Path(config).name} {' '.join(a.overrides)}; {a.steps} steps per row; "
        f"V={len(vocab)}; {info.get('cpu', '')} ({info['cpu_count']} cores), load avg {os.getloadavg()[0]:.2f}")
  for name in datasets:
    table = []
    for res in results:
      d = res[name]
      psnr = [r["psnr"] for r in d["rows"]]
      row = {"row": res["row"], "psnr/prefix": " ".join(f"{v:.1f}" for v in psnr),
             "thumb": " ".join(f"{r['thumb_psnr']:.1f}" for r in d["rows"]),
             "ppl/layer": " ".join(f"{v:.0f}" for v in d["perplexity"]), "s/step": res["sec_per_step"]}
      if "plain_psnr" in d:
        row["psnr/prefix"] = f"{d['plain_psnr']:.1f} (no tokens)"
      if "main_named" in d:
        row["top-words-name"] = f"{100 * d['main_named']:.0f}% ({100 * d['main_named_other_image']:.0f}% other)"
      table.append(row)
    print(f"\n## {name}")
    _common.print_table(table, [c for c in ("row", "psnr/prefix", "thumb", "ppl/layer", "top-words-name", "s/step")
                                if any(c in r for r in table)])
  return 0


if __name__ == "__main__":
  sys.exit(main())
