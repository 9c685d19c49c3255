"""Throughput of spae (JAX) next to PyTorch baselines of the same shape, measured in one run.

  encoder   images/s of the CNN encoder alone: spae's Encoder vs a PyTorch MaskGIT/taming-style encoder with
            the same channels, multipliers, residual blocks, GroupNorm, swish and average-pool downsampling;
  encode    encoder + quantizer: spae's SAQ pyramid (597 tokens per image at the default pyramid) vs the VQGAN's
            learned nearest-codebook VQ of the same codebook size and dim (one token per latent position);
  decode    ids -> image: spae's reconstruction from all layers + Decoder vs the VQGAN's lookup + decoder
            (nearest upsampling + conv, like spae);
  quantizer tokens/s of nearest-codeword search for every latent position of the batch: spae.nearest_tokens vs
            vector-quantize-pytorch's VectorQuantize(dim, codebook_size, freeze_codebook=True) in eval mode and
            the plain torch argmin the VQGAN uses; plus spae.saq_quantize for the whole pyramid.

Every row gives images/s (or tokens/s), achieved GFLOP/s from FLOPs counted analytically (convolutions and the
distance matmuls; norms and activations not counted) as a fraction of a 2048³ f32 matmul measured in the same run
(_common.matmul_gflops), and the ratio against its PyTorch baseline. The PyTorch networks get spae's random
weights copied in, and their outputs are compared with spae's (`parity` in the JSON): the baselines compute the
same functions. PyTorch baselines are skipped, with a note, when torch or vector_quantize_pytorch is missing.

  python benchmarks/speed.py                         # default tokenizer config (see --help), ~2-4 min on 2 cores
  python benchmarks/speed.py --smoke --out s.json    # tiny, for CI
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ configuration
def resolve_config(a: argparse.Namespace) -> tuple[Any, np.ndarray, Any, str]:
  """(TokenizerConfig, codebook [V, d], trained model or None, description). A tokenizer's codebook is the codes its
  quantizer searches (`Tokenizer.codebook`: the frozen table as its codebook config scores it, narrower than the
  table's rows under a learned projection)."""
  import spae

  if a.smoke:
    # As the shipped default does: codes through a learned projection (narrower than the table) and pooled top
    # layers, so the smoke run takes the path a trained tokenizer takes.
    from spae._codebook import CodebookConfig

    cfg = spae.tiny_config(dim=8)
    cfg = dataclasses.replace(cfg, codebook=CodebookConfig("projected", dim=8),
                              pyramid=dataclasses.replace(cfg.pyramid, pooled_layers=2))
    tok = spae.Tokenizer(cfg, spae.tiny_vocabulary(32), seed=0)
    return cfg, np.asarray(tok.codebook), tok.model, ("smoke: spae.tiny_config() with 8-dim projected codes and pooled "
                                                  "top layers, tiny_vocabulary(32)")
  if a.tokenizer:
    tok = spae.Tokenizer.load(a.tokenizer)
    return tok.config, np.asarray(tok.codebook), tok.model, f"tokenizer {a.tokenizer}"
  try:
    from spae.assets import default_tokenizer
    tok = default_tokenizer()
    return tok.config, np.asarray(tok.codebook), tok.model, "spae.assets.default_tokenizer()"
  except (ImportError, FileNotFoundError, spae.SpaeInputError):
    pass

  spec = importlib.util.spec_from_file_location("shapes64_config", REPO / "configs" / "shapes64.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  cfg = mod.get_config().tokenizer
  cfg = dataclasses.replace(cfg, autoencoder=dataclasses.replace(cfg.autoencoder, latent_dim=a.dim))
  cb = np.random.default_rng(0).standard_normal((a.vocab, a.dim)).astype(np.float32)
  return cfg, cb, None, (f"stand-in (default tokenizer not shipped): configs/shapes64.py TokenizerConfig with "
                         f"latent_dim={a.dim}, random {a.vocab} x {a.dim} codebook")


def conv_flops(cfg: Any, image_size: int) -> dict[str, float]:
  """FLOPs (2 per multiply-add) of the convolutions of spae's Encoder and Decoder for one image."""
  ae = cfg.autoencoder if hasattr(cfg, "autoencoder") else cfg
  ch, mults, nrb, d = ae.channels, ae.channel_multipliers, ae.num_res_blocks, ae.latent_dim
  conv = lambda res, k, cin, cout: 2.0 * res * res * k * k * cin * cout  # noqa: E731

  def block(res, cin, cout):
    return conv(res, 3, cin, cout) + conv(res, 3, cout, cout) + (conv(res, 1, cin, cout) if cin != cout else 0.0)

  enc, res, cin = conv(image_size, 3, 3, ch * mults[0]), image_size, ch * mults[0]
  for i, m in enumerate(mults):
    for _ in range(nrb):
      enc += block(res, cin, ch * m)
      cin = ch * m
    if i < len(mults) - 1:
      res //= 2
  enc += nrb * block(res, cin, cin) + conv(res, 1, cin, d)
  cin = ch * mults[-1]
  dec = conv(res, 1, d, cin) + conv(res, 3, cin, cin) + nrb * block(res, cin, cin)
  for i, m in enumerate(reversed(mults)):
    for _ in range(nrb):
      dec += block(res, cin, ch * m)
      cin = ch * m
    if i < len(mults) - 1:
      res *= 2
      dec += conv(res, 3, cin, cin)
  dec += conv(res, 3, cin, 3)
  return {"encoder": enc, "decoder": dec}


# ------------------------------------------------------------------------------------------ PyTorch baseline
def torch_modules(disabled: bool, find_only: bool = False) -> tuple[Any, Any, str | None]:
  """(torch, vector_quantize_pytorch, note): modules (or True with find_only) are None, with a note saying why,
  when unavailable."""
  if disabled:
    return None, None, "PyTorch baselines skipped: --no-torch"
  if find_only:
    if importlib.util.find_spec("torch") is None:
      return None, None, "PyTorch baselines skipped: torch is not installed (pip install 'spae[bench]')"
    if importlib.util.find_spec("vector_quantize_pytorch") is None:
      return True, None, "vector-quantize-pytorch baseline skipped: not installed (see benchmarks/README.md)"
    return True, True, None
  try:
    import torch
  except ImportError:
    return None, None, "PyTorch baselines skipped: torch is not installed (pip install 'spae[bench]')"
  try:
    import vector_quantize_pytorch
  except ImportError:
    return torch, None, ("vector-quantize-pytorch baseline skipped: not installed (pip install --no-deps "
                         "vector-quantize-pytorch einx einops loguru torch-einops-utils frozendict)")
  return torch, vector_quantize_pytorch, None


def build_torch_vqgan(torch: Any, ae: dict[str, Any], vocab: int) -> Any:
  """A taming/MaskGIT-style VQGAN in PyTorch with spae's architecture, parameter names and a learned codebook.

  `ae` holds AutoencoderConfig's fields (channels, channel_multipliers, num_res_blocks, latent_dim, norm_groups).
  """
  nn, F = torch.nn, torch.nn.functional
  ae = argparse.Namespace(**ae)
  gn = lambda c: nn.GroupNorm(math.gcd(c, ae.norm_groups), c, eps=1e-6)  # noqa: E731  (flax's epsilon)

  class ResBlock(nn.Module):
    def __init__(self, cin, cout):
      super().__init__()
      self.norm1, self.conv1 = gn(cin), nn.Conv2d(cin, cout, 3, padding=1, bias=False)
      self.norm2, self.conv2 = gn(cout), nn.Conv2d(cout, cout, 3, padding=1, bias=False)
      self.shortcut = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else None

    def forward(self, x):
      h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
      return (self.shortcut(x) if self.shortcut is not None else x) + h

  ch, mults, nrb = ae.channels, ae.channel_multipliers, ae.num_res_blocks

  class Encoder(nn.Module):
    def __init__(self):
      super().__init__()
      cin = ch * mults[0]
      self.conv_in = nn.Conv2d(3, cin, 3, padding=1)
      levels = []
      for m in mults:
        level = []
        for _ in range(nrb):
          level.append(ResBlock(cin, ch * m))
          cin = ch * m
        levels.append(nn.ModuleList(level))
      self.levels = nn.ModuleList(levels)
      self.mid = nn.ModuleList([ResBlock(cin, cin) for _ in range(nrb)])
      self.norm_out, self.proj = gn(cin), nn.Conv2d(cin, ae.latent_dim, 1)

    def forward(self, x):
      h = self.conv_in(x)
      for i, level in enumerate(self.levels):
        for b in level:
          h = b(h)
        if i < len(self.levels) - 1:
          h = F.avg_pool2d(h, 2)
      for b in self.mid:
        h = b(h)
      return self.proj(F.silu(self.norm_out(h)))

  class Decoder(nn.Module):
    def __init__(self):
      super().__init__()
      cin = ch * mults[-1]
      self.proj, self.conv_in = nn.Conv2d(ae.latent_dim, cin, 1), nn.Conv2d(cin, cin, 3, padding=1)
      self.mid = nn.ModuleList([ResBlock(cin, cin) for _ in range(nrb)])
      levels, ups = [], []
      for i, m in enumerate(reversed(mults)):
        level = []
        for _ in range(nrb):
          level.append(ResBlock(cin, ch * m))
          cin = ch * m
        levels.append(nn.ModuleList(level))
        if i < len(mults) - 1:
          ups.append(nn.Conv2d(cin, cin, 3, padding=1))
      self.levels, self.up_convs = nn.ModuleList(levels), nn.ModuleList(ups)
      self.norm_out, self.conv_out = gn(cin), nn.Conv2d(cin, 3, 3, padding=1)

    def forward(self, z):
      h = self.conv_in(self.proj(z))
      for b in self.mid:
        h = b(h)
      for i, level in enumerate(self.levels):
        for b in level:
          h = b(h)
        if i < len(self.up_convs):
          h = self.up_convs[i](F.interpolate(h, scale_factor=2, mode="nearest"))
      return self.conv_out(F.silu(self.norm_out(h)))

  class VQGAN(nn.Module):
    def __init__(self):
      super().__init__()
      self.encoder, self.decoder = Encoder(), Decoder()
      self.codebook = nn.Embedding(vocab, ae.latent_dim)  # learned in a VQGAN; here holding spae's rows

    def quantize(self, z):  # [B, d, h, w] -> ids [B, h, w]
      b, d, h, w = z.shape
      flat = z.permute(0, 2, 3, 1).reshape(-1, d)
      e = self.codebook.weight
      dist = (e * e).sum(1)[None] - 2.0 * flat @ e.t()
      return dist.argmin(1).reshape(b, h, w)

    def encode(self, x):  # NCHW in [-1, 1] -> ids
      return self.quantize(self.encoder(x))

    def decode(self, ids):
      return self.decoder(self.codebook(ids).permute(0, 3, 1, 2))

  return VQGAN().eval()


def torch_state_from_spae(model: Any, codebook: np.ndarray) -> dict[str, np.ndarray]:
  """spae's nnx Autoencoder params (and the codebook) under the torch baseline's names and layouts."""
  from flax import nnx

  out: dict[str, np.ndarray] = {"codebook.weight": np.asarray(codebook, np.float32)}

  def walk(t, prefix):
    for k, v in t.items():
      if isinstance(v, dict):
        walk(v, f"{prefix}{k}.")
        continue
      base, v = f"{prefix}{k}".rsplit(".", 1)[0], np.asarray(v, np.float32)
      if k == "kernel":
        out[f"{base}.weight"] = np.ascontiguousarray(np.transpose(v, (3, 2, 0, 1)))  # HWIO -> OIHW
      elif k == "scale":
        out[f"{base}.weight"] = v
      else:
        out[f"{prefix}{k}"] = v

  # Only the networks: a tokenizer's codebook projection and pooling scorer have no counterpart in the baselines
  # (the codes they make are `codebook` already).
  params = nnx.state(model, nnx.Param).to_pure_dict()
  walk({k: params[k] for k in ("encoder", "decoder")}, "")
  return out


def torch_worker(work: Path) -> None:
  """Times the PyTorch baselines in a process of their own: PyTorch's OpenMP threads slow down ~100x when XLA's
  thread pool lives in the same process on a small CPU, which would make the comparison meaningless."""
  import json

  spec = json.loads((work / "spec.json").read_text())
  torch, vqp, note = torch_modules(False)
  if torch is None:
    raise SystemExit(note)
  torch.set_num_threads(os.cpu_count() or 1)
  tm = build_torch_vqgan(torch, spec["autoencoder"], spec["vocab"])
  with np.load(work / "params.npz", allow_pickle=False) as f:
    params = {k: torch.from_numpy(f[k]) for k in f.files}
  tm.load_state_dict(params, strict=True)  # raises on any missing, extra or mis-shaped tensor
  x = np.load(work / "x.npy", allow_pickle=False)
  b, tokens, d, reps = x.shape[0], spec["tokens_vq"], spec["dim"], spec["repeats"]
  xt = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
  times: dict[str, float] = {}
  outs: dict[str, np.ndarray] = {}
  tf = lambda f: _common.time_fn(f, warmup=2, repeats=reps)  # noqa: E731
  with torch.inference_mode():
    zt = tm.encoder(xt)
    ids_t = tm.encode(xt)
    outs["z"] = zt.permute(0, 2, 3, 1).numpy()
    outs["ids"] = ids_t.numpy()
    outs["image"] = tm.decode(ids_t).permute(0, 2, 3, 1).numpy()
    times["encoder"] = tf(lambda: tm.encoder(xt))
    times["encode"] = tf(lambda: tm.encode(xt))
    times["decode"] = tf(lambda: tm.decode(ids_t))
    times["argmin"] = tf(lambda: tm.quantize(zt))
    info = {"torch": torch.__version__, "threads": torch.get_num_threads(),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")}
    if vqp is not None:
      vq = vqp.VectorQuantize(dim=d, codebook_size=spec["vocab"], freeze_codebook=True).eval()
      vq._codebook.embed.copy_(params["codebook.weight"][None])
      zseq = zt.permute(0, 2, 3, 1).reshape(b, tokens, d).contiguous()
      outs["vq_ids"] = vq(zseq)[1].numpy().reshape(-1)
      times["vector_quantize"] = tf(lambda: vq(zseq))
      info["vector_quantize_pytorch"] = _dist_version("vector-quantize-pytorch")
    else:
      info["note"] = note
  np.savez(work / "outputs.npz", **outs)
  (work / "result.json").write_text(json.dumps({"seconds": times, "info": info}))


def run_torch(model: Any, cfg: Any, codebook: np.ndarray, x: np.ndarray, repeats: int) -> tuple[dict, dict]:
  """Runs `torch_worker` in a subprocess; returns (result JSON, outputs)."""
  import json
  import subprocess
  import tempfile

  with tempfile.TemporaryDirectory() as tmp:
    work = Path(tmp)
    np.savez(work / "params.npz", **torch_state_from_spae(model, codebook))
    np.save(work / "x.npy", x)
    hw = cfg.latent_size
    spec = {"autoencoder": dataclasses.asdict(cfg.autoencoder), "vocab": int(codebook.shape[0]),
            "dim": int(codebook.shape[1]), "tokens_vq": hw * hw, "repeats": repeats}
    (work / "spec.json").write_text(json.dumps(spec))
    # On a loaded small CPU, OpenMP's default spin-then-sleep barriers cost ~30 ms per parallel op whenever another
    # process holds a core (measured here: a 0.5 ms conv took 40 ms with 2 threads); PASSIVE waiting avoids it.
    env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
    res = subprocess.run([sys.executable, __file__, "--torch-worker", str(work)], capture_output=True, text=True,
                         env=env)
    if res.returncode != 0:
      raise SystemExit(f"the PyTorch baseline process failed:\n{res.stderr[-3000:]}")
    with np.load(work / "outputs.npz", allow_pickle=False) as f:
      outs = {k: f[k] for k in f.files}
    return json.loads((work / "result.json").read_text()), outs


# ------------------------------------------------------------------------------------------ main
def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--tokenizer", default=None, help="tokenizer directory whose config and vocabulary to time "
                 "(default: spae.assets.default_tokenizer() if shipped, else a stand-in, see --vocab/--dim)")
  p.add_argument("--vocab", type=int, default=8192, help="stand-in codebook size")
  p.add_argument("--dim", type=int, default=384, help="stand-in codebook dimension")
  p.add_argument("--batch-size", type=int, default=16)
  p.add_argument("--repeats", type=int, default=5, help="timed calls per measurement (median)")
  p.add_argument("--no-torch", action="store_true", help="skip the PyTorch baselines")
  p.add_argument("--smoke", action="store_true", help="tiny sizes for CI")
  p.add_argument("--out", default=None, help="write results as JSON here")
  p.add_argument("--torch-worker", default=None, help=argparse.SUPPRESS)  # internal: the PyTorch process
  a = p.parse_args(argv)
  if a.torch_worker:
    torch_worker(Path(a.torch_worker))
    return 0
  if a.smoke:
    a.batch_size, a.repeats = min(a.batch_size, 2), 1

  import jax
  import jax.numpy as jnp
  from flax import nnx

  import spae
  from spae._nets import Autoencoder

  t_start = time.perf_counter()
  mm = 512 if a.smoke else 2048
  peak_before = _common.matmul_gflops(mm, mm, mm)  # measured again at the end: the machine's load changes
  cfg, codebook, model, desc = resolve_config(a)
  if model is None:
    model = Autoencoder(cfg.autoencoder, rngs=nnx.Rngs(0))
  cb = jnp.asarray(codebook, jnp.float32)
  v, d = cb.shape
  # Plain SAQ on every layer, as the PyTorch baselines quantize: a tokenizer whose top layers pool their blocks and
  # search a semantic sub-vocabulary does that for 5 of its 597 tokens, a negligible share of the search.
  s, b = cfg.image_size, a.batch_size
  spec = dataclasses.replace(cfg.pyramid, semantic_layers=0, semantic_vocab=(), pooled_layers=0)
  hw = cfg.latent_size
  tokens_pyr, tokens_vq = sum(spec.tokens_per_layer()), hw * hw
  flops = conv_flops(cfg, s)
  graphdef, state = nnx.split(model)
  x = np.random.default_rng(1).random((b, s, s, 3), dtype=np.float32) * 2.0 - 1.0  # network input range
  xj = jnp.asarray(x)
  chunk = cfg.vocab_chunk

  enc_net = jax.jit(lambda st, x: nnx.merge(graphdef, st).encoder(x))

  @jax.jit
  def encode(st, cb, x):
    return saq_ids(nnx.merge(graphdef, st).encoder(x), cb)

  def saq_ids(z, cb):
    return spae.saq_quantize(z, cb, spec, vocab_chunk=chunk)[0]

  @jax.jit
  def decode(st, cb, ids):
    r = spae.reconstruct_from_ids(ids, cb, (hw, hw))[-1]
    return nnx.merge(graphdef, st).decoder(r)

  saq = jax.jit(saq_ids)
  z = enc_net(state, xj).block_until_ready()
  ids = encode(state, cb, xj)
  zflat = z.reshape(-1, d)
  ready = jax.block_until_ready
  xla_flops = None
  try:  # XLA's own count for the encoder, as a check on the analytic one
    ca = enc_net.lower(state, xj).compile().cost_analysis()
    ca = ca[0] if isinstance(ca, (list, tuple)) else ca
    xla_flops = float(ca.get("flops", 0.0)) / b or None
  except Exception:  # cost analysis is best-effort and backend dependent
    pass

  tf = lambda f: _common.time_fn(f, warmup=2, repeats=a.repeats)  # noqa: E731
  rows: list[dict[str, Any]] = []

  def add(op, impl, seconds, items, flops_per_call, unit="images"):
    rows.append({"op": op, "impl": impl, "batch": b, "seconds": seconds, f"{unit}_per_s": items / seconds,
                 "gflops": flops_per_call / seconds / 1e9})

  q_pyr = 2.0 * b * tokens_pyr * v * d  # distance matmul FLOPs
  q_vq = 2.0 * b * tokens_vq * v * d
  add("encoder", "spae (jax)", tf(lambda: ready(enc_net(state, xj))), b, b * flops["encoder"])
  add("encode", f"spae SAQ ({tokens_pyr} tok/img)", tf(lambda: ready(encode(state, cb, xj))), b,
      b * flops["encoder"] + q_pyr)
  add("decode", f"spae ({spec.num_layers} layers)", tf(lambda: ready(decode(state, cb, ids))), b,
      b * flops["decoder"])
  add("quantizer", "spae.nearest_tokens", tf(lambda: ready(spae.nearest_tokens(zflat, cb, vocab_chunk=chunk))),
      b * tokens_vq, q_vq, unit="tokens")
  add("pyramid", "spae.saq_quantize", tf(lambda: ready(saq(z, cb))), b * tokens_pyr, q_pyr, unit="tokens")

  # Only look the packages up here: they are imported (and run) in the worker process.
  torch, vqp, note = torch_modules(a.no_torch, find_only=True)
  notes = [note] if note else []
  parity: dict[str, Any] = {}
  torch_info: dict[str, Any] = {}
  if torch is not None:
    res, outs = run_torch(model, cfg, np.asarray(codebook, np.float32), x, a.repeats)
    torch_info, sec = res["info"], res["seconds"]
    # The baselines carry spae's weights: their outputs on this batch must match spae's.
    z_np = np.asarray(z)
    ids_j = np.asarray(spae.nearest_tokens(zflat, cb)).reshape(b, hw, hw)
    parity["encoder_max_abs_diff"] = float(np.abs(outs["z"] - z_np).max())
    parity["encoder_output_max_abs"] = float(np.abs(z_np).max())
    parity["vq_ids_agree"] = float(np.mean(outs["ids"] == ids_j))
    img_j = np.asarray(decode(state, cb, [jnp.asarray(outs["ids"])]))  # spae's decoder on the VQGAN's ids
    parity["decoder_max_abs_diff"] = float(np.abs(outs["image"] - img_j).max())
    add("encoder", "torch", sec["encoder"], b, b * flops["encoder"])
    add("encode", f"torch VQGAN VQ ({tokens_vq} tok/img)", sec["encode"], b, b * flops["encoder"] + q_vq)
    add("decode", "torch VQGAN", sec["decode"], b, b * flops["decoder"])
    add("quantizer", "torch argmin (VQGAN)", sec["argmin"], b * tokens_vq, q_vq, unit="tokens")
    if "vector_quantize" in sec:
      parity["vector_quantize_ids_agree"] = float(np.mean(outs["vq_ids"] == ids_j.reshape(-1)))
      add("quantizer", "vector-quantize-pytorch", sec["vector_quantize"], b * tokens_vq, q_vq, unit="tokens")

  peak_after = _common.matmul_gflops(mm, mm, mm)
  peak = max(peak_before, peak_after)  # the larger one: fractions of it are the conservative ones
  baseline_of = {"encoder": "torch", "encode": "torch VQGAN", "decode": "torch VQGAN",
                 "quantizer": "vector-quantize-pytorch", "pyramid": "vector-quantize-pytorch"}
  for r in rows:
    r["frac_of_matmul"] = r["gflops"] / peak
    if r["impl"].startswith("spae"):
      base = next((q for q in rows if q["op"] == (r["op"] if r["op"] != "pyramid" else "quantizer")
                   and q["impl"].startswith(baseline_of[r["op"]])), None)
      if base is None and r["op"] in ("quantizer", "pyramid"):  # fall back to the plain torch argmin
        base = next((q for q in rows if q["op"] == "quantizer" and q["impl"].startswith("torch")), None)
      if base is not None:
        unit = "images_per_s" if "images_per_s" in r else "tokens_per_s"
        r["vs_torch"] = r[unit] / base[unit]
        r["baseline"] = base["impl"]

  info = _common.machine_info()
  load = os.getloadavg()
  print(f"# speed: {desc}\n# {s}px, pyramid {spec.grids} ({tokens_pyr} tokens), latent {hw}x{hw}, V={v}, d={d}, "
        f"batch {b}; encoder {flops['encoder'] / 1e9:.3f} GFLOP/img (XLA: "
        f"{(xla_flops or 0) / 1e9:.3f}), decoder {flops['decoder'] / 1e9:.3f} GFLOP/img")
  print(f"# {info.get('cpu', '')} ({info['cpu_count']} cores, {info['backend']}); matmul {mm}^3 {peak:.1f} GFLOP/s "
        f"(start {peak_before:.1f}, end {peak_after:.1f}); "
        f"load avg {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; {torch_info}")
  _common.print_table(rows, ["op", "impl", "images_per_s", "tokens_per_s", "gflops", "frac_of_matmul", "vs_torch",
                             "baseline"])
  if parity:
    print("parity (torch baselines carry spae's weights):", {k: round(v, 6) if isinstance(v, float) else v
                                                            for k, v in parity.items()})
  for n in notes:
    print("note:", n)
  _common.write_json(a.out, {
      "benchmark": "speed", "machine": info, "load_avg": list(load), "args": vars(a), "config": desc,
      "image_size": s, "pyramid": list(spec.grids), "tokens_per_image": {"spae": tokens_pyr, "vqgan": tokens_vq},
      "vocab_size": v, "dim": d, "gflop_per_image": {k: f / 1e9 for k, f in flops.items()},
      "xla_encoder_gflop_per_image": None if xla_flops is None else xla_flops / 1e9,
      "matmul_gflops": peak, "matmul_size": mm, "matmul_gflops_start_end": [peak_before, peak_after],
      "torch": torch_info, "parity": parity, "rows": rows, "notes": notes,
      "seconds": time.perf_counter() - t_start})
  return 0


def _dist_version(name: str) -> str | None:
  from importlib import metadata

  try:
    return metadata.version(name)
  except metadata.PackageNotFoundError:
    return None


if __name__ == "__main__":
  sys.exit(main())
