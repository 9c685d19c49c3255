"""Measured, not shipped (benchmarks/README.md, "The teacher's own words on the probe"): its teacher's words probe
at 0.48 where the shipped recipe's probe at 0.23, but its tokens barely follow. On 400 validation scenes layers 1-2
name the main object in 51% (the shipped default: 51%), the held-out `scenes` probe at 2 layers reads 0.35 (0.30),
the full pyramid falls 0.56 dB on scenes and 0.58 on photos, and on photos prefix 2 falls under prefix 1. So it
failed three of the four clauses of the rule set before it was measured (74 min here from seed 0, teacher included).

The recipe: configs/gemma64_captions.py's reading of the teacher (its word scores read through its first 10,000
training captions, temperature 0.03) and configs/gemma64_capvocab.py's candidates (the 24 words of layers 1-2
chosen among the first 1,024 training captions' words), with a stronger `scenes` teacher: the LiT image tower at
64 px with a fourth stage (widths 32/64/128/256), 4,000 steps on 40,000 scenes, and its "a {shape}" views shown in
grayscale half the time (`tools/train_default_teacher.py --gray-shape 0.5`), so shape is learnt without colour.
tools/train_default_tokenizer.py trains it into runs/teacher_scenes_big when missing (TEACHER_RECIPES).

Why: on held-out `scenes` classes the recipe's own teacher's words probe at chance (5-way 1-shot Jaccard on its top
five words: 0.23), under the tokens that follow it (0.30), while the text tower reading each image's true caption
would give 0.86 (benchmarks/teacher_probe.py). The image tower is the limit. This tower (the one-off that trained it
first gave the same bits as the tool) names the main object's shape in 62% of single-object held-out-class scenes
(the 40,000-scene tower: 38%), and its top five words read through its captions probe at 0.48 (10,000 captions) to
0.50 (40,000). The bank size and temperature are configs/gemma64_captions.py's, chosen on training scenes in an
earlier session. But those probe figures were read on test-split episodes (teacher_probe.py's default), so the
choice to train this recipe leaned on test scenes. It is not shipped; benchmarks/README.md also gives the teachers'
figures on the validation split.

  python tools/train_default_tokenizer.py --config configs/gemma64_bigteacher.py --minilm-dir MINILM_FOLDER \\
      --workdir runs/bigteacher --out runs/bigteacher/export
"""

import dataclasses
from pathlib import Path

from spae.train import TrainConfig, load_config

BIG_TEACHER = "runs/teacher_scenes_big"  # relative to the repository root


def get_config() -> TrainConfig:
  cfg = load_config(Path(__file__).with_name("gemma64_tune1600.py"))
  return dataclasses.replace(cfg, semantic=dataclasses.replace(
      cfg.semantic, teacher=f"lit:{BIG_TEACHER}", vocab_from_captions=1024, caption_bank=10000, caption_tau=0.03))
