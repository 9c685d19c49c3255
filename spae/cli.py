"""The `spae` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from spae._io import SpaeInputError, check_can_create, check_output_dir, check_output_file, write_json_atomic
from spae._xla_flags import xla_cpu_settings

__all__ = ["build_parser", "main", "register"]

_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def register(name: str, help_text: str, add_args: Callable[[argparse.ArgumentParser], None],
             run: Callable[[argparse.Namespace], int]) -> None:
  """Adds a subcommand: `add_args` fills its parser, `run` executes it and returns the exit code."""
  _COMMANDS[name] = (help_text, add_args, run)


# ------------------------------------------------------------------------------------ init
def _init_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("directory", help="where to write the tokenizer bundle (a new or empty folder)")
  p.add_argument("--vocab", default="tiny",
                 help="a vocabulary spec: 'tiny[:DIM]' (built-in ~200-word list), 'default' (shipped), "
                 "'gemma3-270m' (the `models` extra) or a saved spae Vocabulary directory")
  p.add_argument("--image-size", type=int, default=32)
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--force", action="store_true",
                 help="replace DIRECTORY if it holds a spae tokenizer bundle (other folders are never replaced)")


def _init(args: argparse.Namespace) -> int:
  import spae
  from spae import _specs
  from spae._bundle import is_tokenizer_bundle

  d = Path(args.directory)
  if d.is_dir() and any(d.iterdir()) and not args.force:
    raise SpaeInputError(f"{str(d)!r} is not empty; choose a new folder, or pass --force to replace the spae "
                         "tokenizer bundle in it.")
  check_output_dir(d, is_tokenizer_bundle, "spae tokenizer bundle")  # before the networks are built
  _positive(args.image_size, "--image-size")
  vocab = _specs.resolve("vocab", args.vocab)
  cfg = spae.tiny_config(vocab.dim, args.image_size)
  cfg.validate(vocab.dim)
  tok = spae.Tokenizer(cfg, vocab, seed=args.seed)
  tok.save(d)
  print(f"wrote an untrained tokenizer ({len(vocab)} words, {cfg.image_size}px, "
        f"pyramid {cfg.pyramid.grids}) to {d}")
  return 0


register("init", "write an untrained tokenizer bundle (tiny built-in vocabulary by default)", _init_args, _init)


def _positive(value: int, flag: str) -> None:
  if value < 1:
    raise SpaeInputError(f"{flag} must be at least 1, got {value}.")


# ------------------------------------------------------------------------------------ encode
def _encode_args(p: argparse.ArgumentParser) -> None:
  from spae._images import DEFAULT_MAX_PIXELS

  p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...; grayscale/RGBA/16-bit are converted)")
  p.add_argument("--tokenizer", required=True, help="tokenizer directory (from `spae init`, `spae train`)")
  p.add_argument("--layers", type=int, default=None, help="print only the first K layers (K >= 1)")
  p.add_argument("--json", action="store_true", help="print the tokens as JSON (input for `spae decode`)")
  p.add_argument("-o", "--output", default=None, help="also write the JSON tokens to this file")
  p.add_argument("--batch-size", type=int, default=8,
                 help="images decoded and encoded at a time: memory is bounded by this many images (default 8)")
  p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                 help=f"refuse images with more decoded pixels (default {DEFAULT_MAX_PIXELS:,}; big JPEGs are "
                 "decoded at reduced size first)")


def _encode(args: argparse.Namespace) -> int:
  import numpy as np

  import spae
  from spae import _images

  if args.layers is not None:
    _positive(args.layers, "--layers")
  _positive(args.batch_size, "--batch-size")
  _positive(args.max_pixels, "--max-pixels")
  if args.output:
    check_output_file(args.output)
  tok = spae.Tokenizer.load(args.tokenizer)
  num_layers = tok.config.pyramid.num_layers
  k = num_layers if args.layers is None else args.layers
  if k > num_layers:
    raise SpaeInputError(f"--layers must be in 1..{num_layers} for this tokenizer, got {k}.")
  size = tok.config.image_size
  read = dict(max_pixels=args.max_pixels, min_size=size)
  for p in args.images:  # every file's header is checked before any work
    _images.check_image_file(p, **read)
  # Files stream through in batches; only the (small) token grids of finished batches are kept.
  bs = min(args.batch_size, len(args.images))
  results = []
  for start in range(0, len(args.images), bs):
    paths = args.images[start:start + bs]
    x = np.stack([tok.preprocess(_images.load_image(p, **read))[0][0] for p in paths])
    if len(paths) < bs:  # pad the last batch: one compiled shape for the whole run
      x = np.concatenate([x, np.zeros((bs - len(paths),) + x.shape[1:], x.dtype)])
    pyr = tok.encode(x)
    results += [(p, spae.TokenPyramid([a[i:i + 1] for a in pyr.ids[:k]], tok.vocabulary))
                for i, p in enumerate(paths)]
  if args.json or args.output:
    doc = {"tokenizer": str(args.tokenizer), "images": [dict(path=str(p), **pyr.to_json()) for p, pyr in results]}
    if args.output:
      write_json_atomic(args.output, doc)
    if args.json:
      print(json.dumps(doc))
  if not args.json:
    for path, pyr in results:
      print(f"{path}:")
      for layer in range(1, pyr.num_layers + 1):
        s = pyr.grids[layer - 1]
        print(f"  layer {layer} ({s}x{s}): {' '.join(pyr.words(layer, 0))}")
  return 0


register("encode", "print the token pyramid of images as words, layer by layer", _encode_args, _encode)


# ------------------------------------------------------------------------------------ decode
def _decode_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("tokens", help="JSON tokens from `spae encode --json` / `-o`")
  p.add_argument("--tokenizer", required=True)
  p.add_argument("--layers", type=int, default=None, help="decode from the first K layers (default all)")
  p.add_argument("-o", "--output", required=True,
                 help="output PNG; with several images, NAME.png becomes NAME-0.png, NAME-1.png, ...")
  p.add_argument("--image", type=int, default=None, help="decode only this image of the JSON file")


def _decode(args: argparse.Namespace) -> int:
  import spae
  from spae import _token_json

  if args.layers is not None:
    _positive(args.layers, "--layers")
  check_output_file(args.output)
  doc = _token_json.read_document(args.tokens)
  tok = spae.Tokenizer.load(args.tokenizer)
  # The whole document is validated (types, ranges, grids, vocabulary) before anything is decoded or written.
  entries = _token_json.parse_document(doc, vocab_size=len(tok.vocabulary), fingerprint=tok.vocabulary.fingerprint(),
                                       grids=tok.config.pyramid.grids, where=f"token file {args.tokens!r}")
  images = [(e, b) for e, ids in enumerate(entries) for b in range(ids[0].shape[0])]  # every image of every entry
  if args.image is not None:
    if not 0 <= args.image < len(images):
      raise SpaeInputError(f"--image {args.image} out of range; the file has {len(images)} images.")
    images = [images[args.image]]
  fewest = min(len(entries[e]) for e, _ in images)
  if args.layers is not None and args.layers > fewest:
    raise SpaeInputError(f"--layers {args.layers} but the tokens hold only {fewest} layers; pass --layers 1..{fewest}.")
  out = Path(args.output)
  paths = [out] if len(images) == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}")
                                          for i in range(len(images))]
  for path in paths:
    check_output_file(path)
  for path, (e, b) in zip(paths, images):  # one image in memory at a time
    pyr = spae.TokenPyramid([a[b:b + 1] for a in entries[e]], tok.vocabulary)
    spae.save_image(path, tok.decode(pyr, layers=args.layers)[0])
    print(f"wrote {path}")
  return 0


register("decode", "decode JSON tokens (any prefix of layers) back to an image", _decode_args, _decode)


# ------------------------------------------------------------------------------------ data
def _data_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("action", choices=["build-shapes"], help="build-shapes: write the synthetic `shapes` tfds dataset")
  p.add_argument("data_dir")
  p.add_argument("--image-size", type=int, default=64)
  p.add_argument("--num-train", type=int, default=10_000)
  p.add_argument("--num-validation", type=int, default=1_000)
  p.add_argument("--num-test", type=int, default=1_000)
  p.add_argument("--seed", type=int, default=0)


def _data(args: argparse.Namespace) -> int:
  from spae import data

  d = Path(args.data_dir)
  if os.path.lexists(d) and not d.is_dir():
    raise SpaeInputError(f"data directory {str(d)!r} exists and is not a folder; choose a folder.")
  check_can_create(d / "shapes")  # a tfds data_dir holds several datasets: it may exist, but must be writable
  _positive(args.image_size, "--image-size")
  for flag in ("num_train", "num_validation", "num_test"):
    if getattr(args, flag) < 0:
      raise SpaeInputError(f"--{flag.replace('_', '-')} must be >= 0, got {getattr(args, flag)}.")
  path = data.build_shapes(args.data_dir, image_size=args.image_size, num_train=args.num_train,
                           num_validation=args.num_validation, num_test=args.num_test, seed=args.seed)
  print(path)
  return 0


register("data", "build the offline synthetic `shapes` dataset (tfds array_record, no TensorFlow)", _data_args, _data)


# ------------------------------------------------------------------------------------ prompting
def _lazy(module: str, add: str, run: str):
  """Subcommands whose modules import heavier dependencies are loaded only when used."""
  import importlib

  return (lambda p: getattr(importlib.import_module(module), add)(p),
          lambda a: getattr(importlib.import_module(module), run)(a))


register("train", "train a tokenizer from a Python config (checkpoints, resume, metrics, export)",
         *_lazy("spae.train", "add_args", "run_cli"))
register("demo", "offline demo on the shipped default tokenizer: words per layer, reconstructions, HTML report",
         *_lazy("spae.demo", "add_args", "run_cli"))
register("fewshot", "N-way K-shot classification by prompting a frozen LLM with SPAE tokens (and LLM-free probes)",
         *_lazy("spae.prompting._fewshot_cli", "add_fewshot_args", "run_fewshot"))
register("generate", "progressive in-context image generation with a frozen LLM "
         "(denoise/inpaint/outpaint/deblur/shift/class)", *_lazy("spae.prompting.generate", "add_generate_args",
                                                                  "run_generate"))
register("caption", "in-context captioning of held-out scenes by a frozen LLM, against the oracle and a baseline",
         *_lazy("spae.prompting.caption", "add_caption_args", "run_caption"))
register("vqa", "in-context questions about held-out scenes (colour, shape, size, count, position) for a frozen LLM",
         *_lazy("spae.prompting.vqa", "add_vqa_args", "run_vqa"))


# ------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="spae", description="Semantic Pyramid AutoEncoder: images <-> LLM words.")
  parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name, (help_text, add_args, _) in _COMMANDS.items():
    add_args(sub.add_parser(name, help=help_text, description=help_text))
  return parser


# Subcommands whose time a frozen LLM's forward passes dominate.
LLM_COMMANDS = frozenset({"fewshot", "caption", "vqa", "generate"})


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  # Third-party libraries (orbax, absl) log chattily at INFO; only spae's own messages are shown by default.
  logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
  logging.getLogger("spae").setLevel(logging.DEBUG if args.verbose else logging.INFO)
  if not args.command:
    parser.print_help()
    return 2
  # Before any computation starts JAX's backend (spae._xla_flags says why); no AVX2 cap where an LLM's matmuls
  # dominate the time.
  xla_cpu_settings(isa_cap=args.command not in LLM_COMMANDS)
  try:
    return int(_COMMANDS[args.command][2](args) or 0)
  except SpaeInputError as e:
    if args.verbose:
      raise
    # One line, whatever the message holds (some wrap library errors).
    print(f"spae {args.command}: error: {' '.join(str(e).split())}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
