"""The `spae` command line."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from spae._io import SpaeInputError, write_json_atomic

_COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def register(name: str, help_text: str, add_args: Callable[[argparse.ArgumentParser], None],
             run: Callable[[argparse.Namespace], int]) -> None:
  """Adds a subcommand: `add_args` fills its parser, `run` executes it and returns the exit code."""
  _COMMANDS[name] = (help_text, add_args, run)


# ------------------------------------------------------------------------------------ init
def _init_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("directory", help="where to write the tokenizer bundle")
  p.add_argument("--vocab", default="tiny",
                 help="'tiny' (built-in ~200-word list) or a saved spae Vocabulary directory")
  p.add_argument("--image-size", type=int, default=32)
  p.add_argument("--seed", type=int, default=0)


def _init(args: argparse.Namespace) -> int:
  import spae

  if args.vocab == "tiny":
    vocab = spae.tiny_vocabulary()
  else:
    vocab = spae.Vocabulary.load(args.vocab)
  cfg = spae.tiny_config(vocab.dim, args.image_size)
  tok = spae.Tokenizer(cfg, vocab, seed=args.seed)
  tok.save(args.directory)
  print(f"wrote an untrained tokenizer ({len(vocab)} words, {cfg.image_size}px, "
        f"pyramid {cfg.pyramid.grids}) to {args.directory}")
  return 0


register("init", "write an untrained tokenizer bundle (tiny built-in vocabulary by default)", _init_args, _init)


# ------------------------------------------------------------------------------------ encode
def _encode_args(p: argparse.ArgumentParser) -> None:
  p.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...; grayscale/RGBA/16-bit are converted)")
  p.add_argument("--tokenizer", required=True, help="tokenizer directory (from `spae init`, `spae train`)")
  p.add_argument("--layers", type=int, default=None, help="print only the first K layers")
  p.add_argument("--json", action="store_true", help="print the tokens as JSON (input for `spae decode`)")
  p.add_argument("-o", "--output", default=None, help="also write the JSON tokens to this file")


def _encode(args: argparse.Namespace) -> int:
  import spae

  tok = spae.Tokenizer.load(args.tokenizer)
  images = [spae.load_image(p) for p in args.images]  # every file is checked before any work
  k = args.layers or tok.config.pyramid.num_layers
  if not 1 <= k <= tok.config.pyramid.num_layers:
    raise SpaeInputError(f"--layers must be in 1..{tok.config.pyramid.num_layers}, got {k}.")
  results = []
  for path, img in zip(args.images, images):
    pyr = tok.encode(img)
    pyr = spae.TokenPyramid(pyr.ids[:k], pyr.vocabulary)
    results.append((path, pyr))
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

  tok = spae.Tokenizer.load(args.tokenizer)
  try:
    doc = json.loads(Path(args.tokens).read_text())
  except FileNotFoundError:
    raise SpaeInputError(f"token file {args.tokens!r} does not exist.") from None
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise SpaeInputError(f"token file {args.tokens!r} is not valid JSON ({e}).") from None
  entries = doc["images"] if isinstance(doc, dict) and "images" in doc else [doc]
  if args.image is not None:
    if not 0 <= args.image < len(entries):
      raise SpaeInputError(f"--image {args.image} out of range; the file has {len(entries)} images.")
    entries = [entries[args.image]]
  pyrs = [spae.TokenPyramid.from_json(e, tok.vocabulary) for e in entries]
  out = Path(args.output)
  imgs = [tok.decode(p, layers=args.layers)[0] for p in pyrs]
  paths = [out] if len(imgs) == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix or '.png'}")
                                        for i in range(len(imgs))]
  for path, img in zip(paths, imgs):
    spae.save_image(path, img)
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
         *_lazy("spae.prompting.fewshot", "add_fewshot_args", "run_fewshot"))
register("generate", "progressive in-context image generation with a frozen LLM "
         "(denoise/inpaint/outpaint/deblur/shift/class)", *_lazy("spae.prompting.generate", "add_generate_args",
                                                                  "run_generate"))


# ------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="spae", description="Semantic Pyramid AutoEncoder: images <-> LLM words.")
  parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
  sub = parser.add_subparsers(dest="command", metavar="COMMAND")
  for name, (help_text, add_args, _) in _COMMANDS.items():
    add_args(sub.add_parser(name, help=help_text, description=help_text))
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  # Third-party libraries (orbax, absl) log chattily at INFO; only spae's own messages are shown by default.
  logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
  logging.getLogger("spae").setLevel(logging.DEBUG if args.verbose else logging.INFO)
  if not args.command:
    parser.print_help()
    return 2
  try:
    return int(_COMMANDS[args.command][2](args) or 0)
  except SpaeInputError as e:
    if args.verbose:
      raise
    print(f"spae {args.command}: error: {e}", file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130


if __name__ == "__main__":
  sys.exit(main())
