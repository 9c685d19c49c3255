"""configs/gemma64_subvocab.py with semantic top layers that name: the `scenes` teacher's 24 first words, pooled
layers 1-2, and codes of their own for those words set to running class means.

Five changes to the shipped recipe, each measured at 200 steps on validation scenes in benchmarks/README.md
(tokenizer_ablation.py, rows E, H and M):
- the teacher is the LiT tower retrained on `scenes` (`tools/train_default_teacher.py --data scenes`; the shipped
  one was trained on `shapes` and names the background first), and layers 1-2 search the 24 words it names first
  most often (`semantic.vocab_size`);
- layers 1-2 quantize a learned attention pooling of their blocks (`pooled_layers=2`) instead of the block mean;
- those layers score their words through a projection of their own (`codebook.semantic_map`), so the semantic
  cross-entropy places the 24 words' codes without fighting the 32,768 appearance words for one map;
- those codes are not learned by gradient but set each step to the running mean (EMA decay 0.98) of the layer-1
  input over the images the teacher names each word for (`semantic.code_means`, docs/method.md).

The teacher folder is `runs/teacher_scenes` (relative to the repository); tools/train_default_tokenizer.py trains
it there from its seed first when it is missing (6 min on 2 CPU cores here).

  python tools/train_default_tokenizer.py --config configs/gemma64_named.py --minilm-dir MINILM_FOLDER
"""

import dataclasses
from pathlib import Path

from spae.train import TrainConfig, load_config

SCENES_TEACHER = "runs/teacher_scenes"  # relative to the repository root


def get_config() -> TrainConfig:
  cfg = load_config(Path(__file__).with_name("gemma64_subvocab.py"))
  tok = cfg.tokenizer
  tok = dataclasses.replace(tok, pyramid=dataclasses.replace(tok.pyramid, pooled_layers=2),
                            codebook=dataclasses.replace(tok.codebook, semantic_map=True))
  return dataclasses.replace(cfg, tokenizer=tok,
                             semantic=dataclasses.replace(cfg.semantic, teacher=f"lit:{SCENES_TEACHER}",
                                                          vocab_size=24, code_means=0.98))
