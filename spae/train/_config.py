"""The training configuration: a dataclass, Python config files and `--set key=value` overrides."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import os
import typing
from pathlib import Path
from typing import Any

from spae._io import SpaeInputError
from spae._nets import DiscriminatorConfig
from spae._tokenizer import TokenizerConfig


@dataclasses.dataclass
class OptimConfig:
  """AdamW with global-norm clipping and a warmup-cosine schedule, for the generator and the discriminator."""

  lr: float = 1e-4                  # generator peak learning rate
  d_lr: float = 1e-4                # discriminator peak learning rate
  warmup_steps: int = 100           # linear warmup from 0
  final_lr_ratio: float = 0.1       # the cosine ends at lr * final_lr_ratio at `steps`
  b1: float = 0.0
  b2: float = 0.99
  weight_decay: float = 1e-4
  grad_clip: float = 1.0            # global-norm clip
  ema_decay: float = 0.999          # EMA of the generator parameters (exported); 0 exports the raw ones


@dataclasses.dataclass
class LossConfig:
  """Reconstruction and commitment terms. A weight of 0 switches a term off."""

  l2_weight: float = 1.0
  l1_weight: float = 0.0
  perceptual_weight: float = 0.1
  perceptual_weights: str | None = None  # VGG16/LPIPS file; None = perceptual loss off (warned)
  commitment_weight: float = 0.25
  progressive: bool = True          # also reconstruct from a random prefix of layers each step
  # False trains the plain autoencoder (the decoder reads z): the network's own ceiling, for ablations only;
  # the exported bundle still quantizes when it encodes.
  quantize: bool = True


@dataclasses.dataclass
class GANConfig:
  """Non-saturating GAN with R1 and optional LeCam; a weight of 0 never builds the discriminator step."""

  adversarial_weight: float = 0.1
  disc_start: int = 2000            # the discriminator (and adversarial loss) starts at this step
  r1_gamma: float = 10.0
  lecam_weight: float = 0.0
  lecam_decay: float = 0.999
  discriminator: DiscriminatorConfig = dataclasses.field(default_factory=DiscriminatorConfig)


@dataclasses.dataclass
class SemanticConfig:
  """Semantic guidance: cross-entropy from a teacher's top-k words to the top layers' soft assignments."""

  teacher: str | None = None        # spae.teachers.load spec; None = semantic loss off
  weight: float = 1.0               # base weight of the top layer; 0 = off
  layers: int = 3                   # top layers that get the semantic loss
  decay: float = 0.5                # weight ratio from one layer to the next lower one
  schedule: str = "cosine"          # 'constant', 'warmup' or 'cosine' (spae.losses.semantic_layer_weights)
  warmup: int = 0
  final_ratio: float = 0.1
  tau: float = 1.0                  # soft-assignment temperature
  teacher_top_k: int = 10
  teacher_temperature: float = 0.07
  centre_images: int = 0            # > 0: subtract each word's mean score over this many training images
  whole_words: bool = False         # only words the teacher's text tokenizer reads as one whole token
  caption_bank: int = 0             # > 0: read each image through the first this many of the teacher's training
                                    # captions (RelevanceFn.through_captions; a LiT teacher's captions.npz)
  caption_tau: float = 0.03         # that softmax's temperature
  pull: str = "targets"             # what the CE moves: 'targets' (the encoder), 'both', or 'codes' (a trainable
                                    # code map only: 'projected' / 'learned'); docs/method.md
  vocab_size: int = 0               # > 0: the top `layers` layers search only the `vocab_size` words the teacher
                                    # puts in its top k most often over `vocab_images` training images (written
                                    # into the tokenizer's PyramidSpec.semantic_vocab); 0 = the whole vocabulary
  vocab_images: int = 1024
  vocab_from_captions: int = 0      # > 0 (with vocab_size): those words are chosen only among the codebook words
                                    # that occur in the first this many training captions (lower case, whole words)
  code_means: float = 0.0           # > 0 (an EMA decay, with codebook.semantic_map): each step sets the semantic
                                    # words' codes to the running mean layer-1 input of the images the teacher
                                    # names them for, instead of learning W_s by gradient (docs/method.md)
  refit_images: int = 0            # > 0 (with code_means): after the last step the semantic codes become the exact
                                    # class means of the trained encoder's layer-1 inputs over this many training
                                    # images (the teacher's reading as in training), replacing the running EMA's
  refit_step: int = 0               # > 0 (with refit_images): the refit happens when the loop reaches this step
                                    # (after a pool_reset at the same step) instead of after the last, and the
                                    # codes then stay fixed, so the decoder and lower layers learn them
  refit_mirrored: bool = False      # the refit reads each image as the mean of its and its left-right mirror's
                                    # scores (RelevanceFn.mirror_averaged); training's reading is unchanged
  refit_standardised: bool = False  # the refit divides each word's centred score by its spread over the
                                    # centring images (RelevanceFn.standardised; needs centre_images > 0)
  learn_pool: bool = True           # the CE trains the pooled layers' attention scorer; False keeps its initial
                                    # contrast pooling (under code_means the CE drifts it toward the block mean)
  pool_reset: int = 0               # > 0: at this step the scorer returns to its initial contrast pooling and is
                                    # frozen from then on (learned while the pyramid forms, fixed for the naming)


@dataclasses.dataclass
class TuneConfig:
  """The decoder tune (docs/method.md, "The decoder tune"): `steps` more steps after the last one and its refit in
  which only the decoder learns, from the reconstruction terms, so the decoder learns the final codes while every
  token stays what the trained encoder and codes make it. It starts from the weights the run exports, with its own
  optimiser state, data order and prefix draws (seed + 1), so it is a function of the trained tokenizer alone."""

  steps: int = 0                    # 0 = no tune
  lr: float = 2e-4                  # a cosine from lr to lr * optim.final_lr_ratio over the tune's steps
  monotone: float = 0.0             # weight of the hinge asking each prefix to beat the one a layer shorter


@dataclasses.dataclass
class LoggingConfig:
  """metrics.jsonl / TensorBoard every `every` steps, reconstruction grids every `image_every` (0 = never)."""

  every: int = 10
  image_every: int = 500
  usage_window: int = 65536         # codebook-usage window, in token ids


@dataclasses.dataclass
class CheckpointConfig:
  """Orbax checkpoints under WORKDIR/checkpoints every `every` steps, keeping the newest `keep`.

  Async saves overlap I/O with training; a SIGKILL then loses at most one interval plus the steps run while
  the last save was still being written. Synchronous saves bound the loss to one interval exactly.
  """

  every: int = 500
  keep: int = 3
  async_save: bool = True


@dataclasses.dataclass
class TrainConfig:
  """Everything a run needs. Configs are Python files whose `get_config()` returns one of these.

  Groups: `optim`, `loss`, `gan`, `semantic`, `tune`, `logging`, `checkpoints`; `--set group.field=value` overrides one.
  """

  tokenizer: TokenizerConfig = dataclasses.field(default_factory=TokenizerConfig)
  vocab: str = "tiny"              # 'tiny', or a saved spae.Vocabulary directory
  data: str = "shapes:~/.cache/spae/shapes"  # spae.data.make_source spec
  crop: str = "random"             # 'random' or 'center'
  flip: bool = True
  batch_size: int = 16             # global batch (split over hosts, then over devices)
  steps: int = 1000
  seed: int = 0
  num_data_threads: int = 2
  max_consecutive_nan: int = 10    # stop after this many non-finite losses in a row (their updates are skipped)
  optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
  loss: LossConfig = dataclasses.field(default_factory=LossConfig)
  gan: GANConfig = dataclasses.field(default_factory=GANConfig)
  semantic: SemanticConfig = dataclasses.field(default_factory=SemanticConfig)
  tune: TuneConfig = dataclasses.field(default_factory=TuneConfig)
  logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)
  checkpoints: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  def validate(self) -> None:
    """Raises SpaeInputError (one line naming the field) for a value no run can use, before any work."""
    for name, value, ok, want in _checks(self):
      if not ok:
        raise SpaeInputError(f"config field {name} = {value!r} is invalid: it must be {want}.")


def _checks(c: TrainConfig):
  """(field, value, valid?, what a valid value is) for every constrained field."""
  pos, nonneg = "a positive integer", "an integer >= 0"
  is_int = lambda v: isinstance(v, int) and not isinstance(v, bool)
  is_num = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
  unit = lambda v: is_num(v) and 0 <= v < 1
  o, l, g, s, lg, ck = c.optim, c.loss, c.gan, c.semantic, c.logging, c.checkpoints
  yield from [
      ("steps", c.steps, is_int(c.steps) and c.steps >= 1, pos),
      ("batch_size", c.batch_size, is_int(c.batch_size) and c.batch_size >= 1, pos),
      ("seed", c.seed, is_int(c.seed), "an integer"),
      ("num_data_threads", c.num_data_threads, is_int(c.num_data_threads) and c.num_data_threads >= 0, nonneg),
      ("max_consecutive_nan", c.max_consecutive_nan, is_int(c.max_consecutive_nan) and c.max_consecutive_nan >= 1,
       pos),
      ("crop", c.crop, c.crop in ("random", "center"), "'random' or 'center'"),
      ("tokenizer.image_size", c.tokenizer.image_size,
       is_int(c.tokenizer.image_size) and c.tokenizer.image_size >= 1, pos),
      ("tokenizer.vocab_chunk", c.tokenizer.vocab_chunk,
       is_int(c.tokenizer.vocab_chunk) and c.tokenizer.vocab_chunk >= 1, pos),
      # The step takes the nearest semantic words; a head is added to a trained tokenizer (tools/add_semantic_head.py).
      ("tokenizer.autoencoder.semantic_head", c.tokenizer.autoencoder.semantic_head,
       c.tokenizer.autoencoder.semantic_head == 0, "0 (a semantic head is added after training: "
       "tools/add_semantic_head.py)"),
  ]
  for name in ("lr", "d_lr", "weight_decay"):
    v = getattr(o, name)
    yield f"optim.{name}", v, is_num(v) and v >= 0, "a number >= 0"
  yield "optim.warmup_steps", o.warmup_steps, is_int(o.warmup_steps) and o.warmup_steps >= 0, nonneg
  yield "optim.final_lr_ratio", o.final_lr_ratio, is_num(o.final_lr_ratio) and o.final_lr_ratio >= 0, "a number >= 0"
  yield "optim.grad_clip", o.grad_clip, is_num(o.grad_clip) and o.grad_clip > 0, "a number > 0"
  for name in ("b1", "b2", "ema_decay"):
    yield f"optim.{name}", getattr(o, name), unit(getattr(o, name)), "in [0, 1)"
  for group, obj, names in (("loss", l, ("l2_weight", "l1_weight", "perceptual_weight", "commitment_weight")),
                            ("gan", g, ("adversarial_weight", "r1_gamma", "lecam_weight")),
                            ("semantic", s, ("weight",))):
    for name in names:
      v = getattr(obj, name)
      yield f"{group}.{name}", v, is_num(v) and v >= 0, "a number >= 0"
  yield "gan.disc_start", g.disc_start, is_int(g.disc_start) and g.disc_start >= 0, nonneg
  yield "gan.lecam_decay", g.lecam_decay, unit(g.lecam_decay), "in [0, 1)"
  yield "semantic.layers", s.layers, is_int(s.layers) and s.layers >= 1, pos
  yield "semantic.decay", s.decay, is_num(s.decay) and s.decay >= 0, "a number >= 0"
  yield "semantic.schedule", s.schedule, s.schedule in ("constant", "warmup", "cosine"), \
      "'constant', 'warmup' or 'cosine'"
  yield "semantic.warmup", s.warmup, is_int(s.warmup) and s.warmup >= 0, nonneg
  yield "semantic.final_ratio", s.final_ratio, is_num(s.final_ratio) and s.final_ratio >= 0, "a number >= 0"
  yield "semantic.tau", s.tau, is_num(s.tau) and s.tau > 0, "a number > 0"
  yield "semantic.teacher_top_k", s.teacher_top_k, is_int(s.teacher_top_k) and s.teacher_top_k >= 1, pos
  yield "semantic.teacher_temperature", s.teacher_temperature, \
      is_num(s.teacher_temperature) and s.teacher_temperature > 0, "a number > 0"
  yield "semantic.centre_images", s.centre_images, is_int(s.centre_images) and s.centre_images >= 0, \
      nonneg + " (0 = no centring)"
  yield "semantic.whole_words", s.whole_words, isinstance(s.whole_words, bool), "true or false"
  yield "semantic.caption_bank", s.caption_bank, is_int(s.caption_bank) and s.caption_bank >= 0, nonneg + " (0 = off)"
  yield "semantic.caption_tau", s.caption_tau, is_num(s.caption_tau) and s.caption_tau > 0, "a number > 0"
  yield "semantic.pull", s.pull, s.pull == "targets" or (
      s.pull in ("both", "codes") and c.tokenizer.codebook.trainable), \
      "'targets', or 'both' / 'codes' with a trainable codebook (tokenizer.codebook.mode 'projected' or 'learned')"
  yield "tokenizer.codebook.semantic_map", c.tokenizer.codebook.semantic_map, \
      not c.tokenizer.codebook.semantic_map or s.vocab_size > 0 or bool(c.tokenizer.pyramid.semantic_layers), \
      "false, or true with semantic layers (semantic.vocab_size > 0)"
  yield "semantic.vocab_size", s.vocab_size, is_int(s.vocab_size) and (s.vocab_size == 0 or (
      s.vocab_size >= s.teacher_top_k and s.weight > 0 and not c.tokenizer.pyramid.semantic_layers)), \
      nonneg + " (0 = the whole vocabulary); when > 0, at least semantic.teacher_top_k, with semantic.weight > 0 " \
      "and no semantic_vocab already in tokenizer.pyramid"
  yield "semantic.vocab_from_captions", s.vocab_from_captions, is_int(s.vocab_from_captions) and (
      s.vocab_from_captions >= 0) and (not s.vocab_from_captions or s.vocab_size > 0), \
      nonneg + " (0 = off); > 0 needs semantic.vocab_size > 0"
  yield "semantic.code_means", s.code_means, is_num(s.code_means) and 0 <= s.code_means < 1 and (
      not s.code_means or c.tokenizer.codebook.semantic_map), \
      "in [0, 1) (0 = off); > 0 needs tokenizer.codebook.semantic_map=true"
  yield "semantic.refit_images", s.refit_images, is_int(s.refit_images) and s.refit_images >= 0 and (
      not s.refit_images or s.code_means > 0), nonneg + " (0 = off); > 0 needs semantic.code_means > 0"
  # A refit before the scorer reset would fit the codes to a pooling the reset then throws away.
  yield "semantic.refit_step", s.refit_step, is_int(s.refit_step) and s.refit_step >= 0 and (
      not s.refit_step or (s.refit_images > 0 and s.refit_step < c.steps and s.refit_step >= s.pool_reset)), \
      nonneg + " (0 = after the last step); > 0 needs semantic.refit_images > 0, must be under steps and not " \
      "before semantic.pool_reset"
  yield "semantic.refit_mirrored", s.refit_mirrored, isinstance(s.refit_mirrored, bool) and (
      not s.refit_mirrored or s.refit_images > 0), "true or false; true needs semantic.refit_images > 0"
  yield "semantic.refit_standardised", s.refit_standardised, isinstance(s.refit_standardised, bool) and (
      not s.refit_standardised or (s.refit_images > 0 and s.centre_images > 0)), \
      "true or false; true needs semantic.refit_images > 0 and semantic.centre_images > 0"
  yield "semantic.learn_pool", s.learn_pool, isinstance(s.learn_pool, bool), "true or false"
  yield "semantic.pool_reset", s.pool_reset, is_int(s.pool_reset) and s.pool_reset >= 0 and (
      not s.pool_reset or (c.tokenizer.pyramid.pooled_layers > 0 and s.learn_pool is True)), \
      nonneg + " (0 = never); > 0 needs pooled layers (tokenizer.pyramid.pooled_layers) and semantic.learn_pool=true"
  yield "semantic.vocab_images", s.vocab_images, is_int(s.vocab_images) and s.vocab_images >= 1, pos
  yield "tune.steps", c.tune.steps, is_int(c.tune.steps) and c.tune.steps >= 0, nonneg + " (0 = no tune)"
  yield "tune.lr", c.tune.lr, is_num(c.tune.lr) and c.tune.lr > 0, "a number > 0"
  yield "tune.monotone", c.tune.monotone, is_num(c.tune.monotone) and c.tune.monotone >= 0 and (
      not c.tune.monotone or (c.tune.steps > 0 and c.loss.progressive is True)), \
      "a number >= 0 (0 = off); > 0 needs tune.steps > 0 and loss.progressive=true"
  yield "logging.every", lg.every, is_int(lg.every) and lg.every >= 1, pos
  yield "logging.image_every", lg.image_every, is_int(lg.image_every) and lg.image_every >= 0, nonneg + " (0 = never)"
  yield "logging.usage_window", lg.usage_window, is_int(lg.usage_window) and lg.usage_window >= 1, pos
  yield "checkpoints.every", ck.every, is_int(ck.every) and ck.every >= 1, pos
  yield "checkpoints.keep", ck.keep, is_int(ck.keep) and ck.keep >= 1, pos
  yield "checkpoints.async_save", ck.async_save, isinstance(ck.async_save, bool), "true or false"


# Flat names of the configs before the groups, for a one-line hint when an old `--set` is used.
_MOVED = {
    **{k: f"optim.{k}" for k in ("lr", "d_lr", "warmup_steps", "final_lr_ratio", "b1", "b2", "weight_decay",
                                 "grad_clip", "ema_decay")},
    **{k: f"loss.{k}" for k in ("l2_weight", "l1_weight", "perceptual_weight", "perceptual_weights",
                                "commitment_weight", "progressive")},
    **{k: f"gan.{k}" for k in ("adversarial_weight", "disc_start", "r1_gamma", "lecam_weight", "lecam_decay",
                               "discriminator")},
    "teacher": "semantic.teacher", "semantic_weight": "semantic.weight", "semantic_layers": "semantic.layers",
    "semantic_decay": "semantic.decay", "semantic_schedule": "semantic.schedule",
    "semantic_warmup": "semantic.warmup", "semantic_final_ratio": "semantic.final_ratio",
    "semantic_tau": "semantic.tau", "teacher_top_k": "semantic.teacher_top_k",
    "teacher_temperature": "semantic.teacher_temperature",
    "log_every": "logging.every", "image_every": "logging.image_every", "usage_window": "logging.usage_window",
    "checkpoint_every": "checkpoints.every", "keep_checkpoints": "checkpoints.keep",
    "async_checkpoints": "checkpoints.async_save",
}


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> TrainConfig:
  """Runs a Python config file's `get_config()`, applies `key=value` overrides (dotted for nesting), validates."""
  path = Path(path)
  if not path.is_file():
    raise SpaeInputError(f"config file {str(path)!r} does not exist.")
  spec = importlib.util.spec_from_file_location(f"spae_config_{path.stem}", path)
  mod = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(mod)
    cfg = mod.get_config() if hasattr(mod, "get_config") else None
  except SpaeInputError:
    raise
  except Exception as e:  # a broken config file is bad input, reported on one line
    raise SpaeInputError(f"config file {str(path)!r} failed: {type(e).__name__}: {_one_line(e)}") from None
  if cfg is None:
    raise SpaeInputError(f"{path} has no get_config() function.")
  if not isinstance(cfg, TrainConfig):
    raise SpaeInputError(f"{path}: get_config() must return spae.train.TrainConfig, got {type(cfg).__name__}.")
  for item in overrides or []:
    cfg = apply_override(cfg, item)
  cfg.validate()
  return cfg


