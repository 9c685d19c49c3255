"""The shipped recipe (configs/gemma64_refocus.py) with its `scenes` LiT teacher's image tower trained at 64 px
instead of 32 px (`tools/train_default_teacher.py --data scenes --image-size 64`, folder `runs/teacher_scenes64`).

Why: the teacher's words are the ceiling of what layers 1-2 can name (benchmarks/README.md, "teacher_words.py"),
and the 32 px tower barely tells shapes apart (zero-shot shape 21% of single-object test scenes, chance 8%); at
32 px a small object is a few pixels wide. Everything else is the shipped recipe.

  python tools/train_default_tokenizer.py --config configs/gemma64_teacher64.py --minilm-dir MINILM_FOLDER
"""

import dataclasses
from pathlib import Path

from spae.train import TrainConfig, load_config

SCENES_TEACHER_64 = "runs/teacher_scenes64"  # relative to the repository root


def get_config() -> TrainConfig:
  cfg = load_config(Path(__file__).with_name("gemma64_refocus.py"))
  return dataclasses.replace(cfg, semantic=dataclasses.replace(cfg.semantic, teacher=f"lit:{SCENES_TEACHER_64}"))
