"""The shipped recipe's training steps (alone the shipped recipe from 2026-12-04 to 2026-12-05; the default since,
configs/gemma64_monotone.py, adds the refit and the decoder tune after them): configs/gemma64_named.py whose pooled
layers' attention scorer learns for the first 2,000 steps and then returns to its initial contrast pooling, frozen,
for the last 200 (`semantic.pool_reset=2000`).

Why (benchmarks/README.md, "Why naming fell" and "The scorer reset"): under `code_means` the semantic CE's only
learner is that scorer, and its targets are class means of its own output, so over the named recipe's 2,200 steps
it drifts toward the block mean (mostly background) and the top words stop naming the object. Kept at contrast
pooling from step 0 (configs/gemma64_contrast.py) it names more but the full pyramid ends under its thumbnail.
Learned while the pyramid forms and reset for the last 200 steps, the decoder and the lower layers adapt to the
words the contrast pooling picks. Everything else is the named recipe.

  python tools/train_default_tokenizer.py --minilm-dir MINILM_FOLDER
"""

import dataclasses
from pathlib import Path

from spae.train import TrainConfig, load_config


def get_config() -> TrainConfig:
  cfg = load_config(Path(__file__).with_name("gemma64_named.py"))
  return dataclasses.replace(cfg, semantic=dataclasses.replace(cfg.semantic, pool_reset=2000))
