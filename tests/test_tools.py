"""tools/train_default_tokenizer.py reproduces its tokenizer bit for bit from the seed."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
  spec = importlib.util.spec_from_file_location("train_default_tokenizer", ROOT / "tools" / "train_default_tokenizer.py")
  mod = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(mod)
  return mod


def test_default_tokenizer_tool_is_bit_for_bit_reproducible(tmp_path):
  tool = _tool()
  digests = []
  for run in ("a", "b"):
    assert tool.main(["--smoke", "--workdir", str(tmp_path / f"w{run}"), "--out", str(tmp_path / f"t{run}"),
                      "--set", "logging.image_every=0", "--set", "semantic.weight=0", "--set", "gan.disc_start=100",
                      "--set", "steps=3"]) == 0
    rec = json.loads((tmp_path / f"t{run}" / "training.json").read_text())
    digests.append(rec["params_sha256"])
    assert rec["steps"] == 3 and rec["seed"] == 0
  assert digests[0] == digests[1]
  # The digest covers the parameter values: perturbing one weight changes it.

  import spae

  tok = spae.Tokenizer.load(tmp_path / "ta")
  tok.model.encoder.conv_in.kernel.value = tok.model.encoder.conv_in.kernel.value + 1e-6
  tok.save(tmp_path / "tp")
  assert tool.params_digest(tmp_path / "tp") != digests[0]


def test_shipped_tokenizer_is_what_its_training_record_says():
  """The shipped parameters are the ones the tool's default recipe recorded: same digest, same config."""
  tool = _tool()
  shipped = ROOT / "spae" / "assets" / "default" / "tokenizer"
  rec = json.loads((shipped / "training.json").read_text())
  assert rec["config"] == tool.DEFAULT_CONFIG.name and rec["overrides"] == [] and rec["seed"] == 0
  from spae.train import load_config

  assert rec["steps"] == load_config(tool.DEFAULT_CONFIG).steps  # a recipe edited since would not match
  assert tool.params_digest(shipped) == rec["params_sha256"]
