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

