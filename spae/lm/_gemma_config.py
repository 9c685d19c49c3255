"""`GemmaConfig`, the architecture of a Gemma 2 / Gemma 3 / LLaMA-style decoder, and the checks and derived
constants (RoPE frequencies, sliding-layer flags) that turn a checkpoint's tensors into `GemmaLM`'s parameters."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from spae._io import SpaeInputError

Params = dict[str, Any]

FAMILIES = ("gemma2", "gemma3", "llama")
# Storage dtypes of the weight matrices (GemmaLM computes in float32).
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class GemmaConfig:
  """Architecture of a Gemma 2 / Gemma 3 / LLaMA-style decoder.

  Attributes:
    family: 'gemma2' | 'gemma3' | 'llama' (documentation and defaults only; the flags below decide).
    vocab_size: rows of the embedding table.
    embed_dim, hidden_dim: model width d and MLP width.
    num_layers, num_heads, num_kv_heads, head_dim: transformer shape (GQA when num_kv_heads < num_heads).
    layer_types: per layer 'global' or 'sliding'.
    sliding_window: tokens a sliding layer sees, itself included (key pos > query pos - window).
    norm_eps: RMSNorm epsilon.
    norm_plus_one: Gemma stores RMSNorm weights as w and scales by (1 + w).
    post_norms: Gemma 2/3 also normalise the attention and MLP outputs (4 norms per layer).
    qk_norm: Gemma 3 RMS-normalises queries and keys per head.
    embed_scale: multiply embeddings by sqrt(embed_dim) (Gemma).
    activation: 'gelu_tanh' (Gemma) or 'silu' (LLaMA) for the gated MLP.
    query_pre_attn_scalar: queries are scaled by this**-0.5 (None: head_dim).
    attn_softcap, final_softcap: tanh soft caps on attention and output logits (None: off).
    rope_global_base, rope_local_base: RoPE base frequency of global and sliding layers.
    rope_global_scaling, rope_local_scaling: None, or a dict with 'rope_type' 'linear' ({'factor'}) or 'llama3'
      ({'factor', 'low_freq_factor', 'high_freq_factor', 'original_max_position_embeddings'}).
    tied_embeddings: the output head is the embedding table (otherwise a separate lm_head).
    max_length: context length; longer inputs are rejected.
  """

  family: str
  vocab_size: int
  embed_dim: int
  hidden_dim: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  layer_types: tuple[str, ...] = ()
  sliding_window: int | None = None
  norm_eps: float = 1e-6
  norm_plus_one: bool = True
  post_norms: bool = True
  qk_norm: bool = False
  embed_scale: bool = True
  activation: str = "gelu_tanh"
  query_pre_attn_scalar: float | None = None
  attn_softcap: float | None = None
  final_softcap: float | None = None
  rope_global_base: float = 10_000.0
  rope_local_base: float = 10_000.0
  rope_global_scaling: Any = None
  rope_local_scaling: Any = None
  tied_embeddings: bool = True
  max_length: int = 8192

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise SpaeInputError(f"GemmaConfig.family must be one of {FAMILIES}, got {self.family!r}.")
    lt = tuple(self.layer_types) or ("global",) * self.num_layers
    object.__setattr__(self, "layer_types", lt)
    for name in ("rope_global_scaling", "rope_local_scaling"):
      v = getattr(self, name)
      if isinstance(v, dict):  # frozen + hashable (jit static argument)
        object.__setattr__(self, name, tuple(sorted(v.items())))
    if len(lt) != self.num_layers or any(t not in ("global", "sliding") for t in lt):
      raise SpaeInputError(f"layer_types must list 'global'/'sliding' for each of the {self.num_layers} layers, "
                           f"got {lt}.")
    if "sliding" in lt and not self.sliding_window:
      raise SpaeInputError("layer_types has sliding layers but sliding_window is not set.")
    if self.num_heads % self.num_kv_heads:
      raise SpaeInputError(f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                           f"({self.num_kv_heads}).")
    if self.head_dim % 2:
      raise SpaeInputError(f"head_dim must be even for RoPE, got {self.head_dim}.")
    if self.activation not in ("gelu_tanh", "silu"):
      raise SpaeInputError(f"activation must be 'gelu_tanh' or 'silu', got {self.activation!r}.")
    for s in (self.rope_global_scaling, self.rope_local_scaling):
      if s is not None and dict(s).get("rope_type") not in ("linear", "llama3", "freq_factors", "default"):
        raise SpaeInputError(f"unsupported RoPE scaling {dict(s)}; supported: 'linear', 'llama3', 'freq_factors'.")

  def to_dict(self) -> dict[str, Any]:
    d = dataclasses.asdict(self)
    d["layer_types"] = list(self.layer_types)
    for k in ("rope_global_scaling", "rope_local_scaling"):
      d[k] = None if d[k] is None else dict(d[k])
    return d

  @classmethod
  def from_dict(cls, d: dict[str, Any]) -> "GemmaConfig":
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
      raise SpaeInputError(f"unknown GemmaConfig fields {unknown}; known fields: {sorted(names)}.")
    d = dict(d)
    if "layer_types" in d:
      d["layer_types"] = tuple(d["layer_types"])
    return cls(**d)


def _inv_freq(head_dim: int, base: float, scaling: Any) -> np.ndarray:
  """RoPE inverse frequencies [head_dim/2], with linear, llama3 or per-frequency scaling folded in."""
  inv = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim))
  s = dict(scaling) if scaling is not None else {}
  kind = s.get("rope_type", "default")
  if kind == "linear":
    inv = inv / float(s["factor"])
  elif kind == "freq_factors":  # llama.cpp's rope_freqs tensor (llama 3.x GGUF files): theta_i / factor_i
    inv = inv / np.asarray(s["factors"], np.float64)
  elif kind == "llama3":
    factor, lo, hi = float(s["factor"]), float(s["low_freq_factor"]), float(s["high_freq_factor"])
    old = float(s["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv
    scaled = np.where(wavelen > old / lo, inv / factor, inv)
    smooth = (old / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < old / hi) & ~(wavelen > old / lo)
    inv = np.where(medium, smoothed, scaled)
  return inv.astype(np.float32)


def param_shapes(cfg: GemmaConfig) -> dict[str, tuple[int, ...]]:
  """Expected shape of every canonical tensor (layers stacked on axis 0)."""
  l, d, f = cfg.num_layers, cfg.embed_dim, cfg.hidden_dim
  n, k, h = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
  shapes = {"embed": (cfg.vocab_size, d), "final_norm": (d,),
            "layers/wq": (l, d, n, h), "layers/wk": (l, d, k, h), "layers/wv": (l, d, k, h),
            "layers/wo": (l, n, h, d), "layers/pre_attn_norm": (l, d), "layers/pre_ffw_norm": (l, d),
            "layers/w_gate": (l, d, f), "layers/w_up": (l, d, f), "layers/w_down": (l, f, d)}
  if cfg.post_norms:
    shapes.update({"layers/post_attn_norm": (l, d), "layers/post_ffw_norm": (l, d)})
  if cfg.qk_norm:
    shapes.update({"layers/q_norm": (l, h), "layers/k_norm": (l, h)})
  if not cfg.tied_embeddings:
    shapes["lm_head"] = (cfg.vocab_size, d)
  return shapes


def prepare_params(cfg: GemmaConfig, params: Params, dtype: Any = jnp.float32) -> Params:
  """Validates canonical params against the config and adds the derived constants (RoPE, sliding flags)."""
  shapes = param_shapes(cfg)
  flat = {"embed": params.get("embed"), "final_norm": params.get("final_norm"), "lm_head": params.get("lm_head")}
  for k, v in (params.get("layers") or {}).items():
    flat[f"layers/{k}"] = v
  for name, shape in shapes.items():
    if flat.get(name) is None:
      raise SpaeInputError(f"checkpoint is missing tensor {name!r} (expected shape {shape}).")
    got = tuple(np.shape(flat[name]))
    if got != shape:
      raise SpaeInputError(f"tensor {name!r} has shape {got} but the config needs {shape}; the checkpoint does "
                           "not match its config.")
  def put(k: str) -> jax.Array:  # matrices in `dtype`, norm scales in float32
    return jnp.asarray(flat[k], dtype if np.ndim(flat[k]) >= 2 + k.startswith("layers/") else jnp.float32)

  out: Params = {"embed": put("embed"), "final_norm": put("final_norm"),
                 "layers": {k[7:]: put(k) for k in shapes if k.startswith("layers/")}}
  if not cfg.tied_embeddings:
    out["lm_head"] = put("lm_head")
  # The references cast sqrt(d) to the dtype they compute in (gemma: `.astype(x.dtype)`; transformers: the
  # hidden-state / weight dtype at run time). GemmaLM computes in float32, so the factor is float32 too.
  out["embed_scale"] = jnp.asarray(np.sqrt(cfg.embed_dim), jnp.float32)
  out["sliding"] = jnp.asarray([t == "sliding" for t in cfg.layer_types])
  out["inv_freq"] = jnp.asarray(np.stack([
      _inv_freq(cfg.head_dim, cfg.rope_local_base, cfg.rope_local_scaling) if t == "sliding" else
      _inv_freq(cfg.head_dim, cfg.rope_global_base, cfg.rope_global_scaling) for t in cfg.layer_types]))
  return out
