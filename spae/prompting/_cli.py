"""What `spae fewshot` and `spae generate` share on the command line: resolving tokenizer, LM and data specs."""

from __future__ import annotations

import argparse
from typing import Sequence

from spae._io import SpaeInputError
from spae._tokenizer import Tokenizer
from spae.data import LabelledSource
from spae.lm import LanguageModel


def load_tokenizer(spec: str) -> Tokenizer:
  """A tokenizer directory, or 'tiny' for the untrained built-in `spae.tiny_tokenizer()`."""
  import spae

  if spec == "tiny":
    return spae.tiny_tokenizer()
  return spae.Tokenizer.load(spec)


def add_lm_server_args(p: argparse.ArgumentParser) -> None:
  """--lm-timeout / --lm-attempts: how long an openai: server may keep spae waiting."""
  p.add_argument("--lm-timeout", type=float, default=None, metavar="SECONDS",
                 help="openai: servers: seconds the server may stay silent per attempt (default 30)")
  p.add_argument("--lm-attempts", type=int, default=None, metavar="N",
                 help="openai: servers: attempts per request before giving up (default 3)")


def load_lm(spec: str | None, *, timeout: float | None = None, attempts: int | None = None
            ) -> LanguageModel | None:
  """'none' (or empty) -> None; otherwise `spae.lm.load(spec)` (gemma:PATH, hf:PATH, openai:URL#model).

  `timeout` / `attempts` apply to openai: servers (they override the URL's own ?timeout=&attempts=).
  """
  if spec in (None, "", "none"):
    return None
  from spae import lm

  server = {k: v for k, v in (("timeout", timeout), ("attempts", attempts)) if v is not None}
  if server and not spec.startswith("openai:"):
    raise SpaeInputError(f"--lm-timeout / --lm-attempts apply to openai: servers, not to {spec!r}; drop them.")
  return lm.load(spec, **server)


def load_source(spec: str | None, classes: Sequence[str] | None = None) -> LabelledSource | None:
  """A labelled image source from a spec (`spae.data.make_source`), optionally only `classes`, or None."""
  if spec is None:
    return None
  from spae import data

  return data.make_source(spec, require_labels=True, classes=classes)


def parse_classes(spec: str | None) -> list[str] | None:
  """'a,b,c' -> names; 'shapes-heldout' / 'shapes-train' / 'scenes-heldout' / 'scenes-train' -> those held-out /
  training classes."""
  if not spec:
    return None
  from spae import data

  named = {"shapes-heldout": data.SHAPES_HELDOUT_CLASSES, "shapes-train": data.SHAPES_TRAIN_CLASSES,
           "scenes-heldout": data.SCENE_HELDOUT_CLASSES, "scenes-train": data.SCENE_TRAIN_CLASSES}
  if spec in named:
    return list(named[spec])
  return [c.strip() for c in spec.split(",") if c.strip()]


def add_output_args(p: argparse.ArgumentParser) -> None:
  """--out / --summary / --no-progress: the resumable results of `spae fewshot`, `caption` and `vqa`."""
  p.add_argument("--out", required=True, help="per-episode JSONL (resumed if it exists)")
  p.add_argument("--summary", default=None, help="summary JSON (default: OUT with .summary.json)")
  p.add_argument("--no-progress", action="store_true")


def unescape(s: str) -> str:
  """A template typed on the command line: the two characters \\n (\\t) become a line break (tab)."""
  return s.replace("\\n", "\n").replace("\\t", "\t")
