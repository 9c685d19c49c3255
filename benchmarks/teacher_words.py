"""Does the semantic teacher name what is in an image? Its own top-k words over a codebook, on held-out scenes.

The tokenizer's top layers are trained toward the teacher's word distribution (docs/method.md, semantic guidance),
so they can only name the main object if the teacher does. For each teacher spec, on test-split `scenes` (never
trained on by tokenizer or teacher): the share of images whose teacher top-k words (cosine relevance over the
whole codebook) include the main object's colour name / shape name / either; also with each word's relevance
centred by its mean over train-split scenes (hub words removed), and restricted to the codebook words that are
whole tokens of the teacher's text tokenizer (English words, for MiniLM). Baselines in the same run:

  chance    k words drawn uniformly from the codebook: 1 - prod(1 - m/V), m = how many of the image's main words
            the codebook holds
  caption   the same top-k read from the frozen text tower's embedding of the image's true caption in place of
            the image tower (what a perfect image tower could reach through this text tower; needs the text tower)

  python benchmarks/teacher_words.py --vocab gemma3-270m \\
      --teacher "lit:default#text_tower=MINILM" --teacher "lit:runs/teacher_scenes#text_tower=MINILM" --out tw.json
  python benchmarks/teacher_words.py --smoke --out /tmp/tw.json     # CI: shipped teacher and vocabulary, 8 images

--subvocab N [N ...] adds what the semantic loss trains layers 1-2 toward: the teacher's *first* word read the
trainer's way (relevance centred on the first --centre-images training images of --data, restricted to whole
text-tower words, and to the N words it names first most often on the first --vocab-images of them:
`semantic.vocab_size`), and the share of held-out scenes whose first word is the background's colour, the main
object's colour, its shape (recon.py's roles), beside the same share given another image's first word.
  python benchmarks/teacher_words.py --vocab gemma3-270m \\
      --teacher "lit:runs/teacher_scenes#text_tower=MINILM" \\
      --subvocab 24 48 73 --split validation --num-images 120 --out tw_sub.json
With --vocab-from-captions C it also chooses them only among the words of the first C training captions
(`semantic.vocab_from_captions`), and both report how often the teacher's top five in the sub-vocabulary name the
main object.
--tokenizer DIR adds whether that tokenizer's layer-1 word is the teacher's first word in its own semantic
sub-vocabulary (read the trainer's way), on the held-out scenes and on the --vocab-images training images, beside
the same against another image's first word, and how often the teacher's first word survives a left-right mirror
(the trainer flips its images); pass the teacher (and --caption-bank) the tokenizer was trained with.
  python benchmarks/teacher_words.py --vocab gemma3-270m --teacher "lit:runs/teacher_scenes#text_tower=MINILM" \\
      --tokenizer spae/assets/default/tokenizer --vocab-images 256 --split validation --num-images 120
--caption-bank 0 10000 adds both measures read through the teacher's first 10,000 training captions
(`semantic.caption_bank`; a teacher folder with captions.npz), beside the direct reading (0).
--readings N (with --tokenizer) adds how often the teacher's first word in that tokenizer's sub-vocabulary names the
main object under the refit's four readings (centred, mirror-averaged, standardised, both: docs/method.md), on N
training-split scenes of --readings-seed (where configs/gemma64_standardised.py was chosen) and on the held-out ones.
  python benchmarks/teacher_words.py --vocab gemma3-270m --teacher "lit:runs/teacher_scenes#text_tower=MINILM" \
      --tokenizer spae/assets/default/tokenizer --vocab-images 256 --readings 800 --split validation --num-images 120
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import _common  # noqa: E402
import recon  # noqa: E402

import numpy as np  # noqa: E402


def _load_teacher(spec: str) -> Any:
  from spae import teachers

  return teachers.load(spec)


def _hits(scores: np.ndarray, words: list[str], attrs: list[dict[str, Any]], k: int) -> dict[str, float]:
  top = np.argsort(-scores, axis=1)[:, :k]
  col = [a["colour"] in {words[t] for t in row} for row, a in zip(top, attrs)]
  shp = [a["shape"] in {words[t] for t in row} for row, a in zip(top, attrs)]
  return {"colour": float(np.mean(col)), "shape": float(np.mean(shp)),
          "either": float(np.mean([c or s for c, s in zip(col, shp)]))}


def measure(teacher: Any, vocab: Any, images: np.ndarray, attrs: list[dict[str, Any]], k: int,
            reference: np.ndarray, banks: tuple[int, ...] = (0,), bank_tau: float = 0.03) -> dict[str, Any]:
  """Hit shares for the raw relevance and for relevance centred by each word's mean over `reference` images
  (train-split scenes), over all codebook words and over the words that are whole tokens of the teacher's text
  tokenizer (when it has one); for each bank size N > 0 in `banks`, the same read through the teacher's first N
  training captions (`RelevanceFn.through_captions`)."""
  import jax

  from spae.data import _scenes

  words = list(vocab.words(np.arange(len(vocab))))
  table = np.asarray(teacher.vocabulary_embeddings(vocab), np.float32)  # [V, D], unit rows
  score = jax.jit(lambda f, x: f(x))
  scores = {}
  for n in banks:
    fn = teacher.relevance_fn(vocab)
    if n:
      fn = fn.through_captions(teacher.caption_bank[:n], bank_tau)
    raw = np.concatenate([np.asarray(score(fn, images[i:i + 64].astype(np.float32) / 255.0))
                          for i in range(0, len(images), 64)])
    # The trainer's centring (RelevanceFn.centred): each word's mean relevance over `reference` removed.
    offset = fn.centred(reference.astype(np.float32) / 255.0).offset
    tag = f"{n} captions: " if n else ""
    scores[f"{tag}raw"], scores[f"{tag}centred"] = raw, raw - np.asarray(offset)
  masks = {"all words": None}
  whole = teacher.whole_word_mask(vocab)
  if whole is not None:
    masks["whole text-tower tokens"] = whole
  out: dict[str, Any] = {"variants": {}}
  for mname, mask in masks.items():
    for sname, sc in scores.items():
      sc = sc if mask is None else np.where(mask[None], sc, -np.inf)
      out["variants"][f"{sname}, {mname}"] = {
          **_hits(sc, words, attrs, k), "words": int(len(words) if mask is None else mask.sum()),
          "example": [words[t] for t in np.argsort(-sc[0])[:k]]}
  try:
    cap = np.asarray(teacher.text_embeddings([_scenes.caption_for(a) for a in attrs]), np.float32)
    out["caption"] = _hits(cap @ table.T, words, attrs, k)
  except Exception as e:  # a teacher without its text tower embeds only its shipped word table
    out["caption_note"] = f"caption baseline skipped: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
  present = set(words)
  V = len(words)
  ch = []
  for a in attrs:
    m = len({a["colour"], a["shape"]} & present)
    ch.append(1.0 - float(np.prod([(V - m - j) / (V - j) for j in range(k)])))
  out["chance_either"] = float(np.mean(ch))
  out["example_caption"] = _scenes.caption_for(attrs[0])
  return out


def _training_images(data: str, n: int) -> np.ndarray:
  """The first `n` training images of a data spec as the trainer's teacher sees them (64 px, centre crop)."""
  from spae import train as T
  from spae.train._inputs import reference_images

  return reference_images(T.open_data(data), n, 64, "center")


