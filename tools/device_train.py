"""Trains a recipe on a machine that has neither the models extra nor the MiniLM weights (a lent GPU machine).

The default recipe needs three things such a machine cannot fetch: Gemma 3 270M's codebook (a 240 MB package),
the `scenes` LiT teacher, and the teacher's embeddings of Gemma's words (made once by the 90 MB MiniLM text tower).
`pack` writes what training needs of them into one folder (50 MB); `train` runs a config from it. Back here,
tools/train_default_tokenizer.py, resumed from the checkpoint that `train` wrote at its last step, runs no
steps and exports it as a bundle (SHA-256 and training.json as for any run).

  # here (models extra, MiniLM folder, teacher trained):
  python tools/device_train.py pack --minilm-dir MINILM --out .pack
  # there (jax with an accelerator; flax, optax, orbax-checkpoint, tensorboardX):
  python tools/device_train.py train --pack .pack --workdir W --set steps=4400 --set semantic.pool_reset=4000
  # here again, with W/checkpoints/4400 copied into W2/checkpoints/:
  python tools/train_default_tokenizer.py --minilm-dir MINILM --set steps=4400 --set semantic.pool_reset=4000 \\
      --workdir W2 --out W2/export

The codebook travels exactly: Gemma's table is stored in its file as Q8_0 (int8 codes times one float16 scale per
32 numbers), so its Q8_0 blocks (gguf-py's quantizer here, spae's GGUF reader there) rebuild every float32 row bit
for bit, and `train` checks the fingerprint.
The word embeddings travel as the rows of the teacher's own disk cache that training reads, keyed by that
fingerprint. A run there is not bit-identical to a CPU run of the same recipe (other kernels and reduction
orders); f32 matrix products use full precision. `--deadline-s` stops a run at the last chunk of `--chunk` steps
that starts in time, each ending in a checkpoint, so a run that would outlast a lease can resume in the next.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = ROOT / "configs" / "gemma64_refocus.py"


def _teacher_dir(cfg) -> Path:
  sys.path.insert(0, str(ROOT / "tools"))
  from train_default_tokenizer import lit_teacher_folder

  folder = lit_teacher_folder(cfg)
  if folder is None:
    raise SystemExit(f"{cfg.semantic.teacher!r} is not a LiT teacher folder; pack carries a `lit:FOLDER` teacher.")
  return folder


def pack(a: argparse.Namespace) -> int:
  import gguf

  from spae import assets
  from spae import train as T
  from spae._gguf_file import _dequantize_q8_0
  from spae._io import atomic_dir
  from spae.teachers._lit import LiTTeacher

  out = Path(a.out)
  cfg = T.load_config(a.config, a.overrides)
  vocab = assets.builtin_vocabulary(a.vocab)
  # Gemma's table is Q8_0 in its file (int8 codes, one float16 scale per 32 numbers), so gguf-py's quantizer gives
  # back the file's blocks and spae's own Q8_0 reader rebuilds every float32 row bit for bit from them.
  if vocab.dim % 32:
    raise SystemExit(f"the {a.vocab} codebook's rows are {vocab.dim} wide, not whole 32-number Q8_0 blocks; "
                     "it cannot travel as Q8_0.")
  blocks = gguf.quants.quantize(vocab.embeddings, gguf.GGMLQuantizationType.Q8_0)
  if not np.array_equal(_dequantize_q8_0(blocks).view(np.uint32), vocab.embeddings.view(np.uint32)):
    raise SystemExit(f"the {a.vocab} codebook is not Q8_0 data; packing it as Q8_0 would change its rows.")
  teacher_dir = _teacher_dir(cfg)
  teacher = LiTTeacher.load(teacher_dir, text_tower=a.minilm_dir)
  t = time.time()
  table = teacher.vocabulary_embeddings(vocab)  # the text tower's word table, in the default cache the trainer reads
  print(f"word embeddings for {len(vocab)} words in {time.time() - t:.0f} s (cached runs take no time)")
  # Under `semantic.whole_words` the other words score -1e4 whatever their row, so only the whole words' rows
  # travel (14,794 of Gemma's 32,768: 23 MB instead of 50) and `train` writes zeros for the rest.
  rows = np.flatnonzero(teacher.whole_word_mask(vocab)) if cfg.semantic.whole_words else np.arange(len(vocab))
  cached = teacher.cache_path(vocab, teacher.templates)
  with np.load(cached, allow_pickle=False) as f:
    fields = {k: f[k] for k in f.files if k != "embeddings"}
  # Written whole or not at all; an existing pack is replaced, any other non-empty folder refused.
  with atomic_dir(out, replaceable=lambda d: (d / "codebook.npz").is_file(), what="pack folder") as tmp:
    (tmp / "teacher").mkdir(parents=True)
    np.savez(tmp / "words.npz", rows=rows, embeddings=table[rows], num_words=len(vocab), cache_name=cached.name,
             **fields)
    for name in ("teacher.json", "image_tower.npz"):  # its own word table covers the default vocabulary only
      shutil.copy(teacher_dir / name, tmp / "teacher" / name)
    shutil.copy(Path(a.minilm_dir) / "vocab.txt", tmp / "minilm_vocab.txt")
    np.savez(tmp / "codebook.npz", q8_0=blocks, llm_ids=vocab.llm_ids,
             pieces=np.array(vocab.pieces), metadata=np.array(json.dumps(vocab.metadata)),
             fingerprint=np.array(vocab.fingerprint()))
  size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
  print(f"packed {out}: {size / 2**20:.1f} MB")
  return 0


def _unpack_words(p: Path, cache: Path) -> None:
  """The teacher's cache file for the packed codebook, rebuilt from the rows that travelled."""
  from spae._io import atomic_path

  with np.load(p / "words.npz", allow_pickle=False) as f:
    w = {k: f[k] for k in f.files}
  table = np.zeros((int(w.pop("num_words")), w["embeddings"].shape[1]), np.float32)
  table[w.pop("rows")] = w.pop("embeddings")
  path = cache / "teacher_text" / str(w.pop("cache_name"))
  path.parent.mkdir(parents=True, exist_ok=True)
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    np.savez(f, embeddings=table, **w)


