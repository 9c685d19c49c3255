"""Tiny language models built on the fly for hermetic tests: no downloads, seconds to build.

`make_tiny_lm(dir, kind, layout)` trains a small sentencepiece model on generated text and writes random weights
in an official checkpoint layout (HF safetensors folder, or the Gemma orbax tree), returning a spec that
`spae.lm.load` accepts. Other modules' tests reuse these (e.g. prompting).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from spae._io import SpaeInputError, atomic_dir
from spae.lm._base import LogitsModel
from spae.lm._gemma_config import GemmaConfig
from spae.lm._gguf_write import WRITABLE_TYPES, write_gguf
from spae.lm._loaders import family_defaults, gemma_layer_types

__all__ = ["FakeCompletionsServer", "KINDS", "WRITABLE_TYPES", "hf_config_dict", "hf_to_orbax_tree", "make_tiny_lm",
           "orbax_sidecar", "random_hf_tensors", "tiny_config", "tiny_corpus", "tiny_lm", "train_sentencepiece",
           "write_gguf", "write_hf", "write_orbax"]

KINDS = ("gemma2", "gemma3", "llama")

_SYLLABLES = ["ka", "to", "mi", "ra", "ne", "su", "lo", "pi", "da", "ve", "ku", "shi", "an", "el", "or", "um",
              "bra", "cle", "dro", "fen", "gri", "hol", "jas", "kip"]
# Real words too, so tests and prompts can use readable labels ("cat", "dog", ...).
_WORDS = ["cat", "dog", "bird", "fish", "car", "tree", "house", "red", "blue", "green", "input", "output",
          "image", "label", "the", "a", "is", "of", "and", "yes", "no", "Input", "Output", "Image", "Label", "The",
          "A", "Q", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "#", "-", "###"]


def tiny_corpus(n_lines: int = 3000, seed: int = 0) -> list[str]:
  """Deterministic pseudo-text: syllable words mixed with a few English words and punctuation."""
  rng = np.random.default_rng(seed)
  lines = []
  for _ in range(n_lines):
    words = []
    for _ in range(int(rng.integers(4, 12))):
      if rng.random() < 0.35:
        words.append(_WORDS[int(rng.integers(len(_WORDS)))])
      else:
        words.append("".join(_SYLLABLES[int(i)] for i in rng.integers(len(_SYLLABLES), size=int(rng.integers(1, 4)))))
    lines.append(" ".join(words) + rng.choice([".", ":", ",", "!", "?"]))
  return lines


def train_sentencepiece(out_dir: str | os.PathLike, vocab_size: int = 320, *, seed: int = 0,
                        model_type: str = "unigram") -> Path:
  """Trains `tokenizer.model` with Gemma's special ids (pad 0, eos 1, bos 2, unk 3); deterministic.

  Returns the model path. The piece count equals `vocab_size` exactly.
  """
  import sentencepiece as spm

  out_dir = Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  corpus = out_dir / ".tiny_corpus.txt"
  corpus.write_text("\n".join(tiny_corpus(seed=seed)) + "\n", encoding="utf-8")
  prefix = out_dir / ".tiny_sp"
  spm.SentencePieceTrainer.Train(
      input=str(corpus), model_prefix=str(prefix), vocab_size=vocab_size, model_type=model_type,
      pad_id=0, eos_id=1, bos_id=2, unk_id=3, character_coverage=1.0, num_threads=1,
      shuffle_input_sentence=False, input_sentence_size=0, hard_vocab_limit=True, minloglevel=2,
      # No NFKC table: keeps the model file ~10x smaller (fixtures stay small); the text is plain ASCII.
      normalization_rule_name="identity")
  target = out_dir / "tokenizer.model"
  os.replace(f"{prefix}.model", target)
  for leftover in (corpus, Path(f"{prefix}.vocab")):
    leftover.unlink(missing_ok=True)
  return target


def tiny_config(kind: str = "gemma2", vocab_size: int = 320, **overrides: Any) -> GemmaConfig:
  """2 layers, d=32, 4 heads of 16 (GQA with 2 KV heads), MLP 64: compiles in about a second."""
  if kind not in KINDS:
    raise SpaeInputError(f"kind must be one of {KINDS}, got {kind!r}.")
  fields: dict[str, Any] = {**family_defaults(kind), "family": kind, "vocab_size": vocab_size, "embed_dim": 32,
                            "hidden_dim": 64, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "head_dim": 16,
                            "max_length": 512}
  if kind == "gemma2":
    fields.update(layer_types=gemma_layer_types("gemma2", 2), sliding_window=8, query_pre_attn_scalar=16.0)
  elif kind == "gemma3":
    fields.update(layer_types=("sliding", "global"), sliding_window=8, query_pre_attn_scalar=16.0,
                  rope_global_scaling={"rope_type": "linear", "factor": 8.0})
  else:
    fields.update(rope_global_base=10_000.0, rope_local_base=10_000.0)
  fields.update(overrides)
  return GemmaConfig.from_dict(fields)


def random_hf_tensors(cfg: GemmaConfig, seed: int = 0, scale: float = 0.3) -> dict[str, np.ndarray]:
  """Random weights with transformers' tensor names and shapes (norm weights random too, so norm bugs show)."""
  rng = np.random.default_rng(seed)
  d, f, n, k, h, v = (cfg.embed_dim, cfg.hidden_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                      cfg.vocab_size)

  def w(*shape: int) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)

  def norm(m: int) -> np.ndarray:
    base = 0.0 if cfg.norm_plus_one else 1.0
    return (base + rng.standard_normal(m) * 0.2).astype(np.float32)

  t = {"model.embed_tokens.weight": w(v, d), "model.norm.weight": norm(d)}
  for i in range(cfg.num_layers):
    p = f"model.layers.{i}."
    t.update({p + "self_attn.q_proj.weight": w(n * h, d), p + "self_attn.k_proj.weight": w(k * h, d),
              p + "self_attn.v_proj.weight": w(k * h, d), p + "self_attn.o_proj.weight": w(d, n * h),
              p + "mlp.gate_proj.weight": w(f, d), p + "mlp.up_proj.weight": w(f, d),
              p + "mlp.down_proj.weight": w(d, f), p + "input_layernorm.weight": norm(d),
              p + "post_attention_layernorm.weight": norm(d)})
    if cfg.post_norms:
      t.update({p + "pre_feedforward_layernorm.weight": norm(d), p + "post_feedforward_layernorm.weight": norm(d)})
    if cfg.qk_norm:
      t.update({p + "self_attn.q_norm.weight": norm(h), p + "self_attn.k_norm.weight": norm(h)})
  if not cfg.tied_embeddings:
    t["lm_head.weight"] = w(v, d)
  return t


