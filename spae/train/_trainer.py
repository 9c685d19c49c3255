"""The training loop: data, models, optional loss terms, checkpoints, metrics, previews and export.

The LLM never runs during training: the codebook is its frozen embedding table, and semantics come
from an image-text teacher's relevance scores over that vocabulary.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from spae import losses as L
from spae._images import image_grid, save_image
from spae._io import SpaeInputError, write_json_atomic
from spae._tokenizer import Tokenizer
from spae._vocab import Vocabulary
from spae.train._checkpoints import Checkpoints
from spae.train._config import TrainConfig
from spae.train._inputs import build_vocabulary, open_data, reference_images
from spae.train._metrics_log import MetricsLog, Throughput
from spae.train._semantic import caption_word_mask, label_images, most_named, teacher_relevance
from spae.train._step import Models, NonFiniteLossError, _schedule, init_state, make_train_step
from spae.train._tune import tune_decoder

log = logging.getLogger("spae.train")


class Trainer:
  """Builds data, models, optimisers and checkpoints from a TrainConfig and runs the loop.

  Multi-device: a 1-D mesh ('data') over all devices; the batch is sharded over it and parameters
  are replicated. Multi-host: call `jax.distributed.initialize()` first (`spae train --distributed`);
  each host then feeds its own shard of the data.
  """

  def __init__(self, cfg: TrainConfig, workdir: str | os.PathLike, *, source: Any = None,
               vocabulary: Vocabulary | None = None, teacher: Any = None):
    cfg.validate()
    self.cfg = cfg
    # Created by the first write (run()), so a run that fails to start leaves no directory behind.
    self.workdir = Path(workdir).expanduser()
    if self.workdir.exists() and not self.workdir.is_dir():
      raise SpaeInputError(f"workdir {str(self.workdir)!r} exists and is not a directory.")
    self.vocab = vocabulary if vocabulary is not None else build_vocabulary(cfg.vocab)
    cfg.tokenizer.pyramid.check_vocab(len(self.vocab))
    self.mesh = Mesh(np.array(jax.devices()), ("data",))
    self.replicated = NamedSharding(self.mesh, P())
    self.batch_sharding = NamedSharding(self.mesh, P("data"))
    n_dev = jax.device_count()
    if cfg.batch_size % n_dev:
      raise SpaeInputError(f"batch_size {cfg.batch_size} must be divisible by the {n_dev} devices.")
    self.codebook = jax.device_put(jnp.asarray(self.vocab.embeddings), self.replicated)
    # Data
    self._source = source if source is not None else open_data(cfg.data)
    self.data = self.batches(cfg.seed)
    # Training's and the refit's readings centre on the same images: each count is rendered once while building.
    reference = functools.cache(self._reference_images)
    # Optional terms
    from spae.perceptual import make_perceptual_loss

    self.perceptual = make_perceptual_loss(cfg.loss.perceptual_weights) if cfg.loss.perceptual_weight else None
    cfg = self._setup_teacher(teacher, reference)
    self.models = Models(cfg, self.vocab.embeddings.shape)
    self._steps: dict[tuple[bool, ...], Callable] = {}
    # A host copy: the step donates the state, whose first parameters may share buffers with models.g_init.
    self._initial_pool = jax.device_get(self.models.g_init["pool"]) if cfg.semantic.pool_reset else None
    self.state = jax.device_put(init_state(cfg, self.models), self.replicated)
    self.checkpoints = Checkpoints(self.workdir / "checkpoints", keep=cfg.checkpoints.keep,
                                   async_save=cfg.checkpoints.async_save)
    self._preview: Tokenizer | None = None
    self.tune_rows: list[dict[str, float]] = []  # the decoder tune's metrics rows, once finish() ran it

  # ---------------------------------------------------------------- pieces
  def _setup_teacher(self, teacher: Any, reference: Callable[[int], np.ndarray]) -> TrainConfig:
    """The semantic teacher's reading of this run (`teacher_fn`, its jitted distribution `_teacher_jit`, the words
    it may name `_teacher_mask`, the refit's own reading `_refit_fn`), loading the config's teacher when none is
    given; with `semantic.vocab_size` the sub-vocabulary it names most often goes into the pyramid. Returns the
    config with that pyramid (also `self.cfg`)."""
    cfg = self.cfg
    self.teacher_fn = None
    self._refit_fn = None  # the refit's own reading of the teacher, where the config asks for one
    if teacher is None and cfg.semantic.teacher and cfg.semantic.weight:
      from spae import teachers

      teacher = teachers.load("lit:default" if cfg.semantic.teacher == "default" else cfg.semantic.teacher)
    if teacher is not None and cfg.semantic.weight:
      k = min(cfg.semantic.teacher_top_k, len(self.vocab))
      # `mask` [V] bool: the words the teacher may name (a sub-vocabulary's rows; all words otherwise).
      dist = lambda fn, mask, im: L.teacher_distribution(jnp.where(mask, fn(im), -jnp.inf), k,
                                                         cfg.semantic.teacher_temperature)
      if hasattr(teacher, "relevance_fn"):
        # A pytree RelevanceFn: its weights are jit arguments, not constants baked into the program.
        self.teacher_fn = self._teacher_relevance(teacher, reference)
        self._teacher_jit = jax.jit(dist)
        if cfg.semantic.refit_mirrored or cfg.semantic.refit_standardised:
          self._refit_fn = self._teacher_relevance(teacher, reference, mirrored=cfg.semantic.refit_mirrored,
                                                   standardised=cfg.semantic.refit_standardised)
      else:  # any callable images [B,H,W,3] in [0,1] -> relevance [B, V]
        if cfg.semantic.refit_mirrored or cfg.semantic.refit_standardised:
          raise SpaeInputError("semantic.refit_mirrored / refit_standardised need a teacher with relevance_fn (a spae "
                               "teacher); this teacher is a plain callable. Set both to false.")
        if cfg.semantic.caption_bank:
          raise SpaeInputError("semantic.caption_bank needs a teacher with relevance_fn (a spae teacher); this "
                               "teacher is a plain callable. Set semantic.caption_bank=0.")
        self.teacher_fn = teacher
        self._teacher_jit = jax.jit(lambda fn, mask, im: dist(teacher, mask, im), static_argnums=0)
      self._teacher_mask = jnp.ones((len(self.vocab),), bool)
      if cfg.semantic.vocab_size:
        pyr = dataclasses.replace(cfg.tokenizer.pyramid, semantic_layers=min(cfg.semantic.layers, len(
            cfg.tokenizer.pyramid.grids)), semantic_vocab=self._teacher_vocab(reference))
        cfg = self.cfg = dataclasses.replace(cfg, tokenizer=dataclasses.replace(cfg.tokenizer, pyramid=pyr))
      rows = list(cfg.tokenizer.pyramid.semantic_vocab)
      if rows:  # the teacher names only words the semantic layers can pick
        self._teacher_mask = jnp.zeros((len(self.vocab),), bool).at[jnp.asarray(rows)].set(True)
    elif cfg.semantic.vocab_size:
      raise SpaeInputError("semantic.vocab_size needs a teacher to choose the words: set semantic.teacher.")
    elif cfg.semantic.weight:
      log.warning("no teacher given: the semantic loss is off.")
    if cfg.semantic.refit_images and self.teacher_fn is None:
      raise SpaeInputError("semantic.refit_images needs a teacher to name the images: set semantic.teacher (with "
                           "semantic.weight > 0), or semantic.refit_images=0.")
    return cfg

  def batches(self, seed: int) -> Any:
    """This host's shard of the training batches in the order `seed` draws (a spae.data.BatchIterator): the
    loop's (cfg.seed) and the decoder tune's (cfg.seed + 1)."""
    from spae import data as D

    cfg, n_proc = self.cfg, jax.process_count()
    return D.BatchIterator(self._source, cfg.batch_size // n_proc,
                           D.Preprocess(cfg.tokenizer.image_size, crop=cfg.crop, flip=cfg.flip), seed=seed,
                           shard_index=jax.process_index(), num_shards=n_proc, num_threads=cfg.num_data_threads)

  def _teacher_relevance(self, teacher: Any, reference: Callable[[int], np.ndarray], *, mirrored: bool = False,
                         standardised: bool = False) -> Any:
    """`spae.train._semantic.teacher_relevance` over this run's vocabulary, centred on `reference(n)`."""
    return teacher_relevance(teacher, self.vocab, self.cfg.semantic, reference, mirrored=mirrored,
                             standardised=standardised)

  def _reference_images(self, n: int) -> np.ndarray:
    """The first n training images as the teacher sees them (`reference_images`)."""
    return reference_images(self._source, n, self.cfg.tokenizer.image_size, self.cfg.crop)

  def _teacher_vocab(self, reference: Callable[[int], np.ndarray]) -> tuple[int, ...]:
    """The `semantic.vocab_size` words the teacher puts in its top k most often over the first
    `semantic.vocab_images` training images (`_reference_images`); ties go to the lower row. Sorted by row."""
    sem = self.cfg.semantic
    images = reference(sem.vocab_images)
    mask = self._teacher_mask
    if sem.vocab_from_captions:
      mask = mask & jnp.asarray(caption_word_mask(self._source, self.vocab, sem.vocab_from_captions))
    idx, _ = label_images(self._teacher_jit, self.teacher_fn, mask, images)
    chosen = most_named(np.bincount(idx.ravel(), minlength=len(self.vocab)), sem.vocab_size)
    if len(chosen) < sem.teacher_top_k:
      raise SpaeInputError(f"the teacher named only {len(chosen)} distinct words over {len(images)} training images, "
                           f"fewer than semantic.teacher_top_k={sem.teacher_top_k}; use more semantic.vocab_images.")
    if len(chosen) < sem.vocab_size:
      log.warning("semantic.vocab_size=%d but the teacher named only %d distinct words over %d images; using those.",
                  sem.vocab_size, len(chosen), len(images))
    return tuple(sorted(int(i) for i in chosen))

  def step_fn(self, use_gan: bool, freeze_pool: bool = False, freeze_codes: bool = False,
              decoder_only: bool = False) -> Callable:
    key = (use_gan, freeze_pool, freeze_codes, decoder_only)
    if key not in self._steps:
      fn = make_train_step(self.cfg, self.models, use_gan=use_gan, perceptual=self.perceptual,
                           semantic=self.teacher_fn is not None and not decoder_only, freeze_pool=freeze_pool,
                           freeze_codes=freeze_codes, decoder_only=decoder_only)
      self._steps[key] = jax.jit(fn, donate_argnums=(0,))
    return self._steps[key]

  def reset_pool(self) -> None:
    """`semantic.pool_reset`: the pooled layers' scorer (trained and averaged weights alike) back to its initial
    contrast pooling. Done once, on the host, when the loop reaches that step; a run resumed past it restores the
    reset weights from its checkpoint."""
    initial = jax.device_put(self._initial_pool, self.replicated)
    # The EMA gets its own buffers: the step donates the state, and a donated buffer may appear in it only once.
    self.state = dict(self.state, g_params=dict(self.state["g_params"], pool=initial),
                      ema_params=dict(self.state["ema_params"], pool=jax.tree.map(jnp.array, initial)))

  def adopt(self, tok: Tokenizer, layer_weights: tuple[float, ...] | None = None) -> None:
    """Puts a finished tokenizer's networks and parameters in place of the generator's (trained and averaged alike),
    so that the stages after training run on it: how tools/refit_tokenizer.py tunes the decoder of a tokenizer with a
    semantic head (`spae.train.add_semantic_head`), whose sub-vocabulary and head the recipe's own networks lack.
    layer_weights: other SAQ layer weights for what follows (`PyramidSpec.layer_weights`; None: the tokenizer's)."""
    config = tok.config
    if layer_weights is not None:
      config = dataclasses.replace(config, pyramid=dataclasses.replace(config.pyramid, layer_weights=layer_weights))
    self.models = Models(dataclasses.replace(self.cfg, tokenizer=config), self.vocab.embeddings.shape)
    self._steps = {}
    params = jax.tree.map(jnp.asarray, nnx.state(tok.model, nnx.Param).to_pure_dict())
    self.state = dict(self.state, g_params=jax.device_put(params, self.replicated),
                      ema_params=jax.device_put(jax.tree.map(jnp.array, params), self.replicated))

  def refit_codes(self) -> None:
    """`semantic.refit_images`: the semantic words' codes (trained and averaged weights alike) become the exact class
    means of each one's current layer-1 inputs over the first that many training images (`_reference_images`), read
    by the teacher as during training, or as `semantic.refit_mirrored` / `refit_standardised` ask (docs/method.md,
    "The refit after training"). Done after the last step, or at `semantic.refit_step`. A function of the encoder
    and scorer only, so a run resumed from a checkpoint saved before it refits to the same codes."""
    from spae.train._refit import refit_state

    images = self._reference_images(self.cfg.semantic.refit_images)
    reading = self.teacher_fn if self._refit_fn is None else self._refit_fn
    named, probs = label_images(self._teacher_jit, reading, self._teacher_mask, images)
    self.state = refit_state(self.state, self.models, self.codebook, images, named, probs, self.replicated)

  def extras_for(self, images: jax.Array) -> dict[str, Any]:
    ex: dict[str, Any] = {}
    if self.perceptual is not None:
      ex["perceptual"] = self.perceptual.params
    if self.teacher_fn is not None:
      idx, probs = self._teacher_jit(self.teacher_fn, self._teacher_mask, images)
      ex["teacher_idx"], ex["teacher_probs"] = idx, probs
    return ex

  def global_batch(self, local: np.ndarray) -> jax.Array:
    return jax.make_array_from_process_local_data(self.batch_sharding, local)

  def dispatch_step(self, images: np.ndarray, step: int) -> tuple[dict[str, jax.Array], list[jax.Array]]:
    """Queues one optimisation step on a host-local batch without waiting for it: (metrics, ids) on device.

    step: the number of steps done before this one (the loop counts on the host; reading state['step'] back
    would wait for the previous step to finish).
    """
    x = self.global_batch(np.asarray(images, np.float32))
    use_gan = bool(self.cfg.gan.adversarial_weight) and step >= self.cfg.gan.disc_start
    reset, refit = self.cfg.semantic.pool_reset, self.cfg.semantic.refit_step
    if reset and step == reset:
      self.reset_pool()
    if refit and step == refit:  # after the reset: the codes are means of what the frozen scorer pools
      self.refit_codes()
    freeze_pool, freeze_codes = bool(reset) and step >= reset, bool(refit) and step >= refit
    step_fn = self.step_fn(use_gan, freeze_pool, freeze_codes)
    self.state, metrics, ids = step_fn(self.state, x, self.codebook, self.extras_for(x))
    return metrics, ids

  def train_step(self, images: np.ndarray) -> dict[str, float]:
    """One optimisation step on a host-local batch, waited for; returns the metrics as floats."""
    metrics, _ = self.dispatch_step(images, int(self.state["step"]))
    return {k: float(v) for k, v in jax.device_get(metrics).items()}

  # ---------------------------------------------------------------- checkpoints
  def save_checkpoint(self, *, step: int | None = None, wait: bool = False) -> None:
    """step: the state's step when the caller knows it (saves reading it back from the device)."""
    step = int(self.state["step"]) if step is None else step
    self.checkpoints.save(step, self.state, self.data.get_state(), wait=wait)

  def restore_latest(self) -> int | None:
    """Restores the newest complete checkpoint, if any; returns its step."""
    abstract = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=self.replicated), self.state)
    restored = self.checkpoints.restore_latest(abstract)
    if restored is None:
      return None
    step, self.state, data_state = restored
    self.data.set_state(data_state)
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
      self.tokenizer(ema=self.cfg.optim.ema_decay > 0).save(directory)
    return directory

  # ---------------------------------------------------------------- loop
  def run(self, *, progress: bool = True, stop_after: int | None = None) -> dict[str, float]:
    """Trains to cfg.steps (resuming from the latest checkpoint); returns the last logged metrics.

    The host never waits for a step except every `logging.every` steps (metrics, ids, NaN counters are fetched
    then), at image grids and at checkpoints, so steps are queued ahead on accelerators.
    stop_after: stop (with a checkpoint) once this many steps ran in this call — for tests and preemption.
    """
    from tqdm.auto import tqdm

    from spae import metrics as M

    cfg = self.cfg
    restored = self.restore_latest()
    start = restored if restored is not None else int(jax.device_get(self.state["step"]))
    is_main = jax.process_index() == 0
    self.workdir.mkdir(parents=True, exist_ok=True)
    book = MetricsLog(self.workdir, start_step=start, enabled=is_main)
    if is_main:
      write_json_atomic(self.workdir / "config.json", cfg.to_dict())
    usage = M.UsageWindow(self.models.tokenizer_config.pyramid.num_layers, len(self.vocab), cfg.logging.usage_window)
    bar = tqdm(total=cfg.steps, initial=start, disable=not (progress and is_main), dynamic_ncols=True)
    last: dict[str, float] = {}
    clock = Throughput()
    done = start
    try:
      for step in range(start, cfg.steps):
        batch = next(self.data)
        metrics, ids = self.dispatch_step(batch["image"], step)
        done = step + 1
        clock.add(cfg.batch_size)
        stopping = stop_after is not None and done - start >= stop_after
        if done % cfg.logging.every == 0 or done == cfg.steps or stopping:
          # The only wait for the device between checkpoints: everything below is one transfer.
          fetched = jax.device_get({"metrics": metrics, "ids": ids, "nan": self.state["nan"]})
          # Codebook usage is a sample: the ids of one step per logging interval enter the window.
          usage.update([np.asarray(a) for a in fetched["ids"]])
          self._stop_if_diverged(fetched["nan"], done)
          last = {"step": done, **{k: float(v) for k, v in fetched["metrics"].items()},
                  "images_per_s": clock.rate(), "nan_total": int(fetched["nan"]["total"]),
                  "lr": float(jax.device_get(_schedule(cfg, cfg.optim.lr)(done))), **dict(usage.metrics(prefix="")),
                  "data_skipped": self.data.num_skipped}
          book.write(last)
          bar.set_postfix({k: f"{last[k]:.3g}" for k in ("g_loss", "l2", "images_per_s") if k in last})
        if is_main and cfg.logging.image_every and (done % cfg.logging.image_every == 0 or done == cfg.steps):
          self.write_image_grid(batch["image"][:4], done)
        if done % cfg.checkpoints.every == 0 or done == cfg.steps or stopping:
          self.save_checkpoint(step=done)
        bar.update(1)
        if stopping:
          break
    finally:
      bar.close()
      self.checkpoints.wait()
      book.close()
    if done >= cfg.steps:
      self.finish()
    return last

  def finish(self, directory: str | os.PathLike | None = None) -> Path:
    """After the last step: the refit (`semantic.refit_images` without a `refit_step`), the decoder tune
    (`tune.steps`, its rows appended to metrics.jsonl and kept in `tune_rows`), the export (to `directory`, else
    WORKDIR/tokenizer; its path is returned). A function of the last step's state, so a finished run that is
    resumed, or tools/refit_tokenizer.py given its tokenizer, finishes the same way."""
    if self.cfg.semantic.refit_images and not self.cfg.semantic.refit_step:
      self.refit_codes()
    rows = self.tune_rows = tune_decoder(self)
    if rows and jax.process_index() == 0:
      book = MetricsLog(self.workdir, start_step=self.cfg.steps)  # drops an earlier finish's tune rows
      for row in rows:
        book.write(row)
      book.close()
    return self.export(directory)

  def _stop_if_diverged(self, nan: dict[str, Any], done: int) -> None:
    """Raises NonFiniteLossError (after a checkpoint) once the device-side guard has tripped."""
    tripped = int(nan["tripped"])
    if tripped:
      self.save_checkpoint(step=done, wait=True)
      raise NonFiniteLossError(
          f"{self.cfg.max_consecutive_nan} consecutive non-finite losses ending at step {tripped} "
          f"({int(nan['total'])} in total by step {done}); updates were skipped. "
          "Lower the learning rate or check the data.")

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


