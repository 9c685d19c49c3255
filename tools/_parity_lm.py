"""Parity fixtures for spae.lm: tiny random Gemma 2 / Gemma 3 / LLaMA models run by PyTorch `transformers`.

For each kind this writes tests/fixtures/parity/<kind>/:
  tokenizer.model  a tiny sentencepiece model (shared by both layouts; the loaders look in the parent folder)
  hf/         config.json + model.safetensors (bf16, as `save_pretrained` writes them)
  orbax/      (gemma2, gemma3) the released Gemma orbax layout, converted here from the torch state dict
              independently of spae's loader, + spae_lm.json (non-shape hyperparameters)
  reference.npz  input_ids [B, T] and the transformers logits [B, T, V] (float32, eager attention)
  meta.json   versions and settings

The configs exercise what differs between families: soft caps set low enough to bite, a sliding window shorter
than the input, query_pre_attn_scalar != head_dim, Gemma 3 qk-norm and linear RoPE scaling on global layers,
LLaMA llama3 RoPE scaling and an untied head, GQA everywhere, random norm weights.

Needs torch + transformers (tools only); tests read the files.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

VOCAB = 320
SEQ = 24


def _configs():
  from transformers import Gemma2Config, Gemma3TextConfig, LlamaConfig

  common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, max_position_embeddings=256, pad_token_id=0, eos_token_id=1,
                bos_token_id=2, rms_norm_eps=1e-6)
  return {
      "gemma2": Gemma2Config(**common, sliding_window=6, query_pre_attn_scalar=24, attn_logit_softcapping=5.0,
                             final_logit_softcapping=3.0, layer_types=["sliding_attention", "full_attention"]),
      "gemma3": Gemma3TextConfig(**common, sliding_window=6, query_pre_attn_scalar=24,
                                 layer_types=["sliding_attention", "full_attention"],
                                 rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0,
                                                                     "rope_theta": 1_000_000.0},
                                                  "sliding_attention": {"rope_type": "default",
                                                                        "rope_theta": 10_000.0}}),
      "llama": LlamaConfig(**common, tie_word_embeddings=False,
                           rope_parameters={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0, "original_max_position_embeddings": 16,
                                            "rope_theta": 500_000.0}),
  }


def _model(kind: str, cfg, seed: int):
  import torch
  from transformers import Gemma2ForCausalLM, Gemma3ForCausalLM, LlamaForCausalLM

  cls = {"gemma2": Gemma2ForCausalLM, "gemma3": Gemma3ForCausalLM, "llama": LlamaForCausalLM}[kind]
  cfg._attn_implementation = "eager"  # the exact reference math (soft caps included)
  torch.manual_seed(seed)
  model = cls(cfg).eval()
  gen = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      if name.endswith("norm.weight"):
        base = 0.0 if kind != "llama" else 1.0  # Gemma norms scale by (1 + w)
        p.copy_(base + 0.2 * torch.randn(p.shape, generator=gen))
      else:
        p.copy_(0.3 * torch.randn(p.shape, generator=gen))
      # Round to bf16 so the bf16 safetensors hold exactly the weights the reference ran with.
      p.copy_(p.to(torch.bfloat16).to(torch.float32))
  return model


def _orbax_tree(sd: dict[str, np.ndarray], cfg) -> dict:
  """transformers state dict -> released Gemma orbax layout (google-deepmind/gemma `_modules.py` shapes)."""
  d, n, k, h = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
  tree = {"transformer/embedder": {"input_embedding": sd["model.embed_tokens.weight"]},
          "transformer/final_norm": {"scale": sd["model.norm.weight"]}}
  for i in range(cfg.num_hidden_layers):
    p, o = f"model.layers.{i}.", f"transformer/layer_{i}/"
    # q_proj is [N*H, d] with rows (head, dim); Gemma's q_einsum is [N, d, H].
    q = np.einsum("nhd->ndh", sd[p + "self_attn.q_proj.weight"].reshape(n, h, d))
    kk = np.einsum("khd->kdh", sd[p + "self_attn.k_proj.weight"].reshape(k, h, d))
    vv = np.einsum("khd->kdh", sd[p + "self_attn.v_proj.weight"].reshape(k, h, d))
    tree[o + "attn/q_einsum"] = {"w": q}
    tree[o + "attn/kv_einsum"] = {"w": np.stack([kk, vv])}  # [2, K, d, H]
    # o_proj is [d, N*H]; attn_vec_einsum is [N, H, d].
    tree[o + "attn/attn_vec_einsum"] = {"w": np.einsum("dnh->nhd", sd[p + "self_attn.o_proj.weight"].reshape(d, n, h))}
    # gating_einsum [2, F, d] (transpose_gating_einsum=True): index 0 goes through gelu, index 1 is linear.
    tree[o + "mlp/gating_einsum"] = {"w": np.stack([sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"]])}
    tree[o + "mlp/linear"] = {"w": sd[p + "mlp.down_proj.weight"].T}  # [F, d]
    for hf_name, gm_name in (("input_layernorm", "pre_attention_norm"),
                             ("post_attention_layernorm", "post_attention_norm"),
                             ("pre_feedforward_layernorm", "pre_ffw_norm"),
                             ("post_feedforward_layernorm", "post_ffw_norm")):
      tree[o + gm_name] = {"scale": sd[p + hf_name + ".weight"]}
    if p + "self_attn.q_norm.weight" in sd:
      tree[o + "attn/_query_norm"] = {"scale": sd[p + "self_attn.q_norm.weight"]}
      tree[o + "attn/_key_norm"] = {"scale": sd[p + "self_attn.k_norm.weight"]}
  return tree


def _sidecar(kind: str, cfg) -> dict:
  side = {"family": kind, "sliding_window": cfg.sliding_window, "query_pre_attn_scalar": cfg.query_pre_attn_scalar,
          "max_length": cfg.max_position_embeddings,
          "layer_types": ["sliding" if t == "sliding_attention" else "global" for t in cfg.layer_types]}
  if kind == "gemma2":
    side.update(attn_softcap=cfg.attn_logit_softcapping, final_softcap=cfg.final_logit_softcapping)
  else:
    rp = cfg.rope_parameters
    side.update(rope_global_base=rp["full_attention"]["rope_theta"],
                rope_local_base=rp["sliding_attention"]["rope_theta"],
                rope_global_scaling={"rope_type": "linear", "factor": rp["full_attention"]["factor"]})
  return side


def make_lm_fixtures(out_dir: Path, only: set[str]) -> list[Path]:
  import ml_dtypes
  import orbax.checkpoint as ocp
  import torch
  import transformers

  from spae.lm.testing import train_sentencepiece

  written = []
  tok_dir = out_dir / ".tok"
  tok = train_sentencepiece(tok_dir, VOCAB, seed=0)
  for seed, (kind, cfg) in enumerate(_configs().items()):
    if kind not in only:
      continue
    dest = out_dir / kind
    if dest.exists():
      shutil.rmtree(dest)
    model = _model(kind, cfg, seed)
    rng = np.random.default_rng(100 + seed)
    ids = rng.integers(4, VOCAB, size=(2, SEQ))
    ids[:, 0] = 2  # BOS
    # Reference first, in float32: casting the module to bf16 would also round buffers (RoPE inv_freq).
    with torch.no_grad():
      logits = model(torch.as_tensor(ids)).logits.float().numpy()
    sd = {k: v.detach().float().numpy().copy() for k, v in model.state_dict().items()}
    model.to(torch.bfloat16).save_pretrained(dest / "hf", safe_serialization=True)
    shutil.copy(tok, dest / "tokenizer.model")  # one copy; both loaders also look in the parent folder
    np.savez_compressed(dest / "reference.npz", input_ids=ids.astype(np.int32), logits=logits.astype(np.float32))
    if kind != "llama":
      tree = _orbax_tree(sd, cfg)
      tree = {k: {kk: vv.astype(ml_dtypes.bfloat16) for kk, vv in v.items()} for k, v in tree.items()}
      ocp.PyTreeCheckpointer().save(str((dest / "orbax").absolute()), tree)
      (dest / "orbax" / "spae_lm.json").write_text(json.dumps(_sidecar(kind, cfg), indent=1))
    (dest / "meta.json").write_text(json.dumps({
        "kind": kind, "torch": torch.__version__, "transformers": transformers.__version__, "seed": seed,
        "attn_implementation": "eager", "weights": "bf16-rounded, reference run in float32",
        "logits_abs_max": float(np.abs(logits).max())}, indent=1))
    written.append(dest)
    print(f"wrote {dest} (|logits| max {np.abs(logits).max():.3f})")
  shutil.rmtree(tok_dir, ignore_errors=True)
  return written
