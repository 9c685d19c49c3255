"""The SPAE trainer: `spae train --config configs/X.py --workdir DIR`.

The LLM never runs during training: the codebook is its frozen embedding table, and semantics come
from an image-text teacher's relevance scores over that vocabulary.

One jitted step computes, from one forward pass of the generator and discriminator, the generator
loss (L2, L1, perceptual, adversarial, commitment, semantic) and the discriminator loss
(non-saturating + R1 + optional LeCam), and takes both gradients with `jax.vjp` and two cotangents
(as MAGVIT does). Before `disc_start` a cheaper step without the discriminator runs.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from spae import losses as L
from spae._images import image_grid, save_image
from spae._io import SpaeInputError, write_json_atomic
from spae._nets import Autoencoder, Discriminator, DiscriminatorConfig
from spae._pyramid import saq_quantize, straight_through, subsample
from spae._tokenizer import Tokenizer, TokenizerConfig
from spae._vocab import Vocabulary

log = logging.getLogger("spae.train")


# ------------------------------------------------------------------------------------------- config
@dataclasses.dataclass
class TrainConfig:
  """Everything a run needs. Configs are Python files whose `get_config()` returns one of these.

  Loss weights of 0 switch a term off (its computation is skipped where possible).
  """

  tokenizer: TokenizerConfig = dataclasses.field(default_factory=TokenizerConfig)
  vocab: str = "tiny"              # 'tiny', or a saved spae.Vocabulary directory
  data: str = "shapes:~/.cache/spae/shapes"  # spae.data.make_source spec
  crop: str = "random"             # 'random' or 'center'
  flip: bool = True
  batch_size: int = 16             # global batch (split over hosts, then over devices)
  steps: int = 1000
  seed: int = 0
  # optimisation
  lr: float = 1e-4
  d_lr: float = 1e-4
  warmup_steps: int = 100
  final_lr_ratio: float = 0.1
  b1: float = 0.0
  b2: float = 0.99
  weight_decay: float = 1e-4
  grad_clip: float = 1.0
  ema_decay: float = 0.999
  # losses
  l2_weight: float = 1.0
  l1_weight: float = 0.0
  perceptual_weight: float = 0.1
  perceptual_weights: str | None = None  # VGG16/LPIPS file; None = perceptual loss off (warned)
  commitment_weight: float = 0.25
  progressive: bool = True          # also reconstruct from a random prefix of layers each step
  adversarial_weight: float = 0.1
  disc_start: int = 2000            # the discriminator (and adversarial loss) starts at this step
  r1_gamma: float = 10.0
  lecam_weight: float = 0.0
  lecam_decay: float = 0.999
  discriminator: DiscriminatorConfig = dataclasses.field(default_factory=DiscriminatorConfig)
  # semantic guidance
  teacher: str | None = None        # spae.teachers.load spec; None = semantic loss off
  semantic_weight: float = 1.0      # base weight of the top layer
  semantic_layers: int = 3          # top layers that get the semantic loss
  semantic_decay: float = 0.5       # weight ratio from one layer to the next lower one
  semantic_schedule: str = "cosine"
  semantic_warmup: int = 0
  semantic_final_ratio: float = 0.1
  semantic_tau: float = 1.0         # soft-assignment temperature
  teacher_top_k: int = 10
  teacher_temperature: float = 0.07
  # bookkeeping
  log_every: int = 10
  image_every: int = 500
  checkpoint_every: int = 500
  keep_checkpoints: int = 3
  # Async saves overlap I/O with training; a SIGKILL then loses at most one interval plus the steps run while
  # the last save was still being written. Synchronous saves bound the loss to one interval exactly.
  async_checkpoints: bool = True
  max_consecutive_nan: int = 10
  usage_window: int = 65536
  num_data_threads: int = 2

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
  """Runs a Python config file's `get_config()`, then applies `key=value` overrides (dotted for nesting)."""
  path = Path(path)
  if not path.is_file():
    raise SpaeInputError(f"config file {str(path)!r} does not exist.")
  spec = importlib.util.spec_from_file_location(f"spae_config_{path.stem}", path)
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  if not hasattr(mod, "get_config"):
    raise SpaeInputError(f"{path} has no get_config() function.")
  cfg = mod.get_config()
  if not isinstance(cfg, TrainConfig):
    raise SpaeInputError(f"{path}: get_config() must return spae.train.TrainConfig, got {type(cfg).__name__}.")
  for item in overrides or []:
    cfg = apply_override(cfg, item)
  return cfg


