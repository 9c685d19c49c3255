"""Every subcommand, given bad input, exits non-zero with one line on stderr and touches no file.

One subprocess per row (`tests/_cli_check.py`). Each row runs in a fresh folder holding valid inputs to spoil:
`a.png` (an image), `t.json` (tokens of the test tokenizer), `afile` (a plain file) and `v/` (a folder with
files in it); that folder and the tokenizer bundle are watched for any change.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from PIL import Image

from _cli_check import check_fails_cleanly

# `spae train` on the CI config, into a workdir the row must not create.
_TRAIN = ["train", "--config", Path(__file__).resolve().parents[1] / "configs" / "tiny.py", "--workdir", "w"]

# A row: (make(cwd, tokenizer_dir) -> argv, regex the error line must match).
Make = Callable[[Path, Path], list]


def _write(path: Path, data: str | bytes) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  if isinstance(data, bytes):
    path.write_bytes(data)
  else:
    path.write_text(data)
  return path


def _tokens(d: Path, mutate: Callable[[dict], object]) -> Path:
  doc = json.loads((d / "t.json").read_text())
  mutate(doc)
  return _write(d / "bad.json", json.dumps(doc))


def _ids(doc: dict, value) -> None:
  doc["images"][0]["ids"][0][0][0][0] = value


def _bundle(d: Path, t: Path, damage: Callable[[Path], object]) -> Path:
  shutil.copytree(t, d / "tok")
  damage(d / "tok")
  return d / "tok"


def _truncate_params(tok: Path) -> None:
  big = max((p for p in (tok / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  big.write_bytes(big.read_bytes()[:1000])


def _zero_params(tok: Path) -> None:
  # Same size, every byte zero: no compressed chunk survives. (Scrambling a few bytes is not always detectable:
  # zstd frames carry no checksum here, so flipped literals can decode into wrong numbers without any error.)
  big = max((p for p in (tok / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  big.write_bytes(bytes(big.stat().st_size))


def _png_declaring(width: int, height: int) -> bytes:
  buf = io.BytesIO()
  Image.new("RGB", (8, 8)).save(buf, format="PNG")
  data = bytearray(buf.getvalue())
  data[16:24] = struct.pack(">II", width, height)  # IHDR width, height; then fix the chunk's CRC
  data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
  return bytes(data)


def _fifo(path: Path) -> Path:
  os.mkfifo(path)
  return path


ROWS: dict[str, tuple[Make, str]] = {
    # ---------------------------------------------------------------- encode
    "encode-missing-image": (lambda d, t: ["encode", "nope.png", "--tokenizer", t], "nope.png.*does not exist"),
    "encode-not-an-image": (lambda d, t: ["encode", "afile", "--tokenizer", t, "-o", "o.json"], "cannot read image"),
    "encode-folder-as-image": (lambda d, t: ["encode", "v", "--tokenizer", t], "'v' is a folder"),
    "encode-fifo-as-image": (lambda d, t: ["encode", _fifo(d / "pipe"), "--tokenizer", t], "is a FIFO"),
    "encode-over-pixel-limit": (lambda d, t: ["encode", _write(d / "big.png", _png_declaring(12000, 12000)),
                                              "--tokenizer", t], "12000x12000 .* over the limit"),
    "encode-layers-0": (lambda d, t: ["encode", "a.png", "--tokenizer", t, "--layers", "0"], "--layers"),
    "encode-output-is-a-folder": (lambda d, t: ["encode", "a.png", "--tokenizer", t, "-o", "v"],
                                  "'v' is an existing directory"),
    "encode-output-under-a-file": (lambda d, t: ["encode", "a.png", "--tokenizer", t, "-o", "afile/x.json"],
                                   "'afile' is a file"),
    "encode-config-is-a-list": (lambda d, t: ["encode", "a.png", "--tokenizer",
                                              _bundle(d, t, lambda b: _write(b / "config.json", "[]"))],
                                "config.json must be a JSON object"),
    "encode-truncated-params": (lambda d, t: ["encode", "a.png", "--tokenizer", _bundle(d, t, _truncate_params)],
                                "params is truncated"),
    "encode-zeroed-params": (lambda d, t: ["encode", "a.png", "--tokenizer", _bundle(d, t, _zero_params)],
                             "params is truncated or damaged"),
    # ---------------------------------------------------------------- decode
    "decode-not-json": (lambda d, t: ["decode", "afile", "--tokenizer", t, "-o", "o.png"], "not valid JSON"),
    "decode-tokens-folder": (lambda d, t: ["decode", "v", "--tokenizer", t, "-o", "o.png"], "'v' is a folder"),
    "decode-float-id": (lambda d, t: ["decode", _tokens(d, lambda doc: _ids(doc, 1.7)), "--tokenizer", t,
                                      "-o", "o.png"], "must be integers, got 1.7"),
    "decode-int32-overflow": (lambda d, t: ["decode", _tokens(d, lambda doc: _ids(doc, 2**31)), "--tokenizer", t,
                                            "-o", "o.png"], "out of range"),
    "decode-no-images": (lambda d, t: ["decode", _tokens(d, lambda doc: doc.update(images=[])), "--tokenizer", t,
                                       "-o", "o.png"], "holds no images"),
    "decode-other-vocabulary": (lambda d, t: ["decode", _tokens(d, lambda doc: doc["images"][0].update(
        vocabulary="0" * 16)), "--tokenizer", t, "-o", "o.png"], "different vocabulary"),
    "decode-output-is-a-folder": (lambda d, t: ["decode", "t.json", "--tokenizer", t, "-o", "v"],
                                  "'v' is an existing directory"),
    "decode-output-in-sys": (lambda d, t: ["decode", "t.json", "--tokenizer", t, "-o", "/sys/x.png"],
                             "/sys.* not writable"),
    # ---------------------------------------------------------------- init / data
    "init-non-empty-folder": (lambda d, t: ["init", "v"], "not empty.*--force"),
    "init-force-on-a-non-bundle": (lambda d, t: ["init", "v", "--force"], "not a spae tokenizer bundle"),
    "init-garbage-vocab": (lambda d, t: ["init", "new", "--vocab", _bundle(d, t, lambda b: _write(
        b / "vocab" / "vocab.npz", b"garbage" * 9)) / "vocab"], "vocab.npz is not an .npz archive"),
    "data-under-a-file": (lambda d, t: ["data", "build-shapes", "afile/x", "--num-train", "2"], "'afile' is a file"),
    # ---------------------------------------------------------------- train / fewshot / generate / demo
    "train-missing-config": (lambda d, t: ["train", "--config", "nope.py", "--workdir", "w"], "nope.py"),
    "train-lr-not-a-number": (lambda d, t: [*_TRAIN, "--set", "optim.lr=abc"], "optim.lr=abc.*not a finite number"),
    "train-group-given-a-value": (lambda d, t: [*_TRAIN, "--set", "tokenizer=5"], "'tokenizer' is a group"),
    "train-negative-steps": (lambda d, t: [*_TRAIN, "--set", "steps=-5"], "steps = -5 is invalid"),
    "train-no-intact-checkpoint": (lambda d, t: [*_TRAIN[:-1], _write(d / "v" / "checkpoints" / "4" /
                                                                      "_CHECKPOINT_METADATA", "garbage").parents[2],
                                                 "--set", "semantic.weight=0"],  # (no teacher warning)
                                   "no intact checkpoint in .*step\\(s\\) 4 cannot be read"),
    "train-missing-data": (lambda d, t: [*_TRAIN, "--set", "data=/no/such/images"], "/no/such/images"),
    "fewshot-missing-tokenizer": (lambda d, t: ["fewshot", "--tokenizer", "nodir", "--data", "shapes:x",
                                                "--out", "o.jsonl"], "nodir.*does not exist"),
    "generate-needs-image": (lambda d, t: ["generate", "--task", "denoise", "--tokenizer", t, "--lm", "hf:nolm",
                                           "-o", "out"], "--image"),
    "demo-folder-as-image": (lambda d, t: ["demo", "v", "-o", "d"], "'v' is a folder"),
    "demo-out-is-a-file": (lambda d, t: ["demo", "a.png", "-o", "afile", "--lm", "none"], "exists and is not a folder"),
}


@pytest.fixture(scope="module")
def valid_tokens(tiny_tok) -> str:
  pyr = tiny_tok.encode(np.zeros((32, 32, 3), np.uint8))
  return json.dumps({"images": [dict(path="a.png", **pyr.to_json())]})


@pytest.mark.parametrize("name", list(ROWS))
def test_bad_input_fails_cleanly(name, tiny_tok_dir, valid_tokens, tmp_path):
  make, expect = ROWS[name]
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  Image.new("RGB", (40, 40), "red").save(cwd / "a.png")
  (cwd / "t.json").write_text(valid_tokens)
  (cwd / "afile").write_text("just text")
  _write(cwd / "v" / "notes.txt", "keep me")
  (cwd / "v" / "sub").mkdir()
  args = [str(a) for a in make(cwd, tiny_tok_dir)]
  check_fails_cleanly(args, cwd=cwd, watch=[tiny_tok_dir], expect=expect)