def hf_config_dict(cfg: GemmaConfig) -> dict[str, Any]:
  """A transformers-5 style config.json for `cfg` (what `spae.lm.load('hf:...')` and transformers read)."""
  model_type = {"gemma2": "gemma2", "gemma3": "gemma3_text", "llama": "llama"}[cfg.family]
  arch = {"gemma2": "Gemma2ForCausalLM", "gemma3": "Gemma3ForCausalLM", "llama": "LlamaForCausalLM"}[cfg.family]
  out: dict[str, Any] = {
      "architectures": [arch], "model_type": model_type, "vocab_size": cfg.vocab_size,
      "hidden_size": cfg.embed_dim, "intermediate_size": cfg.hidden_dim, "num_hidden_layers": cfg.num_layers,
      "num_attention_heads": cfg.num_heads, "num_key_value_heads": cfg.num_kv_heads, "head_dim": cfg.head_dim,
      "rms_norm_eps": cfg.norm_eps, "max_position_embeddings": cfg.max_length,
      "tie_word_embeddings": cfg.tied_embeddings, "attention_bias": False,
      "layer_types": ["sliding_attention" if t == "sliding" else "full_attention" for t in cfg.layer_types],
      "pad_token_id": 0, "eos_token_id": 1, "bos_token_id": 2}
  glob = {"rope_theta": cfg.rope_global_base, **(dict(cfg.rope_global_scaling or {}) or {"rope_type": "default"})}
  if cfg.family == "llama":
    out.update(hidden_act="silu", mlp_bias=False, rope_parameters=glob)
  else:
    out.update(hidden_activation="gelu_pytorch_tanh", query_pre_attn_scalar=cfg.query_pre_attn_scalar,
               attn_logit_softcapping=cfg.attn_softcap, final_logit_softcapping=cfg.final_softcap,
               sliding_window=cfg.sliding_window)
    if cfg.family == "gemma3":
      loc = {"rope_theta": cfg.rope_local_base, **(dict(cfg.rope_local_scaling or {}) or {"rope_type": "default"})}
      out["rope_parameters"] = {"full_attention": glob, "sliding_attention": loc}
    else:
      out["rope_parameters"] = glob
  return out


