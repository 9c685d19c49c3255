"""Builds the teacher parity fixtures: tiny random PyTorch `transformers` models in official formats.

For each of CLIP (HF safetensors folder), BERT (HF safetensors folder, sentence-transformers key names) and
SigLIP (big_vision npz + sentencepiece model) this writes the checkpoint, its tokenizer files and a
`reference.npz` holding inputs and the reference outputs computed by `transformers` on CPU. spae's tests read
only these files (CI has no torch).

  python tools/_parity_teachers.py OUT_DIR [clip bert siglip]

OUT_DIR is the parity root (tests/fixtures/parity); each model goes into OUT_DIR/<name>/.
"""

from __future__ import annotations

import collections
import io
import json
import pathlib
import sys

import numpy as np

ALL = ("clip", "bert", "siglip")

# Ordinary lowercase-ish ASCII sentences: the tokenizers must agree with transformers' on these exactly.
SENTENCES = [
  "a photo of a cat.",
  "a bad photo of the dog",
  "itap of 2 red birds!",
  "Hello World's best  photo, of a  small house",
  "art of the large tree; a photo of the small car",
  "the cats and dogs are playing with 42 balls",
  "a blurry photo of a bird's nest?!",
  "dog",
]

# Words the tiny tokenizers are built from (also the source of the sentences above).
WORDS = ("a photo of the cat dog bird red small large art itap bad blurry house tree car cats dogs are "
         "playing with balls nest hello world best and in on big picture image painting sketch").split()


def make_teacher_fixtures(out_dir: pathlib.Path, only: set[str] | None = None) -> None:
  """Writes OUT_DIR/{clip,bert,siglip}/ (those named in `only`; all when empty)."""
  import torch

  torch.set_num_threads(1)
  out_dir = pathlib.Path(out_dir)
  names = [n for n in ALL if not only or n in only]
  unknown = set(only or ()) - set(ALL)
  if unknown:
    raise ValueError(f"unknown teacher fixtures {sorted(unknown)}; choose from {ALL}.")
  for name in names:
    d = out_dir / name
    d.mkdir(parents=True, exist_ok=True)
    for f in d.iterdir():
      if f.is_file():
        f.unlink()
    {"clip": _make_clip, "bert": _make_bert, "siglip": _make_siglip}[name](d)
    total = sum(f.stat().st_size for f in d.iterdir())
    print(f"wrote {d} ({total / 1024:.0f} KiB)")


# ------------------------------------------------------------------------------------------------ helpers
def _randomize(model, seed: int, std: float = 0.2) -> None:
  """Replaces HF's tiny-std init with O(0.1) weights so every tensor visibly moves the outputs."""
  import torch

  g = torch.Generator().manual_seed(seed)
  with torch.no_grad():
    for name, p in model.named_parameters():
      noise = torch.randn(p.shape, generator=g) * std
      if "norm" in name.lower() and name.endswith("weight"):
        p.copy_(1.0 + noise)
      elif "logit_scale" in name:
        p.fill_(float(np.log(10.0)))
      elif "logit_bias" in name:
        p.fill_(-3.0)
      else:
        p.copy_(noise)


