"""Training step time and images/s for configs/shapes64.py on this machine, with the fraction of the
measured matmul FLOP/s reached (step FLOPs from XLA's cost analysis of the compiled step).

  python benchmarks/train_step.py                  # shapes64, default vocabulary (or an 8192 x 384 stand-in)
  python benchmarks/train_step.py --smoke          # configs/tiny.py, for CI
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _vocabulary(spec: str | None, dim: int, size: int, *, smoke: bool = False):
  import spae

  if spec:
    return spae.Vocabulary.load(spec)
  if smoke:
    return _random_vocabulary(dim, size)
  try:
    from spae import assets

    return assets.default_vocabulary()
  except Exception:  # the default asset is optional here: fall back to a same-size random table
    return _random_vocabulary(dim, size)


def _random_vocabulary(dim: int, size: int):
  import spae

  rows = np.random.default_rng(0).standard_normal((size, dim)).astype(np.float32) * 0.05
  return spae.Vocabulary.from_arrays([f"w{i}" for i in range(size)], rows,
                                     metadata={"source": f"random {size}x{dim} stand-in"})


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default=str(ROOT / "configs" / "shapes64.py"))
  p.add_argument("--vocab", default=None, help="a saved Vocabulary directory (default: the shipped default)")
  p.add_argument("--steps", type=int, default=5, help="timed steps per variant")
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)

  import jax

  from spae import train as T

  if a.smoke:
    a.config, a.steps = str(ROOT / "configs" / "tiny.py"), 2
  cfg = T.load_config(a.config)
  vocab = _vocabulary(a.vocab, 32 if a.smoke else 384, 256 if a.smoke else 8192, smoke=a.smoke)
  size = cfg.tokenizer.image_size
  cfg = dataclasses.replace(cfg, data=f"shapes-memory:{max(cfg.batch_size * 2, 32)}@{size}", num_data_threads=0,
                            semantic=dataclasses.replace(cfg.semantic, weight=0.0),
                            logging=dataclasses.replace(cfg.logging, image_every=0),
                            checkpoints=dataclasses.replace(cfg.checkpoints, every=10**9))
  rows = []
  with tempfile.TemporaryDirectory() as wd:
    tr = T.Trainer(cfg, wd, vocabulary=vocab)
    batch = next(tr.data)["image"]
    x = tr.global_batch(batch)
    for use_gan in (False, True):
      fn = tr.step_fn(use_gan)
      compiled = fn.lower(tr.state, x, tr.codebook, tr.extras_for(x)).compile()
      cost = compiled.cost_analysis()
      cost = cost[0] if isinstance(cost, (list, tuple)) else cost
      flops = float(cost.get("flops", 0.0)) if cost else 0.0

      def run():
        tr.state, m, _ = fn(tr.state, x, tr.codebook, tr.extras_for(x))
        jax.block_until_ready(m)

      t = _common.time_fn(run, warmup=1, repeats=a.steps)
      rows.append({"variant": "G+D (GAN on)" if use_gan else "G only (before disc_start)",
                   "batch": cfg.batch_size, "seconds_per_step": t, "images_per_s": cfg.batch_size / t,
                   "gflop_per_step": flops / 1e9, "gflops": flops / t / 1e9})
  mm = _common.matmul_gflops(2048, 2048, 2048)
  for r in rows:
    r["frac_of_matmul"] = r["gflops"] / mm
  info = _common.machine_info()
  print(f"# train step: {Path(a.config).name}, {size}px, latent {cfg.tokenizer.latent_size}, vocab {len(vocab)}x{vocab.dim}"
        f" ({vocab.metadata.get('source', '')}); matmul {mm:.0f} GFLOP/s; {info.get('cpu', '')} "
        f"({info['cpu_count']} cores, {info['backend']})")
  _common.print_table(rows, ["variant", "batch", "seconds_per_step", "images_per_s", "gflop_per_step", "gflops",
                             "frac_of_matmul"])
  _common.write_json(a.out, {"benchmark": "train_step", "machine": info, "matmul_gflops": mm,
                             "config": Path(a.config).name, "vocab": [len(vocab), vocab.dim], "rows": rows})
  return 0


if __name__ == "__main__":
  sys.exit(main())
