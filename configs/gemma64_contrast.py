"""configs/gemma64_named.py with the pooled layers' attention scorer kept at its initial contrast pooling
(`semantic.learn_pool=False`). Measured, not shipped (benchmarks/README.md, "Why naming fell"): trained 2,200 steps
from seed 0 its layers 1-2 name the main object in 44% of test scenes (shipped: 32.5%), but its full pyramid falls
0.5-0.7 dB under the 16×16 thumbnail that the shipped default beats.

Under `code_means` the semantic cross-entropy's only learner in the named recipe is the scorer of the pooled layers
1-2 (the encoder is out of it with `pull=codes`, and W_s is overwritten by the class means). Its targets are the
class means of the scorer's own output, so the CE can fall toward its uniform value by making every image's pooled
latent alike: over the named recipe's 2,200 steps the contrast weight β fell from 1.0 to 0.18 and the pooling
moved toward the block mean (mostly background). Measured offline on that run's final encoder (2,048 training
scenes for the class means, the 120 test scenes of benchmarks/recon.py): its trained scorer's layer-1 word names the
main object in 21% of scenes, the initial contrast pooling (β = 1) of the same latents in 33%, the scorer of the
200-step run in 39% (benchmarks/README.md). Everything else is the named recipe.

  python tools/train_default_tokenizer.py --config configs/gemma64_contrast.py --minilm-dir MINILM_FOLDER
"""

import dataclasses
from pathlib import Path

from spae.train import TrainConfig, load_config


def get_config() -> TrainConfig:
  cfg = load_config(Path(__file__).with_name("gemma64_named.py"))
  return dataclasses.replace(cfg, semantic=dataclasses.replace(cfg.semantic, learn_pool=False))
