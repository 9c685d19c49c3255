"""The SPAE trainer: `spae train --config configs/X.py --workdir DIR`, or from Python:

  cfg = spae.train.load_config("configs/tiny.py", ["steps=100"])
  trainer = spae.train.Trainer(cfg, "runs/tiny")
  trainer.run()                 # resumes from the latest checkpoint, exports WORKDIR/tokenizer

Modules: `_config` (TrainConfig and its groups, `--set` overrides, validation), `_inputs` (vocabulary and data
specs, reference images), `_step` (models, optimisers, the jitted step), `_semantic` (how the trainer reads its
teacher), `_refit` (class-mean semantic codes), `_tune` (the decoder tune after training), `_head` (a semantic head
added to a trained tokenizer), `_checkpoints` (orbax, falling back past unreadable ones), `_metrics_log`
(metrics.jsonl, TensorBoard), `_trainer` (the loop, previews, export), `_cli` (the command).
Training-only building blocks (the discriminator, the RQ ablation quantizer) are exported here rather than from
`spae`; the training losses live in `spae.losses`.
"""

from spae._nets import Discriminator, DiscriminatorConfig
from spae._pyramid import rq_quantize
from spae.train._cli import add_args, run_cli
from spae.train._config import (CheckpointConfig, GANConfig, LoggingConfig, LossConfig, OptimConfig, SemanticConfig,
                                TrainConfig, TuneConfig, apply_override, load_config)
from spae.train._head import HeadConfig, add_semantic_head
from spae.train._inputs import build_vocabulary, open_data
from spae.train._step import (Models, NonFiniteLossError, init_state, make_optimizers, make_train_step,
                              semantic_targets, tune_optimizer)
from spae.train._trainer import Trainer, train

__all__ = [
    "CheckpointConfig", "Discriminator", "DiscriminatorConfig", "GANConfig", "HeadConfig", "LoggingConfig",
    "LossConfig", "Models", "NonFiniteLossError", "OptimConfig", "SemanticConfig", "TrainConfig", "Trainer",
    "TuneConfig", "add_args", "add_semantic_head", "apply_override", "build_vocabulary", "init_state", "load_config",
    "make_optimizers", "make_train_step", "open_data", "rq_quantize", "run_cli", "semantic_targets", "train",
    "tune_optimizer",
]
