"""The jitted training step: models, optimisers, state, and one generator + discriminator update.

One jitted step computes, from one forward pass of the generator and discriminator, the generator
loss (L2, L1, perceptual, adversarial, commitment, semantic) and the discriminator loss
(non-saturating + R1 + optional LeCam), and takes both gradients with `jax.vjp` and two cotangents
(as MAGVIT does). Before `disc_start` a cheaper step without the discriminator runs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from spae import losses as L
from spae._nets import Autoencoder, Discriminator
from spae._codebook import unit_rows
from spae._pyramid import PyramidSpec, layer_target, pyramid_quantize, straight_through
from spae.train._config import TrainConfig
from spae.train._refit import class_sums, set_semantic_codes


class NonFiniteLossError(RuntimeError):
  """`max_consecutive_nan` non-finite losses in a row (the step's guard, `nan` in its state): the run stopped (after a
  checkpoint)."""


def _schedule(cfg: TrainConfig, lr: float) -> optax.Schedule:
  warm = max(1, min(cfg.optim.warmup_steps, cfg.steps))
  return optax.warmup_cosine_decay_schedule(0.0, lr, warm, max(cfg.steps, warm + 1), lr * cfg.optim.final_lr_ratio)


def make_optimizers(cfg: TrainConfig) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  def tx(lr):
    o = cfg.optim
    return optax.chain(optax.clip_by_global_norm(o.grad_clip),
                       optax.adamw(_schedule(cfg, lr), b1=o.b1, b2=o.b2, weight_decay=o.weight_decay))
  return tx(cfg.optim.lr), tx(cfg.optim.d_lr)


class Models:
  """Graph definitions of the generator (autoencoder) and discriminator; parameters live in the state."""

  def __init__(self, cfg: TrainConfig, vocab_shape: tuple[int, int]):
    tcfg = cfg.tokenizer
    code_dim = tcfg.codebook.latent_dim(vocab_shape[1])
    if tcfg.autoencoder.latent_dim != code_dim:
      tcfg = dataclasses.replace(tcfg, autoencoder=dataclasses.replace(tcfg.autoencoder, latent_dim=code_dim))
    tcfg.validate(vocab_shape[1])
    tcfg.pyramid.check_vocab(vocab_shape[0])
    self.tokenizer_config = tcfg
    self.vocab_size = int(vocab_shape[0])
    rngs = nnx.Rngs(cfg.seed)
    ae = tcfg.make_autoencoder(vocab_shape, rngs)
    disc = Discriminator(cfg.gan.discriminator, tcfg.image_size, rngs=rngs)
    self.g_def, g_state = nnx.split(ae)
    self.d_def, d_state = nnx.split(disc)
    self.g_init = g_state.to_pure_dict()
    self.d_init = d_state.to_pure_dict()

  def autoencoder(self, params) -> Autoencoder:
    return nnx.merge(self.g_def, params)

  def discriminator(self, params) -> Discriminator:
    return nnx.merge(self.d_def, params)


def init_state(cfg: TrainConfig, models: Models) -> dict[str, Any]:
  g_tx, d_tx = make_optimizers(cfg)
  g, d = models.g_init, models.d_init
  extra = {}
  if cfg.semantic.code_means:  # running class sums and counts of the semantic words (only when on: old checkpoints)
    n, dim = len(models.tokenizer_config.pyramid.semantic_vocab), models.tokenizer_config.autoencoder.latent_dim
    extra["sem_means"] = {"sum": jnp.zeros((n, dim), jnp.float32), "count": jnp.zeros((n,), jnp.float32)}
  return {**extra,
      "step": jnp.zeros((), jnp.int32),
      "g_params": g, "d_params": d, "ema_params": jax.tree.map(jnp.array, g),
      "g_opt": g_tx.init(g), "d_opt": d_tx.init(d),
      "lecam": {"real": jnp.zeros((), jnp.float32), "fake": jnp.zeros((), jnp.float32)},
      "rng": jax.random.key_data(jax.random.key(cfg.seed)),
      # Non-finite-loss counters, kept on device so the loop reads them only at log steps. `tripped`: the step
      # at which `max_consecutive_nan` non-finite losses in a row were first reached (0 = never).
      "nan": {"total": jnp.zeros((), jnp.int32), "consecutive": jnp.zeros((), jnp.int32),
              "tripped": jnp.zeros((), jnp.int32)},
  }


# ------------------------------------------------------------------------------------------- step
def search_chunk(vocab_size: int, max_chunk: int) -> int:
  """Vocabulary rows per chunk of the training step's nearest-word search: the fewest chunks of at most
  `max_chunk` rows, of equal size (rounded up to a multiple of 8).

  The chunked search pads the vocabulary to a whole number of chunks: 8,195 words in chunks of 8,192 would be
  padded to 16,384 rows, doubling its work; two chunks of 4,104 pad 13 rows. The ids do not depend on it.
  """
  n_chunks = math.ceil(vocab_size / max(1, min(max_chunk, vocab_size)))
  rows = math.ceil(vocab_size / n_chunks)
  rounded = math.ceil(rows / 8) * 8
  return rounded if rounded <= max_chunk else rows


def semantic_targets(z: jax.Array, recons: list[jax.Array], grids: tuple[int, ...], num_layers: int,
                     mode: str, quantizer: str = "saq", pool_weights: list[jax.Array] | None = None,
                     spec: PyramidSpec | None = None) -> list[jax.Array]:
  """The quantizer's targets of the top `num_layers` layers (`spae._pyramid.layer_target`), each [B, s_l², d].

  Σ_{i<l} q_i (SAQ: (l−1)·r_{l−1}; weighted SAQ, `spec.layer_weights`: W_{l−1}·r_{l−1}; RQ: r_{l−1}) enters
  stopped, so gradients reach z only (and the attention weights of pooled layers, `pool_weights`: one [B, H, W] map
  per pooled layer), exactly where the quantizer looks.
  """
  pool_weights = list(pool_weights or [])
  out = []
  for l in range(1, num_layers + 1):
    wl = spec.saq_weight(l) if spec is not None and quantizer == "saq" else None
    previous = None
    if l > 1:
      previous = jax.lax.stop_gradient(recons[l - 2])
      if quantizer == "saq":
        previous = (l - 1) * previous if wl is None else (wl[1] - wl[0]) * previous
    weights = pool_weights[l - 1] if l <= len(pool_weights) else None
    t = layer_target(z, previous, l, grids[l - 1], mode, quantizer, weights, wl)
    out.append(t.reshape(z.shape[0], grids[l - 1] ** 2, z.shape[-1]))
  return out


def tune_schedule(cfg: TrainConfig) -> optax.Schedule:
  """The decoder tune's learning rate: a cosine from `tune.lr` to `tune.lr * optim.final_lr_ratio` over its steps."""
  return optax.cosine_decay_schedule(cfg.tune.lr, max(cfg.tune.steps, 1), cfg.optim.final_lr_ratio)


