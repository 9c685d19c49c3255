"""The `spae` command line, run in-process (the console script calls the same `main`)."""

import json
import subprocess
import sys

import numpy as np
import pytest

import spae
from spae.cli import main


def test_help_lists_subcommands():
  out = subprocess.run([sys.executable, "-m", "spae.cli", "--help"], capture_output=True, text=True, check=True)
  for name in ("init", "encode", "decode"):
    assert name in out.stdout


def test_init_encode_decode_roundtrip(tiny_tok_dir, tmp_path, capsys):
  img = tmp_path / "in.png"
  spae.save_image(img, np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8))
  assert main(["encode", str(img), "--tokenizer", str(tiny_tok_dir), "--layers", "2"]) == 0
  out = capsys.readouterr().out
  assert "layer 1 (1x1):" in out and "layer 2 (2x2):" in out and "layer 3" not in out
  assert main(["encode", str(img), "--tokenizer", str(tiny_tok_dir), "--json", "-o", str(tmp_path / "t.json")]) == 0
  doc = json.loads(capsys.readouterr().out)
  assert doc == json.loads((tmp_path / "t.json").read_text())
  assert len(doc["images"][0]["ids"]) == 4
  assert main(["decode", str(tmp_path / "t.json"), "--tokenizer", str(tiny_tok_dir), "--layers", "2",
               "-o", str(tmp_path / "o.png")]) == 0
  assert spae.load_image(tmp_path / "o.png").shape == (32, 32, 3)


def test_init_writes_a_loadable_tokenizer(tmp_path, capsys):
  assert main(["init", str(tmp_path / "tok")]) == 0
  assert spae.Tokenizer.load(tmp_path / "tok").config.image_size == 32


def test_bad_inputs_give_one_line_errors_and_no_output(tiny_tok_dir, tmp_path, capsys):
  bad = tmp_path / "bad.jpg"
  bad.write_bytes(b"not an image")
  assert main(["encode", str(bad), "--tokenizer", str(tiny_tok_dir), "-o", str(tmp_path / "t.json")]) == 2
  err = capsys.readouterr().err
  assert "cannot read image" in err and "Traceback" not in err
  assert not (tmp_path / "t.json").exists()
  assert main(["encode", str(bad), "--tokenizer", str(tmp_path / "none")]) == 2
  assert "does not exist" in capsys.readouterr().err
  (tmp_path / "t.json").write_text("{not json")
  assert main(["decode", str(tmp_path / "t.json"), "--tokenizer", str(tiny_tok_dir),
               "-o", str(tmp_path / "o.png")]) == 2
  assert "not valid JSON" in capsys.readouterr().err
  (tmp_path / "t.json").write_text(json.dumps({"ids": [[[[0]]], [[[0, 1], [2, 99999]]]]}))
  assert main(["decode", str(tmp_path / "t.json"), "--tokenizer", str(tiny_tok_dir),
               "-o", str(tmp_path / "o.png")]) == 2
  assert "out of range" in capsys.readouterr().err
  assert not (tmp_path / "o.png").exists()


