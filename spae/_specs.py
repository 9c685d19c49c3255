"""One grammar for the strings that name models, teachers, data and vocabularies, and one registry that resolves them.

  SCHEME:BODY[@LOCATION][#FRAGMENT]   'hf:~/gemma', 'scenes:test:500@64', 'siglip:m.npz#tokenizer=t.model'
  NAME                                a registered name: 'default', 'gemma3-270m', 'tiny'
  PATH                                a file or folder, for kinds that take one (data, vocab)

A scheme says which parts it takes: '@' splits the text after the colon at its last '@' (a location: a data
directory, an image size), '#' at its first '#' (a fragment: a served model's name, or `key=value&...` options).
A part that a scheme does not take stays in its body, so paths and URLs keep their '@' and '#'. A body or location
that starts with '~' is expanded to the home folder.

The modules that own the objects register their resolvers (`spae.lm`, `spae.teachers`, `spae.data`, `spae._vocab`,
`spae._tiny`, and `spae.assets` for the shipped vocabularies), so this module depends on nothing of spae's but the
error type, and every grammar's errors are one line that names the spec and lists the forms of its kind. A kind is
complete once its owner is imported: open specs through `spae.lm.load`, `spae.teachers.load`,
`spae.data.make_source`; vocabularies register with `import spae`.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

from spae._io import SpaeInputError

__all__ = ["KINDS", "Spec", "builtin_names", "forms", "parse", "register_name", "register_path",
           "register_scheme", "resolve", "resolve_builtin"]

# kind -> (what a spec of it is called, what its scheme is called): the words its error messages use.
KINDS: dict[str, tuple[str, str]] = {
    "lm": ("model spec", "model spec scheme"),
    "teacher": ("teacher spec", "teacher kind"),
    "data": ("data spec", "data source kind"),
    "vocab": ("vocabulary spec", "vocabulary scheme"),
}

F = TypeVar("F", bound=Callable[..., Any])


@dataclasses.dataclass(frozen=True)
class Spec:
  """A parsed spec. `text` is the string as given (messages quote it); `body` and `location` are `~`-expanded."""

  text: str
  kind: str
  form: str                    # the registered form it matched, e.g. 'scenes:[SPLIT:]N[@SIZE]'
  scheme: str = ""             # '' for a name or a path
  body: str = ""               # the text after 'SCHEME:' less the parts the scheme takes; a name or path whole
  location: str | None = None  # after the last '@' (None: no '@', or the scheme takes none)
  fragment: str | None = None  # after the first '#' (None: no '#', or the scheme takes none)

  def error(self, problem: str) -> SpaeInputError:
    """The one-line error to raise: `<kind> spec 'TEXT' PROBLEM (form: FORM).`"""
    return SpaeInputError(f"{KINDS[self.kind][0]} {self.text!r} {problem} (form: {self.form}).")

  def options(self, allowed: Sequence[str]) -> dict[str, str]:
    """The fragment as `key=value&...` options, each key one of `allowed` ({} without a fragment)."""
    out: dict[str, str] = {}
    for item in filter(None, (self.fragment or "").split("&")):
      key, eq, value = item.partition("=")
      if not eq or not key or not value:
        raise self.error(f"has option {item!r}; options look like key=value")
      out[key] = _home(value)
    unknown = sorted(set(out) - set(allowed))
    if unknown:
      only = f"only {', '.join(map(repr, allowed))}" if allowed else f"{self.scheme}: takes none"
      raise self.error(f"has unknown option(s) {unknown}; {only}")
    return out


_ORDER = itertools.count()  # forms are listed in the order they were registered


@dataclasses.dataclass(frozen=True)
class _Entry:
  resolver: Callable[..., Any]
  form: str
  takes: str = ""
  builtin: bool = False
  order: int = dataclasses.field(default_factory=lambda: next(_ORDER))


_SCHEMES: dict[str, dict[str, _Entry]] = {kind: {} for kind in KINDS}
_NAMES: dict[str, dict[str, _Entry]] = {kind: {} for kind in KINDS}
_PATHS: dict[str, _Entry] = {}


def _kind(kind: str) -> str:
  if kind not in KINDS:
    raise ValueError(f"unknown spec kind {kind!r}; kinds are {', '.join(KINDS)}")  # a programming error
  return kind


def register_scheme(kind: str, scheme: str, form: str, takes: str = "") -> Callable[[F], F]:
  """Decorator: `resolver(spec: Spec, **kwargs)` opens 'SCHEME:...' specs of `kind`.

  `form` is the usage shown in errors ('tfds:NAME[:SPLIT][@DATA_DIR]'); `takes` is '', '@', '#' or '@#'.
  """
  if set(takes) - set("@#"):
    raise ValueError(f"takes={takes!r}: a scheme takes '@' and/or '#'")

  def add(resolver: F) -> F:
    _SCHEMES[_kind(kind)][scheme] = _Entry(resolver, form, takes)
    return resolver
  return add


def register_name(kind: str, name: str, resolver: Callable[..., Any], form: str | None = None,
                  builtin: bool = False) -> None:
  """`resolver(spec, **kwargs)` opens the spec that is exactly `name`. A `builtin` name is an asset spae ships
  (`spae.assets`): other specs and saved artifacts may refer to it instead of carrying a copy (a tokenizer
  bundle's vocab.ref.json, 'lit:default'); see `builtin_names` and `resolve_builtin`."""
  _NAMES[_kind(kind)][name] = _Entry(resolver, form or name, builtin=builtin)


def register_path(kind: str, form: str) -> Callable[[F], F]:
  """Decorator: `resolver(spec, **kwargs)` opens any other spec of `kind` as a path (the body is the whole text).

  It is asked for a text without a colon, with a scheme of one letter (a drive) or none, or naming something that
  exists; any other 'SCHEME:...' is an unknown scheme.
  """
  def add(resolver: F) -> F:
    _PATHS[_kind(kind)] = _Entry(resolver, form)
    return resolver
  return add


def forms(kind: str) -> str:
  """Every form `kind` accepts, in the order registered (a path last), for help and error messages."""
  named = sorted([*_SCHEMES[_kind(kind)].values(), *_NAMES[kind].values()], key=lambda e: e.order)
  return ", ".join(dict.fromkeys(e.form for e in named + ([_PATHS[kind]] if kind in _PATHS else [])))


def builtin_names(kind: str) -> list[str]:
  """The registered built-in names of `kind` (e.g. the vocabularies a tokenizer bundle may reference)."""
  return [name for name, e in _NAMES[_kind(kind)].items() if e.builtin]


def resolve_builtin(kind: str, name: str, **kwargs: Any) -> Any:
  """Opens the built-in `name` of `kind`; a name that is not built in is a one-line error listing those that are."""
  if name not in builtin_names(kind):
    raise SpaeInputError(f"unknown built-in {KINDS[kind][0].split()[0]} {str(name)[:40]!r}; "
                         f"known: {', '.join(builtin_names(kind))}.")
  return resolve(kind, name, **kwargs)


def _home(part: str) -> str:
  return os.path.expanduser(part) if part.startswith("~") else part


def _lookup(kind: str, text: Any) -> tuple[_Entry, Spec]:
  noun, scheme_noun = KINDS[_kind(kind)]
  if not isinstance(text, str):
    raise SpaeInputError(f"{noun} {text!r} must be a string; the forms are {forms(kind)}.")
  if not text:
    raise SpaeInputError(f"empty {noun}; the forms are {forms(kind)}.")
  if text in _NAMES[kind]:
    entry = _NAMES[kind][text]
    return entry, Spec(text, kind, entry.form, body=text)
  scheme, colon, rest = text.partition(":")
  entry = _SCHEMES[kind].get(scheme) if colon else None
  if entry is not None:
    location = fragment = None
    if "#" in entry.takes and "#" in rest:
      rest, _, fragment = rest.partition("#")
    if "@" in entry.takes and "@" in rest:
      rest, _, location = rest.rpartition("@")
      location = _home(location)
    return entry, Spec(text, kind, entry.form, scheme, _home(rest), location, fragment)
  path = _PATHS.get(kind)
  if path is not None and (not colon or len(scheme) <= 1 or Path(_home(text)).exists()):
    return path, Spec(text, kind, path.form, body=_home(text))
  if not colon:
    raise SpaeInputError(f"{noun} {text!r} names no scheme; the forms are {forms(kind)}.")
  raise SpaeInputError(f"unknown {scheme_noun} {scheme!r} in {text!r}; the forms are {forms(kind)}.")


def parse(kind: str, text: str) -> Spec:
  """`text` parsed as a spec of `kind` (an unknown scheme or a malformed text raises SpaeInputError)."""
  return _lookup(kind, text)[1]


def resolve(kind: str, text: str, **kwargs: Any) -> Any:
  """Opens the thing that `text` names (a spec of `kind`); `kwargs` go to its resolver."""
  entry, spec = _lookup(kind, text)
  return entry.resolver(spec, **kwargs)
