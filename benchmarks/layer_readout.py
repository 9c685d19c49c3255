"""What can a layer's words say? Scene attributes read from each layer's quantization input, its words and pixels.

  python benchmarks/layer_readout.py --out readout.json                   # shipped default; 3,000 + 400 scenes
  python benchmarks/layer_readout.py --tokenizer DIR --layers 3 --out readout.json
  python benchmarks/layer_readout.py --smoke --out /tmp/readout.json      # CI: tiny untrained tokenizer

A layer's word can only name what the value it quantizes carries. For layers 1..L this reads three attributes of
`scenes` (the background's colour, the main object's colour, the main object's shape) with a least-squares
one-vs-rest classifier fitted on `train`-split scenes and scored on `test`-split scenes, from:

- `latent`: the values layer l's search sees before the running sum is taken off, i.e. the encoder's latents
  subsampled to the layer's grid the tokenizer's way (`PyramidSpec.subsample`: block means for 'pool', block
  centres for 'dilation'; the tokenizer's own attention pooling on its pooled layers), flattened ([s_l² · d]);
- `words`: the layer's token ids as a bag (one-hot counts over the ids seen in the training scenes): what the
  tokens carry;
- `thumbnail`: the pixels' s_l×s_l box averages (the baseline: what the same grid of exact colours carries);
- `contrast` (layer 1 only): the fixed contrast pooling a pooled layer's scorer starts from (β = 1, v = 0 in
  docs/method.md §2: weights softmax(‖z_p − z̄‖²) over the whole grid), read from that one d-vector: what layer 1
  would quantize had its scorer not been trained (`semantic.learn_pool=false`);
- `pooled` (layer 1 only): a small learned attention pooling of the whole latent grid into one d-vector, read by a
  linear classifier from that vector alone (`attention_readout`): what one content-dependent quantization input
  could carry where layer 1 now quantizes the block mean;
- `majority`: the training scenes' most frequent answer (chance).

The ridge strength is chosen per feature by 5-fold cross-validation on the training scenes only. A layer whose
`latent` reads an attribute at chance cannot name it through any code map; raising it needs a different
quantization input (or an encoder trained to put it there), not different words.
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

LAMBDAS = (0.1, 1.0, 10.0, 100.0, 1000.0)
FEATURES = ("latent", "words", "thumbnail")


def fit_ridge(x: np.ndarray, y: np.ndarray, classes: int, lam: float) -> tuple[np.ndarray, ...]:
  """(mean, scale, weights, intercept) of a least-squares one-vs-rest classifier on standardised features.

  x: [N, F], y: int [N]. The features are centred, so the unshrunk intercept is the targets' mean.
  """
  mu, sd = x.mean(0), x.std(0) + 1e-6
  xs = (x - mu) / sd
  onehot = np.eye(classes, dtype=np.float64)[y]
  ybar = onehot.mean(0)
  t = onehot - ybar
  if xs.shape[1] <= len(xs):
    w = np.linalg.solve(xs.T @ xs + lam * np.eye(xs.shape[1]), xs.T @ t)
  else:  # more features than scenes: the dual form solves an [N, N] system instead (the same weights)
    w = xs.T @ np.linalg.solve(xs @ xs.T + lam * np.eye(len(xs)), t)
  return mu, sd, w, ybar


def predict(model: tuple[np.ndarray, ...], x: np.ndarray) -> np.ndarray:
  mu, sd, w, ybar = model
  return ((x - mu) / sd @ w + ybar).argmax(1)


def choose_lambda(x: np.ndarray, y: np.ndarray, classes: int, folds: int = 5) -> float:
  """The ridge strength with the best k-fold accuracy on the training set (ties: the stronger)."""
  idx = np.arange(len(x)) % folds
  best, best_acc = LAMBDAS[-1], -1.0
  for lam in reversed(LAMBDAS):
    acc = np.mean([np.mean(predict(fit_ridge(x[idx != f], y[idx != f], classes, lam), x[idx == f]) == y[idx == f])
                   for f in range(folds)])
    if acc > best_acc + 1e-9:
      best, best_acc = lam, float(acc)
  return best


def readout(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray, classes: int) -> dict[str, float]:
  """Test accuracy of the classifier fitted on (xtr, ytr) with a cross-validated ridge strength."""
  lam = choose_lambda(xtr, ytr, classes)
  return {"accuracy": float(np.mean(predict(fit_ridge(xtr, ytr, classes, lam), xte) == yte)), "lambda": lam}


def attention_readout(ztr: np.ndarray, ytr: np.ndarray, zte: np.ndarray, yte: np.ndarray, classes: int,
                      steps: int = 800, hidden: int = 32, lr: float = 1e-2) -> dict[str, float]:
  """Test accuracy of a learned pooling of the whole latent grid ([N, H, W, d]) into one d-vector, then a linear
  classifier on that vector alone: what a single content-dependent quantization input (instead of the block mean)
  could carry.

    s_p = v·tanh(A [z_p ; z_p − z̄] + c),  a = softmax_p(s),  f = Σ_p a_p z_p,  logits = W f + b

  (z̄ the block mean, which only steers the pooling). Full-batch Adam on the training scenes for a fixed budget;
  nothing is chosen on the test scenes.
  """
  import jax
  import jax.numpy as jnp
  import optax

  d = ztr.shape[-1]
  flat = ztr.reshape(-1, d)
  mu, sd = flat.mean(0), flat.std(0) + 1e-6

  def prep(z):
    return jnp.asarray(((z - mu) / sd).reshape(len(z), -1, d), jnp.float32)

  def logits(p, z):  # z: [N, P, d]
    zbar = z.mean(1, keepdims=True)
    h = jnp.tanh(jnp.concatenate([z, z - zbar], -1) @ p["a"] + p["c"])
    att = jax.nn.softmax(h @ p["v"], axis=1)  # [N, P]
    f = jnp.einsum("np,npd->nd", att, z)
    return f @ p["w"] + p["b"]

  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  params = {"a": jax.random.normal(k1, (2 * d, hidden)) / np.sqrt(2 * d), "c": jnp.zeros(hidden),
            "v": jax.random.normal(k2, (hidden,)) / np.sqrt(hidden),
            "w": jax.random.normal(k3, (d, classes)) * 0.01, "b": jnp.zeros(classes)}
  opt = optax.adamw(lr, weight_decay=1e-4)
  xtr, ytr_j = prep(ztr), jnp.asarray(ytr)

  @jax.jit
  def step(p, s):
    loss, g = jax.value_and_grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
        logits(p, xtr), ytr_j).mean())(p)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s, loss

  state = opt.init(params)
  for _ in range(steps):
    params, state, _ = step(params, state)
  pred = np.asarray(jnp.argmax(logits(params, prep(zte)), -1))
  return {"accuracy": float(np.mean(pred == yte))}


def contrast_pool(z: Any) -> np.ndarray:
  """[N, h, w, d] -> [N, d]: the pooled layers' scorer as initialised (spae._nets.SemanticPool: v = 0, β = 1, so
  softmax_p(‖z_p − z̄‖²) weights) pooling the whole grid, the way a 1×1 pooled layer would."""
  import jax.numpy as jnp
  from flax import nnx

  from spae._nets import SemanticPool
  from spae._pyramid import attention_pool

  z = jnp.asarray(z, jnp.float32)
  weights = SemanticPool(z.shape[-1], 1, contrast=1.0, rngs=nnx.Rngs(0))(z, 1)
  return np.asarray(attention_pool(z, 1, weights)).reshape(len(z), -1)


def layer_features(tok: Any, images: np.ndarray, layers: int, batch: int = 64) -> list[dict[str, np.ndarray]]:
  """Per layer: {'latent': [N, s²·d], 'ids': [N, s²], 'thumbnail': [N, s²·3]} for uint8 images [N, S, S, 3];
  the first also holds 'grid': the whole latent grid [N, h, w, d], and 'contrast': its contrast pooling [N, d]."""
  from spae._pyramid import attention_pool, subsample
  from spae.metrics import box_average

  spec = tok.config.pyramid
  out: list[dict[str, list]] = [{"latent": [], "ids": [], "thumbnail": []} for _ in range(layers)]
  for s in range(0, len(images), batch):
    x = images[s:s + batch]
    z = tok.encode_latents(x)
    pool = tok.model.pool_weights(z) or []  # a pyramid with pooled top layers quantizes their attention pooling
    ids = tok.encode(x, layers=layers).ids
    pix = x.astype(np.float32) / 255.0
    out[0].setdefault("grid", []).append(np.asarray(z))
    out[0].setdefault("contrast", []).append(contrast_pool(z))
    for l, grid in enumerate(spec.grids[:layers]):
      value = attention_pool(z, grid, pool[l]) if l < len(pool) else subsample(z, grid, spec.subsample)
      out[l]["latent"].append(np.asarray(value).reshape(len(x), -1))
      out[l]["ids"].append(np.asarray(ids[l]).reshape(len(x), -1))
      out[l]["thumbnail"].append(box_average(pix, grid).reshape(len(x), -1))
  return [{k: np.concatenate(v) for k, v in o.items()} for o in out]


def bag(ids_tr: np.ndarray, ids_te: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """One-hot counts of each image's ids over the ids seen in training (unseen test ids count nowhere)."""
  from spae.prompting import bag_of_tokens

  columns = np.unique(ids_tr)
  return bag_of_tokens(ids_tr, columns, normalise=False), bag_of_tokens(ids_te, columns, normalise=False)