def _trainer_relevance(teacher: Any, vocab: Any, reference: np.ndarray, bank: int = 0,
                       bank_tau: float = 0.03) -> Any:
  """images [N, H, W, 3] in [0, 1] -> numpy relevance [N, V], read as the trainer reads it: through the teacher's
  first `bank` training captions when > 0, centred on `reference` (training images), whole words only."""
  import jax
  import jax.numpy as jnp

  fn = teacher.relevance_fn(vocab)
  if bank:
    fn = fn.through_captions(teacher.caption_bank[:bank], bank_tau)
  fn = fn.centred(reference)
  whole = teacher.whole_word_mask(vocab)
  fn = fn if whole is None else fn.restricted(whole)
  score = jax.jit(lambda f, x: f(x))
  return lambda x: np.concatenate([np.asarray(score(fn, jnp.asarray(x[i:i + 64], jnp.float32)))
                                   for i in range(0, len(x), 64)])


def first_words(teacher: Any, vocab: Any, images: np.ndarray, attrs: list[dict[str, Any]], sizes: list[int],
                train_images: np.ndarray, centre: int, bank: int = 0, bank_tau: float = 0.03,
                candidates: dict[str, np.ndarray | None] | None = None) -> list[dict[str, Any]]:
  """Per candidate set and sub-vocabulary size N: the role shares of the teacher's first word on `images` (see the
  module doc), and how often its top five there name the main object; `bank` > 0 reads the images through the
  teacher's first `bank` training captions (`semantic.caption_bank`). `candidates`: name -> bool [V] mask of the
  words the sub-vocabulary is chosen among (`semantic.vocab_from_captions`), None for all (the default)."""
  from spae.train._semantic import most_named

  rel = _trainer_relevance(teacher, vocab, train_images[:centre], bank, bank_tau)
  train_rel = rel(train_images)
  held = rel(images.astype(np.float32) / 255.0)
  words = [recon._norm_word(w) for w in vocab.words(np.arange(len(vocab)))]
  roles = [recon.role_words(a) for a in attrs]
  mains = [{r["main colour"], r["main shape"]} for r in roles]
  out = []
  for name, mask in (candidates or {"all words": None}).items():
    counts = np.bincount((train_rel if mask is None else np.where(mask[None], train_rel, -np.inf)).argmax(1),
                         minlength=len(vocab))
    for n in sizes:
      sub = most_named(counts, n)
      first = [{words[sub[j]]} for j in held[:, sub].argmax(1)]
      top5 = [{words[sub[j]] for j in row} for row in np.argsort(-held[:, sub], axis=1, kind="stable")[:, :5]]
      out.append({"candidates": name, "size": int(len(sub)), "words": [words[i] for i in sub],
                  "roles": recon.role_shares(first, roles),
                  "main object": recon.naming_share(first, mains),
                  "main object, other image": recon.other_image_naming(first, mains),
                  "top five name the main object": recon.naming_share(top5, mains),
                  "top five, other image": recon.other_image_naming(top5, mains)})
  return out