def tune_optimizer(cfg: TrainConfig) -> optax.GradientTransformation:
  """The decoder tune's optimiser (`tune.steps`): the generator's AdamW and clip on the decoder alone, on
  `tune_schedule`; every other parameter is held."""
  o = cfg.optim
  adam = optax.chain(optax.clip_by_global_norm(o.grad_clip), optax.adamw(
      tune_schedule(cfg), b1=o.b1, b2=o.b2, weight_decay=o.weight_decay))
  labels = lambda params: {k: jax.tree.map(lambda _: "train" if k == "decoder" else "held", v)
                           for k, v in params.items()}
  return optax.multi_transform({"train": adam, "held": optax.set_to_zero()}, labels)


@dataclasses.dataclass(frozen=True)
class _StepPlan:
  """What `make_train_step` fixes once from the config, for the pieces of its step below."""

  cfg: TrainConfig
  models: Models
  spec: Any                 # the tokenizer's PyramidSpec
  chunk: int                # the semantic logsumexp's vocabulary chunk (the tokenizer's)
  search: int               # the nearest-word search's chunk (`search_chunk`)
  quantizer: str
  n_sem: int                # semantic layers
  sub_rows: np.ndarray      # [S] the semantic sub-vocabulary's rows
  sub_pos: np.ndarray       # [V] each row's position in it, -1 outside
  means_decay: float        # > 0: the semantic codes follow running class means (`semantic.code_means`)
  learn_pool: bool          # the pooled layers' scorer learns from the semantic loss