def apply_override(cfg: Any, item: str) -> Any:
  if "=" not in item:
    raise SpaeInputError(f"override {item!r} must look like key=value (e.g. steps=100 or tokenizer.image_size=64).")
  key, raw = item.split("=", 1)
  head, _, rest = key.partition(".")
  if not dataclasses.is_dataclass(cfg) or head not in {f.name for f in dataclasses.fields(cfg)}:
    raise SpaeInputError(f"override {item!r}: unknown config field {head!r}.")
  cur = getattr(cfg, head)
  if rest:
    return dataclasses.replace(cfg, **{head: apply_override(cur, f"{rest}={raw}")})
  try:
    val = json.loads(raw)
  except json.JSONDecodeError:
    val = raw
  if isinstance(cur, tuple) and isinstance(val, list):
    val = tuple(val)
  if isinstance(cur, float) and isinstance(val, int):
    val = float(val)
  if raw in ("None", "null"):
    val = None
  return dataclasses.replace(cfg, **{head: val})


def build_vocabulary(spec: str) -> Vocabulary:
  from spae._tiny import tiny_vocabulary

  if spec.startswith("REQUIRED"):
    raise SpaeInputError(f"this config needs a vocabulary: {spec.split(':', 1)[-1].strip()} "
                         "(a directory written by spae.Vocabulary.save).")
  if spec == "default":
    from spae import assets

    return assets.default_vocabulary()
  if spec == "tiny":
    return tiny_vocabulary()
  if spec.startswith("tiny:"):
    return tiny_vocabulary(dim=int(spec.split(":", 1)[1]))
  return Vocabulary.load(spec)


def open_data(spec: str):
  """spae.data.make_source specs, plus 'shapes-memory:N[@SIZE]': N shapes scenes rendered in memory (no build)."""
  from spae import data as D

  if spec.startswith("shapes-memory:"):
    body = spec.split(":", 1)[1]
    num, _, size = body.partition("@")
    try:
      return D.render_shapes_source(int(num), int(size or 64))
    except ValueError:
      raise SpaeInputError(f"data spec {spec!r} must look like shapes-memory:N or shapes-memory:N@SIZE.") from None
  # Expand a home-relative path inside the spec ('shapes:~/data', 'tfds:name@~/tfds', '~/images').
  home = os.path.expanduser("~")
  spec = "".join(home + part[1:] if part.startswith("~/") else part for part in re.split(r"(?<=[:@])", spec))
  return D.make_source(spec)


# ------------------------------------------------------------------------------------------- state
def _schedule(cfg: TrainConfig, lr: float) -> optax.Schedule:
  warm = max(1, min(cfg.warmup_steps, cfg.steps))
  return optax.warmup_cosine_decay_schedule(0.0, lr, warm, max(cfg.steps, warm + 1), lr * cfg.final_lr_ratio)


def make_optimizers(cfg: TrainConfig) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
  def tx(lr):
    return optax.chain(optax.clip_by_global_norm(cfg.grad_clip),
                       optax.adamw(_schedule(cfg, lr), b1=cfg.b1, b2=cfg.b2, weight_decay=cfg.weight_decay))
  return tx(cfg.lr), tx(cfg.d_lr)