def mirror_agreement(rel: Any, images: np.ndarray, sub: np.ndarray) -> float:
  """The share of `images` [N, H, W, 3] whose first word among the rows `sub` (by the relevance function `rel`) is
  the same for the image mirrored left to right. The trainer flips its images (`TrainConfig.flip`) and a mirror
  keeps a scene's colours and shapes, so a word that names them survives it: this share bounds how consistent a
  target the teacher gives the layer-1 word."""
  first = rel(images)[:, sub].argmax(1)
  return float(np.mean(first == rel(images[:, :, ::-1])[:, sub].argmax(1)))


def follows(teacher: Any, tok: Any, images: np.ndarray, attrs: list[dict[str, Any]], train_images: np.ndarray,
            centre: int, bank: int = 0, bank_tau: float = 0.03, offline_only: bool = False) -> list[dict[str, Any]]:
  """Does a tokenizer's layer-1 word reproduce its teacher? On the held-out scenes and on `train_images`: the share
  whose layer-1 token is the teacher's first word among the tokenizer's semantic sub-vocabulary (read the trainer's
  way: through `bank` captions when > 0, centred on the first `centre` training images, whole words), beside the
  same share against another image's first word (the next image's: the baseline); how often the teacher's first
  word stays the same when the image is mirrored left to right (beside how often it equals the next image's); on
  held-out scenes also how often each names the main object. offline_only: keep only the sub-vocabulary words the
  teacher scores without its text tower (--smoke: the shipped teacher's word table lacks 2 of the 24)."""
  sub = np.asarray(tok.config.pyramid.semantic_vocab, np.int64)
  if not len(sub):
    raise SystemExit("--tokenizer: this tokenizer has no semantic sub-vocabulary (PyramidSpec.semantic_vocab); "
                     "pass one trained with semantic.vocab_size > 0.")
  vocab = tok.vocabulary
  if offline_only:
    sub = np.asarray([i for i in sub if teacher.covers(vocab.subset([i]))], np.int64)
  # Every step of the trainer's reading scores each word on its own (cosine, centring offset, whole-word mask), so
  # scoring only the sub-vocabulary gives the same numbers, and needs the teacher to embed only those words.
  rel = _trainer_relevance(teacher, vocab.subset(sub), train_images[:centre], bank, bank_tau)
  words = [recon._norm_word(w) for w in vocab.words(np.arange(len(vocab)))]
  mains = [{r["main colour"], r["main shape"]} for r in (recon.role_words(a) for a in attrs)]
  out, rows = [], np.arange(len(sub))
  for name, x in (("held-out scenes", images.astype(np.float32) / 255.0), ("training images", train_images)):
    first = sub[rel(x).argmax(1)]
    l1 = np.asarray(tok.encode(x, layers=1).ids[0]).reshape(len(x), -1)[:, 0]
    row = {"set": name, "images": len(x), "layer 1 = teacher's first word": float(np.mean(l1 == first)),
           "layer 1 = another image's first word": float(np.mean(l1 == np.roll(first, 1))),
           "teacher's first word survives a mirror": mirror_agreement(rel, x, rows),
           "teacher's first word = another image's": float(np.mean(first == np.roll(first, 1)))}
    if name == "held-out scenes":
      row["teacher's first word names the main object"] = recon.naming_share([{words[i]} for i in first], mains)
      row["layer-1 word names the main object"] = recon.naming_share([{words[i]} for i in l1], mains)
    out.append(row)
  return out