def hf_to_orbax_tree(tensors: dict[str, np.ndarray], cfg: GemmaConfig) -> dict[str, Any]:
  """HF tensors -> the released Gemma orbax layout (semi-flat `transformer/...` keys, {'w'/'scale': array})."""
  if cfg.family == "llama":
    raise SpaeInputError("the orbax layout exists only for Gemma checkpoints; use layout='hf' for llama.")
  d, n, k, h = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  tree: dict[str, Any] = {"transformer/embedder": {"input_embedding": tensors["model.embed_tokens.weight"]},
                          "transformer/final_norm": {"scale": tensors["model.norm.weight"]}}
  for i in range(cfg.num_layers):
    p, o = f"model.layers.{i}.", f"transformer/layer_{i}/"
    q = tensors[p + "self_attn.q_proj.weight"].reshape(n, h, d).transpose(0, 2, 1)  # [N, d, H]
    kk = tensors[p + "self_attn.k_proj.weight"].reshape(k, h, d).transpose(0, 2, 1)
    vv = tensors[p + "self_attn.v_proj.weight"].reshape(k, h, d).transpose(0, 2, 1)
    if n == k:
      tree[o + "attn/qkv_einsum"] = {"w": np.stack([q, kk, vv])}
    else:
      tree[o + "attn/q_einsum"] = {"w": q}
      tree[o + "attn/kv_einsum"] = {"w": np.stack([kk, vv])}
    tree[o + "attn/attn_vec_einsum"] = {"w": tensors[p + "self_attn.o_proj.weight"].reshape(d, n, h).transpose(1, 2, 0)}
    tree[o + "mlp/gating_einsum"] = {"w": np.stack([tensors[p + "mlp.gate_proj.weight"],
                                                    tensors[p + "mlp.up_proj.weight"]])}  # [2, F, d]
    tree[o + "mlp/linear"] = {"w": tensors[p + "mlp.down_proj.weight"].T}  # [F, d]
    tree[o + "pre_attention_norm"] = {"scale": tensors[p + "input_layernorm.weight"]}
    tree[o + "post_attention_norm"] = {"scale": tensors[p + "post_attention_layernorm.weight"]}
    tree[o + "pre_ffw_norm"] = {"scale": tensors[p + "pre_feedforward_layernorm.weight"]}
    tree[o + "post_ffw_norm"] = {"scale": tensors[p + "post_feedforward_layernorm.weight"]}
    if cfg.qk_norm:
      tree[o + "attn/_query_norm"] = {"scale": tensors[p + "self_attn.q_norm.weight"]}
      tree[o + "attn/_key_norm"] = {"scale": tensors[p + "self_attn.k_norm.weight"]}
  return tree


def orbax_sidecar(cfg: GemmaConfig) -> dict[str, Any]:
  """The non-shape fields an orbax checkpoint of a non-released size needs (`spae_lm.json`)."""
  d = cfg.to_dict()
  keep = ("family", "layer_types", "sliding_window", "query_pre_attn_scalar", "attn_softcap", "final_softcap",
          "rope_global_base", "rope_local_base", "rope_global_scaling", "rope_local_scaling", "max_length",
          "norm_eps")
  return {k: d[k] for k in keep}