def _images(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
  """Smooth-ish random images in [0, 1], NHWC float32."""
  base = rng.uniform(0, 1, (n, size // 4, size // 4, 3))
  img = np.repeat(np.repeat(base, 4, axis=1), 4, axis=2)
  img = np.clip(img + rng.normal(0, 0.05, img.shape), 0, 1)
  return img.astype(np.float32)


def _save_npz(path: pathlib.Path, **arrays) -> None:
  with open(path, "wb") as f:
    np.savez(f, **arrays)


# ------------------------------------------------------------------------------------------------ CLIP
def _bytes_to_unicode() -> dict[int, str]:
  # GPT-2 / CLIP byte -> printable-unicode table.
  bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1)) + \
      list(range(ord("\xae"), ord("\xff") + 1))
  cs = bs[:]
  n = 0
  for b in range(256):
    if b not in bs:
      bs.append(b)
      cs.append(256 + n)
      n += 1
  return dict(zip(bs, map(chr, cs)))


def _train_bpe(words: list[str], num_merges: int) -> list[tuple[str, str]]:
  """Greedy most-frequent-pair BPE over words ending in '</w>' (CLIP's convention)."""
  counts = collections.Counter(words)
  seqs = {w: list(w[:-1]) + [w[-1] + "</w>"] for w in counts}
  merges = []
  for _ in range(num_merges):
    pairs = collections.Counter()
    for w, s in seqs.items():
      for a, b in zip(s, s[1:]):
        pairs[a, b] += counts[w]
    if not pairs:
      break
    best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
    merges.append(best)
    for w, s in seqs.items():
      out, i = [], 0
      while i < len(s):
        if i + 1 < len(s) and (s[i], s[i + 1]) == best:
          out.append(s[i] + s[i + 1])
          i += 2
        else:
          out.append(s[i])
          i += 1
      seqs[w] = out
  return merges


def _make_clip(d: pathlib.Path) -> None:
  import torch
  from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

  byte_chars = list(_bytes_to_unicode().values())
  corpus = WORDS * 3 + ["photo", "photo", "the", "of"] * 5 + ["s", "'s", "2", "42", "!", ".", ","]
  merges = _train_bpe(corpus, 70)
  vocab_list = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
  vocab_list += ["<|startoftext|>", "<|endoftext|>"]
  vocab = {t: i for i, t in enumerate(vocab_list)}
  assert len(vocab) == len(vocab_list), "duplicate BPE tokens"
  (d / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
  (d / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
  bos, eos = vocab["<|startoftext|>"], vocab["<|endoftext|>"]
  max_len = 16
  tok_cfg = {"model_max_length": max_len, "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>",
             "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer"}
  (d / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=1))

  config = CLIPConfig(
      text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=max_len, bos_token_id=bos,
                       eos_token_id=eos, pad_token_id=eos),
      vision_config=dict(hidden_size=40, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4,
                         image_size=32, patch_size=8),
      projection_dim=24)
  torch.manual_seed(0)
  model = CLIPModel(config).eval()
  _randomize(model, seed=1)
  model.save_pretrained(d, safe_serialization=True)

  tok = CLIPTokenizer.from_pretrained(str(d))
  enc = tok(SENTENCES, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt")
  raw_ids = [tok(s)["input_ids"] for s in SENTENCES]
  rng = np.random.default_rng(0)
  images = _images(rng, 3, 32)
  mean = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
  std = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)
  pixels = (images - mean) / std
  with torch.no_grad():
    img = model.get_image_features(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2)).pooler_output
    txt = model.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).pooler_output
  _save_npz(d / "reference.npz", texts=np.array(SENTENCES), input_ids=enc["input_ids"].numpy(),
            token_lengths=np.array([len(r) for r in raw_ids]), images=images,
            image_embeds=img.numpy(), text_embeds=txt.numpy(),
            logit_scale=model.logit_scale.detach().numpy())


# ------------------------------------------------------------------------------------------------ BERT
def _make_bert(d: pathlib.Path) -> None:
  import torch
  from transformers import BertConfig, BertModel, BertTokenizer
  from transformers.models.bert.tokenization_bert import load_vocab

  special = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
  punct = list("!\"'(),-.:;?")
  letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789")
  pieces = ["##s", "##ing", "##ed", "##er", "##est", "##y", "##e", "##a", "##t", "##o", "##n"]
  words = sorted(set(WORDS) | {"play", "cafe", "run", "fast", "house", "paint"})
  vocab = special + punct + letters + words + pieces
  (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
  (d / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}))
  (d / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 20, "do_lower_case": False}))

  config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=48, max_position_embeddings=24, type_vocab_size=2)
  torch.manual_seed(0)
  model = BertModel(config, add_pooling_layer=False).eval()
  _randomize(model, seed=2)
  model.save_pretrained(d, safe_serialization=True)

  tok = BertTokenizer(vocab=dict(load_vocab(str(d / "vocab.txt"))), do_lower_case=True)
  assert tok.convert_tokens_to_ids("[CLS]") == vocab.index("[CLS]")
  texts = SENTENCES + ["Café RUNNING faster; painted houses", "unknownword xyz 中 played", "the  ,  end"]
  enc = tok(texts, padding=True, truncation=True, max_length=20, return_tensors="pt")
  with torch.no_grad():
    hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                   token_type_ids=torch.zeros_like(enc["input_ids"])).last_hidden_state
  mask = enc["attention_mask"].unsqueeze(-1).float()
  mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
  normed = torch.nn.functional.normalize(mean, p=2, dim=1)
  _save_npz(d / "reference.npz", texts=np.array(texts), input_ids=enc["input_ids"].numpy(),
            attention_mask=enc["attention_mask"].numpy(), last_hidden_state=hidden.numpy(),
            mean_pooled=mean.numpy(), normalized=normed.numpy())


