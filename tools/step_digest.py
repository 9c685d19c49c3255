"""SHA-256 of the programs a recipe's training steps compile from: a check that a change to the trainer leaves what a
recipe trains to as it was, without training it.

The shipped default is reproduced bit for bit by tools/train_default_tokenizer.py, so a refactor of the step
(spae/train/_step.py) or of anything it calls must not change a single operation or its order. This tool lowers every
step program a config trains with (`make_train_step` with the flags the Trainer passes over the run: with and
without the discriminator, after a scorer reset or a refit, the decoder tune) on abstract inputs of the config's
shapes, and prints the SHA-256 of each one's StableHLO text. Run it before and after a change, with the same
package versions: equal digests mean the same programs, so the same bits. Nothing is trained and no data or teacher
is read; the vocabulary is only sized (`--vocab-shape`; without it the config's vocabulary is loaded to read its
shape). Where the teacher chooses the semantic sub-vocabulary at training time, the tool puts the first N rows in
its place: the rows are constants of the program, so compare only digests this tool made. The perceptual network is
left out (it needs a weight file), so a recipe with a perceptual loss is checked without that term. About 15 s for
configs/gemma64_tune1600.py on two cores.

  python tools/step_digest.py --config configs/gemma64_tune1600.py --vocab-shape 32768,640 > before.txt
  (change the trainer)
  python tools/step_digest.py --config configs/gemma64_tune1600.py --vocab-shape 32768,640 | diff before.txt -
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def programs(cfg) -> dict[str, dict[str, bool]]:
  """The step programs the Trainer compiles for `cfg` (spae/train/_trainer.py, `dispatch_step`), by name: each
  distinct (discriminator on, scorer frozen, codes frozen) over the run's steps, then the decoder tune if any."""
  reset, refit, start = cfg.semantic.pool_reset, cfg.semantic.refit_step, cfg.gan.disc_start
  semantic = bool(cfg.semantic.teacher and cfg.semantic.weight)
  out: dict[str, dict[str, bool]] = {}
  for step in sorted({0, reset, refit, start}):
    if step >= cfg.steps:
      continue
    flags = dict(use_gan=bool(cfg.gan.adversarial_weight) and step >= start,
                 freeze_pool=bool(reset) and step >= reset, freeze_codes=bool(refit) and step >= refit)
    name = "step" + "".join(f"+{k}" for k, on in (("gan", flags["use_gan"]), ("frozen_scorer", flags["freeze_pool"]),
                                                 ("frozen_codes", flags["freeze_codes"])) if on)
    out.setdefault(name, dict(flags, semantic=semantic))
  if cfg.tune.steps:
    out["tune"] = dict(use_gan=False, decoder_only=True)
  return out


def _vocab_shape(cfg, text: str | None) -> tuple[int, int]:
  from spae import SpaeInputError
  from spae.train._inputs import build_vocabulary

  if text is None:
    v = build_vocabulary(cfg.vocab)
    return len(v), int(v.dim)
  try:
    n, d = (int(x) for x in text.split(","))
  except ValueError:
    raise SpaeInputError(f"--vocab-shape {text!r}: expected ROWS,DIM, e.g. 32768,640.") from None
  if n < 1 or d < 1:
    raise SpaeInputError(f"--vocab-shape {text!r}: both sizes must be positive.")
  return n, d


def step_digests(cfg, vocab_shape: tuple[int, int]) -> dict[str, str]:
  """{program: SHA-256 of its lowered StableHLO} for the step programs that `cfg` trains with."""
  import jax
  import jax.numpy as jnp

  from spae.train._step import Models, init_state, make_train_step, tune_optimizer

  sem = cfg.semantic
  pyr = cfg.tokenizer.pyramid
  if sem.vocab_size and not pyr.semantic_vocab:  # the Trainer asks the teacher for these rows; any rows will do
    pyr = dataclasses.replace(pyr, semantic_layers=min(sem.layers, len(pyr.grids)),
                              semantic_vocab=tuple(range(min(sem.vocab_size, vocab_shape[0]))))
    cfg = dataclasses.replace(cfg, tokenizer=dataclasses.replace(cfg.tokenizer, pyramid=pyr))
  models = Models(cfg, vocab_shape)
  state = jax.eval_shape(lambda: init_state(cfg, models))
  size, b = cfg.tokenizer.image_size, cfg.batch_size
  images = jax.ShapeDtypeStruct((b, size, size, 3), jnp.float32)
  table = jax.ShapeDtypeStruct(vocab_shape, jnp.float32)
  k = min(sem.teacher_top_k, vocab_shape[0])
  extras = {"teacher_idx": jax.ShapeDtypeStruct((b, k), jnp.int32),
            "teacher_probs": jax.ShapeDtypeStruct((b, k), jnp.float32)}
  out = {}
  for name, flags in programs(cfg).items():
    st, ex = state, extras
    if name == "tune":
      st, ex = dict(state, g_opt=jax.eval_shape(lambda: tune_optimizer(cfg).init(models.g_init))), {}
    step = jax.jit(make_train_step(cfg, models, **flags), donate_argnums=(0,))  # as the Trainer jits it
    text = step.lower(st, images, table, ex).as_text()
    out[name] = hashlib.sha256(text.encode()).hexdigest()
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", required=True, help="a training config (Python file with get_config())")
  p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
  p.add_argument("--vocab-shape", default=None, metavar="ROWS,DIM",
                 help="the codebook's shape (default: read the config's vocabulary)")
  a = p.parse_args(argv)

  from spae import SpaeInputError
  from spae.train import apply_override, load_config

  try:
    cfg = load_config(Path(a.config))
    for o in a.set:
      cfg = apply_override(cfg, o)
    digests = step_digests(cfg, _vocab_shape(cfg, a.vocab_shape))
  except SpaeInputError as e:
    print(f"error: {e}", file=sys.stderr)
    return 2
  for name, d in digests.items():
    print(f"{name} {d}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