class Models:
  """Graph definitions of the generator (autoencoder) and discriminator; parameters live in the state."""

  def __init__(self, cfg: TrainConfig, vocab_dim: int):
    tcfg = cfg.tokenizer
    if tcfg.autoencoder.latent_dim != vocab_dim:
      tcfg = dataclasses.replace(tcfg, autoencoder=dataclasses.replace(tcfg.autoencoder, latent_dim=vocab_dim))
    tcfg.validate(vocab_dim)
    self.tokenizer_config = tcfg
    rngs = nnx.Rngs(cfg.seed)
    ae = Autoencoder(tcfg.autoencoder, rngs=rngs)
    disc = Discriminator(cfg.discriminator, tcfg.image_size, rngs=rngs)
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
  return {
      "step": jnp.zeros((), jnp.int32),
      "g_params": g, "d_params": d, "ema_params": jax.tree.map(jnp.array, g),
      "g_opt": g_tx.init(g), "d_opt": d_tx.init(d),
      "lecam": {"real": jnp.zeros((), jnp.float32), "fake": jnp.zeros((), jnp.float32)},
      "rng": jax.random.key_data(jax.random.key(cfg.seed)),
      "nan": {"total": jnp.zeros((), jnp.int32), "consecutive": jnp.zeros((), jnp.int32)},
  }


# ------------------------------------------------------------------------------------------- step
def semantic_targets(z: jax.Array, recons: list[jax.Array], grids: tuple[int, ...], num_layers: int,
                     mode: str) -> list[jax.Array]:
  """SAQ targets t_l = l·z(c) − (l−1)·sg(r_{l−1})(c) of the top `num_layers` layers, each [B, s_l², d].

  (l−1)·r_{l−1} = Σ_{i<l} q_i, so this is the quantizer's target; gradients reach z only.
  """
  out = []
  for l in range(1, num_layers + 1):
    s = grids[l - 1]
    t = l * subsample(z, s, mode)
    if l > 1:
      t = t - (l - 1) * subsample(jax.lax.stop_gradient(recons[l - 2]), s, mode)
    out.append(t.reshape(z.shape[0], s * s, z.shape[-1]))
  return out


