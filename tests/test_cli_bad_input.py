"""Every subcommand, given bad input, exits non-zero with one line on stderr and touches no file.

One subprocess per row (`tests/_cli_check.py`); each row builds its inputs in a fresh folder, which is also
watched for changes along with the tokenizer bundle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import pytest

from _cli_check import check_fails_cleanly

# A row: (make(cwd, tokenizer_dir) -> argv, regex the error line must match).
Make = Callable[[Path, Path], list[str]]


def _write(path: Path, data: str | bytes) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  if isinstance(data, bytes):
    path.write_bytes(data)
  else:
    path.write_text(data)
  return path


ROWS: dict[str, tuple[Make, str]] = {
    # ---------------------------------------------------------------- encode
    "encode-missing-image": (lambda d, t: ["encode", "nope.png", "--tokenizer", t], "nope.png.*does not exist"),
    "encode-not-an-image": (lambda d, t: ["encode", _write(d / "x.png", b"not an image"), "--tokenizer", t,
                                          "-o", "t.json"], "cannot read image"),
    "encode-missing-tokenizer": (lambda d, t: ["encode", "x.png", "--tokenizer", "nodir"], "nodir.*does not exist"),
    # ---------------------------------------------------------------- decode
    "decode-missing-tokens": (lambda d, t: ["decode", "t.json", "--tokenizer", t, "-o", "o.png"],
                              "t.json.*does not exist"),
    "decode-not-json": (lambda d, t: ["decode", _write(d / "t.json", "{not json"), "--tokenizer", t, "-o", "o.png"],
                        "not valid JSON"),
    # ---------------------------------------------------------------- train / fewshot / generate / demo
    "train-missing-config": (lambda d, t: ["train", "--config", "nope.py", "--workdir", "w"], "nope.py"),
    "fewshot-no-data": (lambda d, t: ["fewshot", "--tokenizer", t, "--out", "o.jsonl"], "--data"),
    "generate-needs-image": (lambda d, t: ["generate", "--task", "denoise", "--tokenizer", t, "--lm", "hf:nolm",
                                           "-o", "out"], "--image"),
    "demo-missing-tokenizer": (lambda d, t: ["demo", "--tokenizer", "nodir", "-o", "d"], "nodir.*does not exist"),
    "demo-missing-image": (lambda d, t: ["demo", "nope.png", "-o", "d"], "nope.png.*does not exist"),
}


@pytest.mark.parametrize("name", list(ROWS))
def test_bad_input_fails_cleanly(name, tiny_tok_dir, tmp_path):
  make, expect = ROWS[name]
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  args = [str(a) for a in make(cwd, tiny_tok_dir)]
  check_fails_cleanly(args, cwd=cwd, watch=[tiny_tok_dir], expect=expect)
