"""spae._strict.from_dict: configs read from untrusted JSON (tokenizer config.json, LM configs) are checked key by key
and type by type, and every way of being wrong is one SpaeInputError naming the key."""

import dataclasses
from typing import Literal

import pytest

from spae import SpaeInputError
from spae._strict import from_dict


@dataclasses.dataclass(frozen=True)
class Inner:
  size: int = 4
  grids: tuple[int, ...] = (1, 2)


@dataclasses.dataclass(frozen=True)
class Outer:
  name: str = "a"
  on: bool = False
  rate: float = 0.5
  mode: Literal["x", "y"] = "x"
  count: int = 1
  inner: Inner = Inner()

  def __post_init__(self):
    if self.name == "bad":
      raise ValueError("name may not be 'bad'")
    if self.name == "worse":
      raise SpaeInputError("name may not be 'worse'")


def test_a_valid_dict_converts_with_defaults_for_missing_keys():
  got = from_dict(Outer, {"on": True, "rate": 2, "inner": {"grids": [1, 2, 4]}, "count": 0}, "cfg",
                  minimums={"count": 0})
  assert got == Outer(on=True, rate=2.0, inner=Inner(grids=(1, 2, 4)), count=0)
  assert isinstance(got.rate, float) and isinstance(got.inner.grids, tuple)


@pytest.mark.parametrize("d, message", [
    ([1], r"cfg must be a JSON object, got \[1\]"),
    ({"colour": 1}, r"cfg has unknown key 'colour' \(known: name, on, rate, mode, count, inner\)"),
    ({"on": 1}, r"cfg.on must be true or false, got 1"),
    ({"count": True}, r"cfg.count must be an integer >= 1, got true"),
    ({"count": 0}, r"cfg.count must be an integer >= 1, got 0"),
    ({"rate": float("inf")}, r"cfg.rate must be a finite number, got Infinity"),
    ({"rate": "fast"}, r'cfg.rate must be a finite number, got "fast"'),
    ({"name": 3}, r"cfg.name must be a string, got 3"),
    ({"mode": "z"}, r'cfg.mode must be one of "x", "y", got "z"'),
    ({"inner": {"grids": []}}, r"cfg.inner.grids must be a non-empty list, got \[\]"),
    ({"inner": {"grids": [1, "2"]}}, r"cfg.inner.grids\[1\] must be an integer >= 1, got \"2\""),
    ({"inner": 5}, r"cfg.inner must be a JSON object, got 5"),
    ({"name": "bad"}, r"cfg is invalid \(name may not be 'bad'\)"),
    ({"name": "worse"}, r"cfg: name may not be 'worse'"),
])
def test_every_wrong_value_is_one_line_naming_its_key(d, message):
  with pytest.raises(SpaeInputError, match=message) as e:
    from_dict(Outer, d, "cfg")
  assert "\n" not in str(e.value)
