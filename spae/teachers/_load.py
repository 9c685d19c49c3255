"""`spae.teachers.load(spec)`: a teacher from a short string (the 'teacher' kind of `spae._specs`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spae import _specs
from spae.teachers._base import Teacher
from spae.teachers._clip import CLIPTeacher
from spae.teachers._lit import LiTTeacher
from spae.teachers._siglip import SigLIPTeacher

__all__ = ["SPEC_HELP", "load"]


def load(spec: str, **kwargs: Any) -> Teacher:
  """Resolves a teacher spec (see SPEC_HELP); kwargs (e.g. cache_dir) go to the teacher constructor.

  - `clip:FOLDER`: an HF-format CLIP folder (config.json, model.safetensors, vocab.json + merges.txt).
  - `siglip:FILE.npz[#tokenizer=TOKENIZER.model]`: a big_vision checkpoint; without the option, its sentencepiece
    model is looked for beside it (FILE.model, tokenizer.model, spiece.model).
  - `lit:default` (or `default`) or `lit:FOLDER[#text_tower=MINILM_FOLDER]`: the shipped LiT teacher, or one
    saved by `LiTTeacher.save`.
  """
  return _specs.resolve("teacher", spec, **kwargs)


def _path(spec: _specs.Spec) -> str:
  if not spec.body:
    raise spec.error("names no path")
  return spec.body


@_specs.register_scheme("teacher", "clip", "clip:FOLDER", takes="#")
def _clip(spec: _specs.Spec, **kwargs: Any) -> Teacher:
  spec.options(())
  return CLIPTeacher.from_pretrained(_path(spec), **kwargs)


@_specs.register_scheme("teacher", "siglip", "siglip:FILE.npz[#tokenizer=FILE.model]", takes="#")
def _siglip(spec: _specs.Spec, **kwargs: Any) -> Teacher:
  options = spec.options(("tokenizer",))
  if Path(_path(spec)).suffix != ".npz":
    raise spec.error("is not a big_vision .npz file (a SigLIP checkpoint must be one)")
  return SigLIPTeacher.from_big_vision(spec.body, options.get("tokenizer"), **kwargs)


@_specs.register_scheme("teacher", "lit", "lit:default|FOLDER[#text_tower=MINILM_FOLDER]", takes="#")
def _lit(spec: _specs.Spec, **kwargs: Any) -> Teacher:
  options = spec.options(("text_tower",))
  path = _path(spec)
  if path == "default":  # the shipped teacher, registered by spae.assets
    return _specs.resolve_builtin("teacher", "default", text_tower=options.get("text_tower"), **kwargs)
  return LiTTeacher.load(path, text_tower=options.get("text_tower"), **kwargs)


SPEC_HELP = f"teacher specs: {_specs.forms('teacher')}"
