"""configs/gemma64_refocus.py with the refit moved into training: at step 2,000, right after the scorer reset, the
semantic words' codes become the exact class means of that step's encoder's layer-1 inputs over 6,400 training
images (`semantic.refit_images`, docs/method.md "The refit after training"), and stay fixed for the last 200 steps
(`semantic.refit_step`), so the decoder and the lower layers train with the codes the tokenizer ships.

Why: refit after the last step (configs/gemma64_refit.py) the top words named more, but the decoder had never seen
the new codes and on photos the 4-token prefix fell under the 1-token one.

  python tools/train_default_tokenizer.py --config configs/gemma64_refit2000.py --minilm-dir MINILM_FOLDER \\
      --workdir runs/refit2000 --out runs/refit2000/tokenizer
"""

import dataclasses
from pathlib import Path

from spae.train import TrainConfig, load_config


def get_config() -> TrainConfig:
  cfg = load_config(Path(__file__).with_name("gemma64_refocus.py"))
  return dataclasses.replace(cfg, semantic=dataclasses.replace(cfg.semantic, refit_images=6400, refit_step=2000))
