"""configs/gemma64_monotone.py whose refit reads the teacher standardised and mirror-averaged; measured, not
shipped (`semantic.refit_standardised`, `semantic.refit_mirrored`; docs/method.md, "The refit after training").

Why: the refit sets the semantic words' codes to the class means of the images the teacher names first, and that
first word is noisy. On 800 training-split scenes (seed 1, never the held-out splits), the scenes teacher's first
word among the default's 24 words names the main object 32.1% of the time read the trainer's way (centred), and
39.0% when each image's scores are averaged with its left-right mirror's and each word's centred score is divided
by its spread over the 256 centring images. Chosen on that training-data measurement alone, before any tokenizer
was refit this way; everything else is the shipped recipe's (6,400 refit images, 400 tune steps, hinge 1.0).
Training's own reading of the teacher is unchanged, so tools/refit_tokenizer.py turns the training steps'
parameters (E5874670_TOKENIZER: spae/assets/default/tokenizer at commit 937044e) into it:

  python tools/refit_tokenizer.py --config configs/gemma64_standardised.py --tokenizer E5874670_TOKENIZER \\
      --minilm-dir MINILM_FOLDER --out runs/standardised/tokenizer

What it did (SHA-256 1b5b5175..., benchmarks/README.md "The refit's steadier reading of the teacher"): validation
naming 54% against the default's 57% (the rule asked for 60%), probe 0.55 against 0.50, PSNR within 0.06 dB of the
default's at the full pyramid and rising with every layer. Not shipped.
"""

import dataclasses
from pathlib import Path

from spae.train import TrainConfig, load_config


def get_config() -> TrainConfig:
  cfg = load_config(Path(__file__).with_name("gemma64_monotone.py"))
  return dataclasses.replace(cfg, semantic=dataclasses.replace(cfg.semantic, refit_mirrored=True,
                                                               refit_standardised=True))
