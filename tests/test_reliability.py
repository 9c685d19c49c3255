"""Reliability (issue 9): no data loss, validated token files and bundles, bounded image decoding."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import spae
from spae import _images, _token_json
from spae._io import SpaeInputError, atomic_path, check_output_file, write_json_atomic
from spae.cli import main


def _tree(root: Path) -> dict[str, bytes | None]:
  return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


# ------------------------------------------------------------------------------------ 1. no data loss
def test_atomic_write_refuses_an_existing_directory(tmp_path):
  v = tmp_path / "v"
  (v / "sub").mkdir(parents=True)
  (v / "notes.txt").write_text("x")
  before = _tree(tmp_path)
  with pytest.raises(SpaeInputError, match="existing directory"):
    write_json_atomic(v, {"a": 1})
  with pytest.raises(SpaeInputError, match="existing directory"):
    spae.save_image(v, np.zeros((4, 4, 3), np.uint8))
  assert _tree(tmp_path) == before


def test_failed_write_leaves_nothing_not_even_new_parent_folders(tmp_path):
  with pytest.raises(RuntimeError):
    with atomic_path(tmp_path / "a" / "b" / "out.json") as tmp:
      tmp.write_text("half")
      raise RuntimeError("disk full")
  assert list(tmp_path.iterdir()) == []


def test_a_folder_that_appears_at_the_output_while_spae_writes_is_left_alone(tmp_path):
  """If the user (or another program) puts a folder where spae is writing, spae keeps it and leaves nothing of its
  own: for a file output, and for a folder output whose new contents are not a bundle spae may replace."""
  from spae._io import atomic_dir

  with pytest.raises(SpaeInputError, match="became a directory while spae was writing it; not replaced"):
    with atomic_path(tmp_path / "out.json") as tmp:
      tmp.write_text("{}")
      (tmp_path / "out.json").mkdir()
      (tmp_path / "out.json" / "mine.txt").write_text("precious")
  with pytest.raises(SpaeInputError, match="changed while spae was writing it; not replaced"):
    with atomic_dir(tmp_path / "bundle", replaceable=lambda p: False) as tmp:
      tmp.mkdir()
      (tmp_path / "bundle").mkdir()
      (tmp_path / "bundle" / "notes.txt").write_text("mine")
  assert _tree(tmp_path) == {"bundle": None, "bundle/notes.txt": b"mine", "out.json": None,
                             "out.json/mine.txt": b"precious"}


def test_outputs_under_a_file_or_an_unwritable_folder_are_refused(tmp_path):
  (tmp_path / "afile").write_text("x")
  with pytest.raises(SpaeInputError, match="afile.* is a file, not a folder"):
    check_output_file(tmp_path / "afile" / "x.png")
  try:  # /sys refuses new files on Linux even for root
    check_output_file("/sys/x.png")
  except SpaeInputError as e:
    assert "/sys" in str(e) and "not writable" in str(e)
  else:
    pytest.skip("/sys is writable here")


def test_save_replaces_only_a_tokenizer_bundle(tiny_tok, tmp_path):
  other = tmp_path / "photos"
  other.mkdir()
  (other / "cat.jpg").write_bytes(b"precious")
  with pytest.raises(SpaeInputError, match="not a spae tokenizer bundle"):
    tiny_tok.save(other)
  assert _tree(other) == {"cat.jpg": b"precious"}
  bundle = tmp_path / "tok"
  tiny_tok.save(bundle)
  (bundle / "params" / "stale").write_text("old")
  tiny_tok.save(bundle)  # re-saving a bundle replaces it, leaving no stale file and no temporary folder
  assert not (bundle / "params" / "stale").exists()
  assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "tok"]
  empty = tmp_path / "empty"
  empty.mkdir()
  tiny_tok.save(empty)
  assert spae.Tokenizer.load(empty).config == tiny_tok.config


def test_init_refuses_non_empty_folders_and_force_replaces_only_bundles(tmp_path, capsys):
  notes = tmp_path / "notes"
  notes.mkdir()
  (notes / "todo.txt").write_text("keep me")
  assert main(["init", str(notes)]) == 2
  assert "--force" in capsys.readouterr().err
  assert main(["init", str(notes), "--force"]) == 2
  assert "not a spae tokenizer bundle" in capsys.readouterr().err
  assert _tree(notes) == {"todo.txt": b"keep me"}
  tok = tmp_path / "tok"
  assert main(["init", str(tok)]) == 0
  assert main(["init", str(tok), "--image-size", "64"]) == 2
  assert main(["init", str(tok), "--image-size", "64", "--force"]) == 0
  assert spae.Tokenizer.load(tok).config.image_size == 64


# ------------------------------------------------------------------------------------ 3. token files
V, GRIDS, FP = 10, (1, 2), "f" * 16


def _entry(**kw):
  return {"format": 1, "grids": [1, 2], "ids": [[[[3]]], [[[1, 2], [3, 4]]]], "vocabulary": FP, **kw}


BAD_DOCS = {
    "int32 overflow": ({"images": [_entry(ids=[[[[2147483648]]]])]}, "out of range"),
    "id past the vocabulary": (_entry(ids=[[[[V]]]]), "out of range"),
    "negative id": (_entry(ids=[[[[-1]]]]), "out of range"),
    "float id": (_entry(ids=[[[[1.7]]]]), "must be integers, got 1.7"),
    "1.0 is not an int": (_entry(ids=[[[[1.0]]]]), "must be integers"),
    "bool id": (_entry(ids=[[[[True]]]]), "must be integers"),
    "images not a list": ({"images": 5}, "'images' must be a list"),
    "image entry a string": ({"images": ["x"]}, "image entry 0 must be an object"),
    "layer not a list": ({"ids": [5]}, "layer 1 must be a non-empty list"),
    "no images": ({"images": []}, "holds no images"),
    "top level a list": ([1, 2], "must be an object"),
    "wrong grid side": (_entry(ids=[[[[1, 2], [3, 4]]]]), "expected a 1x1 grid"),
    "ragged row": (_entry(ids=[[[[1]]], [[[1, 2], [3]]]]), "row 1: expected 2 ids"),
    "too many layers": (_entry(ids=[[[[1]]], [[[1, 2], [3, 4]]], [[[1]]]], grids=None), "has 3 layers"),
    "layers disagree on batch": (_entry(ids=[[[[1]], [[2]]], [[[1, 2], [3, 4]]]]), "different numbers of images"),
    "grids key wrong": (_entry(grids=[1, 4]), "'grids'"),
    "other vocabulary": (_entry(vocabulary="0" * 16), "different vocabulary"),
    "format 2": (_entry(format=2), "format 2 is not supported"),
    "second entry bad": ({"images": [_entry(), _entry(ids="x")]}, "image entry 1"),
}


@pytest.mark.parametrize("name", list(BAD_DOCS))
def test_token_documents_are_validated_whole(name):
  doc, match = BAD_DOCS[name]
  with pytest.raises(SpaeInputError, match=match):
    _token_json.parse_document(doc, vocab_size=V, fingerprint=FP, grids=GRIDS)


def test_token_document_without_fingerprint_warns_once(caplog):
  doc = {"images": [{k: v for k, v in _entry().items() if k != "vocabulary"}] * 3}
  with caplog.at_level(logging.WARNING, logger="spae"):
    ids = _token_json.parse_document(doc, vocab_size=V, fingerprint=FP, grids=GRIDS)
  assert len(ids) == 3 and [r.levelno for r in caplog.records] == [logging.WARNING]
  assert "fingerprint" in caplog.records[0].getMessage()


def test_token_files_that_are_not_files_or_not_json(tmp_path):
  with pytest.raises(SpaeInputError, match="is a folder"):
    _token_json.read_document(tmp_path)
  (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
  with pytest.raises(SpaeInputError, match="not valid JSON"):
    _token_json.read_document(tmp_path / "deep.json")
  (tmp_path / "bin.json").write_bytes(b"\xff\xfe\x00garbage")
  with pytest.raises(SpaeInputError, match="not valid JSON"):
    _token_json.read_document(tmp_path / "bin.json")


def test_json_readers_name_a_fifo_instead_of_blocking_on_it(tmp_path):
  """Every JSON input (token files, tokenizer configs, episode files, ...) goes through one reader, which says what
  a path is when it is not a regular file before opening it: opening a FIFO would wait for a writer forever."""
  import threading

  from spae import _io

  os.mkfifo(tmp_path / "pipe")
  # A reader that opened the FIFO would wait for a writer forever; this one lets such a regression fail, not hang.
  writer = threading.Thread(target=lambda: os.close(os.open(tmp_path / "pipe", os.O_WRONLY)), daemon=True)
  writer.start()
  with pytest.raises(SpaeInputError, match=r"token file .*pipe' is a FIFO \(named pipe\); pass the JSON file"):
    _token_json.read_document(tmp_path / "pipe")
  with pytest.raises(SpaeInputError, match=r"tokenizer config .*pipe' is a FIFO \(named pipe\); re-export it"):
    _io.read_json(tmp_path / "pipe", "tokenizer config", "re-export it.")
  with pytest.raises(SpaeInputError, match="does not exist; re-export it"):
    _io.read_json(tmp_path / "nope.json", "tokenizer config", "re-export it.")
  os.close(os.open(tmp_path / "pipe", os.O_RDONLY | os.O_NONBLOCK))  # releases the writer
  writer.join(5)


def test_decode_writes_every_image_of_a_batched_entry(tiny_tok, tiny_tok_dir, sample_images, tmp_path, capsys):
  entry = tiny_tok.encode(sample_images).to_json()  # one entry holding two images
  (tmp_path / "t.json").write_text(json.dumps(entry))
  assert main(["decode", str(tmp_path / "t.json"), "--tokenizer", str(tiny_tok_dir),
               "-o", str(tmp_path / "o.png")]) == 0
  assert sorted(p.name for p in tmp_path.glob("o-*.png")) == ["o-0.png", "o-1.png"]
  want = _images.to_uint8(tiny_tok.decode(tiny_tok.encode(sample_images)))
  got = spae.load_image(tmp_path / "o-1.png").astype(int)
  assert np.abs(got - want[1]).max() <= 1


# ------------------------------------------------------------------------------------ 4. memory
def _png_declaring(width: int, height: int) -> bytes:
  """A small valid PNG whose IHDR is patched to declare width x height (the pixel data stays tiny)."""
  buf = io.BytesIO()
  Image.new("RGB", (8, 8)).save(buf, format="PNG")
  data = bytearray(buf.getvalue())
  ihdr = bytearray(data[12:29])  # b'IHDR' + 13 bytes
  ihdr[4:12] = struct.pack(">II", width, height)
  data[12:29] = ihdr
  data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)))
  return bytes(data)


def test_pixel_limit_is_checked_on_the_header_before_decoding(tmp_path):
  big = tmp_path / "big.png"
  big.write_bytes(_png_declaring(12000, 12000))
  with pytest.raises(SpaeInputError, match=r"12000x12000 = 144.0 Mpx, over the limit of 64 Mpx"):
    spae.load_image(big)
  with pytest.raises(SpaeInputError, match="over the limit"):
    _images.check_image_file(big)
  with pytest.raises(SpaeInputError, match="over the limit of 0.0001 Mpx"):
    spae.load_image(_write_png(tmp_path / "s.png", np.zeros((20, 20, 3), np.uint8)), max_pixels=100)


def _write_png(path: Path, a: np.ndarray) -> Path:
  Image.fromarray(a).save(path)
  return path


def _smooth(h: int, w: int) -> np.ndarray:
  y, x = np.mgrid[0:h, 0:w] / max(h, w)
  return (np.stack([np.sin(6 * x), np.cos(5 * y), np.sin(4 * (x + y))], -1) * 100 + 128).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_big_images_are_decoded_reduced_to_what_the_tokenizer_needs(tmp_path, fmt):
  path = tmp_path / f"big.{fmt.lower()}"
  Image.fromarray(_smooth(1200, 1600)).save(path, format=fmt, quality=95)
  full = spae.load_image(path)
  small = spae.load_image(path, min_size=32)
  assert full.shape == (1200, 1600, 3)
  assert 96 <= min(small.shape[:2]) < 200  # JPEG: 1/8 DCT scaling; PNG: 12x box reduction
  a = _images.fit_to_size(full[None] / 255.0, 32)
  b = _images.fit_to_size(small[None] / 255.0, 32)
  assert np.abs(a - b).mean() < 0.01


def test_exif_rotation_is_applied_also_when_reducing(tmp_path):
  a = _smooth(60, 200)
  exif = Image.Exif()
  exif[0x0112] = 6  # rotate 90 degrees clockwise for display
  Image.fromarray(a).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
  assert spae.load_image(tmp_path / "r.jpg").shape == (200, 60, 3)
  assert spae.load_image(tmp_path / "r.jpg", min_size=10).shape == (100, 30, 3)


def test_encode_streams_files_in_batches(tiny_tok_dir, tmp_path, monkeypatch, capsys):
  paths = [str(_write_png(tmp_path / f"{i}.png", _smooth(40 + i, 48))) for i in range(5)]
  events = []
  load, encode = _images.load_image, spae.Tokenizer.encode
  monkeypatch.setattr(_images, "load_image", lambda p, **kw: events.append("load") or load(p, **kw))
  monkeypatch.setattr(spae.Tokenizer, "encode", lambda self, x: events.append(f"encode{len(x)}") or encode(self, x))
  assert main(["encode", *paths, "--tokenizer", str(tiny_tok_dir), "--batch-size", "2", "--json"]) == 0
  assert events == ["load", "load", "encode2", "load", "load", "encode2", "load", "encode2"]  # last batch padded
  batched = json.loads(capsys.readouterr().out)["images"]
  monkeypatch.undo()
  assert main(["encode", *paths, "--tokenizer", str(tiny_tok_dir), "--json"]) == 0
  assert [e["ids"] for e in json.loads(capsys.readouterr().out)["images"]] == [e["ids"] for e in batched]


# ------------------------------------------------------------------------------------ 5. malformed bundles
def _cfg(mutate):
  def apply(d: Path):
    meta = json.loads((d / "config.json").read_text())
    mutate(meta)
    (d / "config.json").write_text(json.dumps(meta))
  return apply


def _truncate_params(d: Path):
  big = max((p for p in (d / "params").rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
  big.write_bytes(big.read_bytes()[:1000])


def _ref(text: str):
  def apply(d: Path):
    shutil.rmtree(d / "vocab")
    (d / "vocab.ref.json").write_text(text)
  return apply


BAD_BUNDLES = {
    "config is a list": (lambda d: (d / "config.json").write_text("[]"), "config.json must be a JSON object"),
    "config is binary": (lambda d: (d / "config.json").write_bytes(bytes(range(256))), "config.json.*binary"),
    "unknown config key": (_cfg(lambda m: m["config"].update(colour=1)), "unknown key 'colour'"),
    "unknown top key": (_cfg(lambda m: m.update(colour=1)), "unknown key 'colour'"),
    "image_size abc": (_cfg(lambda m: m["config"].update(image_size="abc")), "image_size must be an integer"),
    "image_size -32": (_cfg(lambda m: m["config"].update(image_size=-32)), "image_size must be an integer >= 1"),
    "grids not a list": (_cfg(lambda m: m["config"]["pyramid"].update(grids=7)), "grids must be a non-empty list"),
    "garbage vocab.json": (lambda d: (d / "vocab" / "vocab.json").write_text("garbage"), "vocab.json.*not valid JSON"),
    "garbage vocab.npz": (lambda d: (d / "vocab" / "vocab.npz").write_bytes(b"garbage" * 9),
                          "vocab.npz is not an .npz"),
    "truncated vocab.npz": (lambda d: (d / "vocab" / "vocab.npz").write_bytes(
        (d / "vocab" / "vocab.npz").read_bytes()[:900]), "vocab.npz is damaged"),
    "garbage vocab.ref.json": (_ref("garbage"), "vocab.ref.json.*not valid JSON"),
    "vocab.ref.json list": (_ref("[1]"), "vocab.ref.json must be an object"),
    "truncated params": (_truncate_params, "params is truncated or damaged"),
    "params of another config": (_cfg(lambda m: m["config"]["autoencoder"].update(channels=8)),
                                 "params does not match config.json"),
}


@pytest.mark.parametrize("name", list(BAD_BUNDLES))
def test_malformed_bundles_are_one_line_errors_naming_the_file(name, tiny_tok_dir, tmp_path):
  damage, match = BAD_BUNDLES[name]
  d = tmp_path / "tok"
  shutil.copytree(tiny_tok_dir, d)
  damage(d)
  with pytest.raises(SpaeInputError, match=match) as e:
    spae.Tokenizer.load(d)
  msg = str(e.value)
  assert "\n" not in msg and str(d) in msg and len(msg) < 400
  assert "pickled" not in msg


# ------------------------------------------------------------------------------------ 8. small ones
def test_animated_gif_warns_once_that_the_first_frame_is_used(tmp_path, caplog):
  frames = [Image.new("RGB", (16, 16), c) for c in ("red", "green", "blue")]
  frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:], duration=50)
  with caplog.at_level(logging.WARNING, logger="spae"):
    img = spae.load_image(tmp_path / "a.gif")
  assert img[0, 0].tolist() == [255, 0, 0]
  assert len(caplog.records) == 1 and "3 frames; using the first" in caplog.records[0].getMessage()


def test_folders_and_fifos_are_named_for_what_they_are(tmp_path):
  with pytest.raises(SpaeInputError, match="is a folder, not an image file"):
    spae.load_image(tmp_path)
  os.mkfifo(tmp_path / "pipe")
  with pytest.raises(SpaeInputError, match="is a FIFO"):  # and does not block reading it
    spae.load_image(tmp_path / "pipe")
  with pytest.raises(SpaeInputError, match="does not exist"):
    spae.load_image(tmp_path / "nope.png")