# ------------------------------------------------------------------------------------------------ SigLIP
def _train_sentencepiece(path: pathlib.Path) -> None:
  import sentencepiece as spm

  lines = [" ".join(WORDS[i:] + WORDS[:i]) for i in range(len(WORDS))] + [s.lower() for s in SENTENCES] * 3
  buf = io.BytesIO()
  # T5/c4_en id layout (pad 0, eos 1, unk 2, no bos), as in the SigLIP English checkpoints.
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(lines), model_writer=buf, vocab_size=64, model_type="unigram",
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1, character_coverage=1.0, num_threads=1,
      normalization_rule_name="identity", minloglevel=2)
  path.write_bytes(buf.getvalue())


def _qkv_to_flax(w, b, heads: int):
  """torch Linear (H*hd, D) -> flax DenseGeneral kernel (D, H, hd), bias (H, hd)."""
  w = w.T
  return w.reshape(w.shape[0], heads, -1), b.reshape(heads, -1)


def _out_to_flax(w, b, heads: int):
  """torch Linear (D, H*hd) -> flax DenseGeneral kernel (H, hd, D), bias (D,)."""
  w = w.T
  return w.reshape(heads, -1, w.shape[1]), b


def _siglip_to_big_vision(sd: dict[str, np.ndarray], vheads: int, theads: int, vlayers: int,
                          tlayers: int) -> dict[str, np.ndarray]:
  """transformers SiglipModel state dict -> big_vision two_towers npz keys (inverse of HF's converter)."""
  out = {}

  def block(prefix_bv: str, prefix_hf: str, heads: int):
    g = lambda k: sd[f"{prefix_hf}.{k}"]
    out[f"{prefix_bv}/LayerNorm_0/scale"] = g("layer_norm1.weight")
    out[f"{prefix_bv}/LayerNorm_0/bias"] = g("layer_norm1.bias")
    out[f"{prefix_bv}/LayerNorm_1/scale"] = g("layer_norm2.weight")
    out[f"{prefix_bv}/LayerNorm_1/bias"] = g("layer_norm2.bias")
    for bv, hf in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
      k, b = _qkv_to_flax(g(f"self_attn.{hf}.weight"), g(f"self_attn.{hf}.bias"), heads)
      out[f"{prefix_bv}/MultiHeadDotProductAttention_0/{bv}/kernel"] = k
      out[f"{prefix_bv}/MultiHeadDotProductAttention_0/{bv}/bias"] = b
    k, b = _out_to_flax(g("self_attn.out_proj.weight"), g("self_attn.out_proj.bias"), heads)
    out[f"{prefix_bv}/MultiHeadDotProductAttention_0/out/kernel"] = k
    out[f"{prefix_bv}/MultiHeadDotProductAttention_0/out/bias"] = b
    for i, fc in enumerate(("fc1", "fc2")):
      out[f"{prefix_bv}/MlpBlock_0/Dense_{i}/kernel"] = g(f"mlp.{fc}.weight").T
      out[f"{prefix_bv}/MlpBlock_0/Dense_{i}/bias"] = g(f"mlp.{fc}.bias")

  v = "vision_model"
  out["img/embedding/kernel"] = sd[f"{v}.embeddings.patch_embedding.weight"].transpose(2, 3, 1, 0)
  out["img/embedding/bias"] = sd[f"{v}.embeddings.patch_embedding.bias"]
  out["img/pos_embedding"] = sd[f"{v}.embeddings.position_embedding.weight"][None]
  for i in range(vlayers):
    block(f"img/Transformer/encoderblock_{i}", f"{v}.encoder.layers.{i}", vheads)
  out["img/Transformer/encoder_norm/scale"] = sd[f"{v}.post_layernorm.weight"]
  out["img/Transformer/encoder_norm/bias"] = sd[f"{v}.post_layernorm.bias"]
  h = f"{v}.head"
  out["img/MAPHead_0/probe"] = sd[f"{h}.probe"]
  wq, wk, wv = np.split(sd[f"{h}.attention.in_proj_weight"], 3, axis=0)
  bq, bk, bv = np.split(sd[f"{h}.attention.in_proj_bias"], 3, axis=0)
  for name, w, b in (("query", wq, bq), ("key", wk, bk), ("value", wv, bv)):
    k, bb = _qkv_to_flax(w, b, vheads)
    out[f"img/MAPHead_0/MultiHeadDotProductAttention_0/{name}/kernel"] = k
    out[f"img/MAPHead_0/MultiHeadDotProductAttention_0/{name}/bias"] = bb
  k, b = _out_to_flax(sd[f"{h}.attention.out_proj.weight"], sd[f"{h}.attention.out_proj.bias"], vheads)
  out["img/MAPHead_0/MultiHeadDotProductAttention_0/out/kernel"] = k
  out["img/MAPHead_0/MultiHeadDotProductAttention_0/out/bias"] = b
  out["img/MAPHead_0/LayerNorm_0/scale"] = sd[f"{h}.layernorm.weight"]
  out["img/MAPHead_0/LayerNorm_0/bias"] = sd[f"{h}.layernorm.bias"]
  for i, fc in enumerate(("fc1", "fc2")):
    out[f"img/MAPHead_0/MlpBlock_0/Dense_{i}/kernel"] = sd[f"{h}.mlp.{fc}.weight"].T
    out[f"img/MAPHead_0/MlpBlock_0/Dense_{i}/bias"] = sd[f"{h}.mlp.{fc}.bias"]

  t = "text_model"
  out["txt/Embed_0/embedding"] = sd[f"{t}.embeddings.token_embedding.weight"]
  out["txt/pos_embedding"] = sd[f"{t}.embeddings.position_embedding.weight"][None]
  for i in range(tlayers):
    block(f"txt/Encoder_0/encoderblock_{i}", f"{t}.encoder.layers.{i}", theads)
  out["txt/Encoder_0/encoder_norm/scale"] = sd[f"{t}.final_layer_norm.weight"]
  out["txt/Encoder_0/encoder_norm/bias"] = sd[f"{t}.final_layer_norm.bias"]
  out["txt/head/kernel"] = sd[f"{t}.head.weight"].T
  out["txt/head/bias"] = sd[f"{t}.head.bias"]
  out["t"] = sd["logit_scale"].reshape(1)
  out["b"] = sd["logit_bias"].reshape(1)
  return {f"params/{k}": np.ascontiguousarray(v, np.float32) for k, v in out.items()}