def apply_override(cfg: Any, item: str) -> Any:
  """`key=value` -> a copy of cfg with that field replaced; the value is checked against the field's type.

  Values are JSON where they parse (`true`, `3e-4`, `[1, 2, 4]`, `null`), else the text itself (`data=shapes:DIR`).
  """
  if "=" not in item:
    raise SpaeInputError(f"override {item!r} must look like key=value (e.g. steps=100 or tokenizer.image_size=64).")
  key, raw = item.split("=", 1)
  return _replace_path(cfg, key.strip().split("."), raw, item)


def _replace_path(obj: Any, path: list[str], raw: str, item: str) -> Any:
  head, rest = path[0], path[1:]
  fields = {f.name: f for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else {}
  if head not in fields:
    key = ".".join(path)
    hint = f" (it is now {_MOVED[key]!r})" if isinstance(obj, TrainConfig) and key in _MOVED else ""
    raise SpaeInputError(f"override {item!r}: unknown config field {head!r}{hint}.")
  cur = getattr(obj, head)
  if rest:
    value = _replace_path(cur, rest, raw, item)
  elif dataclasses.is_dataclass(cur):
    sub = ", ".join(f.name for f in dataclasses.fields(cur))
    raise SpaeInputError(f"override {item!r}: {head!r} is a group of fields ({sub}); set one of them, "
                         f"e.g. {head}.{dataclasses.fields(cur)[0].name}=...")
  else:
    value = _parse_value(raw, typing.get_type_hints(type(obj))[head], item)
  try:
    return dataclasses.replace(obj, **{head: value})
  except SpaeInputError as e:  # a nested config's own check (e.g. PyramidSpec) rejected the value
    raise SpaeInputError(f"override {item!r}: {e}") from None


def _parse_value(raw: str, tp: Any, item: str) -> Any:
  """The override text as a value of type `tp` (int, float, bool, str, X | None, tuple[int, ...],
  tuple[float, ...], Literal)."""
  try:
    val = json.loads(raw)
  except json.JSONDecodeError:
    val = raw
  args = typing.get_args(tp)
  if type(None) in args:  # Optional[X]
    if raw.strip() in ("None", "null", "none"):
      return None
    tp = next(a for a in args if a is not type(None))
    args = typing.get_args(tp)
  origin = typing.get_origin(tp)
  bad = lambda what: SpaeInputError(f"override {item!r}: {raw!r} is not {what}.")
  if origin is typing.Literal:
    if val not in args:
      raise bad("one of " + ", ".join(map(repr, args)))
    return val
  if tp is bool:
    if not isinstance(val, bool):
      raise bad("true or false")
    return val
  if tp is int:
    if isinstance(val, float) and val.is_integer() and abs(val) < 2**63:
      val = int(val)  # 1e9
    if not isinstance(val, int) or isinstance(val, bool):
      raise bad("an integer")
    return val
  if tp is float:
    if not isinstance(val, (int, float)) or isinstance(val, bool) or not math.isfinite(val):
      raise bad("a finite number")
    return float(val)
  if tp is str:
    return val if isinstance(val, str) else raw
  if origin is tuple and args and args[0] is float:
    if not isinstance(val, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                            and math.isfinite(v) for v in val):
      raise bad("a list of numbers such as [1, 1, 2]")
    return tuple(float(v) for v in val)
  if origin is tuple:
    if not isinstance(val, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in val):
      raise bad("a list of integers such as [1, 2, 4]")
    return tuple(val)
  return val


def _one_line(e: BaseException) -> str:
  return " ".join(str(e).split())[:300]
