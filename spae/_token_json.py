"""Token files (`spae encode --json` / `-o`): the whole document is validated before any work.

A document is one entry `{"ids": [...], "grids": [...], "vocabulary": FINGERPRINT, ...}` or
`{"images": [entry, ...]}`. `ids` holds one [B][s][s] nested list of integer codebook ids per layer, top first.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Sequence

import numpy as np

from spae._io import SpaeInputError, read_json

TOKENS_FORMAT = 1
_INT32_MAX = 2**31 - 1
log = logging.getLogger(__name__)


def _kind(x: Any) -> str:
  return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
          int: "an integer", float: "a number"}.get(type(x), type(x).__name__)


def _is_int(x: Any) -> bool:
  return type(x) is int  # bool is an int subclass, and 1.0 / 1.7 are not ids


def _layer(layer: Any, side: int | None, where: str, limit: int) -> np.ndarray:
  """One layer [B][s][s] of ints in [0, limit) -> int32 [B, s, s]; `side` is the expected s if known."""
  if not isinstance(layer, list) or not layer:
    raise SpaeInputError(f"{where} must be a non-empty list of images ([B][s][s] integer ids), got {_kind(layer)}.")
  for b, img in enumerate(layer):
    s = side if side is not None else (len(img) if isinstance(img, list) else -1)
    if not isinstance(img, list) or len(img) != s or s < 1:
      raise SpaeInputError(f"{where}, image {b}: expected a {s if s > 0 else 's'}x{s if s > 0 else 's'} grid "
                           f"of ids, got {_kind(img) if not isinstance(img, list) else f'{len(img)} rows'}.")
    for r, row in enumerate(img):
      if not isinstance(row, list) or len(row) != s:
        got = f"{len(row)} ids" if isinstance(row, list) else _kind(row)
        raise SpaeInputError(f"{where}, image {b}, row {r}: expected {s} ids, got {got}.")
      for v in row:
        if not _is_int(v):
          raise SpaeInputError(f"{where}, image {b}, row {r}: ids must be integers, got {json.dumps(v)[:40]}.")
        if not 0 <= v < limit:
          raise SpaeInputError(f"{where}, image {b}, row {r}: id {v} is out of range 0..{limit - 1} "
                               "(the tokenizer's vocabulary size).")
  return np.asarray(layer, dtype=np.int32)


def parse_entry(obj: Any, *, vocab_size: int | None = None, fingerprint: str | None = None,
                grids: Sequence[int] | None = None, where: str = "token JSON") -> tuple[list[np.ndarray], bool]:
  """Validates one entry; returns (ids per layer as int32 [B, s, s], whether it records a fingerprint).

  Args:
    vocab_size: ids must be below it (else below 2**31).
    fingerprint: the tokenizer's vocabulary fingerprint; a different recorded one is an error.
    grids: the tokenizer's pyramid: layer l must be grids[l] x grids[l], and there may be at most len(grids) layers.
  """
  if not isinstance(obj, dict) or "ids" not in obj:
    raise SpaeInputError(f"{where} must be an object with an 'ids' list (as written by `spae encode --json`), "
                         f"got {_kind(obj) if not isinstance(obj, dict) else 'an object without ids'}.")
  fmt = obj.get("format", TOKENS_FORMAT)
  if not _is_int(fmt) or fmt != TOKENS_FORMAT:
    raise SpaeInputError(f"{where}: format {json.dumps(fmt)[:20]} is not supported (expected {TOKENS_FORMAT}); "
                         "re-encode the images with this spae.")
  fp = obj.get("vocabulary")
  if fp is not None and not isinstance(fp, str):
    raise SpaeInputError(f"{where}: 'vocabulary' must be a fingerprint string, got {_kind(fp)}.")
  if fp is not None and fingerprint is not None and fp != fingerprint:
    raise SpaeInputError(f"{where} was made with a different vocabulary than the given tokenizer's ({fp} vs "
                         f"{fingerprint}); decode it with the tokenizer that encoded it.")
  layers = obj["ids"]
  if not isinstance(layers, list) or not layers:
    raise SpaeInputError(f"{where}: 'ids' must be a non-empty list of layers, got {_kind(layers)}.")
  if grids is not None and len(layers) > len(grids):
    raise SpaeInputError(f"{where} has {len(layers)} layers but the tokenizer's pyramid has {len(grids)}; "
                         "decode it with the tokenizer that encoded it.")
  limit = vocab_size if vocab_size is not None else _INT32_MAX + 1
  ids = [_layer(layer, None if grids is None else int(grids[l]), f"{where}, layer {l + 1}", limit)
         for l, layer in enumerate(layers)]
  batch = {a.shape[0] for a in ids}
  if len(batch) > 1:
    raise SpaeInputError(f"{where}: layers hold different numbers of images {[a.shape[0] for a in ids]}.")
  recorded = obj.get("grids")
  actual = [a.shape[1] for a in ids]
  if recorded is not None and recorded != actual:
    raise SpaeInputError(f"{where}: 'grids' {json.dumps(recorded)[:60]} does not match the ids' grids {actual}.")
  return ids, fp is not None


def parse_document(doc: Any, *, vocab_size: int | None = None, fingerprint: str | None = None,
                   grids: Sequence[int] | None = None, where: str = "token file") -> list[list[np.ndarray]]:
  """Validates a whole document (one entry, or {"images": [entries]}); returns the ids of every entry.

  Logs one warning if an entry records no vocabulary fingerprint (its vocabulary cannot be checked).
  """
  if isinstance(doc, dict) and "ids" not in doc and "images" in doc:
    entries = doc["images"]
    if not isinstance(entries, list):
      raise SpaeInputError(f"{where}: 'images' must be a list of token entries, got {_kind(entries)}.")
    if not entries:
      raise SpaeInputError(f"{where} holds no images ('images' is empty); encode some with `spae encode -o`.")
    names = [f"{where}, image entry {i}" for i in range(len(entries))]
  else:
    entries, names = [doc], [where]
  out, unchecked = [], 0
  for entry, name in zip(entries, names):
    ids, has_fp = parse_entry(entry, vocab_size=vocab_size, fingerprint=fingerprint, grids=grids, where=name)
    out.append(ids)
    unchecked += not has_fp
  if unchecked and fingerprint is not None:
    log.warning("%s: %d of %d entries record no vocabulary fingerprint, so they cannot be checked against the "
                "tokenizer's vocabulary; decoding them anyway.", where, unchecked, len(entries))
  return out


def read_document(path: str | os.PathLike) -> Any:
  """The parsed JSON of a token file; every way of not being one is a SpaeInputError."""
  return read_json(path, "token file", "pass the JSON file written by `spae encode -o`.")
