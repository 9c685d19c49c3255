"""Training step time and images/s for configs/shapes64.py on this machine, with the fraction of the
measured matmul FLOP/s reached, and (--breakdown) where the seconds and FLOPs of a step go.

  python benchmarks/train_step.py                  # shapes64, default vocabulary (or an 8192 x 384 stand-in)
  python benchmarks/train_step.py --breakdown      # also time the parts of the step as separate programs
  python benchmarks/train_step.py --smoke          # configs/tiny.py, for CI

FLOPs per step are XLA's cost analysis of the step compiled with the whole vocabulary as one chunk: XLA counts a
loop body once whatever its trip count, so the chunked program itself would be under-counted (and padding rows
would count as work). The count is therefore the useful work, the same for any chunking.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _vocabulary(spec: str | None, dim: int, size: int, *, smoke: bool = False):
  import spae

  if spec:
    from spae.train._inputs import build_vocabulary

    return build_vocabulary(spec)  # a spec ('gemma3-270m', 'default', ...) or a saved folder
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


def _flops(lowered) -> float:
  cost = lowered.compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get("flops", 0.0)) if cost else 0.0


def _useful_flops(tr, use_gan: bool, args) -> float:
  """FLOPs of the step compiled with one vocabulary chunk (see the module docstring)."""
  import jax

  from spae import train as T

  models = copy.copy(tr.models)
  models.tokenizer_config = dataclasses.replace(models.tokenizer_config, vocab_chunk=len(tr.vocab))
  fn = T.make_train_step(tr.cfg, models, use_gan=use_gan, perceptual=tr.perceptual,
                         semantic=tr.teacher_fn is not None)
  return _flops(jax.jit(fn).lower(*args))


def _time(fn, repeats: int) -> tuple[float, float]:
  """Median wall seconds and median process CPU seconds (all threads) of fn() after one warm-up call.

  On a shared machine the wall time stretches with the load; the CPU time a call consumes barely does, so it is
  the fairer number to compare runs made at different loads.
  """
  fn()
  wall, cpu = [], []
  for _ in range(repeats):
    w, c = time.perf_counter(), time.process_time()
    fn()
    wall.append(time.perf_counter() - w)
    cpu.append(time.process_time() - c)
  return float(np.median(wall)), float(np.median(cpu))


def _matmul(n: int = 2048, repeats: int = 5) -> tuple[float, float]:
  """f32 [n,n]x[n,n] matmul GFLOP/s by wall time and per CPU-second, measured now."""
  import jax
  import jax.numpy as jnp

  a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
  b = jnp.asarray(np.random.default_rng(1).standard_normal((n, n)), jnp.float32)
  f = jax.jit(lambda a, b: jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST))
  wall, cpu = _time(lambda: f(a, b).block_until_ready(), repeats)
  return 2.0 * n**3 / wall / 1e9, 2.0 * n**3 / cpu / 1e9


def _time_steps(tr, use_gan: bool, x, steps: int) -> tuple[float, float, float]:
  import jax

  fn = tr.step_fn(use_gan)
  args = (tr.state, x, tr.codebook, tr.extras_for(x))
  flops = _useful_flops(tr, use_gan, args)

  def run():
    tr.state, m, _ = fn(tr.state, x, tr.codebook, tr.extras_for(x))
    jax.block_until_ready(m)

  wall, cpu = _time(run, steps)
  return wall, cpu, flops


def _breakdown(tr, x, repeats: int) -> list[dict]:
  """The parts of a generator step as separate jitted programs (forward + backward where the step has both)."""
  import jax
  import jax.numpy as jnp

  from spae import losses as L
  from spae import train as T
  from spae._pyramid import nearest_tokens, saq_quantize

  cfg, models = tr.cfg, tr.models
  spec, chunk = models.tokenizer_config.pyramid, models.tokenizer_config.vocab_chunk
  balanced = getattr(T._step, "search_chunk", None)  # the step's search chunk (absent before it existed)
  search = balanced(len(tr.vocab), chunk) if balanced else chunk
  g = tr.state["g_params"]
  ae = models.autoencoder(g)
  # The codes the step searches: the frozen table through the tokenizer's map ('projected': 12 dims, not 640).
  table = jax.jit(lambda t: ae.codes(t))(tr.codebook)
  sem_table = ae.semantic_codes(tr.codebook)
  rows = []

  def part(name, fn, *args):
    jfn = jax.jit(fn)
    t, cpu = _time(lambda: jax.block_until_ready(jfn(*args)), repeats)
    rows.append({"part": name, "seconds": t, "cpu_seconds": cpu, "gflop": _flops(jfn.lower(*args)) / 1e9})
    print(f"  {name}: {t:.3f} s ({cpu:.3f} CPU-s), {rows[-1]['gflop']:.1f} GFLOP counted", flush=True)

  enc = lambda g, x: models.autoencoder(g).encoder(x * 2.0 - 1.0)
  dec = lambda g, zq: models.autoencoder(g).decoder(zq)
  z = jax.jit(enc)(g, x)
  part("encoder forward + backward", lambda g, x: jax.grad(lambda g: jnp.sum(enc(g, x) ** 2))(g), g, x)
  pool = ae.pool_weights(z)
  part("SAQ search, all layers",
       lambda z, t: saq_quantize(z, t, spec, vocab_chunk=search, pool_weights=pool, semantic_codebook=sem_table)[0],
       z, table)
  q = jnp.asarray(np.random.default_rng(0).standard_normal((z.shape[0] * spec.grids[-1] ** 2, z.shape[-1])),
                  jnp.float32)
  part(f"  one {spec.grids[-1]}x{spec.grids[-1]} layer ({q.shape[0]} queries)",
       lambda q, t: nearest_tokens(q, t, vocab_chunk=search), q, table)
  ids, recons = jax.jit(lambda z, t: saq_quantize(z, t, spec, vocab_chunk=chunk, pool_weights=pool,
                                                  semantic_codebook=sem_table))(z, table)
  zq = jnp.concatenate([z, z]) if cfg.loss.progressive else z
  part(f"decoder forward + backward ({zq.shape[0]} latents)",
       lambda g, zq: jax.grad(lambda g, zq: jnp.sum(dec(g, zq) ** 2), argnums=(0, 1))(g, zq), g, zq)
  if tr.teacher_fn is not None:
    ex = tr.extras_for(x)
    n_sem = min(cfg.semantic.layers, spec.num_layers)

    def sem(z, recons, t, idx, probs):
      targets = T.semantic_targets(z, recons, spec.grids, n_sem, spec.subsample)
      return sum(L.semantic_loss(tg, t, idx, probs, cfg.semantic.tau, vocab_chunk=chunk) for tg in targets)

    part(f"semantic CE forward + backward ({n_sem} layers)", jax.grad(sem), z, recons, table,
         ex["teacher_idx"], ex["teacher_probs"])
    part("teacher relevance (outside the step)", lambda x: tr._teacher_jit(tr.teacher_fn, tr._teacher_mask, x), x)
  return rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default=str(ROOT / "configs" / "shapes64.py"))
  p.add_argument("--vocab", default=None, help="a Vocabulary spec or saved directory (default: the shipped default)")
  p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                 help="config override, as `spae train --set` takes it")
  p.add_argument("--steps", type=int, default=5, help="timed steps per variant")
  p.add_argument("--breakdown", action="store_true", help="also time the parts of a step")
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)

  import jax

  from spae import train as T
  from spae._io import SpaeInputError

  if a.smoke:
    a.config, a.steps = str(ROOT / "configs" / "tiny.py"), 2
  base = T.load_config(a.config, a.overrides)
  vocab = _vocabulary(a.vocab, 32 if a.smoke else 384, 256 if a.smoke else 8192, smoke=a.smoke)
  size = base.tokenizer.image_size
  base = dataclasses.replace(base, data=f"shapes-memory:{max(base.batch_size * 2, 32)}@{size}", num_data_threads=0,
                             logging=dataclasses.replace(base.logging, image_every=0),
                             checkpoints=dataclasses.replace(base.checkpoints, every=10**9))
  no_sem = dataclasses.replace(base, semantic=dataclasses.replace(base.semantic, weight=0.0))
  variants = [("G only, no semantic loss", no_sem, False)]
  if base.semantic.teacher and base.semantic.weight and not a.smoke:
    variants.insert(0, ("G + semantic (the config as is)", base, False))
  variants.append(("G + D (GAN on)", no_sem, True))
  rows, breakdown = [], []
  load_before = os.getloadavg()
  for name, cfg, use_gan in variants:
    with tempfile.TemporaryDirectory() as wd:
      try:
        tr = T.Trainer(cfg, wd, vocabulary=vocab)
      except SpaeInputError as e:
        if cfg is base:
          raise
        # Without its semantic loss a recipe whose layers 1-2 are the teacher's words is no valid config.
        print(f"{name}: skipped, this config needs its semantic loss ({e})", flush=True)
        continue
      x = tr.global_batch(next(tr.data)["image"])
      t, cpu, flops = _time_steps(tr, use_gan, x, a.steps)
      rows.append({"variant": name, "batch": cfg.batch_size, "seconds_per_step": t, "images_per_s": cfg.batch_size / t,
                   "cpu_seconds_per_step": cpu, "gflop_per_step": flops / 1e9, "gflops": flops / t / 1e9,
                   "gflop_per_cpu_s": flops / cpu / 1e9})
      print(rows[-1], flush=True)
      if a.breakdown and not breakdown:
        breakdown = _breakdown(tr, x, a.steps)
  mm, mm_cpu = _matmul()
  for r in rows:
    r["frac_of_matmul"] = r["gflops"] / mm
    r["frac_of_matmul_cpu"] = r["gflop_per_cpu_s"] / mm_cpu
  info = _common.machine_info()
  load = [round(v, 2) for v in os.getloadavg()]
  print(f"# train step: {Path(a.config).name}, {size}px, latent {base.tokenizer.latent_size}, vocab {len(vocab)}x"
        f"{vocab.dim} ({vocab.metadata.get('source', vocab.metadata.get('model', ''))}); matmul {mm:.0f} GFLOP/s "
        f"({mm_cpu:.0f} per CPU-second); "
        f"{info.get('cpu', '')} ({info['cpu_count']} cores, {info['backend']}); load average {load_before[0]:.1f} "
        f"before, {load[0]:.1f} after")
  _common.print_table(rows, ["variant", "batch", "seconds_per_step", "images_per_s", "gflop_per_step", "gflops",
                             "frac_of_matmul", "cpu_seconds_per_step", "frac_of_matmul_cpu"])
  if breakdown:
    _common.print_table(breakdown, ["part", "seconds", "cpu_seconds", "gflop"])
  _common.write_json(a.out, {"benchmark": "train_step", "machine": info, "load_avg": load, "matmul_gflops": mm,
                             "matmul_gflop_per_cpu_s": mm_cpu,
                             "config": Path(a.config).name, "vocab": [len(vocab), vocab.dim], "rows": rows,
                             "breakdown": breakdown})
  return 0


if __name__ == "__main__":
  from spae._io import SpaeInputError

  try:
    sys.exit(main())
  except SpaeInputError as e:  # bad input: one line, as the `spae` command gives
    sys.exit(f"train_step.py: {e}")
