"""Every public module states its surface in `__all__`; package faces list everything they hand on."""

import importlib
import inspect

import pytest

PACKAGES = ["spae", "spae.assets", "spae.data", "spae.lm", "spae.teachers", "spae.prompting", "spae.train"]
MODULES = PACKAGES + ["spae.losses", "spae.metrics", "spae.perceptual", "spae.demo", "spae.cli", "spae.lm.testing",
                      "spae.prompting.fewshot", "spae.prompting.caption", "spae.prompting.vqa",
                      "spae.prompting.testing"]


@pytest.mark.parametrize("name", MODULES)
def test_every_name_in_all_exists(name):
  mod = importlib.import_module(name)
  assert isinstance(mod.__all__, list) and len(set(mod.__all__)) == len(mod.__all__), "no duplicates"
  missing = [n for n in mod.__all__ if not hasattr(mod, n)]
  assert not missing, f"{name}.__all__ names what it does not have: {missing}"
  assert not [n for n in mod.__all__ if n.startswith("_")]


@pytest.mark.parametrize("name", PACKAGES)
def test_package_faces_list_what_they_hand_on(name):
  """A public class, function or constant a package imports from its own modules is in its __all__."""
  mod = importlib.import_module(name)
  own = [n for n, obj in vars(mod).items()
         if not n.startswith("_") and not inspect.ismodule(obj)
         and str(getattr(obj, "__module__", name)).startswith(name)]
  assert not sorted(set(own) - set(mod.__all__)), f"{name} hands on names missing from __all__"


def test_star_import_of_spae_is_the_core_only():
  namespace: dict = {}
  exec("from spae import *", namespace)
  names = {n for n in namespace if n != "__builtins__"}
  import spae

  assert names == set(spae.__all__) and not [n for n in names if n.startswith("_")]
  # Training building blocks live in spae.train / spae.losses, subpackages stay lazy attributes.
  for internal in ("Encoder", "Decoder", "Discriminator", "commitment_loss", "straight_through", "rq_quantize"):
    assert internal not in names
  assert {"data", "lm", "train"}.isdisjoint(names)