def make_train_step(cfg: TrainConfig, models: Models, *, use_gan: bool, perceptual: Any = None,
                    semantic: bool = False) -> Callable:
  """Returns step(state, images, codebook, extras) -> (state, metrics); pure and jittable.

  extras: {'perceptual': params or None, 'teacher_idx': [B,k], 'teacher_probs': [B,k]} (only what is on).
  """
  g_tx, d_tx = make_optimizers(cfg)
  spec = models.tokenizer_config.pyramid
  chunk = models.tokenizer_config.vocab_chunk
  n_sem = min(cfg.semantic_layers, spec.num_layers)

  def forward(g_params, d_params, state, images, codebook, extras, rng):
    ae = models.autoencoder(g_params)
    x = images * 2.0 - 1.0
    b = x.shape[0]
    z = ae.encoder(x)
    ids, recons = saq_quantize(z, codebook, spec, vocab_chunk=chunk)
    terms: dict[str, jax.Array] = {}
    if cfg.progressive:
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

    add("l2", cfg.l2_weight, L.l2_loss(y, target))
    if cfg.l1_weight:
      add("l1", cfg.l1_weight, L.l1_loss(y, target))
    if perceptual is not None and cfg.perceptual_weight:
      add("perceptual", cfg.perceptual_weight,
          perceptual.apply(extras["perceptual"], y, target))  # the net takes [-1, 1] images
    add("commitment", cfg.commitment_weight, L.commitment_loss(z, recons))
    if semantic:
      w = L.semantic_layer_weights(state["step"], n_sem, cfg.semantic_weight, cfg.semantic_decay,
                                   schedule=cfg.semantic_schedule, warmup_steps=cfg.semantic_warmup,
                                   total_steps=max(cfg.steps, cfg.semantic_warmup + 1),
                                   final_ratio=cfg.semantic_final_ratio)
      sem = jnp.zeros((), jnp.float32)
      for l, t in enumerate(semantic_targets(z, recons, spec.grids, n_sem, spec.subsample), start=1):
        v = L.semantic_loss(t, codebook, extras["teacher_idx"], extras["teacher_probs"], cfg.semantic_tau,
                            vocab_chunk=chunk)
        terms[f"semantic_l{l}"] = v
        sem = sem + w[l - 1] * v
      terms["semantic"] = sem
      g_loss = g_loss + sem
    d_loss = jnp.zeros((), jnp.float32)
    lecam_new = state["lecam"]
    if use_gan:
      disc = models.discriminator(d_params)
      fake_logits = disc(y[:b])
      r1, real_logits = L.r1_penalty(lambda im: models.discriminator(d_params)(im), x)
      add("g_adversarial", cfg.adversarial_weight, L.g_loss_nonsaturating(fake_logits))
      d_adv = L.d_loss_nonsaturating(real_logits, fake_logits)
      d_loss = d_adv + cfg.r1_gamma * r1
      terms.update(d_adversarial=d_adv, r1=r1, logits_real=jnp.mean(real_logits), logits_fake=jnp.mean(fake_logits))
      if cfg.lecam_weight:
        lc = L.lecam_loss(real_logits, fake_logits, state["lecam"]["real"], state["lecam"]["fake"])
        terms["lecam"] = lc
        d_loss = d_loss + cfg.lecam_weight * lc
        lecam_new = {"real": L.update_lecam_ema(state["lecam"]["real"], real_logits, cfg.lecam_decay),
                     "fake": L.update_lecam_ema(state["lecam"]["fake"], fake_logits, cfg.lecam_decay)}
      terms["d_loss"] = d_loss
    terms["g_loss"] = g_loss
    aux = {"terms": terms, "ids": ids, "lecam": lecam_new}
    return (g_loss, d_loss), aux

  def step(state, images, codebook, extras):
    rng, sub = jax.random.split(jax.random.wrap_key_data(state["rng"]))
    f = lambda g, d: forward(g, d, state, images, codebook, extras, sub)
    (g_loss, d_loss), vjp, aux = jax.vjp(f, state["g_params"], state["d_params"], has_aux=True)
    one, zero = jnp.ones((), jnp.float32), jnp.zeros((), jnp.float32)
    g_grads, _ = vjp((one, zero))
    new = dict(state)
    finite = jnp.isfinite(g_loss) & jnp.isfinite(d_loss)
    g_updates, g_opt = g_tx.update(g_grads, state["g_opt"], state["g_params"])
    g_params = optax.apply_updates(state["g_params"], g_updates)
    if use_gan:
      _, d_grads = vjp((zero, one))
      d_updates, d_opt = d_tx.update(d_grads, state["d_opt"], state["d_params"])
      d_params = optax.apply_updates(state["d_params"], d_updates)
    else:
      d_params, d_opt = state["d_params"], state["d_opt"]
    ema = jax.tree.map(lambda e, p: cfg.ema_decay * e + (1.0 - cfg.ema_decay) * p, state["ema_params"], g_params)
    # NaN guard: a non-finite loss keeps every parameter and optimiser slot as it was.
    keep = lambda new_v, old_v: jax.tree.map(lambda a, b: jnp.where(finite, a, b), new_v, old_v)
    new.update(g_params=keep(g_params, state["g_params"]), g_opt=keep(g_opt, state["g_opt"]),
               d_params=keep(d_params, state["d_params"]), d_opt=keep(d_opt, state["d_opt"]),
               ema_params=keep(ema, state["ema_params"]), lecam=keep(aux["lecam"], state["lecam"]))
    new["nan"] = {"total": state["nan"]["total"] + (~finite).astype(jnp.int32),
                  "consecutive": jnp.where(finite, 0, state["nan"]["consecutive"] + 1)}
    new["step"] = state["step"] + 1
    new["rng"] = jax.random.key_data(rng)
    metrics = dict(aux["terms"], finite=finite.astype(jnp.float32))
    return new, metrics, aux["ids"]

  return step