def write_hf(folder: str | os.PathLike, cfg: GemmaConfig, tensors: dict[str, np.ndarray]) -> Path:
  from safetensors.numpy import save_file

  folder = Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "config.json").write_text(json.dumps(hf_config_dict(cfg), indent=1))
  save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(folder / "model.safetensors"))
  return folder


def write_orbax(folder: str | os.PathLike, cfg: GemmaConfig, tensors: dict[str, np.ndarray],
                sidecar: bool = True) -> Path:
  import orbax.checkpoint as ocp

  folder = Path(folder)
  with atomic_dir(folder) as tmp:
    ocp.PyTreeCheckpointer().save(str(tmp.absolute()), hf_to_orbax_tree(tensors, cfg))
    if sidecar:
      (tmp / "spae_lm.json").write_text(json.dumps(orbax_sidecar(cfg), indent=1))
  return folder


def make_tiny_lm(directory: str | os.PathLike, kind: str = "gemma2", layout: str = "hf", *,
                 vocab_size: int = 320, seed: int = 0, qtype: str = "F32", **config_overrides: Any) -> str:
  """Builds a tiny random `kind` model with its tokenizer under `directory`; returns its `spae.lm.load` spec.

  layout 'hf' -> 'hf:DIR' (config.json + model.safetensors + tokenizer.model); 'orbax' -> 'gemma:DIR'
  (the Gemma orbax tree + spae_lm.json + tokenizer.model); 'gguf' -> 'gguf:DIR/model.gguf' (weights in
  `qtype`, the tokenizer in its metadata; Gemma 3 then follows llama.cpp's fixed 5 sliding : 1 global pattern).
  Same seed, same weights and tokenizer.
  """
  if layout not in ("hf", "orbax", "gguf"):
    raise SpaeInputError(f"layout must be 'hf', 'orbax' or 'gguf', got {layout!r}.")
  directory = Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  cfg = tiny_config(kind, vocab_size, **config_overrides)
  tensors = random_hf_tensors(cfg, seed)
  if layout == "gguf":
    # llama.cpp's "llama" vocabulary runs score-ordered BPE merges: a sentencepiece BPE model is what a GGUF
    # file can carry faithfully (a unigram model would tokenize differently).
    model = train_sentencepiece(directory, vocab_size, seed=seed, model_type="bpe")
    return f"gguf:{write_gguf(directory / 'model.gguf', cfg, tensors, qtype=qtype, tokenizer_model=model)}"
  if layout == "hf":
    write_hf(directory, cfg, tensors)
  else:
    write_orbax(directory, cfg, tensors)  # replaces the folder: the tokenizer comes after
  train_sentencepiece(directory, vocab_size, seed=seed)
  return f"{'hf' if layout == 'hf' else 'gemma'}:{directory}"


def tiny_lm(directory: str | os.PathLike, kind: str = "gemma2", layout: str = "hf", **kwargs: Any):
  """`make_tiny_lm` then `spae.lm.load`: a ready GemmaLM."""
  from spae.lm._load import load

  return load(make_tiny_lm(directory, kind, layout, **kwargs))