def make_train_step(cfg: TrainConfig, models: Models, *, use_gan: bool, perceptual: Any = None,
                    semantic: bool = False, freeze_pool: bool = False, freeze_codes: bool = False,
                    decoder_only: bool = False) -> Callable:
  """Returns step(state, images, codebook, extras) -> (state, metrics); pure and jittable.

  freeze_pool: the pooled layers' scorer gets no update at all (after `semantic.pool_reset`; the Trainer resets it).
  freeze_codes: the semantic words' codes (W_s) get no update at all, neither running means nor gradient (after a
  `semantic.refit_step`; the Trainer refits them).
  decoder_only: the decoder tune (`tune.steps`): the decoder alone learns, with `tune_optimizer` (whose state
  `g_opt` must then hold), from the reconstruction terms; the encoder's output enters stopped, so every token and
  every other parameter stays as it is; with `tune.monotone` > 0 (and progressive prefixes) it adds the hinge
  `losses.monotone_loss` between the drawn prefix and the one a layer shorter. Needs use_gan=False, semantic=False.

  extras: {'perceptual': params or None, 'teacher_idx': [B,k], 'teacher_probs': [B,k]} (only what is on). With a
  semantic sub-vocabulary in the pyramid, every teacher id must be one of its rows (the Trainer masks the teacher).
  """
  if decoder_only and (use_gan or semantic):
    raise ValueError("the decoder tune has no adversarial or semantic term: pass use_gan=False, semantic=False.")
  g_tx, d_tx = make_optimizers(cfg)
  if decoder_only:
    g_tx = tune_optimizer(cfg)
  spec = models.tokenizer_config.pyramid
  # Layers that search a sub-vocabulary score the teacher against it alone: its words' positions in the subset
  # (the trainer restricts the teacher to the subset, so every teacher word has one).
  sub_rows = np.asarray(spec.semantic_vocab, np.int32)
  sub_pos = np.full(models.vocab_size, -1, np.int32)
  sub_pos[sub_rows] = np.arange(len(sub_rows), dtype=np.int32)
  # The semantic logsumexp keeps the tokenizer's chunk: another split of its online sum would round differently
  # (and change what a given recipe trains to); the search's ids do not depend on the split.
  chunk = models.tokenizer_config.vocab_chunk
  plan = _StepPlan(
      cfg=cfg, models=models, spec=spec, chunk=chunk, search=search_chunk(models.vocab_size, chunk),
      quantizer=models.tokenizer_config.quantizer, n_sem=min(cfg.semantic.layers, spec.num_layers),
      sub_rows=sub_rows, sub_pos=sub_pos, means_decay=cfg.semantic.code_means if semantic and not freeze_codes else 0.0,
      # learn_pool=False: the scorer keeps its initial contrast pooling (the CE's targets carry stopped weights).
      learn_pool=cfg.semantic.learn_pool and not freeze_pool)

  def forward(g_params, d_params, state, images, table, extras, rng):
    return _forward(plan, g_params, d_params, state, images, table, extras, rng, use_gan=use_gan,
                    perceptual=perceptual, semantic=semantic, decoder_only=decoder_only)

  def step(state, images, codebook, extras):
    rng, sub = jax.random.split(jax.random.wrap_key_data(state["rng"]))
    f = lambda g, d: forward(g, d, state, images, codebook, extras, sub)
    (g_loss, d_loss), vjp, aux = jax.vjp(f, state["g_params"], state["d_params"], has_aux=True)
    one, zero = jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32)
    g_grads, _ = vjp((one, zero))
    new = dict(state)
    finite = jnp.isfinite(g_loss) & jnp.isfinite(d_loss)
    g_updates, g_opt = g_tx.update(g_grads, state["g_opt"], state["g_params"])
    g_updates = _frozen_updates(g_updates, freeze_pool, freeze_codes)
    g_params = optax.apply_updates(state["g_params"], g_updates)
    if use_gan:
      _, d_grads = vjp((zero, one))
      d_updates, d_opt = d_tx.update(d_grads, state["d_opt"], state["d_params"])
      d_params = optax.apply_updates(state["d_params"], d_updates)
    else:
      d_params, d_opt = state["d_params"], state["d_opt"]
    if plan.means_decay:  # the semantic codes follow their class means, not the gradient
      stats, old_means = aux["sem_stats"], state["sem_means"]
      means = jax.tree.map(lambda m, s: plan.means_decay * m + (1.0 - plan.means_decay) * s, old_means, stats)
      g_params = set_semantic_codes(g_params, codebook, sub_rows, means)
      new["sem_means"] = jax.tree.map(lambda a, b: jnp.where(finite, a, b), means, old_means)
    ema = _ema(cfg.optim.ema_decay, state["ema_params"], g_params, freeze_pool, freeze_codes)
    # NaN guard: a non-finite loss keeps every parameter and optimiser slot as it was.
    keep = lambda new_v, old_v: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new_v, old_v)
    new.update(g_params=keep(g_params, state["g_params"]), g_opt=keep(g_opt, state["g_opt"]),
               d_params=keep(d_params, state["d_params"]), d_opt=keep(d_opt, state["d_opt"]),
               ema_params=keep(ema, state["ema_params"]), lecam=keep(aux["lecam"], state["lecam"]))
    new["nan"] = _nan_counters(state, finite, cfg.max_consecutive_nan)
    new["step"] = state["step"] + 1
    new["rng"] = jax.random.key_data(rng)
    metrics = dict(aux["terms"], finite=finite.astype(jnp.float32))
    return new, metrics, aux["ids"]

  return step