def evaluate(tok: Any, train: tuple[np.ndarray, list], test: tuple[np.ndarray, list], layers: int) -> list[dict]:
  """One row per (layer, role): accuracies of each feature and the majority baseline on the test scenes."""
  ftr, fte = layer_features(tok, train[0], layers), layer_features(tok, test[0], layers)
  roles_tr = [recon.role_words(a) for a in train[1]]
  roles_te = [recon.role_words(a) for a in test[1]]
  rows = []
  for l in range(layers):
    words_tr, words_te = bag(ftr[l]["ids"], fte[l]["ids"])
    feats = {"latent": (ftr[l]["latent"], fte[l]["latent"]), "words": (words_tr, words_te),
             "thumbnail": (ftr[l]["thumbnail"], fte[l]["thumbnail"])}
    for role in recon.ROLES:
      names = sorted({r[role] for r in roles_tr})
      code = {n: j for j, n in enumerate(names)}
      ytr = np.array([code[r[role]] for r in roles_tr])
      yte = np.array([code.get(r[role], -1) for r in roles_te])  # an answer never seen in training is a miss
      majority = int(np.bincount(ytr).argmax())
      row = {"layer": l + 1, "grid": tok.config.pyramid.grids[l], "role": role, "classes": len(names),
             "majority": float(np.mean(yte == majority))}
      for name, (xtr, xte) in feats.items():
        row[name] = readout(xtr, ytr, xte, yte, len(names))
      if l == 0:
        row["contrast"] = readout(ftr[0]["contrast"], ytr, fte[0]["contrast"], yte, len(names))
        row["pooled"] = attention_readout(ftr[0]["grid"], ytr, fte[0]["grid"], yte, len(names))
      rows.append(row)
  return rows


