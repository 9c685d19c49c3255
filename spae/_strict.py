"""Frozen config dataclasses from untrusted JSON: unknown keys and wrong types are one-line SpaeInputErrors."""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from typing import Any, Literal, Mapping

from spae._io import SpaeInputError


def _show(v: Any) -> str:
  try:
    return json.dumps(v)[:40]
  except (TypeError, ValueError):
    return type(v).__name__


def _check(v: Any, hint: Any, where: str, minimum: int) -> Any:
  """`v` converted to the annotated type, or a SpaeInputError naming `where`."""
  origin, args = typing.get_origin(hint), typing.get_args(hint)
  if dataclasses.is_dataclass(hint):
    return from_dict(hint, v, where)
  if hint is bool:
    if type(v) is not bool:
      raise SpaeInputError(f"{where} must be true or false, got {_show(v)}.")
    return v
  if hint is int:
    if type(v) is not int or v < minimum:
      raise SpaeInputError(f"{where} must be an integer >= {minimum}, got {_show(v)}.")
    return v
  if hint is float:
    if type(v) not in (int, float) or not math.isfinite(v):
      raise SpaeInputError(f"{where} must be a finite number, got {_show(v)}.")
    return float(v)
  if hint is str:
    if not isinstance(v, str):
      raise SpaeInputError(f"{where} must be a string, got {_show(v)}.")
    return v
  if origin is Literal:
    if not any(type(v) is type(a) and v == a for a in args):
      raise SpaeInputError(f"{where} must be one of {', '.join(map(_show, args))}, got {_show(v)}.")
    return v
  if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
    # `minimum` bounds the items; a minimum of 0 also lets the list be empty.
    if not isinstance(v, list) or (not v and minimum > 0):
      raise SpaeInputError(f"{where} must be a non-empty list, got {_show(v)}.")
    return tuple(_check(x, args[0], f"{where}[{i}]", minimum) for i, x in enumerate(v))
  return v  # annotations without a rule here are checked by the dataclass itself


def from_dict(cls: type, d: Any, where: str, minimums: Mapping[str, int] | None = None) -> Any:
  """`cls(**d)` after checking every key of `d` against `cls`'s fields and their annotated types.

  Missing keys take the dataclass defaults; ints must be >= 1 unless `minimums` says otherwise (by field name,
  also for nested dataclasses).
  """
  if not isinstance(d, dict):
    raise SpaeInputError(f"{where} must be a JSON object, got {_show(d)}.")
  fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
  unknown = sorted(set(d) - set(fields))
  if unknown:
    raise SpaeInputError(f"{where} has unknown key {unknown[0]!r} (known: {', '.join(fields)}).")
  hints = typing.get_type_hints(cls)
  minimums = dict(minimums or {})
  kwargs = {}
  for name, v in d.items():
    hint = hints[name]
    if dataclasses.is_dataclass(hint):
      kwargs[name] = from_dict(hint, v, f"{where}.{name}", minimums)
    else:
      kwargs[name] = _check(v, hint, f"{where}.{name}", minimums.get(name, 1))
  try:
    return cls(**kwargs)
  except SpaeInputError as e:
    raise SpaeInputError(f"{where}: {e}") from None
  except (TypeError, ValueError) as e:
    raise SpaeInputError(f"{where} is invalid ({e}).") from None
