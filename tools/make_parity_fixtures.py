"""Writes the parity fixtures under tests/fixtures/parity/ (needs torch + transformers; tests only read them).

  .venv/bin/python tools/make_parity_fixtures.py                       # everything
  .venv/bin/python tools/make_parity_fixtures.py --only gemma2,llama   # some

Language models (gemma2, gemma3, llama) come from tools/_parity_lm.py; semantic teachers (clip, bert, siglip, ...)
from tools/_parity_teachers.py when that module is present.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

LM_KINDS = ("gemma2", "gemma3", "llama")


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--only", default="", help="comma-separated fixture names (default: all)")
  ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "parity")
  args = ap.parse_args(argv)
  only = {s.strip() for s in args.only.split(",") if s.strip()}
  try:
    import _parity_teachers as teachers
  except ImportError:
    teachers = None
  teacher_names = set(getattr(teachers, "ALL", ())) if teachers else set()
  unknown = only - set(LM_KINDS) - teacher_names
  if unknown and (teachers is None or teacher_names):
    ap.error(f"unknown fixture names {sorted(unknown)}; known: {sorted(set(LM_KINDS) | teacher_names)}")
  args.out.mkdir(parents=True, exist_ok=True)
  lm = set(LM_KINDS) if not only else only & set(LM_KINDS)
  if lm:
    from _parity_lm import make_lm_fixtures
    make_lm_fixtures(args.out, lm)
  rest = only - set(LM_KINDS)
  if teachers is not None and (not only or rest):
    teachers.make_teacher_fixtures(args.out, rest)
  return 0


if __name__ == "__main__":
  sys.exit(main())