class _TokenizerOnly:
  """Stands in for the MiniLM text tower where training needs only its WordPiece vocabulary (whole-word mask);
  every word embedding comes from the packed cache, so a cache miss fails loudly instead of embedding."""

  def __init__(self, vocab_txt: Path):
    from spae.teachers._wordpiece import WordPieceTokenizer

    self.tokenizer = WordPieceTokenizer.from_file(vocab_txt)

  def __getattr__(self, name):
    raise AttributeError(f"the packed word embeddings do not cover this run (it asked the text tower for "
                         f"{name!r}); pack again with this run's config.")


def train(a: argparse.Namespace) -> int:
  import jax

  with jax.default_matmul_precision("highest"):  # no TF32 shortcut in the f32 products on GPUs
    return _train(a)


def _train(a: argparse.Namespace) -> int:
  start = time.time()
  import jax

  from spae import Vocabulary
  from spae import train as T
  from spae._gguf_file import _dequantize_q8_0
  from spae.teachers._lit import LiTTeacher

  p = Path(a.pack)
  missing = [n for n in ("codebook.npz", "words.npz", "minilm_vocab.txt", "teacher") if not (p / n).exists()]
  if missing:
    raise SystemExit(f"{p} is not a complete pack (no {', '.join(missing)}); write it with "
                     f"`tools/device_train.py pack --minilm-dir MINILM --out {p}`.")
  with np.load(p / "codebook.npz", allow_pickle=False) as f:
    vocab = Vocabulary.from_arrays([str(s) for s in f["pieces"]], _dequantize_q8_0(f["q8_0"]),
                                   f["llm_ids"], json.loads(str(f["metadata"])))
    if vocab.fingerprint() != str(f["fingerprint"]):
      raise SystemExit(f"{p}/codebook.npz rebuilt a codebook of another fingerprint; pack it again.")
  _unpack_words(p, Path(a.workdir) / "word_cache")
  teacher = LiTTeacher.load(p / "teacher", cache_dir=Path(a.workdir) / "word_cache")
  teacher.text_tower = _TokenizerOnly(p / "minilm_vocab.txt")
  cfg = T.load_config(a.config, a.overrides)
  print(f"{jax.devices()[0].device_kind}: {a.config} {a.overrides}", flush=True)
  t = time.time()
  trainer = T.Trainer(cfg, a.workdir, vocabulary=vocab, teacher=teacher)
  print(f"semantic words {list(trainer.cfg.tokenizer.pyramid.semantic_vocab)}; set up in {time.time() - t:.0f} s",
        flush=True)
  t, last, done = time.time(), {}, 0
  # Chunks that end in a checkpoint, so a run that would outlast the lease stops at the last one it reached.
  while done < cfg.steps and time.time() - start < a.deadline_s:
    last = trainer.run(progress=False, stop_after=a.chunk) or last
    done = int(last.get("step", done))
    print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in last.items()}), flush=True)
  print(json.dumps({"steps": cfg.steps, "done": done, "seconds": round(time.time() - t, 1)}), flush=True)
  return 0 if done >= cfg.steps else 3


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = ap.add_subparsers(dest="cmd", required=True)
  pk = sub.add_parser("pack", help="write the folder a machine without the models extra trains from")
  pk.add_argument("--minilm-dir", type=Path, required=True, help="an all-MiniLM-L6-v2 folder")
  pk.add_argument("--out", required=True)
  pk.add_argument("--config", default=str(DEFAULT_CONFIG))
  pk.add_argument("--vocab", default="gemma3-270m")
  pk.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
  tr = sub.add_parser("train", help="train a recipe from a packed folder")
  tr.add_argument("--pack", required=True)
  tr.add_argument("--workdir", required=True)
  tr.add_argument("--config", default=str(DEFAULT_CONFIG))
  tr.add_argument("--chunk", type=int, default=500, help="steps between deadline checks (each ends in a checkpoint)")
  tr.add_argument("--deadline-s", type=float, default=float("inf"),
                  help="start no chunk this many seconds after the process started")
  tr.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
  a = ap.parse_args(argv)
  return pack(a) if a.cmd == "pack" else train(a)


if __name__ == "__main__":
  sys.exit(main())
