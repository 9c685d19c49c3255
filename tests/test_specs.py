"""spae._specs: one grammar and registry for model, teacher, data and vocabulary specs."""

import ast
from pathlib import Path

import pytest

import spae
import spae.data  # noqa: F401  (each package registers its kind's forms; vocabularies register with `import spae`)
import spae.lm  # noqa: F401
import spae.teachers  # noqa: F401
from spae import _specs

ROOT = Path(__file__).resolve().parents[1]


def test_parts_are_split_only_where_the_scheme_takes_them(monkeypatch, tmp_path):
  monkeypatch.setenv("HOME", str(tmp_path))
  s = _specs.parse("data", "scenes:test:5@32")
  assert (s.scheme, s.body, s.location, s.fragment) == ("scenes", "test:5", "32", None)
  s = _specs.parse("data", "tfds:name:train@a@~/tfds")  # the last '@', expanded
  assert (s.body, s.location) == ("name:train@a", f"{tmp_path}/tfds")
  assert _specs.parse("data", "folder:~/x@2#y").body == f"{tmp_path}/x@2#y"  # folder: takes nothing
  s = _specs.parse("lm", "openai:http://u@h:1/v1?timeout=2#org/model#x")  # '#' at the first one; '@' kept
  assert (s.body, s.fragment) == ("http://u@h:1/v1?timeout=2", "org/model#x")
  assert _specs.parse("lm", "hf:~/m#1").body == f"{tmp_path}/m#1"
  s = _specs.parse("teacher", "lit:~/t#text_tower=~/minilm")
  assert s.body == f"{tmp_path}/t" and s.options(("text_tower",)) == {"text_tower": f"{tmp_path}/minilm"}
  assert _specs.parse("vocab", "default").scheme == "" and _specs.parse("vocab", "tiny:8").body == "8"
  assert _specs.parse("data", "~/imgs").body == f"{tmp_path}/imgs"


def test_paths_names_and_unknown_schemes(tmp_path):
  odd = tmp_path / "x:y"  # an existing path with a colon is a path, not a scheme
  odd.mkdir()
  assert _specs.parse("data", str(odd)).form == _specs.parse("data", "/nowhere").form
  assert _specs.parse("data", "C:/images").scheme == ""  # a drive letter is no scheme
  with pytest.raises(spae.SpaeInputError, match=r"unknown data source kind 'nosuch' .*scenes:\[SPLIT:\]N"):
    _specs.parse("data", "nosuch:x")
  with pytest.raises(spae.SpaeInputError, match="model spec 'x' names no scheme; the forms are hf:PATH"):
    _specs.parse("lm", "x")  # models have no path form
  assert _specs.builtin_names("vocab") == ["default", "gemma3-270m"]
  assert spae.assets.builtin_vocabulary("default") is spae.assets.default_vocabulary()
  with pytest.raises(spae.SpaeInputError, match="unknown built-in vocabulary 'tiny'; known: default, gemma3-270m"):
    _specs.resolve_builtin("vocab", "tiny")  # a name, but not one a bundle may refer to


@pytest.mark.parametrize("kind,text", [
    ("lm", ""), ("lm", 3), ("lm", "foo:bar"), ("lm", "openai:http://h"), ("lm", "hf:"),
    ("teacher", "vit:/x"), ("teacher", "clip:/x#a"), ("teacher", "lit:default#foo=1"), ("teacher", "siglip:/x.bin"),
    ("data", ""), ("data", "tfds:"), ("data", "shapes:split@"), ("data", "mix:scenes=a"), ("data", "scenes:4@x"),
    ("data", "shapes-memory:3@x"), ("vocab", "tiny:x"), ("vocab", "nope:x"), ("vocab", "/no/such/vocab"),
])
def test_bad_specs_are_one_line_errors_naming_the_spec(kind, text):
  with pytest.raises(spae.SpaeInputError) as e:
    _specs.resolve(kind, text)
  msg = str(e.value)
  assert "\n" not in msg and (repr(text) in msg or str(text) in msg or "empty" in msg)


def test_every_kind_lists_its_forms():
  assert _specs.forms("lm").startswith("hf:PATH, gemma:PATH, gguf:")
  assert "siglip:FILE.npz[#tokenizer=FILE.model]" in spae.teachers.SPEC_HELP
  assert _specs.builtin_names("teacher") == ["default"]  # 'lit:default' asks spae.assets for it through the registry
  assert _specs.forms("data").endswith("an image folder's PATH")
  assert _specs.forms("vocab") == "tiny[:DIM], default, gemma3-270m, a folder written by Vocabulary.save"
  assert len(spae.data.make_source("shapes-memory:3@16")) == 3  # the trainer's in-memory shapes, in every data spec
  assert spae.train.build_vocabulary("tiny:8").dim == 8


def test_the_core_never_imports_the_layers_above_it():
  """The bundle reader finds built-in vocabularies through the registry, so no core module needs spae.assets."""
  above = ("spae.assets", "spae.train", "spae.prompting", "spae.data", "spae.demo", "spae.cli")
  # spae/_demo_*.py are private parts of spae.demo (the top layer), not core modules.
  core = (p for p in (ROOT / "spae").glob("_*.py") if p.name != "__init__.py" and not p.name.startswith("_demo"))
  for path in sorted(core):
    for node in ast.walk(ast.parse(path.read_text())):
      names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
      if isinstance(node, ast.ImportFrom):
        names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
      bad = [n for n in names if n.startswith(above)]
      assert not bad, f"{path.name} imports {bad}"