# ------------------------------------------------------------------------------------------- trainer
class NonFiniteLossError(RuntimeError):
  pass


class Trainer:
  """Builds data, models, optimisers and checkpoints from a TrainConfig and runs the loop.

  Multi-device: a 1-D mesh ('data') over all devices; the batch is sharded over it and parameters
  are replicated. Multi-host: call `jax.distributed.initialize()` first (`spae train --distributed`);
  each host then feeds its own shard of the data.
  """

  def __init__(self, cfg: TrainConfig, workdir: str | os.PathLike, *, source: Any = None,
               vocabulary: Vocabulary | None = None, teacher: Any = None):
    self.cfg = cfg
    self.workdir = Path(workdir).expanduser()
    self.workdir.mkdir(parents=True, exist_ok=True)
    self.vocab = vocabulary if vocabulary is not None else build_vocabulary(cfg.vocab)
    self.models = Models(cfg, self.vocab.dim)
    self.mesh = Mesh(np.array(jax.devices()), ("data",))
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P("data"))
    n_dev, n_proc = jax.device_count(), jax.process_count()
    if cfg.batch_size % n_dev:
      raise SpaeInputError(f"batch_size {cfg.batch_size} must be divisible by the {n_dev} devices.")
    self.codebook = jax.device_put(jnp.asarray(self.vocab.embeddings), self.replicated)
    # Data
    from spae import data as D

    src = source if source is not None else open_data(cfg.data)
    self.data = D.BatchIterator(
        src, cfg.batch_size // n_proc,
        D.Preprocess(self.models.tokenizer_config.image_size, crop=cfg.crop, flip=cfg.flip),
        seed=cfg.seed, shard_index=jax.process_index(), num_shards=n_proc, num_threads=cfg.num_data_threads)
    # Optional terms
    from spae.perceptual import make_perceptual_loss

    self.perceptual = make_perceptual_loss(cfg.perceptual_weights) if cfg.perceptual_weight else None
    self.teacher_fn = None
    if teacher is None and cfg.teacher and cfg.semantic_weight:
      from spae import teachers

      teacher = teachers.load("lit:default" if cfg.teacher == "default" else cfg.teacher)
    if teacher is not None and cfg.semantic_weight:
      k = min(cfg.teacher_top_k, len(self.vocab))
      dist = lambda fn, im: L.teacher_distribution(fn(im), k, cfg.teacher_temperature)
      if hasattr(teacher, "relevance_fn"):
        # A pytree RelevanceFn: its weights are jit arguments, not constants baked into the program.
        self.teacher_fn = teacher.relevance_fn(self.vocab)
        self._teacher_jit = jax.jit(dist)
      else:  # any callable images [B,H,W,3] in [0,1] -> relevance [B, V]
        self.teacher_fn = teacher
        self._teacher_jit = jax.jit(lambda fn, im: dist(teacher, im), static_argnums=0)
    elif cfg.semantic_weight:
      log.warning("no teacher given: the semantic loss is off.")
    self._steps: dict[bool, Callable] = {}
    self.state = jax.device_put(init_state(cfg, self.models), self.replicated)
    self._ckpt = None
    self._preview: Tokenizer | None = None

  # ---------------------------------------------------------------- pieces
  def step_fn(self, use_gan: bool) -> Callable:
    if use_gan not in self._steps:
      fn = make_train_step(self.cfg, self.models, use_gan=use_gan, perceptual=self.perceptual,
                           semantic=self.teacher_fn is not None)
      self._steps[use_gan] = jax.jit(fn, donate_argnums=(0,))
    return self._steps[use_gan]

  def extras_for(self, images: jax.Array) -> dict[str, Any]:
    ex: dict[str, Any] = {}
    if self.perceptual is not None:
      ex["perceptual"] = self.perceptual.params
    if self.teacher_fn is not None:
      idx, probs = self._teacher_jit(self.teacher_fn, images)
      ex["teacher_idx"], ex["teacher_probs"] = idx, probs
    return ex

  def global_batch(self, local: np.ndarray) -> jax.Array:
    return jax.make_array_from_process_local_data(self.batch_sharding, local)

  def train_step(self, images: np.ndarray) -> dict[str, float]:
    """One optimisation step on a host-local batch; returns the metrics as floats."""
    step = int(self.state["step"])
    x = self.global_batch(np.asarray(images, np.float32))
    use_gan = bool(self.cfg.adversarial_weight) and step >= self.cfg.disc_start
    self.state, metrics, ids = self.step_fn(use_gan)(self.state, x, self.codebook, self.extras_for(x))
    self._last_ids = ids
    return {k: float(v) for k, v in metrics.items()}

  # ---------------------------------------------------------------- checkpoints
  def checkpoint_manager(self):
    if self._ckpt is None:
      import orbax.checkpoint as ocp

      opts = ocp.CheckpointManagerOptions(
          create=True, enable_async_checkpointing=self.cfg.async_checkpoints,
          preservation_policy=ocp.checkpoint_managers.LatestN(self.cfg.keep_checkpoints))
      self._ckpt = ocp.CheckpointManager((self.workdir / "checkpoints").absolute(), options=opts)
    return self._ckpt

  def save_checkpoint(self, *, wait: bool = False) -> None:
    import orbax.checkpoint as ocp

    mgr = self.checkpoint_manager()
    step = int(self.state["step"])
    mgr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(self.state),
                                           data=ocp.args.JsonSave(self.data.get_state())))
    if wait:
      mgr.wait_until_finished()

  def restore_latest(self) -> int | None:
    """Restores the newest complete checkpoint, if any; returns its step. Unfinished saves are never listed."""
    import orbax.checkpoint as ocp

    mgr = self.checkpoint_manager()
    step = mgr.latest_step()
    if step is None:
      return None
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=self.replicated), self.state)
    restored = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                                         data=ocp.args.JsonRestore()))
    self.state = restored["state"]
    self.data.set_state(restored["data"])
    log.info("resumed from step %d", step)
    return step

  # ---------------------------------------------------------------- export
  def tokenizer(self, ema: bool = True) -> Tokenizer:
    params = jax.device_get(self.state["ema_params" if ema else "g_params"])
    model = self.models.autoencoder(jax.tree.map(jnp.asarray, params))
    return Tokenizer(self.models.tokenizer_config, self.vocab, model)

  def export(self, directory: str | os.PathLike | None = None) -> Path:
    directory = Path(directory) if directory else self.workdir / "tokenizer"
    if jax.process_index() == 0:
      self.tokenizer(ema=self.cfg.ema_decay > 0).save(directory)
    return directory

  # ---------------------------------------------------------------- loop
  def run(self, *, progress: bool = True, stop_after: int | None = None) -> dict[str, float]:
    """Trains to cfg.steps (resuming from the latest checkpoint); returns the last logged metrics.

    stop_after: stop (with a checkpoint) once this many steps ran in this call — for tests and preemption.
    """
    from tqdm.auto import tqdm

    from spae import metrics as M

    cfg = self.cfg
    restored = self.restore_latest()
    start = restored if restored is not None else int(self.state["step"])
    is_main = jax.process_index() == 0
    writer = None
    if is_main:
      from tensorboardX import SummaryWriter

      writer = SummaryWriter(str(self.workdir / "tb"))
      write_json_atomic(self.workdir / "config.json", cfg.to_dict())
    usage = M.UsageWindow(self.models.tokenizer_config.pyramid.num_layers, len(self.vocab), cfg.usage_window)
    bar = tqdm(total=cfg.steps, initial=start, disable=not (progress and is_main), dynamic_ncols=True)
    last: dict[str, float] = {}
    t0, n_imgs, ran = time.perf_counter(), 0, 0
    try:
      for step in range(start, cfg.steps):
        batch = next(self.data)
        metrics = self.train_step(batch["image"])
        ran += 1
        n_imgs += cfg.batch_size
        usage.update([np.asarray(a) for a in jax.device_get(self._last_ids)])
        nan = jax.device_get(self.state["nan"])
        if int(nan["consecutive"]) >= cfg.max_consecutive_nan:
          self.save_checkpoint(wait=True)
          raise NonFiniteLossError(
              f"{int(nan['consecutive'])} consecutive non-finite losses ending at step {int(self.state['step'])} "
              f"({int(nan['total'])} in total); updates were skipped. Lower the learning rate or check the data.")
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
          dt = time.perf_counter() - t0
          last = {"step": done, **metrics, "images_per_s": n_imgs / max(dt, 1e-9),
                  "nan_total": int(nan["total"]), "lr": float(_schedule(cfg, cfg.lr)(done)),
                  **dict(usage.metrics(prefix="")), "data_skipped": self.data.num_skipped}
          t0, n_imgs = time.perf_counter(), 0
          if is_main:
            with open(self.workdir / "metrics.jsonl", "a") as f:
              f.write(json.dumps(last) + "\n")
            for k, v in last.items():
              if isinstance(v, (int, float)) and k != "step":
                writer.add_scalar(k, v, done)
          bar.set_postfix({k: f"{last[k]:.3g}" for k in ("g_loss", "l2", "images_per_s") if k in last})
        if is_main and cfg.image_every and (done % cfg.image_every == 0 or done == cfg.steps):
          self.write_image_grid(batch["image"][:4], done)
        if done % cfg.checkpoint_every == 0 or done == cfg.steps:
          self.save_checkpoint()
        bar.update(1)
        if stop_after is not None and ran >= stop_after:
          self.save_checkpoint()
          break
    finally:
      bar.close()
      self.checkpoint_manager().wait_until_finished()
      if writer is not None:
        writer.close()
    if int(self.state["step"]) >= cfg.steps:
      self.export()
    return last

  def write_image_grid(self, images: np.ndarray, step: int) -> Path:
    """PNG: one row per image, the original then the reconstruction from each prefix of layers."""
    # One preview tokenizer for the whole run: its jitted encode/decode take the parameters as arguments, so
    # swapping in the current ones reuses the compiled programs instead of compiling new ones every grid.
    if self._preview is None:
      self._preview = self.tokenizer(ema=False)
    else:
      self._preview.model = self.models.autoencoder(jax.device_get(self.state["g_params"]))
      self._preview.refresh()
    tok = self._preview
    pyr = tok.encode(images)
    cols = [images] + [tok.decode(pyr, layers=k) for k in range(1, pyr.num_layers + 1)]
    grid = image_grid([[c[i] for c in cols] for i in range(len(images))])
    path = self.workdir / "images" / f"recon_{step:07d}.png"
    save_image(path, grid)
    return path


def train(cfg: TrainConfig, workdir: str | os.PathLike, **kw) -> Trainer:
  trainer = Trainer(cfg, workdir, **kw)
  trainer.run()
  return trainer


# ------------------------------------------------------------------------------------------- CLI
def add_args(p) -> None:
  p.add_argument("--config", required=True, help="Python config file with get_config() (see configs/)")
  p.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, tb/, images/ and tokenizer/")
  p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                 help="override a config field, e.g. --set steps=100 --set tokenizer.image_size=64")
  p.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() (multi-host)")
  p.add_argument("--no-progress", action="store_true")


def run_cli(args) -> int:
  if args.distributed:
    jax.distributed.initialize()
  cfg = load_config(args.config, args.overrides)
  trainer = Trainer(cfg, args.workdir)
  try:
    last = trainer.run(progress=not args.no_progress)
  except NonFiniteLossError as e:
    print(f"spae train: stopped: {e}", file=sys.stderr)
    return 1
  print(json.dumps({k: v for k, v in last.items() if isinstance(v, (int, float))}))
  print(f"tokenizer written to {Path(args.workdir) / 'tokenizer'}")
  return 0