def _forward(plan: _StepPlan, g_params, d_params, state, images, table, extras, rng, *, use_gan: bool,
             perceptual: Any, semantic: bool, decoder_only: bool):
  """One forward pass of the generator (and the discriminator): ((g_loss, d_loss), aux) for `jax.vjp`."""
  cfg, models, spec = plan.cfg, plan.models, plan.spec
  ae = models.autoencoder(g_params)
  x = images * 2.0 - 1.0
  b = x.shape[0]
  z = ae.encoder(x)
  if decoder_only:  # the tokens are final: no gradient need reach the encoder (nor the scorer, which reads z)
    z = jax.lax.stop_gradient(z)
  # The frozen table as codes (spae._codebook): the identity for 'raw'; a trainable map otherwise.
  codebook = ae.codes(table)
  sem_codebook = ae.semantic_codes(table)  # the semantic layers' own map (None: they use `codebook`)
  pool = ae.pool_weights(z)  # attention weights of the pooled layers (None without them)
  # A semantic head (only on a finished tokenizer, for the decoder tune) chooses the semantic layers' words.
  ranked = ae.semantic_ranked(images) if decoder_only else None
  ids, recons = pyramid_quantize(z, codebook, spec, plan.quantizer, vocab_chunk=plan.search, pool_weights=pool,
                                 semantic_codebook=sem_codebook, semantic_ranked=ranked)
  terms: dict[str, jax.Array] = {}
  if not cfg.loss.quantize:  # the plain autoencoder (ablation ceiling): the decoder reads z itself
    recons = [z] * len(recons)
  if cfg.loss.progressive:
    r_pre, prefix = L.pick_prefix_recon(rng, recons)
    zq = straight_through(jnp.concatenate([z, z]), jnp.concatenate([recons[-1], r_pre]))
    target = jnp.concatenate([x, x])
    terms["prefix"] = prefix.astype(jnp.float32)
  else:
    zq, target = straight_through(z, recons[-1]), x
  y = ae.decoder(zq)
  g_loss = jnp.zeros((), jnp.float32)

  def add(name, weight, value):
    nonlocal g_loss
    terms[name] = value
    if weight:
      g_loss = g_loss + weight * value

  add("l2", cfg.loss.l2_weight, L.l2_loss(y, target))
  if decoder_only and cfg.tune.monotone:  # validated: progressive prefixes
    # The tune's hinge: the drawn prefix k must reconstruct each image no worse than prefix k−1 (which the
    # hinge holds still; at k = 1 it is zero).
    y_prev = ae.decoder(jnp.stack(recons)[jnp.maximum(prefix - 2, 0)])
    add("monotone", cfg.tune.monotone, L.monotone_loss(y[b:], y_prev, x, prefix))
  if cfg.loss.l1_weight:
    add("l1", cfg.loss.l1_weight, L.l1_loss(y, target))
  if perceptual is not None and cfg.loss.perceptual_weight:
    add("perceptual", cfg.loss.perceptual_weight,
        perceptual.apply(extras["perceptual"], y, target))  # the net takes [-1, 1] images
  add("commitment", cfg.loss.commitment_weight if cfg.loss.quantize else 0.0, L.commitment_loss(z, recons))
  if models.tokenizer_config.codebook.trainable and cfg.loss.quantize and not decoder_only:
    # VQ-VAE's codebook term: moves the codes (through the projection) toward the encoder's output.
    add("codebook", 1.0, L.codebook_loss(z, recons))
  stats = None
  if semantic:
    sem, stats = _semantic_term(plan, state["step"], z, recons, pool, codebook, sem_codebook, extras, terms)
    g_loss = g_loss + sem
  d_loss = jnp.zeros((), jnp.float32)
  lecam_new = state["lecam"]
  if use_gan:
    disc = models.discriminator(d_params)
    fake_logits = disc(y[:b])
    r1, real_logits = L.r1_penalty(lambda im: models.discriminator(d_params)(im), x)
    add("g_adversarial", cfg.gan.adversarial_weight, L.g_loss_nonsaturating(fake_logits))
    d_loss, lecam_new = _discriminator_loss(cfg, state["lecam"], real_logits, fake_logits, r1, terms)
  terms["g_loss"] = g_loss
  aux = {"terms": terms, "ids": ids, "lecam": lecam_new}
  if plan.means_decay:
    aux["sem_stats"] = stats
  return (g_loss, d_loss), aux


