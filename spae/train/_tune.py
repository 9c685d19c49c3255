"""The decoder tune (`tune.steps`; docs/method.md, "The decoder tune"): after the last step and the refit, the
decoder alone learns the codes the run ends with.

Why: the refit (`semantic.refit_images`) moves the semantic words' codes after the last step, so the decoder never
saw them, and the short prefixes lose what it had learned to draw from the old ones. Tuning the decoder alone keeps
every token as the trained encoder and codes make it (what the words name, what an LLM reads), and changes only how
tokens become pixels.

The tune starts from the weights the run exports (the EMA where `optim.ema_decay` > 0) with a fresh optimiser
(`tune_optimizer`), its own data order and prefix draws (seed + 1), and no discriminator, so it depends on the
trained tokenizer alone: tools/refit_tokenizer.py applies it to a tokenizer trained without it, bit for bit.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from spae.train._step import NonFiniteLossError, tune_optimizer, tune_schedule


def tune_decoder(trainer: Any) -> list[dict[str, float]]:
  """Runs `trainer.cfg.tune.steps` decoder-only steps on `trainer.state` (replaced by the tuned state, whose
  g_params and ema_params both hold the last tuned weights, which the export then takes). Returns one row per
  `logging.every` steps and the last: {'step': training steps + tune steps so far, 'tune_l2', 'tune_lr', ...}.
  Waits for the device once, at the end."""
  cfg = trainer.cfg
  if not cfg.tune.steps:
    return []
  data = trainer.batches(cfg.seed + 1)
  params = trainer.state["ema_params" if cfg.optim.ema_decay > 0 else "g_params"]
  tx = tune_optimizer(cfg)
  # Own buffers for each copy: the step donates the state, and a donated buffer may appear in it only once.
  state = dict(trainer.state, g_params=jax.tree.map(jnp.array, params), ema_params=jax.tree.map(jnp.array, params),
               g_opt=tx.init(params), rng=jax.random.key_data(jax.random.key(cfg.seed + 1)))
  state = jax.device_put(state, trainer.replicated)
  extras = {"perceptual": trainer.perceptual.params} if trainer.perceptual is not None else {}
  step_fn = trainer.step_fn(False, decoder_only=True)
  every, pending = cfg.logging.every, []
  for t in range(1, cfg.tune.steps + 1):
    x = trainer.global_batch(np.asarray(next(data)["image"], np.float32))
    state, metrics, _ = step_fn(state, x, trainer.codebook, extras)
    if t % every == 0 or t == cfg.tune.steps:
      pending.append((t, metrics))
  fetched, nan = jax.device_get((pending, state["nan"]))
  # The tune exports its last weights: an average over a few hundred steps at decay 0.999 would barely have moved.
  trainer.state = dict(state, ema_params=jax.tree.map(jnp.array, state["g_params"]))
  if int(nan["tripped"]):
    raise NonFiniteLossError(f"the decoder tune met {cfg.max_consecutive_nan} non-finite losses in a row; lower "
                             "tune.lr. The training checkpoint at its last step is intact: rerun to resume there.")
  lr = tune_schedule(cfg)
  return [{"step": cfg.steps + t, **{f"tune_{k}": float(v) for k, v in m.items()}, "tune_lr": float(lr(t - 1))}
          for t, m in fetched]