def test_decode_picks_one_image_of_a_token_file_and_checks_its_layers(tiny_tok_dir, tmp_path, capsys):
  """`spae decode --image N` decodes the Nth image of a file of several; an index or a layer count the file cannot
  give, and `spae encode --layers` over the pyramid's depth, are one line each and write nothing."""
  rng = np.random.default_rng(1)
  imgs = []
  for name in ("a.png", "b.png"):
    spae.save_image(tmp_path / name, rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
    imgs.append(str(tmp_path / name))
  tok = str(tiny_tok_dir)
  assert main(["encode", *imgs, "--tokenizer", tok, "--layers", "2", "-o", str(tmp_path / "t.json")]) == 0
  capsys.readouterr()
  assert main(["decode", str(tmp_path / "t.json"), "--tokenizer", tok, "--image", "1", "-o",
               str(tmp_path / "one.png")]) == 0
  assert capsys.readouterr().out.strip() == f"wrote {tmp_path / 'one.png'}"
  doc = json.loads((tmp_path / "t.json").read_text())
  want = spae.Tokenizer.load(tok).decode(spae.TokenPyramid.from_json(doc["images"][1]))[0]
  assert np.abs(spae.load_image(tmp_path / "one.png").astype(np.float32) / 255 - want).max() <= 1 / 255 + 1e-6
  for argv, message in ((["decode", str(tmp_path / "t.json"), "--image", "2"], "--image 2 out of range; the file "
                         "has 2 images"),
                        (["decode", str(tmp_path / "t.json"), "--layers", "3"], "--layers 3 but the tokens hold only 2 "
                         "layers"),
                        (["encode", imgs[0], "--layers", "9"], "--layers must be in 1..4 for this tokenizer, got 9")):
    assert main([*argv, "--tokenizer", tok, "-o", str(tmp_path / "x.png")]) == 2
    assert message in capsys.readouterr().err
  assert not (tmp_path / "x.png").exists()


def test_train_runs_a_config_and_exports_a_loadable_tokenizer(tmp_path, capsys):
  """`spae train`: trains the tiny config two steps, prints the last metrics as JSON and where the tokenizer went."""
  from pathlib import Path

  config = Path(__file__).resolve().parents[1] / "configs" / "tiny.py"
  wd = tmp_path / "run"
  assert main(["train", "--config", str(config), "--workdir", str(wd), "--set", "steps=2", "--set",
               "logging.image_every=0", "--no-progress"]) == 0
  out = capsys.readouterr().out.strip().splitlines()
  metrics = json.loads(out[-2])
  assert np.isfinite(metrics["g_loss"]) and metrics["step"] == 2
  assert out[-1] == f"tokenizer written to {wd / 'tokenizer'}"
  assert spae.Tokenizer.load(wd / "tokenizer").config.image_size == 32


def test_train_that_stops_on_non_finite_losses_says_so_and_exits_1(tmp_path, capsys, monkeypatch):
  from pathlib import Path

  from spae.train import _cli as train_cli
  from spae.train._step import NonFiniteLossError

  def stop(self, progress=True):
    raise NonFiniteLossError("3 non-finite losses in a row at step 7 (checkpoint saved)")

  monkeypatch.setattr(train_cli.Trainer, "run", stop)
  config = Path(__file__).resolve().parents[1] / "configs" / "tiny.py"
  assert main(["train", "--config", str(config), "--workdir", str(tmp_path / "run"), "--no-progress"]) == 1
  assert capsys.readouterr().err.strip() == ("spae train: stopped: 3 non-finite losses in a row at step 7 "
                                             "(checkpoint saved)")


def test_data_build_shapes_writes_a_dataset_spae_can_read(tmp_path, capsys):
  """`spae data build-shapes DIR`: builds the tfds dataset there and prints its folder, which make_source reads."""
  from pathlib import Path

  assert main(["data", "build-shapes", str(tmp_path), "--image-size", "16", "--num-train", "6", "--num-validation",
               "2", "--num-test", "2"]) == 0
  out = capsys.readouterr().out.splitlines()
  assert len(out) == 1  # the folder alone (tfds's "Downloading and preparing dataset" lines are not passed on)
  path = Path(out[0])
  assert path.is_dir() and tmp_path in path.parents
  src = spae.data.make_source(f"shapes:train@{tmp_path}")
  assert len(src) == 6 and src.load(0).shape == (16, 16, 3)


def test_no_command_prints_help_and_an_interrupt_exits_130(capsys, monkeypatch):
  from spae import cli

  assert main([]) == 2 and "COMMAND" in capsys.readouterr().out

  def interrupted(args):
    raise KeyboardInterrupt

  help_text, add_args, _ = cli._COMMANDS["init"]
  monkeypatch.setitem(cli._COMMANDS, "init", (help_text, add_args, interrupted))
  assert main(["init", "x"]) == 130
  assert capsys.readouterr().err.strip() == "interrupted"
