"""Reconstruction quality per pyramid prefix against the thumbnail anchor, codebook usage, semantic precision,
and an SAQ vs RQ ablation.

For every data set (held-out `scenes` of the test split, fixed crops of the held-out scikit-image photographs,
held-out classes of the older `shapes` renderer) and every token-layer prefix l = 1..L (1, 5, 21, 85, 341, 597
tokens for the default pyramid) it reports:

  psnr, ssim            of decode(first l layers) against the input (spae.metrics);
  thumb_side, thumb_psnr  the baseline of the same budget measured in this run: the s×s thumbnail
                        (spae.metrics.thumbnail: box average, 24-bit cells, bicubic back up) with s the side of
                        the prefix's deepest layer grid; gain_db = psnr - thumb_psnr (a prefix should beat it);
  bits, thumb_bits      the most a prefix can carry (spae.metrics.prefix_bits: log2 of the words its layer
                        searches, per token) and the thumbnail's 24·s²: only a prefix with more bits has the
                        larger budget (the default's full pyramid; its 1-5-layer prefixes have 0.19-0.82×);
  dips                  the share of images whose PSNR at prefix l is below their PSNR at prefix l - 1 (each added
                        layer should make every picture better; the mean can rise while some images fall);
  rise_db, rise_ci95    the mean per-image PSNR change from prefix l - 1 to l and its 95% interval (normal
                        approximation over images): whether a rise or a fall is more than these images' noise;
  lpips                 with --lpips-weights FILE (VGG16 + LPIPS heads through spae.perceptual);
  rfid                  with --inception-weights FILE (pytorch-fid InceptionV3 pool3 via spae.metrics);
  usage                 unique ids of layer l over the whole eval set / V;
  saq_mse, rq_mse       latent MSE ||z - r_l||² of SAQ (the tokenizer's quantizer) and of the residual-sum
                        ablation (spae.train.rq_quantize) with the same token budget, on the same encoder output z,
                        and their ratio: the baseline measured in this run;
  rq_psnr               PSNR of the decoder applied to the RQ reconstruction (the decoder was trained on SAQ
                        averages, so this favours SAQ; the latent MSE is the fair comparison).
  latent_thumb_psnr     PSNR of the decoder applied to the latent's own s×s thumbnail (its block means, each
                        repeated over its block; s the side of the prefix's deepest grid): what the decoder makes of a
                        latent as coarse as the prefix with no quantizer at all. psnr − latent_thumb_psnr is what
                        the words cost; latent_thumb_psnr − thumb_psnr is whether the decoder, not the words, falls
                        short of the pixel thumbnail. For the prefixes whose deepest layer searches the whole
                        vocabulary it is the prefix with exact (unquantized) SAQ targets.

On scenes it also reports semantic precision: the fraction of the tokens of layers 1..3 whose word is one of the
scene's attribute names (shape, colour, tone, size, texture of any object, or the background colour), against the
chance level of uniformly drawn vocabulary entries; and `main_named`, the share of images whose top words (the
tokens of layers 1-2) include the main object's colour or shape name, next to `main_named_other_image`, the same
share with another image's top words (words that do not depend on the image score as well there); and
`names_by_layer`, per semantic layer the share of images whose words include the background's colour, the main
object's colour, and its shape (which of them a layer spells). No weights
are ever downloaded; LPIPS / rFID are skipped (with a note in the JSON) when their files are not given.

  python benchmarks/recon.py --smoke --out /tmp/recon.json                  # CI: tiny untrained tokenizer
  python benchmarks/recon.py --tokenizer DIR --num-images 512 --out recon.json \\
      [--lpips-weights lpips_vgg.npz] [--inception-weights pt_inception.npz]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common  # noqa: E402

import numpy as np  # noqa: E402

SEMANTIC_LAYERS = 3
TOP_WORD_LAYERS = 2  # the "top words": 1 + 4 tokens with the default pyramid


# ------------------------------------------------------------------------------------------ tokenizer
def load_tokenizer(path: str | None, smoke: bool) -> tuple[Any, str]:
  """(Tokenizer, description): DIR if given, else spae.assets.default_tokenizer() if shipped, else tiny."""
  import spae

  if path:
    return _common.load_tokenizer_bundle(path), str(path)
  note = ""
  if not smoke:
    default = None
    try:
      from spae.assets import default_tokenizer as default  # built by another part of the project
    except ImportError:
      note = " (spae.assets.default_tokenizer does not exist yet)"
    if default is not None:
      try:
        return default(), "spae.assets.default_tokenizer()"
      except (FileNotFoundError, spae.SpaeInputError) as e:
        note = f" (spae.assets.default_tokenizer() failed: {e})"
  return spae.tiny_tokenizer(), "spae.tiny_tokenizer() (untrained)" + note


# ------------------------------------------------------------------------------------------ data
def shapes_scenes(num: int, size: int, classes: str, seed: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
  """`num` test-split scenes (uint8 [N, S, S, 3]) and their attributes, of the held-out classes or all."""
  from spae.data import SHAPES_HELDOUT_CLASSES, render_scene, scene_rng

  images, attrs, i = [], [], 0
  while len(images) < num:
    im, _, a = render_scene(scene_rng(seed, "test", i), size)
    i += 1
    if classes == "all" or a["label"] in SHAPES_HELDOUT_CLASSES:
      images.append(im)
      attrs.append(a)
    if i > 50 * num + 100:  # held-out classes are a quarter of the scenes; this never triggers in practice
      raise SystemExit("could not render enough held-out scenes")
  return np.stack(images), attrs


def new_scenes(num: int, size: int, seed: int, split: str = "test") -> tuple[np.ndarray, list[dict[str, Any]]]:
  """`num` scenes of a split of spae.data's `scenes` renderer never trained on (test; validation for choosing
  recipes) and their attributes."""
  from spae.data import SceneSource

  src = SceneSource(num, size, seed=seed, split=split)
  return np.stack([src.load(i) for i in range(num)]), [src.attributes(i) for i in range(num)]


def attribute_names(a: dict[str, Any]) -> tuple[set[str], set[str]]:
  """(every attribute word of a scene, the main object's {colour, shape}) for `scenes` and `shapes` attributes."""
  objs = a["objects"]
  if "count" in a:  # spae.data._scenes
    bg = a["background"]
    names = {o["shape"] for o in objs} | {o["size"] for o in objs} | {o["fill"] for o in objs}
    names |= {c[k] for c in [o["colour"] for o in objs] + [bg["colour"], bg["colour2"]] for k in ("name", "tone")}
    names -= {""}
  else:
    names = {a["background"]} | {o[k] for o in objs for k in ("shape", "colour", "size", "texture")}
  roles = attribute_roles(a)
  return names, {roles["main colour"], roles["main shape"]}


def folder_photo_files(folder: str) -> list[Path]:
  from spae.data._sources import IMAGE_EXTENSIONS

  root = Path(folder)
  if not root.is_dir():
    from spae import SpaeInputError
    raise SpaeInputError(f"--photos {folder!r} is not a directory of images.")
  return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def photo_crops(files: list[Path], num: int, size: int, seed: int) -> np.ndarray:
  """`num` random square crops (side 35-100% of the short edge) cycling over the photos, resized to size×size
  with spae's one resize (the tokenizer's)."""
  import spae
  from spae._images import resize, to_uint8

  rng = np.random.default_rng(seed)
  photos = [spae.load_image(f) for f in files]
  out = []
  for k in range(num):
    im = photos[k % len(photos)]
    h, w = im.shape[:2]
    side = int(rng.uniform(0.35, 1.0) * min(h, w))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    out.append(to_uint8(resize(im[top:top + side, left:left + side], size)))
  return np.stack(out)


# ------------------------------------------------------------------------------------------ evaluation
def latent_thumbnail(z: Any, side: int) -> Any:
  """[B, h, w, d] -> [B, h, w, d]: the latent's side×side block means, each repeated over its block (the latent
  analogue of `spae.metrics.thumbnail`; side = h gives z back)."""
  from spae._pyramid import subsample, upsample

  return upsample(subsample(z, side, "pool"), z.shape[1], z.shape[2])


def make_eval_fn(tok: Any):
  """Jitted (state, codebook, semantic codebook or None, x [B,S,S,3] in [0,1]) -> (SAQ ids per layer, latent MSE
  [2L, B], images [3L,B,S,S,3]).

  Rows 0..L-1 are SAQ prefixes 1..L (exactly what Tokenizer.encode/decode compute: same encoder, saq_quantize and
  decoder), rows L..2L-1 the residual-sum ablation on the same z, rows 2L..3L-1 the decoder on the latent thumbnail
  of each prefix's deepest grid (`latent_thumbnail`). All 3L decodes run as one decoder batch so the decoder is
  compiled once.
  """
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from spae._pyramid import pyramid_quantize
  from spae.train import rq_quantize

  graphdef, _ = nnx.split(tok.model)
  spec, chunk, quantizer = tok.config.pyramid, tok.config.vocab_chunk, tok.config.quantizer
  sides = [max(spec.grids[:l]) for l in range(1, spec.num_layers + 1)]

  @jax.jit
  def fn(state, codebook, semantic, x):
    model = nnx.merge(graphdef, state)
    z = model.encoder(x * 2.0 - 1.0)
    # The tokenizer's own quantizer (SAQ unless it was trained with 'rq'), then the RQ ablation on the same z.
    pool = model.pool_weights(z)
    ranked = model.semantic_ranked(x)  # a semantic head's words for the semantic layers (None without one)
    ids, saq = pyramid_quantize(z, codebook, spec, quantizer, vocab_chunk=chunk, pool_weights=pool,
                                semantic_codebook=semantic, semantic_ranked=ranked)
    _, rq = rq_quantize(z, codebook, spec, vocab_chunk=chunk, pool_weights=pool, semantic_codebook=semantic,
                        semantic_ranked=ranked)
    r = jnp.stack(saq + rq)  # [2L, B, h, w, d]
    mse = jnp.mean(jnp.square(r - z[None]), axis=(2, 3, 4))
    r = jnp.concatenate([r, jnp.stack([latent_thumbnail(z, side) for side in sides])])  # [3L, B, h, w, d]
    y = model.decoder(r.reshape((-1,) + r.shape[2:]))
    y = jnp.clip((y + 1.0) / 2.0, 0.0, 1.0).reshape(r.shape[:2] + x.shape[1:])
    return ids, mse, y

  return fn


def batches(images: np.ndarray, bs: int) -> Iterator[tuple[np.ndarray, int]]:
  """Fixed-size float batches (the last padded by repetition so nothing recompiles) and their real counts."""
  for s in range(0, len(images), bs):
    b = images[s:s + bs].astype(np.float32) / 255.0
    n = len(b)
    if n < bs:
      b = np.concatenate([b, np.repeat(b[-1:], bs - n, axis=0)])
    yield b, n


ROLES = ("background colour", "main colour", "main shape")


def attribute_roles(a: dict[str, Any]) -> dict[str, str]:
  """The word for each of ROLES in a `scenes` or `shapes` scene: what a top layer could name."""
  if "count" in a:  # spae.data._scenes
    return dict(zip(ROLES, (a["background"]["colour"]["name"], a["colour"], a["shape"])))
  return dict(zip(ROLES, (a["background"], a["objects"][0]["colour"], a["objects"][0]["shape"])))


def role_shares(words: list[set[str]], roles: list[dict[str, str]]) -> dict[str, float]:
  """Per role, the share of images whose words (one set per image) include that image's word for the role."""
  return {r: sum(ro[r] in w for w, ro in zip(words, roles)) / max(1, len(words)) for r in ROLES}


# British spellings of the scenes' attribute words: 'grey' names a gray object as well as 'gray' does.
_SPELLINGS = {"grey": "gray", "centre": "center"}


def _norm_word(w: str) -> str:
  w = w.strip().lower()
  return _SPELLINGS.get(w, w)


def role_words(a: dict[str, Any]) -> dict[str, str]:
  """attribute_roles with each word spelt as the tokens' words are compared (_norm_word)."""
  return {r: _norm_word(w) for r, w in attribute_roles(a).items()}


def naming_share(tops: list[set[str]], mains: list[set[str]]) -> float:
  """The share of images whose top words include one of their main object's names."""
  return sum(bool(t & m) for t, m in zip(tops, mains)) / max(1, len(tops))


def naming_interval(tops: list[set[str]], mains: list[set[str]]) -> tuple[float, float]:
  """95% (Wilson) interval of `naming_share` over these images: with 120 scenes it spans about ±9 points, so a
  share within that of a target is not told apart from it by this sample."""
  from spae.prompting._stats import confidence_interval

  return confidence_interval([float(bool(t & m)) for t, m in zip(tops, mains)])


def other_image_naming(tops: list[set[str]], mains: list[set[str]]) -> float:
  """The baseline of the naming share: the share of images whose main object's names are among the top words of
  *another* image, averaged over every ordered pair i != j. Words that name images no better than this do not
  depend on the image (a constant word list scores the same as itself)."""
  n = len(tops)
  if n < 2:
    return float("nan")
  hits = sum(bool(tops[j] & mains[i]) for i in range(n) for j in range(n) if j != i)
  return hits / (n * (n - 1))


def evaluate(tok: Any, fn: Any, images: np.ndarray, bs: int, *, attrs: list[dict[str, Any]] | None = None,
             lpips: Any = None, inception: Any = None) -> dict[str, Any]:
  """Metrics of one data set (uint8 images [N, S, S, 3]) with `fn = make_eval_fn(tok)`."""
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from spae import metrics

  spec = tok.config.pyramid
  L, V = spec.num_layers, len(tok.vocabulary)
  _, state = nnx.split(tok.model)
  usage = metrics.UsageWindow(L, V, window=max(1, len(images)) * max(spec.tokens_per_layer()))
  sums = {k: np.zeros(2 * L) for k in ("psnr", "ssim", "mse", "lpips")}
  sums["latent_thumb"] = np.zeros(L)
  dips = np.zeros(L)  # per prefix: images whose PSNR falls below the previous prefix's
  rises = []  # per batch: [L - 1, n] per-image PSNR change from one prefix to the next
  feats = None
  if inception is not None:
    feats = {"real": metrics.FeatureStats(), **{l: metrics.FeatureStats() for l in range(1, L + 1)}}
  lpips_fn = jax.jit(lpips.distance) if lpips is not None else None
  vocab_words = [_norm_word(w) for w in tok.vocabulary.words(np.arange(V))]
  vocab_count = collections.Counter(vocab_words)  # several entries can spell the same word
  sem_layers = min(SEMANTIC_LAYERS, L)
  sem_hits, sem_total, chance = np.zeros(sem_layers), np.zeros(sem_layers), []
  tops, mains = [], []  # per image: its layer-1/2 words, its main object's names
  layer_words, roles = [[] for _ in range(sem_layers)], []  # per semantic layer, per image: its words; the roles
  thumb_sides = [int(max(spec.grids[:l])) for l in range(1, L + 1)]
  words = [len(spec.semantic_vocab) if l < spec.semantic_layers else V for l in range(L)]
  bits = metrics.prefix_bits(spec.grids, words)  # what each prefix can carry, against the thumbnail's 24 s²
  thumb_sums = {s: 0.0 for s in set(thumb_sides)}
  seen = 0
  for x, n in batches(images, bs):
    ids, mse, y = fn(state, tok.codebook, tok.semantic_codebook, jnp.asarray(x))
    ids = [np.asarray(a)[:n] for a in ids]
    mse, y = np.asarray(mse)[:, :n], y[:, :n]
    xr = jnp.asarray(x[:n])
    # PSNR of all 3L rows at once (SAQ, RQ, latent thumbnails); the other metrics read the first 2L.
    psnr_all = np.asarray(metrics.psnr(jnp.tile(xr, (3 * L, 1, 1, 1)), y.reshape((-1,) + y.shape[2:])))
    psnr_all = psnr_all.reshape(3 * L, n)
    per_image, latent_thumb = psnr_all[:2 * L], psnr_all[2 * L:]
    sums["latent_thumb"] += latent_thumb.sum(1)
    y = y[:2 * L]
    flat_y = y.reshape((-1,) + y.shape[2:])
    flat_x = jnp.tile(xr, (2 * L, 1, 1, 1))
    sums["psnr"] += per_image.sum(1)
    dips[1:] += (per_image[1:L] < per_image[:L - 1]).sum(1)  # SAQ prefixes only
    rises.append(per_image[1:L] - per_image[:L - 1])
    fs = min(11, x.shape[1])
    sums["ssim"] += np.asarray(metrics.ssim(flat_x, flat_y, filter_size=fs)).reshape(2 * L, n).sum(1)
    sums["mse"] += mse.sum(1)
    if lpips_fn is not None:
      d = lpips_fn(lpips.params, flat_x * 2.0 - 1.0, flat_y * 2.0 - 1.0)
      sums["lpips"] += np.asarray(d).reshape(2 * L, n).sum(1)
    if feats is not None:
      feats["real"].add(inception(xr))
      for l in range(1, L + 1):
        feats[l].add(inception(y[l - 1]))
    usage.update(ids)
    for side in thumb_sums:
      thumb_sums[side] += float(np.sum(np.asarray(metrics.psnr(jnp.asarray(metrics.thumbnail(x[:n], side)), xr))))
    if attrs is not None:
      for i in range(n):
        names, main = attribute_names(attrs[seen + i])
        chance.append(sum(vocab_count[w] for w in names) / V)
        for l in range(sem_layers):
          words = [vocab_words[t] for t in ids[l][i].reshape(-1)]
          sem_hits[l] += sum(w in names for w in words)
          sem_total[l] += len(words)
          layer_words[l].append(set(words))
        roles.append(role_words(attrs[seen + i]))
        top = set().union(*(layer_words[l][-1] for l in range(min(TOP_WORD_LAYERS, sem_layers))))
        tops.append(top)
        mains.append(main)
    seen += n
  from spae.prompting._stats import normal_interval

  cum = spec.cumulative_tokens()
  use = usage.usage()
  rises = np.concatenate(rises, axis=1)  # [L - 1, images]
  rows = []
  for l in range(1, L + 1):
    s, r = l - 1, L + l - 1
    row = {"layers": l, "tokens": int(cum[s]), "psnr": sums["psnr"][s] / seen, "ssim": sums["ssim"][s] / seen,
           "usage": float(use[s]), "saq_mse": sums["mse"][s] / seen, "rq_mse": sums["mse"][r] / seen,
           "rq_psnr": sums["psnr"][r] / seen, "rq_ssim": sums["ssim"][r] / seen, "thumb_side": thumb_sides[s],
           "thumb_psnr": thumb_sums[thumb_sides[s]] / seen, "dips": dips[s] / seen, "bits": bits[s],
           "thumb_bits": 24 * thumb_sides[s] ** 2, "latent_thumb_psnr": sums["latent_thumb"][s] / seen}
    row["gain_db"] = row["psnr"] - row["thumb_psnr"]
    if l > 1:
      row["rise_db"], row["rise_ci95"] = float(rises[l - 2].mean()), list(normal_interval(rises[l - 2]))
    row["rq_over_saq_mse"] = row["rq_mse"] / row["saq_mse"] if row["saq_mse"] > 0 else float("nan")
    if lpips_fn is not None:
      row["lpips"], row["rq_lpips"] = sums["lpips"][s] / seen, sums["lpips"][r] / seen
    if feats is not None:
      row["rfid"] = metrics.frechet_distance(*feats["real"].stats(), *feats[l].stats())
    rows.append(row)
  out: dict[str, Any] = {"num_images": seen, "rows": rows, "perplexity": [float(p) for p in usage.perplexity()]}
  if attrs is not None:
    ch = float(np.mean(chance))
    out["semantic_precision"] = [
        {"layer": l + 1, "precision": float(sem_hits[l] / sem_total[l]), "chance": ch,
         "ratio_to_chance": float(sem_hits[l] / sem_total[l] / ch) if ch > 0 else float("nan")}
        for l in range(sem_layers)]
    # Which word a layer names: a top layer that spells the background's colour cannot tell the main object apart.
    out["names_by_layer"] = [{"layer": l + 1, **role_shares(layer_words[l], roles)} for l in range(sem_layers)]
    out["main_named"] = naming_share(tops, mains)
    out["main_named_ci95"] = list(naming_interval(tops, mains))
    out["main_named_other_image"] = other_image_naming(tops, mains)
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--tokenizer", default=None,
                 help="tokenizer directory (default: spae.assets.default_tokenizer() if shipped, else the tiny one)")
  p.add_argument("--num-images", type=int, default=256,
                 help="images per synthetic data set (the held-out photo crops are a fixed set of 40)")
  p.add_argument("--batch-size", type=int, default=16)
  p.add_argument("--shapes-classes", choices=("heldout", "all"), default="heldout",
                 help="synthetic scenes of the held-out classes only (default) or of all classes")
  p.add_argument("--photos", default=None,
                 help="also evaluate crops of the images in this folder (data set 'photos-folder')")
  p.add_argument("--no-skimage", action="store_true", help="skip the held-out scikit-image photographs")
  p.add_argument("--lpips-weights", default=None, help="VGG16/LPIPS weights file for spae.perceptual (LPIPS)")
  p.add_argument("--inception-weights", default=None,
                 help="pytorch-fid pt_inception-2015-12-05 state dict as .npz/.safetensors (rFID)")
  p.add_argument("--scenes-split", choices=("test", "validation"), default="test",
                 help="the `scenes` split to score: test (the reported figures) or validation (for choosing between "
                      "tokenizers or recipes without looking at the test split; its data set is 'scenes-validation')")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--smoke", action="store_true", help="tiny sizes for CI")
  p.add_argument("--out", default=None, help="write results as JSON here")
  a = p.parse_args(argv)
  if a.smoke:
    a.num_images, a.batch_size = min(a.num_images, 4), min(a.batch_size, 4)
  if a.num_images < 1 or a.batch_size < 1:
    raise SystemExit("--num-images and --batch-size must be positive.")

  from spae import metrics

  t0 = time.perf_counter()
  tok, tok_name = load_tokenizer(a.tokenizer, a.smoke)
  size = tok.config.image_size
  notes: list[str] = []
  lpips = inception = None
  if a.lpips_weights:
    from spae.perceptual import make_perceptual_loss
    lpips = make_perceptual_loss(a.lpips_weights)
  else:
    notes.append("lpips skipped: pass --lpips-weights FILE (VGG16 + LPIPS lin heads; nothing is downloaded)")
  if a.inception_weights:
    if not hasattr(metrics, "InceptionFeatures"):
      raise SystemExit("this spae has no spae.metrics.InceptionFeatures; rFID is unavailable.")
    inception = metrics.InceptionFeatures.load(a.inception_weights, value_range=(0.0, 1.0))
  else:
    notes.append("rfid skipped: pass --inception-weights FILE (pytorch-fid pt_inception-2015-12-05 as "
                 ".npz/.safetensors; nothing is downloaded)")

  datasets: dict[str, dict[str, Any]] = {}
  imgs, attrs = new_scenes(a.num_images, size, a.seed, split=a.scenes_split)
  datasets[f"scenes-{a.scenes_split}"] = {
      "images": imgs, "attrs": attrs,
      "source": f"spae.data.SceneSource, split {a.scenes_split!r} (a split never trained on)"}
  if not a.no_skimage:
    from spae import SpaeInputError
    from spae.data import HELDOUT_PHOTOS, heldout_photo_crops

    try:
      crops = heldout_photo_crops(size)
      datasets["photos-heldout"] = {
          "images": np.stack([crops.load(i) for i in range(min(len(crops), a.num_images))]),
          "source": "spae.data.heldout_photo_crops: 8 fixed crops each of " + ", ".join(HELDOUT_PHOTOS)}
    except SpaeInputError as e:
      notes.append(f"photos-heldout skipped: {e}")
  imgs, attrs = shapes_scenes(a.num_images, size, a.shapes_classes, a.seed)
  datasets[f"shapes-{a.shapes_classes}"] = {"images": imgs, "attrs": attrs,
                                            "source": f"spae.data.render_scene, split 'test', {a.shapes_classes}"}
  if a.photos:
    pf = folder_photo_files(a.photos)
    if not pf:
      raise SystemExit(f"--photos {a.photos!r} holds no image files.")
    datasets["photos-folder"] = {"images": photo_crops(pf, a.num_images, size, a.seed),
                                 "source": f"random square crops of {len(pf)} images in {a.photos}"}
  t_setup = time.perf_counter() - t0

  results: dict[str, Any] = {}
  fn = make_eval_fn(tok)  # one compiled program for every data set
  for name, d in datasets.items():
    t1 = time.perf_counter()
    res = evaluate(tok, fn, d["images"], a.batch_size, attrs=d.get("attrs"), lpips=lpips, inception=inception)
    res["source"], res["seconds"] = d["source"], time.perf_counter() - t1
    results[name] = res

  info = _common.machine_info()
  load = os.getloadavg()
  print(f"# recon: {tok_name}; {size}px, pyramid {tok.config.pyramid.grids}, V={len(tok.vocabulary)}, "
        f"d={tok.vocabulary.dim}; {info.get('cpu', '')} ({info['cpu_count']} cores, {info['backend']}), "
        f"load avg {load[0]:.2f}")
  cols = ["layers", "tokens", "bits", "psnr", "thumb_side", "thumb_bits", "thumb_psnr", "gain_db", "dips", "rise_db",
          "rise_ci95", "latent_thumb_psnr", "ssim", "lpips", "rfid", "usage", "saq_mse", "rq_mse", "rq_over_saq_mse", "rq_psnr"]
  cols = [c for c in cols if any(c in r for res in results.values() for r in res["rows"])]
  for name, res in results.items():
    print(f"\n## {name}: {res['num_images']} images ({res['source']}), {res['seconds']:.1f} s")
    _common.print_table(res["rows"], cols)
    if "semantic_precision" in res:
      print("semantic precision (tokens naming a scene attribute) vs uniform-token chance:")
      _common.print_table(res["semantic_precision"], ["layer", "precision", "chance", "ratio_to_chance"])
      print("share of images whose layer's words include the background's colour, the main object's colour, "
            "its shape:")
      _common.print_table(res["names_by_layer"], ["layer", *ROLES])
      print(f"top words (layers 1-{TOP_WORD_LAYERS}) name the main object's colour or shape: "
            f"{100 * res['main_named']:.0f}% of images (95% interval {100 * res['main_named_ci95'][0]:.0f}-"
            f"{100 * res['main_named_ci95'][1]:.0f}%); with another image's top words (the baseline): "
            f"{100 * res['main_named_other_image']:.0f}%")
  for n in notes:
    print("note:", n)
  _common.write_json(a.out, {
      "benchmark": "recon", "machine": info, "load_avg": list(load), "args": vars(a), "tokenizer": tok_name,
      "image_size": size, "pyramid": list(tok.config.pyramid.grids), "vocab_size": len(tok.vocabulary),
      "cumulative_tokens": [int(c) for c in tok.config.pyramid.cumulative_tokens()], "setup_seconds": t_setup,
      "datasets": results, "notes": notes})
  return 0


if __name__ == "__main__":
  sys.exit(main())
