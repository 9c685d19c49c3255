"""`spae train --config configs/X.py --workdir DIR`: argument parsing and the command."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jax

from spae.train._config import load_config
from spae.train._step import NonFiniteLossError
from spae.train._trainer import Trainer


def add_args(p) -> None:
  p.add_argument("--config", required=True, help="Python config file with get_config() (see configs/)")
  p.add_argument("--workdir", required=True, help="checkpoints, metrics.jsonl, tb/, images/ and tokenizer/")
  p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                 help="override a config field, e.g. --set steps=100 --set tokenizer.image_size=64")
  p.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize() (multi-host)")
  p.add_argument("--no-progress", action="store_true")


def run_cli(args) -> int:
  if args.distributed:
    jax.distributed.initialize()
  cfg = load_config(args.config, args.overrides)  # validated: bad values fail here, before any work
  workdir = Path(args.workdir).expanduser()
  existed = workdir.exists()
  try:
    trainer = Trainer(cfg, workdir)
    last = trainer.run(progress=not args.no_progress)
  except NonFiniteLossError as e:
    print(f"spae train: stopped: {e}", file=sys.stderr)
    return 1
  except BaseException:
    if not existed:
      _remove_empty_dirs(workdir)
    raise
  print(json.dumps({k: v for k, v in last.items() if isinstance(v, (int, float))}))
  print(f"tokenizer written to {workdir / 'tokenizer'}")
  return 0


def _remove_empty_dirs(root: Path) -> None:
  """Removes `root` and folders under it that hold no file (what a failed start created); never a file."""
  if not root.is_dir() or root.is_symlink():
    return
  for sub in sorted((p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()), key=lambda p: -len(p.parts)):
    if not any(sub.iterdir()):
      sub.rmdir()
  if not any(root.iterdir()):
    root.rmdir()