class FakeCompletionsServer:
  """A vLLM-like OpenAI-compatible server on 127.0.0.1 (loopback only) backed by a local language model.

  Serves /v1/completions (echo + logprobs, greedy or seeded sampling, stop strings), /tokenize, /detokenize
  and /v1/models from `lm` (a local model with full logits) and its tokenizer. Faults for tests: append to
  `faults` any of 'http500', 'badjson', 'auth401' (a 401 that echoes the Authorization header), ('sleep',
  seconds); each request takes the next fault (if any). `paths` and `headers` record every request.

      with FakeCompletionsServer(lm, model="tiny") as srv:
        remote = spae.lm.load(f"openai:{srv.url}#tiny")
  """

  def __init__(self, lm: LogitsModel, model: str = "tiny"):
    self.lm, self.model = lm, model
    self.faults: list[Any] = []
    self.headers: list[dict[str, str]] = []
    self.paths: list[str] = []
    self.requests = 0
    self._server = None
    self._thread = None

  def __enter__(self) -> "FakeCompletionsServer":
    import http.server
    import threading

    outer = self

    class Handler(http.server.BaseHTTPRequestHandler):
      def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

      def _send(self, code: int, body: bytes) -> None:
        try:
          self.send_response(code)
          self.send_header("Content-Type", "application/json")
          self.send_header("Content-Length", str(len(body)))
          self.end_headers()
          self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
          pass

      def _handle(self, payload: dict[str, Any] | None) -> None:
        import time

        outer.requests += 1
        outer.paths.append(self.path)
        outer.headers.append(dict(self.headers))
        fault = outer.faults.pop(0) if outer.faults else None
        if fault == "http500":
          return self._send(500, b'{"error": "internal"}')
        if fault == "auth401":  # a careless server that echoes the credentials it got
          return self._send(401, json.dumps({"error": f"bad key {self.headers.get('Authorization')}"}).encode())
        if fault == "badjson":
          return self._send(200, b'{"choices": [')
        if isinstance(fault, tuple) and fault[0] == "sleep":
          time.sleep(fault[1])
        try:
          out = outer._answer(self.path, payload)
        except KeyError as e:
          return self._send(404, json.dumps({"error": f"unknown path or field {e}"}).encode())
        self._send(200, json.dumps(out).encode())

      def do_GET(self) -> None:
        self._handle(None)

      def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length", 0))
        self._handle(json.loads(self.rfile.read(n) or b"{}"))

    self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    self._server.daemon_threads = False  # server_close() joins handler threads (no JAX work at exit)
    self._server.block_on_close = True
    self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
    self._thread.start()
    return self

  @property
  def url(self) -> str:
    return f"http://127.0.0.1:{self._server.server_address[1]}"

  def __exit__(self, *exc: Any) -> None:
    self._server.shutdown()
    self._server.server_close()

  def _answer(self, path: str, p: dict[str, Any] | None) -> dict[str, Any]:
    tok = self.lm.tokenizer
    if path == "/v1/models":
      return {"data": [{"id": self.model, "max_model_len": self.lm.max_length}]}
    if path == "/tokenize":
      ids = tok.encode(p["prompt"], add_bos=bool(p.get("add_special_tokens", True)))
      return {"tokens": ids, "count": len(ids), "max_model_len": self.lm.max_length}
    if path == "/detokenize":
      return {"prompt": tok.decode(p["tokens"])}
    if path != "/v1/completions":
      raise KeyError(path)
    prompts = p["prompt"] if isinstance(p["prompt"], list) else [p["prompt"]]
    choices, n_prompt = [], 0
    for idx, text in enumerate(prompts):
      ids = tok.encode(text, add_bos=True)
      n_prompt += len(ids)
      new = self.lm.generate(ids, int(p.get("max_tokens", 16)), temperature=float(p.get("temperature", 1.0)),
                             seed=int(p.get("seed", 0)), stop=[tok.eos_id] if tok.eos_id is not None else None)
      out_text = tok.decode(new)
      for s in p.get("stop") or []:
        if s in out_text:
          out_text = out_text[:out_text.index(s)]
      ch: dict[str, Any] = {"index": idx, "text": (text if p.get("echo") else "") + out_text,
                            "finish_reason": "length"}
      if p.get("logprobs") is not None:
        seq = ids + new if p.get("echo") else new
        lp = np.asarray(self.lm.logits(np.asarray([ids + new])))[0]
        lp = lp - np.log(np.exp(lp - lp.max(-1, keepdims=True)).sum(-1, keepdims=True)) - lp.max(-1, keepdims=True)
        full = [None] + [float(lp[j - 1, (ids + new)[j]]) for j in range(1, len(ids + new))]
        vals = full if p.get("echo") else full[len(ids):]
        ch["logprobs"] = {"tokens": [tok.id_to_piece(i) for i in seq], "token_logprobs": vals}
      choices.append(ch)
    return {"id": "cmpl-fake", "object": "text_completion", "model": self.model, "choices": choices,
            "usage": {"prompt_tokens": n_prompt}}
