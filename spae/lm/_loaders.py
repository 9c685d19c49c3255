"""Checkpoint loaders: HF-format folders and the official Gemma orbax layout, into `GemmaLM`.

HF folder: `config.json` + `*.safetensors` (+ `tokenizer.model`). Tensor names follow transformers'
Gemma2ForCausalLM / Gemma3ForCausalLM / LlamaForCausalLM (`model.layers.{i}.self_attn.q_proj.weight`, ...); any
prefix before `embed_tokens.weight` (e.g. `language_model.model.`) is accepted.

Gemma orbax (google-deepmind/gemma): a params tree with `embedder/input_embedding` [V, d],
`layer_{i}/attn/q_einsum/w` [N, d, H], `kv_einsum/w` [2, K, d, H] (or `qkv_einsum/w` [3, N, d, H] when N == K),
`attn_vec_einsum/w` [N, H, d], `_query_norm/scale` / `_key_norm/scale` [H] (Gemma 3),
`mlp/gating_einsum` [2, F, d] (or [2, d, F]), `mlp/linear` [F, d], `pre_attention_norm`, `post_attention_norm`,
`pre_ffw_norm`, `post_ffw_norm`, `final_norm` (`/scale`). Both the released semi-flat form (keys
`transformer/layer_0/attn/q_einsum` -> {'w': ...}, MLP weights under `.../w`) and the nested in-memory form are
read. An orbax checkpoint has no config: shapes are read from the tensors, the rest comes from `spae_lm.json`
next to the checkpoint, a `variant=` preset, or the released size it matches.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from spae._io import SpaeInputError
from spae._tensors import Tensors, open_tensors
from spae.lm._gemma import GemmaConfig, GemmaLM
from spae.lm._sp import SentencePieceTokenizer

# Rows of released embedding tables that exceed the tokenizer's pieces (padding, or image tokens).
_KNOWN_PADDING = {(256128, 256000), (262208, 262144)}

# Non-shape hyperparameters of the released orbax checkpoints, keyed by name; `_match_preset` finds them by
# (family, embed_dim, num_layers).
PRESETS: dict[str, dict[str, Any]] = {
    "gemma2-2b": dict(family="gemma2", embed_dim=2304, num_layers=26, sliding_window=4096,
                      query_pre_attn_scalar=256, max_length=8192),
    "gemma2-9b": dict(family="gemma2", embed_dim=3584, num_layers=42, sliding_window=4096,
                      query_pre_attn_scalar=256, max_length=8192),
    "gemma2-27b": dict(family="gemma2", embed_dim=4608, num_layers=46, sliding_window=4096,
                       query_pre_attn_scalar=144, max_length=8192),
    "gemma3-270m": dict(family="gemma3", embed_dim=640, num_layers=18, sliding_window=512,
                        query_pre_attn_scalar=256, max_length=32768, global_factor=1.0),
    "gemma3-1b": dict(family="gemma3", embed_dim=1152, num_layers=26, sliding_window=512,
                      query_pre_attn_scalar=256, max_length=32768, global_factor=1.0),
    "gemma3-4b": dict(family="gemma3", embed_dim=2560, num_layers=34, sliding_window=1024,
                      query_pre_attn_scalar=256, max_length=131072, global_factor=8.0),
    "gemma3-12b": dict(family="gemma3", embed_dim=3840, num_layers=48, sliding_window=1024,
                       query_pre_attn_scalar=256, max_length=131072, global_factor=8.0),
    "gemma3-27b": dict(family="gemma3", embed_dim=5376, num_layers=62, sliding_window=1024,
                       query_pre_attn_scalar=168, max_length=131072, global_factor=8.0),
}


def gemma_layer_types(family: str, num_layers: int) -> tuple[str, ...]:
  """Gemma 2 alternates sliding/global from layer 0; Gemma 3 has 5 sliding layers then 1 global."""
  if family == "gemma2":
    return tuple("sliding" if i % 2 == 0 else "global" for i in range(num_layers))
  if family == "gemma3":
    return tuple("global" if (i + 1) % 6 == 0 else "sliding" for i in range(num_layers))
  return ("global",) * num_layers


def family_defaults(family: str) -> dict[str, Any]:
  """Fields that follow from the family alone."""
  if family == "gemma2":
    return dict(norm_plus_one=True, post_norms=True, qk_norm=False, embed_scale=True, activation="gelu_tanh",
                attn_softcap=50.0, final_softcap=30.0, rope_global_base=10_000.0, rope_local_base=10_000.0,
                tied_embeddings=True)
  if family == "gemma3":
    return dict(norm_plus_one=True, post_norms=True, qk_norm=True, embed_scale=True, activation="gelu_tanh",
                attn_softcap=None, final_softcap=None, rope_global_base=1_000_000.0, rope_local_base=10_000.0,
                tied_embeddings=True)
  return dict(norm_plus_one=False, post_norms=False, qk_norm=False, embed_scale=False, activation="silu",
              attn_softcap=None, final_softcap=None, tied_embeddings=False)


# ------------------------------------------------------------------------------------------------ HF
def config_from_hf(hf: dict[str, Any], *, where: str = "config.json") -> GemmaConfig:
  """A transformers config.json (Gemma2/Gemma3 text/LLaMA, transformers 4.x or 5.x keys) as a GemmaConfig."""
  if "text_config" in hf and "num_hidden_layers" not in hf:  # multimodal Gemma 3 wrapper config
    hf = {**hf["text_config"], "model_type": hf["text_config"].get("model_type", "gemma3_text")}
  mt = hf.get("model_type", "")
  family = {"gemma2": "gemma2", "gemma3_text": "gemma3", "gemma3": "gemma3", "llama": "llama",
            "mistral": "llama"}.get(mt)
  if family is None:
    raise SpaeInputError(f"{where}: model_type {mt!r} is not supported; GemmaLM reads gemma2, gemma3_text and "
                         "llama configs.")
  if hf.get("attention_bias") or hf.get("mlp_bias"):
    raise SpaeInputError(f"{where}: attention/MLP biases are not supported by GemmaLM.")
  try:
    d, n = int(hf["hidden_size"]), int(hf["num_attention_heads"])
    layers = int(hf["num_hidden_layers"])
    head_dim = int(hf.get("head_dim") or d // n)
    common = dict(family=family, vocab_size=int(hf["vocab_size"]), embed_dim=d,
                  hidden_dim=int(hf["intermediate_size"]), num_layers=layers, num_heads=n,
                  num_kv_heads=int(hf.get("num_key_value_heads") or n), head_dim=head_dim,
                  norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
                  max_length=int(hf.get("max_position_embeddings", 8192)))
  except KeyError as e:
    raise SpaeInputError(f"{where}: missing field {e}.") from e
  out = {**family_defaults(family), **common}
  act = hf.get("hidden_activation") or hf.get("hidden_act")
  if act:
    out["activation"] = {"gelu_pytorch_tanh": "gelu_tanh", "gelu_tanh": "gelu_tanh", "silu": "silu"}.get(act)
    if out["activation"] is None:
      raise SpaeInputError(f"{where}: activation {act!r} is not supported (gelu_pytorch_tanh, silu).")
  if "tie_word_embeddings" in hf:
    out["tied_embeddings"] = bool(hf["tie_word_embeddings"])
  if family != "llama":
    out["query_pre_attn_scalar"] = float(hf.get("query_pre_attn_scalar") or head_dim)
    out["attn_softcap"] = hf.get("attn_logit_softcapping", out["attn_softcap"])
    out["final_softcap"] = hf.get("final_logit_softcapping", out["final_softcap"])
  # Layer types: transformers 5 writes `layer_types`; older configs imply them.
  lt = hf.get("layer_types")
  if lt:
    out["layer_types"] = tuple("sliding" if t == "sliding_attention" else "global" for t in lt)
  elif family == "gemma3" and hf.get("sliding_window_pattern"):
    p = int(hf["sliding_window_pattern"])
    out["layer_types"] = tuple("global" if (i + 1) % p == 0 else "sliding" for i in range(layers))
  else:
    out["layer_types"] = gemma_layer_types(family, layers)
  if "sliding" in out["layer_types"]:
    out["sliding_window"] = int(hf["sliding_window"])
  # RoPE: `rope_parameters` (transformers 5, per layer type for Gemma 3) or rope_theta/rope_scaling (4.x).
  rp = hf.get("rope_parameters")
  if isinstance(rp, dict) and "full_attention" in rp:
    g, s = rp["full_attention"], rp.get("sliding_attention", {})
    out["rope_global_base"] = float(g.get("rope_theta", out.get("rope_global_base", 10_000.0)))
    out["rope_local_base"] = float(s.get("rope_theta", out.get("rope_local_base", 10_000.0)))
    out["rope_global_scaling"] = _scaling(g)
    out["rope_local_scaling"] = _scaling(s)
  else:
    rp = rp if isinstance(rp, dict) else {}
    theta = float(rp.get("rope_theta") or hf.get("rope_theta") or out.get("rope_global_base", 10_000.0))
    out["rope_global_base"] = theta
    out["rope_local_base"] = float(hf.get("rope_local_base_freq") or (theta if family != "gemma3" else 10_000.0))
    out["rope_global_scaling"] = _scaling(rp) or _scaling(hf.get("rope_scaling") or {})
  return GemmaConfig(**out)


def _scaling(d: dict[str, Any]) -> dict[str, Any] | None:
  kind = d.get("rope_type") or d.get("type")
  if kind in (None, "default"):
    return None
  if kind not in ("linear", "llama3"):
    raise SpaeInputError(f"RoPE scaling type {kind!r} is not supported (linear, llama3).")
  keys = ("factor",) if kind == "linear" else ("factor", "low_freq_factor", "high_freq_factor",
                                                "original_max_position_embeddings")
  return {"rope_type": kind, **{k: float(d[k]) for k in keys}}


def params_from_hf(tensors: Mapping[str, np.ndarray], cfg: GemmaConfig, *, where: str = "") -> dict[str, Any]:
  """HF tensor names -> canonical float32 params (norm weights as effective scales)."""
  tf = tensors if isinstance(tensors, Tensors) else Tensors.from_arrays(tensors, where)
  ends = [k for k in tf if k.endswith("embed_tokens.weight")]
  if not ends:
    raise SpaeInputError(f"{tf.where}: missing tensor 'model.embed_tokens.weight'; this is not a causal-LM "
                         f"checkpoint (tensors include {sorted(tf)[:8]}).")
  pre = ends[0][: -len("embed_tokens.weight")]
  d, f, n, k, h, v = (cfg.embed_dim, cfg.hidden_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                      cfg.vocab_size)
  plus = 1.0 if cfg.norm_plus_one else 0.0

  def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
    return tf.get(name, shape, np.float32)

  layers: dict[str, list[np.ndarray]] = {}

  def put(key: str, val: np.ndarray) -> None:
    layers.setdefault(key, []).append(val)

  for i in range(cfg.num_layers):
    p = f"{pre}layers.{i}."
    put("wq", get(p + "self_attn.q_proj.weight", (n * h, d)).T.reshape(d, n, h))
    put("wk", get(p + "self_attn.k_proj.weight", (k * h, d)).T.reshape(d, k, h))
    put("wv", get(p + "self_attn.v_proj.weight", (k * h, d)).T.reshape(d, k, h))
    put("wo", get(p + "self_attn.o_proj.weight", (d, n * h)).T.reshape(n, h, d))
    put("w_gate", get(p + "mlp.gate_proj.weight", (f, d)).T)
    put("w_up", get(p + "mlp.up_proj.weight", (f, d)).T)
    put("w_down", get(p + "mlp.down_proj.weight", (d, f)).T)
    put("pre_attn_norm", get(p + "input_layernorm.weight", (d,)) + plus)
    if cfg.post_norms:
      put("post_attn_norm", get(p + "post_attention_layernorm.weight", (d,)) + plus)
      put("pre_ffw_norm", get(p + "pre_feedforward_layernorm.weight", (d,)) + plus)
      put("post_ffw_norm", get(p + "post_feedforward_layernorm.weight", (d,)) + plus)
    else:  # LLaMA's "post_attention_layernorm" is the norm before the MLP
      put("pre_ffw_norm", get(p + "post_attention_layernorm.weight", (d,)) + plus)
    if cfg.qk_norm:
      put("q_norm", get(p + "self_attn.q_norm.weight", (h,)) + plus)
      put("k_norm", get(p + "self_attn.k_norm.weight", (h,)) + plus)
  out = {"embed": get(pre + "embed_tokens.weight", (v, d)), "final_norm": get(pre + "norm.weight", (d,)) + plus,
         "layers": {key: np.stack(vals) for key, vals in layers.items()}}
  if not cfg.tied_embeddings:
    head = [kk for kk in tf if kk.endswith("lm_head.weight")]
    out["lm_head"] = get(head[0] if head else "lm_head.weight", (v, d))
  return out


def load_hf(path: str | os.PathLike, *, tokenizer: Any = None, max_length: int | None = None,
            allow_extra_rows: bool = False, dtype: str = "float32") -> GemmaLM:
  """An HF-format folder (config.json + *.safetensors + tokenizer.model) as a `GemmaLM`.

  The tokenizer is `tokenizer` (a path or TextTokenizer), else `tokenizer.model` in the folder or its parent.
  dtype: weight storage, 'float32', 'bfloat16', or 'auto' (bfloat16 when the checkpoint stores bfloat16)."""
  folder = Path(path)
  if not folder.is_dir():
    raise SpaeInputError(f"HF checkpoint folder {str(folder)!r} does not exist.")
  if not (folder / "config.json").is_file():
    raise SpaeInputError(f"{folder} has no config.json; it is not an HF-format checkpoint folder.")
  try:
    hf = json.loads((folder / "config.json").read_text())
  except json.JSONDecodeError as e:
    raise SpaeInputError(f"{folder}/config.json is not valid JSON ({e}).") from e
  cfg = config_from_hf(hf, where=str(folder / "config.json"))
  tensors = open_tensors(folder, format="safetensors")
  params = params_from_hf(tensors, cfg)
  tok = _tokenizer(tokenizer, [folder / "tokenizer.model", folder.parent / "tokenizer.model"], folder)
  _check_vocab(tok, cfg, allow_extra_rows, str(folder))
  return GemmaLM(cfg, params, tok, max_length=max_length, source=f"hf:{folder}", dtype=_dtype(dtype, tensors))


# ------------------------------------------------------------------------------------------------ orbax
def orbax_flat_params(tensors: Tensors) -> Tensors:
  """Normalised '/'-paths: no `transformer/` prefix, no trailing `/w` on MLP weights."""

  def name(k: str) -> str:
    k = k[len("transformer/"):] if k.startswith("transformer/") else k
    return re.sub(r"(/mlp/(?:gating_einsum|linear))/w$", r"\1", k)

  return tensors.rename(name)


def config_from_orbax(flat: Tensors, *, overrides: dict[str, Any] | None = None,
                      variant: str | None = None, where: str = "") -> GemmaConfig:
  """Shapes from the tensors; the rest from `overrides`, a named preset, or the released size matched."""

  def shape(key: str) -> tuple[int, ...]:
    if key not in flat:
      raise SpaeInputError(f"{where}: missing tensor {key!r}; this is not a Gemma orbax checkpoint "
                           f"(keys include {sorted(flat)[:8]}).")
    return flat.shape(key)

  v, d = shape("embedder/input_embedding")
  layers = 0
  while any(k.startswith(f"layer_{layers}/") for k in flat):
    layers += 1
  if layers == 0:
    raise SpaeInputError(f"{where}: no layer_0/... tensors found.")
  if "layer_0/attn/qkv_einsum/w" in flat:
    _, n, _, h = shape("layer_0/attn/qkv_einsum/w")
    k = n
  else:
    n, _, h = shape("layer_0/attn/q_einsum/w")
    k = shape("layer_0/attn/kv_einsum/w")[1]
  f = shape("layer_0/mlp/linear")[0]
  family = "gemma3" if "layer_0/attn/_query_norm/scale" in flat else "gemma2"
  over = dict(overrides or {})
  family = over.pop("family", family)
  preset: dict[str, Any] | None = None
  if variant is not None:
    if variant not in PRESETS:
      raise SpaeInputError(f"unknown Gemma variant {variant!r}; known: {sorted(PRESETS)}.")
    preset = PRESETS[variant]
  else:
    for p in PRESETS.values():
      if (p["family"], p["embed_dim"], p["num_layers"]) == (family, d, layers):
        preset = p
  fields = {**family_defaults(family), "family": family, "vocab_size": v, "embed_dim": d, "hidden_dim": f,
            "num_layers": layers, "num_heads": n, "num_kv_heads": k, "head_dim": h,
            "layer_types": gemma_layer_types(family, layers)}
  if preset is not None:
    fields.update(sliding_window=preset["sliding_window"], query_pre_attn_scalar=preset["query_pre_attn_scalar"],
                  max_length=preset["max_length"])
    if preset.get("global_factor", 1.0) != 1.0:
      fields["rope_global_scaling"] = {"rope_type": "linear", "factor": preset["global_factor"]}
  elif "sliding_window" not in over:
    raise SpaeInputError(
        f"{where}: a {family} checkpoint with d={d} and {layers} layers matches no released size, and orbax "
        "checkpoints carry no config; write spae_lm.json (GemmaConfig fields such as sliding_window, "
        "query_pre_attn_scalar, max_length) next to it, or pass variant=... / config=... .")
  fields.update(over)
  return GemmaConfig.from_dict(fields)


def params_from_orbax(flat: Tensors, cfg: GemmaConfig, *, where: str = "") -> dict[str, Any]:
  """Normalised orbax tensors (see `orbax_flat_params`) -> canonical float32 params."""
  d, f, n, k, h, v = (cfg.embed_dim, cfg.hidden_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim,
                      cfg.vocab_size)

  def get(key: str, shape: tuple[int, ...] | None) -> np.ndarray:
    return flat.get(key, shape, np.float32)

  layers: dict[str, list[np.ndarray]] = {}

  def put(key: str, val: np.ndarray) -> None:
    layers.setdefault(key, []).append(val)

  for i in range(cfg.num_layers):
    p = f"layer_{i}/"
    if n == k and p + "attn/qkv_einsum/w" in flat:
      qkv = get(p + "attn/qkv_einsum/w", (3, n, d, h))
      q, kk, vv = qkv[0], qkv[1], qkv[2]
    else:
      q = get(p + "attn/q_einsum/w", (n, d, h))
      kv = get(p + "attn/kv_einsum/w", (2, k, d, h))
      kk, vv = kv[0], kv[1]
    put("wq", q.transpose(1, 0, 2))
    put("wk", kk.transpose(1, 0, 2))
    put("wv", vv.transpose(1, 0, 2))
    put("wo", get(p + "attn/attn_vec_einsum/w", (n, h, d)))
    g = get(p + "mlp/gating_einsum", None)
    if g.shape == (2, f, d):  # transpose_gating_einsum=True (the released Gemma 2/3 layout)
      gate, up = g[0].T, g[1].T
    elif g.shape == (2, d, f):
      gate, up = g[0], g[1]
    else:
      raise SpaeInputError(f"{where}: tensor '{p}mlp/gating_einsum' has shape {g.shape}; expected (2, {f}, {d}) "
                           "or (2, {d}, {f}).")
    put("w_gate", gate)
    put("w_up", up)
    put("w_down", get(p + "mlp/linear", (f, d)))
    put("pre_attn_norm", get(p + "pre_attention_norm/scale", (d,)) + 1.0)
    put("pre_ffw_norm", get(p + "pre_ffw_norm/scale", (d,)) + 1.0)
    if cfg.post_norms:
      put("post_attn_norm", get(p + "post_attention_norm/scale", (d,)) + 1.0)
      put("post_ffw_norm", get(p + "post_ffw_norm/scale", (d,)) + 1.0)
    if cfg.qk_norm:
      put("q_norm", get(p + "attn/_query_norm/scale", (h,)) + 1.0)
      put("k_norm", get(p + "attn/_key_norm/scale", (h,)) + 1.0)
  return {"embed": get("embedder/input_embedding", (v, d)), "final_norm": get("final_norm/scale", (d,)) + 1.0,
          "layers": {key: np.stack(vals) for key, vals in layers.items()}}


def load_gemma(path: str | os.PathLike, *, tokenizer: Any = None, config: dict[str, Any] | None = None,
               variant: str | None = None, max_length: int | None = None,
               allow_extra_rows: bool = False, dtype: str = "float32") -> GemmaLM:
  """An official Gemma 2/3 orbax checkpoint directory with its sentencepiece tokenizer.model.

  The tokenizer is `tokenizer` (a path or TextTokenizer), else `tokenizer.model` in the checkpoint directory or
  its parent. Non-shape hyperparameters: `config` overrides, then `spae_lm.json` in the directory, then
  `variant` / the released size matched (see `PRESETS`). dtype: as for `load_hf`.
  """
  folder = Path(path)
  if not folder.is_dir():
    raise SpaeInputError(f"orbax checkpoint directory {str(folder)!r} does not exist.")
  flat = orbax_flat_params(open_tensors(folder, format="orbax"))
  overrides: dict[str, Any] = {}
  side = folder / "spae_lm.json"
  if side.is_file():
    overrides.update(json.loads(side.read_text()))
  overrides.update(config or {})
  cfg = config_from_orbax(flat, overrides=overrides, variant=variant, where=str(folder))
  params = params_from_orbax(flat, cfg, where=str(folder))
  tok = _tokenizer(tokenizer, [folder / "tokenizer.model", folder.parent / "tokenizer.model"], folder)
  _check_vocab(tok, cfg, allow_extra_rows, str(folder))
  return GemmaLM(cfg, params, tok, max_length=max_length, source=f"gemma:{folder}", dtype=_dtype(dtype, flat))


# ------------------------------------------------------------------------------------------------ shared
def _dtype(dtype: str, tensors: Tensors) -> str:
  """'auto' -> 'bfloat16' when the checkpoint's embedding table is stored as bfloat16, else 'float32'."""
  if dtype != "auto":
    return dtype
  emb = [k for k in tensors if k.endswith(("embed_tokens.weight", "embedder/input_embedding"))]
  return "bfloat16" if emb and tensors.stored_dtype(emb[0]) == "bfloat16" else "float32"


def _tokenizer(tokenizer: Any, candidates: list[Path], folder: Path) -> Any:
  if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
    return tokenizer
  if tokenizer is not None:
    return SentencePieceTokenizer(tokenizer)
  for c in candidates:
    if c.is_file():
      return SentencePieceTokenizer(c)
  raise SpaeInputError(f"no tokenizer.model found for {folder} (looked at {[str(c) for c in candidates]}); pass "
                       "tokenizer=PATH.")


def _check_vocab(tok: Any, cfg: GemmaConfig, allow_extra_rows: bool, where: str) -> None:
  n, rows = int(tok.vocab_size), cfg.vocab_size
  if n == rows or (rows > n and (allow_extra_rows or (rows, n) in _KNOWN_PADDING)):
    return
  hint = (" If the table is padded past the tokenizer, pass allow_extra_rows=True." if rows > n else
          " Tokens beyond the table would have no embedding.")
  raise SpaeInputError(f"{where}: the tokenizer has {n} pieces but the embedding table has {rows} rows; use the "
                       f"tokenizer.model that belongs to this checkpoint.{hint}")