def _make_siglip(d: pathlib.Path) -> None:
  import torch
  from transformers import SiglipConfig, SiglipModel, SiglipTokenizer

  _train_sentencepiece(d / "siglip.model")
  tok = SiglipTokenizer(vocab_file=str(d / "siglip.model"), model_max_length=10)
  vocab_size = tok.vocab_size
  max_len = 10
  config = SiglipConfig(
      text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                       num_attention_heads=4, max_position_embeddings=max_len, projection_size=40,
                       pad_token_id=1, eos_token_id=1, bos_token_id=None),
      vision_config=dict(hidden_size=40, intermediate_size=56, num_hidden_layers=2, num_attention_heads=4,
                         image_size=32, patch_size=8))
  torch.manual_seed(0)
  model = SiglipModel(config).eval()
  _randomize(model, seed=3)
  sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
  params = _siglip_to_big_vision(sd, 4, 4, 2, 2)
  _save_npz(d / "siglip.npz", **params)

  enc = tok(SENTENCES, padding="max_length", max_length=max_len, truncation=True, return_tensors="pt")
  rng = np.random.default_rng(1)
  images = _images(rng, 3, 32)
  pixels = (images - 0.5) / 0.5
  with torch.no_grad():
    img = model.get_image_features(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2)).pooler_output
    txt = model.get_text_features(input_ids=enc["input_ids"]).pooler_output
  _save_npz(d / "reference.npz", texts=np.array(SENTENCES), input_ids=enc["input_ids"].numpy(),
            images=images, image_embeds=img.numpy(), text_embeds=txt.numpy())


if __name__ == "__main__":
  if len(sys.argv) < 2:
    sys.exit(__doc__)
  make_teacher_fixtures(pathlib.Path(sys.argv[1]), set(sys.argv[2:]))
