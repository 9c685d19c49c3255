"""Adds a semantic head to a trained tokenizer (`spae.train.add_semantic_head`; docs/method.md, "The semantic head").

The head (a small pixel network) learns, on the first --images training scenes, what the teacher's frozen text tower
reads in each scene's caption among the words of the first captions; the tokenizer's semantic layers then take the
head's words (layer 1 its first, layer 2 its next four), and those words' codes become the class means of the
encoder's layer-1 inputs over the first --refit-images images of --refit-data. The encoder, the other codes and the
decoder are the input's; then, unless --tune-steps 0, the decoder alone learns the new words' codes for that many
steps, as tools/refit_tokenizer.py tunes one (the tune of --tune-config). The output's training.json records the
input's and output's parameter digests, the options, the head's loss curve and the tune's last metrics, and keeps
the input's own training.json under 'trained'. About 26 minutes on two cores (the head 17, the tune 9); the shipped
default (854f3998...) is this tool's output with its defaults from e7137c5c... (the default recipe's tokenizer,
spae/assets/default/tokenizer at d3754ac); tools/train_default_tokenizer.py runs it after training the default recipe.
A relative `lit:FOLDER` teacher is read from the repository root.

  python tools/add_semantic_head.py --tokenizer TRAINED --minilm-dir MINILM_FOLDER --out runs/head/tokenizer
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))
DEFAULT_TEACHER = "lit:runs/teacher_scenes"  # the default recipe's (tools/train_default_teacher.py --data scenes)


def parse_args(argv=None) -> argparse.Namespace:
  from spae.train import HeadConfig

  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--tokenizer", required=True, type=Path, help="a trained tokenizer with semantic layers")
  p.add_argument("--out", required=True, type=Path)
  p.add_argument("--teacher", default=DEFAULT_TEACHER,
                 help="a LiT teacher spec whose text tower (and prompt templates) read the captions; the default is "
                      "the default recipe's (tools/train_default_teacher.py --data scenes)")
  p.add_argument("--minilm-dir", type=Path, help="an all-MiniLM-L6-v2 folder (the teacher's text tower)")
  p.add_argument("--images", type=int, default=32000, help="captioned training scenes the head learns from")
  p.add_argument("--scenes-seed", type=int, default=1, help="the seed of those scenes (train split)")
  p.add_argument("--refit-data", default="mix:scenes=0.7,photos=0.3", help="the training data of the codes' means")
  p.add_argument("--tune-steps", type=int, default=400,
                 help="then tune the decoder this many steps (tools/refit_tokenizer.py's stage; 0: none)")
  p.add_argument("--tune-config", default=str(ROOT / "configs" / "gemma64_tune1600.py"),
                 help="the recipe whose decoder tune (tune.*, data, seed) runs, with tune.steps = --tune-steps")
  for f in dataclasses.fields(HeadConfig):
    p.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
  return p.parse_args(argv)


def _rooted(spec: str) -> str:
  """A `lit:FOLDER[#...]` spec with a relative FOLDER read from the repository root, by the rule
  tools/train_default_tokenizer.py reads the recipe's teacher with (`lit_folder`), so the default works from any
  directory; any other spec as it is."""
  import train_default_tokenizer

  folder = train_default_tokenizer.lit_folder(spec)
  if folder is None:
    return spec
  options = spec.partition("#")[1:]
  return f"lit:{folder}{''.join(options)}"


def main(argv=None) -> int:
  a = parse_args(argv)
  from spae import SpaeInputError

  try:
    return run(a)
  except SpaeInputError as e:  # bad input: one line, no traceback
    print(f"error: {e}", file=sys.stderr)
    return 2


def run(a: argparse.Namespace, teacher=None) -> int:
  """main's work; `teacher`: a teacher object (tests), else --teacher with --minilm-dir as its text tower."""
  import numpy as np

  import spae
  import spae.data
  import train_default_tokenizer as tool
  from spae import SpaeInputError, teachers, train as T
  from spae._io import write_json_atomic
  from spae._tokenizer import share_default_vocabulary
  from spae._xla_flags import numerics_record, xla_cpu_settings
  from spae.train import HeadConfig, add_semantic_head
  from spae.train._inputs import reference_images

  xla_cpu_settings()
  start = time.time()
  cfg = HeadConfig(**{f.name: getattr(a, f.name) for f in dataclasses.fields(HeadConfig)})
  tok = spae.Tokenizer.load(a.tokenizer)
  if not tok.config.pyramid.semantic_layers:
    raise SpaeInputError(f"--tokenizer {a.tokenizer}: it has no semantic layers (pyramid.semantic_vocab) for a head "
                         "to choose; train one with semantic.vocab_size > 0 (configs/gemma64_tune1600.py).")
  if tok.config.autoencoder.semantic_head:
    raise SpaeInputError(f"--tokenizer {a.tokenizer}: it has a semantic head already; pass the tokenizer it was "
                         "added to (its training.json names it under head_of).")
  if teacher is None:
    spec = _rooted(a.teacher) + (f"#text_tower={a.minilm_dir}" if a.minilm_dir else "")
    teacher = teachers.load(spec)
  size = tok.config.image_size
  scenes = spae.data.SceneSource(a.images, size, seed=a.scenes_seed, split="train")
  images = np.stack([scenes.load(i) for i in range(len(scenes))]).astype(np.float32) / 255.0
  captions = [scenes.caption(i) for i in range(len(scenes))]
  refit = reference_images(T.open_data(a.refit_data), cfg.refit_images, size, "center")
  out_tok, info = add_semantic_head(tok, teacher, images, captions, refit, cfg)
  vocab_name = "gemma3-270m" if len(tok.vocabulary) > 1000 else "default"
  tune = None
  if a.tune_steps:  # the headed tokenizer goes to a temporary folder, the tuned one to --out
    import tempfile

    import refit_tokenizer

    with tempfile.TemporaryDirectory() as work:
      headed = out_tok.save(Path(work) / "headed")
      head_digest = tool.params_digest(headed)
      args = argparse.Namespace(config=a.tune_config, tokenizer=headed, out=a.out, minilm_wheel=None,
                                minilm_dir=a.minilm_dir, overrides=[f"tune.steps={a.tune_steps}"])
      refit_tokenizer.refit(args, teacher=teacher if a.minilm_dir is None else None)
      tune = json.loads((Path(a.out) / "training.json").read_text())
      shared = tune["vocabulary_shared_with_assets"]  # the tune's export already named its vocabulary
      tune = {"config": tune["config"], "overrides": tune["overrides"], "headed_params_sha256": head_digest,
              "tune_last": tune["tune_last"]}
    out = Path(a.out)
  else:
    out = out_tok.save(a.out)
    shared = share_default_vocabulary(out, vocab_name)
  try:  # the input's own record (train_default_tokenizer.py's), kept whole
    trained = json.loads((Path(a.tokenizer) / "training.json").read_text())
  except (OSError, ValueError):
    trained = None
  record = {"head_of": str(a.tokenizer), "input_params_sha256": tool.params_digest(a.tokenizer),
            "params_sha256": tool.params_digest(out), "options": {k: (str(v) if isinstance(v, Path) else v)
                                                                    for k, v in vars(a).items()},
            "words": info["words"], "loss_every_100": info["losses"], "tune": tune, "trained": trained,
            "seconds": round(time.time() - start, 1), "vocabulary_shared_with_assets": shared,
            "machine": numerics_record()}
  write_json_atomic(Path(out) / "training.json", record)
  print(json.dumps({"out": str(out), "params_sha256": record["params_sha256"], "seconds": record["seconds"],
                    "words": len(info["words"])}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
