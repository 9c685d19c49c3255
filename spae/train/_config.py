"""The training configuration: a dataclass, Python config files and `--set key=value` overrides."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
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

  Groups: `optim`, `loss`, `gan`, `semantic`, `logging`, `checkpoints`; `--set group.field=value` overrides one.
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
  logging: LoggingConfig = dataclasses.field(default_factory=LoggingConfig)
  checkpoints: CheckpointConfig = dataclasses.field(default_factory=CheckpointConfig)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


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
    hint = f" (it is now {_MOVED[key]!r})" if isinstance(cfg, TrainConfig) and key in _MOVED else ""
    raise SpaeInputError(f"override {item!r}: unknown config field {head!r}{hint}.")
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