def main(argv=None) -> int:
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--tokenizer", help="tokenizer directory (default: spae.assets.default_tokenizer() if shipped, "
                                     "else the tiny one)")
  p.add_argument("--layers", type=int, default=3, help="read layers 1..L")
  p.add_argument("--train-images", type=int, default=3000, help="train-split scenes the classifiers are fitted on")
  p.add_argument("--test-images", type=int, default=400, help="test-split scenes they are scored on")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--smoke", action="store_true", help="tiny untrained tokenizer, 60 + 20 scenes, 2 layers (CI)")
  p.add_argument("--out", help="write results as JSON here")
  a = p.parse_args(argv)
  if a.smoke:
    a.layers, a.train_images, a.test_images = 2, 60, 20

  tok, tok_name = recon.load_tokenizer(a.tokenizer, a.smoke)
  if not 1 <= a.layers <= tok.config.pyramid.num_layers:
    raise SystemExit(f"--layers {a.layers}: this tokenizer has layers 1..{tok.config.pyramid.num_layers}.")
  size = tok.config.image_size
  train = recon.new_scenes(a.train_images, size, a.seed, split="train")
  test = recon.new_scenes(a.test_images, size, a.seed, split="test")
  rows = evaluate(tok, train, test, a.layers)

  load = os.getloadavg()
  print(f"tokenizer: {tok_name}; {a.train_images} train-split scenes fit, {a.test_images} test-split scenes scored; "
        f"subsample={tok.config.pyramid.subsample}; load {load[0]:.1f}")
  table = [{"layer": r["layer"], "grid": f"{r['grid']}x{r['grid']}", "attribute": r["role"], "classes": r["classes"],
            **{f: r[f]["accuracy"] for f in FEATURES},
            **{f: r[f]["accuracy"] if f in r else "-" for f in ("contrast", "pooled")},
            "majority": r["majority"],
            "latent/majority": f"{r['latent']['accuracy'] / r['majority']:.2f}" if r["majority"] else "n/a"}
           for r in rows]
  _common.print_table(table, ["layer", "grid", "attribute", "classes", *FEATURES, "contrast", "pooled", "majority",
                              "latent/majority"])
  _common.write_json(a.out, {"benchmark": "layer_readout", "machine": _common.machine_info(), "load_avg": list(load),
                             "args": vars(a), "tokenizer": tok_name, "rows": rows})
  return 0


if __name__ == "__main__":
  sys.exit(main())
