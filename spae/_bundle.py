"""Reading a tokenizer bundle's files (config.json, vocabulary, params/) with one-line errors for damage."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from spae import _specs
from spae._ckpt_read import check_array_data, drop_abandoned_reads, first_line
from spae._io import SpaeInputError, read_json
from spae._vocab import Vocabulary

TOKENIZER_FORMAT = 1
KIND = "spae-tokenizer"
# A bundle may name a shipped vocabulary instead of carrying a copy (the default tokenizer does, to stay small).
VOCAB_REF = "vocab.ref.json"
_META_KEYS = ("format", "kind", "config", "vocabulary")
_FIX = "re-export the tokenizer (Tokenizer.save, `spae train`, `spae init`)."


def is_tokenizer_bundle(directory: str | os.PathLike) -> bool:
  """True if `directory` holds a spae tokenizer bundle (config.json of kind spae-tokenizer, and params/)."""
  directory = Path(directory)
  if not ((directory / "config.json").is_file() and (directory / "params").is_dir()):
    return False
  try:
    meta = read_json(directory / "config.json", "tokenizer config", "")
  except SpaeInputError:
    return False
  return isinstance(meta, dict) and meta.get("kind") == KIND


def check_files(directory: Path) -> None:
  if not directory.is_dir():
    what = "is not a folder" if directory.exists() else "does not exist"
    raise SpaeInputError(f"tokenizer directory {str(directory)!r} {what}; pass a folder written by `spae init`, "
                         "`spae train` or Tokenizer.save.")
  for name in ("config.json", "params") + (("vocab",) if not (directory / VOCAB_REF).is_file() else ()):
    if not (directory / name).exists():
      raise SpaeInputError(f"tokenizer directory {directory} is missing {name!r}; "
                           "it is incomplete or not a spae tokenizer (save one with Tokenizer.save).")


def read_meta(directory: Path) -> dict[str, Any]:
  """config.json as a dict with known keys, of this kind and format (its 'config' is checked by the caller)."""
  path = directory / "config.json"
  meta = read_json(path, "tokenizer config", _FIX)
  if not isinstance(meta, dict):
    raise SpaeInputError(f"{path} must be a JSON object as written by Tokenizer.save; {_FIX}")
  unknown = sorted(set(meta) - set(_META_KEYS))
  if unknown:
    raise SpaeInputError(f"{path} has unknown key {unknown[0]!r} (known: {', '.join(_META_KEYS)}); {_FIX}")
  if meta.get("kind") != KIND or meta.get("format") != TOKENIZER_FORMAT:
    raise SpaeInputError(f"{directory} holds tokenizer format {meta.get('format')!r} "
                         f"(kind {meta.get('kind')!r}); this spae reads format {TOKENIZER_FORMAT}. "
                         "Re-export it with a matching spae version.")
  if not isinstance(meta.get("vocabulary"), str):
    raise SpaeInputError(f"{path}: 'vocabulary' must be the vocabulary's fingerprint string; {_FIX}")
  return meta


def load_vocab(directory: Path) -> Vocabulary:
  """The bundle's vocab/ copy, or the built-in vocabulary (a `spae._specs` name) its vocab.ref.json names."""
  if (directory / "vocab").exists():
    return Vocabulary.load(directory / "vocab")
  path = directory / VOCAB_REF
  ref = read_json(path, "vocabulary reference", _FIX)
  if not isinstance(ref, dict) or not isinstance(ref.get("fingerprint"), str):
    raise SpaeInputError(f"{path} must be an object {{'builtin': 'default', 'fingerprint': ...}}; {_FIX}")
  name = ref.get("builtin")
  if not isinstance(name, str) or name not in _specs.builtin_names("vocab"):
    raise SpaeInputError(f"{path} names an unknown vocabulary {str(name)[:40]!r}; "
                         f"a bundle can reference only {', '.join(_specs.builtin_names('vocab'))}.")
  vocab = _specs.resolve_builtin("vocab", name)
  if vocab.fingerprint() != ref["fingerprint"]:
    raise SpaeInputError(f"{directory} was trained on the {name!r} vocabulary with fingerprint "
                         f"{ref['fingerprint'][:20]}, "
                         f"but this installation gives {vocab.fingerprint()}; use the matching spae version.")
  return vocab


def restore_params(path: Path, target: dict[str, Any]) -> dict[str, Any]:
  """Restores orbax params into the structure of `target` (a pure dict of abstract arrays).

  Stored shapes are compared first, so a config.json mismatch and a damaged checkpoint get different messages.
  """
  import orbax.checkpoint as ocp

  ckptr = ocp.StandardCheckpointer()
  absl = logging.getLogger("absl")
  level = absl.level
  absl.setLevel(logging.ERROR)  # orbax logs a warning per missing metadata file; the error below says it once
  try:
    meta = ckptr.metadata(path.absolute()).item_metadata
  except Exception as e:  # orbax raises many types (ValueError, FileNotFoundError, JSON errors) for damaged metadata
    raise SpaeInputError(f"{path} is damaged: its metadata cannot be read ({type(e).__name__}: {first_line(e)}); "
                         f"{_FIX}") from e
  finally:
    absl.setLevel(level)
  if meta is None or not hasattr(meta, "tree"):
    raise SpaeInputError(f"{path} is damaged or not an orbax checkpoint (no readable metadata); {_FIX}")
  stored = _flat(meta.tree)
  wanted = _flat(target)
  for key in sorted(set(wanted) | set(stored)):
    a, b = stored.get(key), wanted.get(key)
    if a is None or b is None or tuple(a.shape) != tuple(b.shape):
      have = "missing" if a is None else f"shape {tuple(a.shape)}"
      need = "nothing" if b is None else f"shape {tuple(b.shape)}"
      raise SpaeInputError(f"{path} does not match config.json: {key} is {have} in params but config.json needs "
                           f"{need}; use the config.json it was saved with, or {_FIX}")
  check_array_data(path, _FIX)
  try:
    return ckptr.restore(path.absolute(), target)
  except Exception as e:  # TensorStore reports truncated or corrupt chunks with long multi-line messages
    failure = type(e).__name__
  drop_abandoned_reads()
  raise SpaeInputError(f"{path} is truncated or damaged: its array data cannot be read ({failure}); {_FIX}")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  """Nested mappings with any key type (orbax metadata, nnx pure dicts) -> {'a/0/b': leaf}."""
  if not hasattr(tree, "items"):
    return {prefix[:-1]: tree}
  out: dict[str, Any] = {}
  for k, v in tree.items():
    out.update(_flat(v, f"{prefix}{k}/"))
  return out