def _semantic_term(plan: _StepPlan, step: jax.Array, z: jax.Array, recons: list[jax.Array], pool: list | None,
                   codebook: jax.Array, sem_codebook: jax.Array | None, extras: dict[str, Any],
                   terms: dict[str, jax.Array]) -> tuple[jax.Array, dict[str, jax.Array] | None]:
  """The weighted semantic cross-entropy of the top `n_sem` layers (its parts go into `terms`), and, with class-mean
  codes, this batch's class sums of the layer-1 input per teacher word (else None)."""
  cfg, spec = plan.cfg, plan.spec
  pull = cfg.semantic.pull  # validated: 'both' / 'codes' only with a trainable code map
  w = L.semantic_layer_weights(step, plan.n_sem, cfg.semantic.weight, cfg.semantic.decay,
                               schedule=cfg.semantic.schedule, warmup_steps=cfg.semantic.warmup,
                               total_steps=max(cfg.steps, cfg.semantic.warmup + 1),
                               final_ratio=cfg.semantic.final_ratio)
  sem = jnp.zeros((), jnp.float32)
  stats = None
  whole = (codebook, extras["teacher_idx"])
  sub_codes = (codebook if sem_codebook is None else sem_codebook)[plan.sub_rows]
  subset = (sub_codes, jnp.asarray(plan.sub_pos)[extras["teacher_idx"]]) if spec.semantic_layers else None
  # 'codes' keeps the encoder out of the CE: the targets see stopped latents, and only the pooled layers'
  # attention weights (whose scorer reads stopped latents too) and the code map learn from it.
  z_sem = jax.lax.stop_gradient(z) if pull == "codes" else z
  pool_sem = pool if plan.learn_pool or pool is None else [jax.lax.stop_gradient(a) for a in pool]
  for l, t in enumerate(semantic_targets(z_sem, recons, spec.grids, plan.n_sem, spec.subsample, plan.quantizer,
                                         pool_sem, spec), start=1):
    codes, idx = subset if spec.searches_subset(l) else whole
    v = L.semantic_loss(t, codes, idx, extras["teacher_probs"], cfg.semantic.tau,
                        vocab_chunk=plan.chunk, codebook_grad=pull != "targets")
    if plan.means_decay and l == 1:  # this batch's class sums of the layer-1 input, per teacher word
      stats = class_sums(jax.lax.stop_gradient(t[:, 0]), jnp.asarray(plan.sub_pos)[extras["teacher_idx"]],
                         extras["teacher_probs"], len(plan.sub_rows))
    terms[f"semantic_l{l}"] = v
    sem = sem + w[l - 1] * v
  terms["semantic"] = sem
  return sem, stats