def readings(teacher: Any, tok: Any, sets: dict[str, tuple[np.ndarray, list[dict[str, Any]]]],
             centre: np.ndarray, offline_only: bool = False) -> list[dict[str, Any]]:
  """The refit's readings of the teacher (`semantic.refit_mirrored` / `refit_standardised`, docs/method.md): for
  each, on each named set of scenes (images [N, H, W, 3] floats in [0, 1], attributes), the share whose first word
  among the tokenizer's semantic sub-vocabulary names the main object, beside the same given another image's.
  Every reading is centred on `centre` (training images) and kept to whole words, as the trainer reads;
  offline_only as in `follows`."""
  import jax

  sub = np.asarray(tok.config.pyramid.semantic_vocab, np.int64)
  if offline_only:
    sub = np.asarray([i for i in sub if teacher.covers(tok.vocabulary.subset([i]))], np.int64)
  vocab = tok.vocabulary.subset(sub)
  words = [recon._norm_word(w) for w in vocab.words(np.arange(len(vocab)))]
  whole = teacher.whole_word_mask(vocab)
  base = teacher.relevance_fn(vocab)
  variants = {"centred (training's)": base.centred(centre), "mirrored": base.mirror_averaged().centred(centre),
              "standardised": base.standardised(centre),
              "mirrored + standardised": base.mirror_averaged().standardised(centre)}
  score = jax.jit(lambda f, x: f(x))
  out = []
  for name, fn in variants.items():
    fn = fn if whole is None else fn.restricted(whole)
    row: dict[str, Any] = {"reading": name}
    for set_name, (x, attrs) in sets.items():
      first = np.concatenate([np.asarray(score(fn, x[i:i + 64])) for i in range(0, len(x), 64)]).argmax(1)
      mains = [{r["main colour"], r["main shape"]} for r in (recon.role_words(a) for a in attrs)]
      row[set_name] = recon.naming_share([{words[i]} for i in first], mains)
      row[f"{set_name}, another image's"] = recon.other_image_naming([{words[i]} for i in first], mains)
    out.append(row)
  return out


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--teacher", action="append", default=[], help="a teacher spec (spae.teachers.load); repeatable")
  p.add_argument("--vocab", default="default", help="a vocabulary spec: 'default', 'gemma3-270m', a folder")
  p.add_argument("--num-images", type=int, default=200)
  p.add_argument("--num-reference", type=int, default=400, help="train-split scenes for the centring means")
  p.add_argument("--top", type=int, default=5, help="k: the demo's 'top words' are 5 (layers 1-2)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--subvocab", type=int, nargs="*", default=[], metavar="N",
                  help="sub-vocabulary sizes for the first-word measure (module doc)")
  p.add_argument("--data", default="mix:scenes=0.7,photos=0.3", help="training data spec the words are chosen on")
  p.add_argument("--vocab-images", type=int, default=1024)
  p.add_argument("--vocab-from-captions", type=int, default=0, metavar="N",
                 help="with --subvocab: also choose the sub-vocabulary among the words of the first N training "
                      "captions of --data (semantic.vocab_from_captions)")
  p.add_argument("--centre-images", type=int, default=256)
  p.add_argument("--caption-bank", type=int, nargs="*", default=[0], metavar="N",
                 help="also read through the teacher's first N training captions (0 = directly)")
  p.add_argument("--caption-tau", type=float, default=0.03)
  p.add_argument("--tokenizer", default=None, help="a tokenizer folder: also measure whether its layer-1 word "
                 "is the teacher's first word (`follows`), on held-out scenes and --vocab-images training images")
  p.add_argument("--readings", type=int, default=0, metavar="N",
                 help="with --tokenizer: the refit's readings of the teacher on N training-split scenes of "
                      "--readings-seed and on the held-out scenes (`readings`)")
  p.add_argument("--readings-seed", type=int, default=1)
  p.add_argument("--split", default="test", choices=("test", "validation"), help="held-out scenes' split")
  p.add_argument("--smoke", action="store_true", help="the shipped teacher, vocabulary and tokenizer, 8 images (CI)")
  p.add_argument("--out", default=None)
  a = p.parse_args(argv)
  from spae import train as T

  if a.smoke:
    a.teacher, a.vocab, a.num_images, a.num_reference = ["lit:default"], "default", 8, 8
    a.subvocab, a.vocab_images, a.centre_images, a.readings = [4], 16, 8, 8
  teachers = a.teacher or ["lit:default"]
  vocab = T.build_vocabulary(a.vocab)
  images, attrs = recon.new_scenes(a.num_images, 64, a.seed, a.split)
  # --smoke: the shipped tokenizer (its 24 semantic words), read against the shipped teacher.
  tok = recon.load_tokenizer(a.tokenizer, smoke=False)[0] if a.tokenizer or a.smoke else None
  train_images = _training_images(a.data, a.vocab_images) if a.subvocab or tok is not None else None
  from spae.data import SceneSource

  ref = SceneSource(a.num_reference, 64, seed=a.seed, split="train")
  reference = np.stack([ref.load(i) for i in range(len(ref))])
  candidates: dict[str, np.ndarray | None] = {"all words": None}
  if a.vocab_from_captions:
    from spae.train._semantic import caption_word_mask

    candidates["caption words"] = caption_word_mask(T.open_data(a.data), vocab, a.vocab_from_captions)
  rows = []
  for spec in teachers:
    teacher = _load_teacher(spec)
    if any(a.caption_bank) and getattr(teacher, "caption_bank", None) is None:
      raise SystemExit(f"--caption-bank needs a teacher that keeps its training captions (a LiT folder with "
                       f"captions.npz: tools/train_default_teacher.py --captions); {spec!r} has none.")
    res = measure(teacher, vocab, images, attrs, a.top, reference, tuple(a.caption_bank), a.caption_tau)
    if a.subvocab:
      res["first_word"] = [{**f, "caption_bank": n} for n in a.caption_bank for f in first_words(
          teacher, vocab, images, attrs, a.subvocab, train_images, a.centre_images, n, a.caption_tau, candidates)]
    if tok is not None and a.readings:
      from spae.data import _scenes

      ex = [_scenes.scene_example(a.readings_seed, "train", i) for i in range(a.readings)]
      sets = {f"training scenes (seed {a.readings_seed})": (np.stack([e[0] for e in ex]).astype(np.float32) / 255.0,
                                                            [e[2] for e in ex]),
              f"{a.split} scenes": (images.astype(np.float32) / 255.0, attrs)}
      res["readings"] = readings(teacher, tok, sets, train_images[:a.centre_images], offline_only=a.smoke)
    if tok is not None:
      res["follows"] = [{**f, "caption_bank": n} for n in a.caption_bank for f in follows(
          teacher, tok, images, attrs, train_images, a.centre_images, n, a.caption_tau, offline_only=a.smoke)]
    rows.append({"teacher": spec, **res})
    _common.write_json(a.out, {"benchmark": "teacher_words", "machine": _common.machine_info(), "args": vars(a),
                               "vocab_size": len(vocab), "rows": rows})
  info = _common.machine_info()
  print(f"# teacher top-{a.top} words over {a.vocab} (V={len(vocab)}) on {a.num_images} held-out {a.split}-split "
        f"scenes; {info.get('cpu', '')} ({info['cpu_count']} cores), load avg {os.getloadavg()[0]:.2f}")
  table = []
  for r in rows:
    c = r.get("caption")
    for name, t in r["variants"].items():
      table.append({"teacher": r["teacher"].split("#")[0], "relevance": name, "words": t["words"],
                    "colour": f"{100 * t['colour']:.0f}%", "shape": f"{100 * t['shape']:.0f}%",
                    "either": f"{100 * t['either']:.0f}%", "chance": f"{100 * r['chance_either']:.1f}%",
                    "caption ceiling": f"{100 * c['either']:.0f}%" if c else "n/a",
                    "first image's top words": " ".join(t["example"])})
  print(f"first image: {rows[0]['example_caption']!r}")
  _common.print_table(table, list(table[0]))
  sub = [{"teacher": r["teacher"].split("#")[0], "caption bank": f["caption_bank"] or "-",
          "candidates": f["candidates"], "sub-vocabulary": f["size"],
          **{role: f"{100 * v:.1f}%" for role, v in f["roles"].items()},
          "main object": f"{100 * f['main object']:.1f}%",
          "another image's word": f"{100 * f['main object, other image']:.1f}%",
          "top five: main object": f"{100 * f['top five name the main object']:.1f}%",
          "another image's five": f"{100 * f['top five, other image']:.1f}%"}
         for r in rows for f in r.get("first_word", [])]
  if sub:
    print(f"\nthe teacher's first word in its sub-vocabulary ({a.split} scenes; chosen on {a.vocab_images} "
          f"training images of {a.data}):")
    _common.print_table(sub, list(sub[0]))
  rd = [{"teacher": r["teacher"].split("#")[0], **{k: (f"{100 * v:.1f}%" if isinstance(v, float) else v)
                                                     for k, v in f.items()}}
        for r in rows for f in r.get("readings", [])]
  if rd:
    print(f"\nthe refit's readings of the teacher: its first word in the tokenizer's sub-vocabulary names the main "
          f"object (semantic.refit_mirrored / refit_standardised):")
    _common.print_table(rd, list(rd[0]))
  fol = [{"teacher": r["teacher"].split("#")[0], "caption bank": f["caption_bank"] or "-",
          **{k: (f"{100 * v:.1f}%" if isinstance(v, float) else v) for k, v in f.items() if k != "caption_bank"}}
         for r in rows for f in r.get("follows", [])]
  if fol:
    print(f"\ndoes the tokenizer ({a.tokenizer or 'smoke'}) follow the teacher? its layer-1 word against the teacher's "
          "first word in its sub-vocabulary:")
    _common.print_table(fol, list(fol[0]))
  return 0


if __name__ == "__main__":
  sys.exit(main())
