"""`spae.teachers.load(spec)`: a teacher from a short string."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from spae._io import SpaeInputError
from spae.teachers._base import Teacher
from spae.teachers._clip import CLIPTeacher
from spae.teachers._siglip import SigLIPTeacher

SPEC_HELP = ("teacher specs: 'clip:FOLDER' (HF-format CLIP folder: config.json, model.safetensors, vocab.json + "
             "merges.txt), 'siglip:FILE.npz' (big_vision checkpoint; sentencepiece model beside it as "
             "FILE.model / tokenizer.model / spiece.model), 'siglip:FILE.npz#tokenizer=TOKENIZER.model', or "
             "'lit:default' / 'lit:FOLDER[#text_tower=MINILM_FOLDER]' (a LiT teacher saved by LiTTeacher.save).")


def load(spec: str, **kwargs: Any) -> Teacher:
  """Resolves a teacher spec (see SPEC_HELP); kwargs (e.g. cache_dir) go to the teacher constructor."""
  if not isinstance(spec, str) or ":" not in spec:
    raise SpaeInputError(f"cannot parse teacher spec {spec!r}; {SPEC_HELP}")
  kind, rest = spec.split(":", 1)
  path, _, fragment = rest.partition("#")
  options: dict[str, str] = {}
  for item in filter(None, fragment.split("&")):
    key, eq, value = item.partition("=")
    if not eq or not value:
      raise SpaeInputError(f"teacher spec {spec!r}: option {item!r} must look like key=value.")
    options[key] = value
  if not path:
    raise SpaeInputError(f"teacher spec {spec!r} names no path; {SPEC_HELP}")
  if kind == "clip":
    if options:
      raise SpaeInputError(f"teacher spec {spec!r}: clip takes no '#' options (got {sorted(options)}).")
    return CLIPTeacher.from_pretrained(path, **kwargs)
  if kind == "siglip":
    unknown = set(options) - {"tokenizer"}
    if unknown:
      raise SpaeInputError(f"teacher spec {spec!r}: unknown option(s) {sorted(unknown)}; only 'tokenizer'.")
    if Path(path).suffix != ".npz":
      raise SpaeInputError(f"teacher spec {spec!r}: a SigLIP checkpoint must be a big_vision .npz file.")
    return SigLIPTeacher.from_big_vision(path, options.get("tokenizer"), **kwargs)
  if kind == "lit":
    from spae.teachers._lit import LiTTeacher

    unknown = set(options) - {"text_tower"}
    if unknown:
      raise SpaeInputError(f"teacher spec {spec!r}: unknown option(s) {sorted(unknown)}; only 'text_tower'.")
    if path == "default":
      from spae.assets import asset_dir

      path = str(asset_dir() / "teacher")
    return LiTTeacher.load(path, text_tower=options.get("text_tower"), **kwargs)
  raise SpaeInputError(f"unknown teacher kind {kind!r} in {spec!r}; {SPEC_HELP}")