def _discriminator_loss(cfg: TrainConfig, lecam: dict[str, jax.Array], real_logits: jax.Array,
                        fake_logits: jax.Array, r1: jax.Array, terms: dict[str, jax.Array]
                        ) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Non-saturating + R1 (+ LeCam) discriminator loss and the LeCam EMAs after this batch; its parts go into
  `terms`."""
  d_adv = L.d_loss_nonsaturating(real_logits, fake_logits)
  d_loss = d_adv + cfg.gan.r1_gamma * r1
  terms.update(d_adversarial=d_adv, r1=r1, logits_real=jnp.mean(real_logits), logits_fake=jnp.mean(fake_logits))
  lecam_new = lecam
  if cfg.gan.lecam_weight:
    lc = L.lecam_loss(real_logits, fake_logits, lecam["real"], lecam["fake"])
    terms["lecam"] = lc
    d_loss = d_loss + cfg.gan.lecam_weight * lc
    lecam_new = {"real": L.update_lecam_ema(lecam["real"], real_logits, cfg.gan.lecam_decay),
                 "fake": L.update_lecam_ema(lecam["fake"], fake_logits, cfg.gan.lecam_decay)}
  terms["d_loss"] = d_loss
  return d_loss, lecam_new


def _frozen_updates(g_updates: dict, freeze_pool: bool, freeze_codes: bool) -> dict:
  """A frozen group gets a zero update: no gradient need reach it, but Adam's momentum and weight decay would
  still move it."""
  if freeze_pool:
    g_updates = dict(g_updates, pool=jax.tree.map(jnp.zeros_like, g_updates["pool"]))
  if freeze_codes:
    g_updates = dict(g_updates, codebook=dict(g_updates["codebook"], semantic_weight=jnp.zeros_like(
        g_updates["codebook"]["semantic_weight"])))
  return g_updates


def _ema(decay: float, ema_params: dict, g_params: dict, freeze_pool: bool, freeze_codes: bool) -> dict:
  """The averaged weights after this step; frozen groups keep theirs (d·x + (1 − d)·x need not round back to x,
  and after a refit the averaged weights keep their own refit codes)."""
  ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, ema_params, g_params)
  if freeze_pool:
    ema = dict(ema, pool=ema_params["pool"])
  if freeze_codes:
    ema = dict(ema, codebook=dict(ema["codebook"], semantic_weight=ema_params["codebook"]["semantic_weight"]))
  return ema


def _nan_counters(state: dict[str, Any], finite: jax.Array, max_consecutive: int) -> dict[str, jax.Array]:
  """Non-finite-loss counters after this step: total, consecutive, and the step at which `max_consecutive` in a
  row were first reached (0 = never)."""
  nan = state["nan"]
  consecutive = jnp.where(finite, 0, nan["consecutive"] + 1)
  trips = (nan["tripped"] == 0) & (consecutive >= max_consecutive)
  return {"total": nan["total"] + (~finite).astype(jnp.int32), "consecutive": consecutive,
          "tripped": jnp.where(trips, state["step"] + 1, nan["tripped"])}
