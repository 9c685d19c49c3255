"""Data parallelism: 8 fake CPU devices give the same training result as 1 device."""

import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import dataclasses, sys, jax, numpy as np
from spae import train as T
cfg = T.load_config(sys.argv[1], ["steps=2", "gan.disc_start=0", "crop=\"center\"", "flip=false",
                                  "logging.image_every=0", "checkpoints.every=1000", "num_data_threads=0"])
tr = T.Trainer(cfg, sys.argv[2])
assert jax.device_count() == int(sys.argv[4]), jax.device_count()
for _ in range(2):
  tr.train_step(next(tr.data)["image"])
leaves = jax.tree_util.tree_leaves_with_path(jax.device_get({"g": tr.state["g_params"], "d": tr.state["d_params"]}))
np.savez(sys.argv[3], **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})
"""


def _run(tmp_path, devices):
  out = tmp_path / f"p{devices}.npz"
  env = {**__import__("os").environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}",
         "JAX_PLATFORMS": "cpu"}
  subprocess.run([sys.executable, "-c", SCRIPT, str(ROOT / "configs" / "tiny.py"), str(tmp_path / f"w{devices}"),
                  str(out), str(devices)], check=True, env=env, capture_output=True)
  return dict(np.load(out))


def test_eight_devices_match_one(tmp_path):
  one, eight = _run(tmp_path, 1), _run(tmp_path, 8)
  assert one.keys() == eight.keys() and len(one) > 10
  for k in one:
    np.testing.assert_allclose(eight[k], one[k], rtol=2e-4, atol=2e-5, err_msg=k)
