"""Bounded, seeded fuzzing of everything that reads user files: only SpaeInputError may escape, and nothing is
written. Token documents, image bytes and tokenizer bundles are mutated from valid ones (hypothesis,
derandomized); a few fuzzed inputs then go through the CLI. SPAE_FUZZ_SCALE=N multiplies the example counts.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import spae
from spae import _images, _token_json
from spae._io import SpaeInputError
from spae.cli import main

from _cli_check import check_fails_cleanly

SCALE = int(os.environ.get("SPAE_FUZZ_SCALE", "1"))
CASES: dict[str, int] = {}  # examples run per target (printed with -s; checked to be > 0)


def fuzz(n: int):
  return settings(max_examples=n * SCALE, derandomize=True, database=None, deadline=None,
                  suppress_health_check=list(HealthCheck))


def _count(name: str) -> None:
  CASES[name] = CASES.get(name, 0) + 1


@contextlib.contextmanager
def only_input_errors(name: str):
  """The body may succeed or raise SpaeInputError; anything else fails the test (an uncaught case)."""
  _count(name)
  try:
    yield
  except SpaeInputError as e:
    assert "\n" not in str(e).strip() or name.startswith("cli"), f"multi-line error: {e}"


# ------------------------------------------------------------------------------------ mutation strategies
KEYS = ["ids", "images", "grids", "format", "vocabulary", "words", "path", "config", "kind", "pieces", "kinds",
        "fingerprint", "metadata", "image_size", "autoencoder", "pyramid", "codebook", "channels", "builtin"]
LEAF = (st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.sampled_from([2**31, 2**63, -1, 0, 1])
        | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=6))
JSON = st.recursive(LEAF, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(KEYS)
                                                                              | st.text(max_size=4),
                                                                              c, max_size=4), max_leaves=16)


def _slots(obj, out=None):
  """Every (container, key) of a JSON value, to pick a place to mutate."""
  out = [] if out is None else out
  items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
  for k, v in items:
    out.append((obj, k))
    _slots(v, out)
  return out


@st.composite
def mutated_json(draw, seed):
  obj = copy.deepcopy(seed)
  for _ in range(draw(st.integers(1, 3))):
    slots = _slots(obj)
    if not slots:
      return draw(JSON)
    parent, key = draw(st.sampled_from(slots))
    op = draw(st.sampled_from(["replace", "replace", "delete", "wrap", "number", "grow"]))
    if op == "replace":
      parent[key] = draw(JSON)
    elif op == "delete":
      del parent[key]
    elif op == "wrap":
      parent[key] = [parent[key]]
    elif op == "number":
      parent[key] = draw(st.sampled_from([1.7, -1, 2**31, 10**30, True, 0, 1.0, "3"]))
    elif isinstance(parent[key], list):
      parent[key].append(copy.deepcopy(parent[key][0]) if parent[key] else draw(JSON))
  return obj


@st.composite
def mutated_bytes(draw, seed: bytes, header: int = 64):
  b = bytearray(seed)
  for _ in range(draw(st.integers(1, 4))):
    if not b:
      break
    hi = len(b) - 1 if draw(st.booleans()) else min(header, len(b) - 1)  # headers are where parsers branch
    i = draw(st.integers(0, hi))
    op = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
    if op == "flip":
      b[i] ^= 1 << draw(st.integers(0, 7))
    elif op == "set":
      b[i] = draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF]))
    elif op == "truncate":
      del b[i:]
    elif op == "insert":
      b[i:i] = draw(st.binary(min_size=1, max_size=8))
    else:
      del b[i:i + draw(st.integers(1, 16))]
  return bytes(b)


# ------------------------------------------------------------------------------------ token files
@pytest.fixture(scope="module")
def token_seed(tiny_tok, sample_images):
  return {"tokenizer": "t", "images": [dict(path="a.png", **tiny_tok.encode(sample_images[:1]).to_json())]}


def test_fuzz_token_documents(tiny_tok, token_seed):
  v, fp, grids = len(tiny_tok.vocabulary), tiny_tok.vocabulary.fingerprint(), tiny_tok.config.pyramid.grids

  @fuzz(300)
  @given(st.one_of(mutated_json(token_seed), mutated_json(token_seed["images"][0]), JSON))
  def run(doc):
    with only_input_errors("token documents"):
      for ids in _token_json.parse_document(doc, vocab_size=v, fingerprint=fp, grids=grids):
        spae.TokenPyramid(ids, tiny_tok.vocabulary)

  run()


def test_fuzz_token_files(tmp_path, token_seed):
  text = json.dumps(token_seed).encode()
  path = tmp_path / "t.json"

  @fuzz(150)
  @given(mutated_bytes(text, header=len(text)))
  def run(data):
    path.write_bytes(data)
    with only_input_errors("token files"):
      _token_json.read_document(path)

  run()


# ------------------------------------------------------------------------------------ images
def _encoded(fmt: str, **kw) -> bytes:
  buf = io.BytesIO()
  rng = np.random.default_rng(0)
  if fmt == "GIF":
    frames = [Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).convert("P") for _ in range(3)]
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=40)
  elif fmt == "PNG16":
    Image.fromarray((rng.random((12, 10)) * 65535).astype(np.uint16)).save(buf, format="PNG")
  elif fmt == "PNGP":
    im = Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).convert("P")
    im.save(buf, format="PNG", transparency=0)
  else:
    Image.fromarray(rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)).save(buf, format=fmt, **kw)
  return buf.getvalue()


IMAGE_SEEDS = {f: _encoded(f) for f in ("PNG", "JPEG", "GIF", "PNG16", "PNGP", "BMP")}


@fuzz(400)
@given(st.sampled_from(sorted(IMAGE_SEEDS)).flatmap(lambda f: mutated_bytes(IMAGE_SEEDS[f])),
       st.sampled_from([None, 2, 4]))
def test_fuzz_image_decoder(data, min_size):
  with only_input_errors("images"):
    img = _images.decode_image(data, "fuzzed image", max_pixels=1_000_000, min_size=min_size)
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[-1] == 3


# ------------------------------------------------------------------------------------ tokenizer bundles
BUNDLE_FILES = ("config.json", "vocab/vocab.json", "vocab/vocab.npz", "vocab.ref.json")


def test_fuzz_tokenizer_bundles(tiny_tok_dir, tmp_path):
  seeds = {name: json.loads((tiny_tok_dir / name).read_text()) for name in ("config.json", "vocab/vocab.json")}
  seeds["vocab.ref.json"] = {"builtin": "default", "fingerprint": "0" * 16}
  npz = (tiny_tok_dir / "vocab" / "vocab.npz").read_bytes()
  counter = iter(range(10**9))

  def content(name):
    if name == "vocab/vocab.npz":
      return mutated_bytes(npz, header=len(npz))
    raw = json.dumps(seeds[name]).encode()
    return st.one_of(mutated_json(seeds[name]).map(lambda o: json.dumps(o).encode()), mutated_bytes(raw, len(raw)))

  @fuzz(60)
  @given(st.sampled_from(BUNDLE_FILES).flatmap(lambda n: st.tuples(st.just(n), content(n))))
  def run(case):
    name, data = case
    d = tmp_path / f"b{next(counter)}"
    shutil.copytree(tiny_tok_dir, d)
    if name == "vocab.ref.json":
      shutil.rmtree(d / "vocab")
    (d / name).write_bytes(data)
    before = sorted(p.relative_to(d) for p in d.rglob("*"))
    with only_input_errors("bundles"):
      spae.Tokenizer.load(d)
    assert sorted(p.relative_to(d) for p in d.rglob("*")) == before  # reading never writes
    shutil.rmtree(d)

  run()


# ------------------------------------------------------------------------------------ through the CLI
def test_fuzz_cli_decode_and_encode(tiny_tok_dir, token_seed, tmp_path, capsys):
  """Fuzzed files through `spae decode` / `spae encode` in-process: exit 0, or exit 2 with one line and no output."""
  tok = str(tiny_tok_dir)

  @fuzz(12)
  @given(st.one_of(mutated_json(token_seed).map(lambda o: ("decode", json.dumps(o).encode())),
                   st.sampled_from(sorted(IMAGE_SEEDS)).flatmap(
                       lambda f: mutated_bytes(IMAGE_SEEDS[f])).map(lambda b: ("encode", b))))
  def run(case):
    cmd, data = case
    work = tmp_path / "w"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    src = work / ("t.json" if cmd == "decode" else "x.img")
    src.write_bytes(data)
    out = work / ("o.png" if cmd == "decode" else "o.json")
    _count(f"cli {cmd}")
    rc = main([cmd, str(src), "--tokenizer", tok, "-o", str(out)])
    err = capsys.readouterr().err
    assert rc in (0, 2) and "Traceback" not in err
    if rc == 2:
      assert len([line for line in err.splitlines() if "error:" in line]) == 1
      assert sorted(p.name for p in work.iterdir()) == [src.name]  # no output, no temporary file

  run()


def test_fuzzed_inputs_through_the_real_cli(tiny_tok_dir, token_seed, tmp_path):
  """Subprocess runs (tracebacks would show here) on the first rejected fuzzed token file and image."""
  rng = np.random.default_rng(0)
  raw = json.dumps(token_seed).encode()
  bad_doc = bad_img = None
  for _ in range(200):
    b = bytearray(raw)
    b[int(rng.integers(len(b)))] = int(rng.integers(256))
    try:
      _token_json.parse_document(json.loads(bytes(b)), vocab_size=210, grids=(1, 2, 4, 8))
    except (SpaeInputError, ValueError):
      bad_doc = bytes(b)
      break
  for _ in range(200):
    b = bytearray(IMAGE_SEEDS["PNG"])
    b[int(rng.integers(8, 40))] ^= 0xFF
    try:
      _images.decode_image(bytes(b))
    except SpaeInputError:
      bad_img = bytes(b)
      break
  assert bad_doc is not None and bad_img is not None
  (tmp_path / "t.json").write_bytes(bad_doc)
  (tmp_path / "x.png").write_bytes(bad_img)
  check_fails_cleanly(["decode", "t.json", "--tokenizer", tiny_tok_dir, "-o", "o.png"], cwd=tmp_path,
                      watch=[tiny_tok_dir])
  check_fails_cleanly(["encode", "x.png", "--tokenizer", tiny_tok_dir, "-o", "o.json"], cwd=tmp_path,
                      watch=[tiny_tok_dir])


def test_zz_fuzz_case_count():
  """Runs last in this file: every target was exercised (with -s, prints the counts for the record)."""
  print(f"\nfuzz cases run: {CASES}, total {sum(CASES.values())}, uncaught 0")
  assert all(CASES.get(k, 0) > 0 for k in ("token documents", "token files", "images", "bundles"))
