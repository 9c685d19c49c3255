"""Resolves a TrainConfig's vocabulary and data specs into objects."""

from __future__ import annotations

import os
import re

from spae._io import SpaeInputError
from spae._vocab import Vocabulary


def build_vocabulary(spec: str) -> Vocabulary:
  from spae._tiny import tiny_vocabulary

  if spec.startswith("REQUIRED"):
    raise SpaeInputError(f"this config needs a vocabulary: {spec.split(':', 1)[-1].strip()} "
                         "(a directory written by spae.Vocabulary.save).")
  from spae import assets

  if spec in assets._BUILTIN:  # 'default' (shipped) or 'gemma3-270m' (from its package)
    return assets.builtin_vocabulary(spec)
  if spec == "tiny":
    return tiny_vocabulary()
  if spec.startswith("tiny:"):
    return tiny_vocabulary(dim=int(spec.split(":", 1)[1]))
  return Vocabulary.load(spec)


def open_data(spec: str):
  """spae.data.make_source specs, plus 'shapes-memory:N[@SIZE]': N shapes scenes rendered in memory (no build)."""
  from spae import data as D

  if spec.startswith("shapes-memory:"):
    body = spec.split(":", 1)[1]
    num, _, size = body.partition("@")
    try:
      return D.render_shapes_source(int(num), int(size or 64))
    except ValueError:
      raise SpaeInputError(f"data spec {spec!r} must look like shapes-memory:N or shapes-memory:N@SIZE.") from None
  # Expand a home-relative path inside the spec ('shapes:~/data', 'tfds:name@~/tfds', '~/images').
  home = os.path.expanduser("~")
  spec = "".join(home + part[1:] if part.startswith("~/") else part for part in re.split(r"(?<=[:@])", spec))
  return D.make_source(spec)

