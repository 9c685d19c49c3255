"""configs/gemma64_named.py with the pooled layers' attention scorer kept at its initial contrast pooling
(`semantic.learn_pool=False`). Measured, not shipped (benchmarks/README.md, "Why naming fell"): trained 2,200 steps
from seed 0 its layers 1-2 name the main object in 44% of test scenes (shipped: 32.5%), but its full pyramid falls
0.46-0.73 dB under the 16×16 thumbnail that the named recipe beats. The shipped recipe (configs/gemma64_refocus.py)
keeps the learned scorer for 2,000 steps and resets it to this contrast pooling for the last 200.

Under `code_means` the semantic cross-entropy's only learner in the named recipe is the scorer of the pooled layers
1-2 (the encoder is out of it with `pull=codes`, and W_s is overwritten by the class means). Its targets are the
class means of the scorer's own output, so the CE can fall toward its uniform value by making every image's pooled
latent alike: over the named recipe's 2,200 steps the contrast weight β fell from 1.0 to 0.18 and the pooling
moved toward the block mean (mostly background). On that run's final latents (benchmarks/layer_readout.py, 400
test scenes) layer 1's input reads the main object's colour at 0.285 through the trained scorer and at 0.385 through
the initial contrast pooling (β = 1). Everything else is the named recipe.

  python tools/train_default_tokenizer.py --config configs/gemma64_contrast.py --minilm-dir MINILM_FOLDER
"""

import dataclasses
from pathlib import Path

from spae.train import TrainConfig, load_config


def get_config() -> TrainConfig:
  cfg = load_config(Path(__file__).with_name("gemma64_named.py"))
  return dataclasses.replace(cfg, semantic=dataclasses.replace(cfg.semantic, learn_pool=False))
