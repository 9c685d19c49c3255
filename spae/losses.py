"""Training losses for SPAE: reconstruction, adversarial (+R1, LeCam), semantic guidance, commitment.

Every function is a pure jnp function (jittable) returning an *unweighted* scalar; the trainer
multiplies each by its config weight and logs each on its own. The perceptual loss lives in
`spae.perceptual`. Formulas are stated in the docstrings (and in docs/method.md).

Shapes: B batch, H×W image or latent grid, C channels, n tokens per image, d codebook dim, V vocab size,
k teacher top-k.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, Sequence

import jax
import jax.numpy as jnp

from spae._io import SpaeInputError
from spae._pyramid import codebook_loss, commitment_loss, neg_dist_logsumexp, straight_through

Array = jax.Array

__all__ = [
    "l2_loss", "l1_loss",
    "d_loss_nonsaturating", "g_loss_nonsaturating", "r1_penalty", "lecam_loss", "update_lecam_ema",
    "teacher_distribution", "semantic_loss", "semantic_loss_dense", "semantic_layer_weights",
    "codebook_loss", "commitment_loss", "straight_through",
    "sample_prefix", "pick_prefix_recon", "monotone_loss",
]


# ------------------------------------------------------------------------------------ reconstruction
def l2_loss(x: Array, y: Array) -> Array:
  """mean((x − y)²) over every element (any matching shapes, e.g. [B, H, W, C])."""
  return jnp.mean(jnp.square(jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32)))


def l1_loss(x: Array, y: Array) -> Array:
  """mean(|x − y|) over every element."""
  return jnp.mean(jnp.abs(jnp.asarray(x, jnp.float32) - jnp.asarray(y, jnp.float32)))


# ------------------------------------------------------------------------------------ adversarial
def d_loss_nonsaturating(real_logits: Array, fake_logits: Array) -> Array:
  """Discriminator loss mean(softplus(−D(x))) + mean(softplus(D(x̂))) for logits [B] each.

  softplus(−l) = −log σ(l): it falls as real logits rise and as fake logits fall.
  """
  return jnp.mean(jax.nn.softplus(-real_logits)) + jnp.mean(jax.nn.softplus(fake_logits))


def g_loss_nonsaturating(fake_logits: Array) -> Array:
  """Generator loss mean(softplus(−D(x̂))) = −mean log σ(D(x̂)); falls as fake logits rise. [B] -> []."""
  return jnp.mean(jax.nn.softplus(-fake_logits))


def r1_penalty(disc_fn: Callable[[Array], Array], real_images: Array) -> tuple[Array, Array]:
  """R1 gradient penalty ½·mean_b ||∇_x D(x)_b||² on real images, plus the real logits.

  Multiply by the R1 weight γ (so the term is γ/2·E||∇D||², as in StyleGAN). Per-sample gradients come
  from one VJP of Σ_b D(x)_b, which is exact because D treats samples independently (no batch norm).
  The result is differentiable w.r.t. D's parameters (second-order), as the D update needs.

  Args:
    disc_fn: images [B, H, W, C] -> logits [B] (e.g. an nnx Discriminator, or a closure over its state).
    real_images: [B, H, W, C].
  Returns:
    (penalty [], real_logits [B]): the logits are returned so the D loss needs no second forward pass.
  """
  real_images = jax.lax.stop_gradient(real_images)
  logits, vjp = jax.vjp(disc_fn, real_images)
  (grads,) = vjp(jnp.ones_like(logits))
  sq = jnp.sum(jnp.square(grads).reshape(grads.shape[0], -1), axis=1)
  return 0.5 * jnp.mean(sq), logits


def lecam_loss(real_logits: Array, fake_logits: Array, ema_real: Array, ema_fake: Array) -> Array:
  """LeCam regulariser (Tseng et al. 2021), for the discriminator:

    mean(relu(D(x) − ema_fake)²) + mean(relu(ema_real − D(x̂))²)

  with ema_real / ema_fake the EMAs (scalars) of the mean real / fake logits (see `update_lecam_ema`).
  It pulls real predictions down toward the fake EMA and fake predictions up toward the real EMA.
  """
  ema_real = jax.lax.stop_gradient(ema_real)
  ema_fake = jax.lax.stop_gradient(ema_fake)
  return (jnp.mean(jnp.square(jax.nn.relu(real_logits - ema_fake)))
          + jnp.mean(jnp.square(jax.nn.relu(ema_real - fake_logits))))


def update_lecam_ema(ema: Array, logits: Array, decay: float) -> Array:
  """ema ← decay·ema + (1 − decay)·mean(logits) (no gradient). Keep one for real and one for fake logits."""
  return decay * ema + (1.0 - decay) * jnp.mean(jax.lax.stop_gradient(logits))


# ------------------------------------------------------------------------------------ semantic
def teacher_distribution(relevance: Array, top_k: int, temperature: float) -> tuple[Array, Array]:
  """Sparse teacher distribution over the vocabulary from relevance scores.

  p = softmax(relevance[top-k] / temperature) on the k most relevant tokens, zero elsewhere.

  Args:
    relevance: [B, V] scores (e.g. CLIP image-text similarity of every vocabulary token).
  Returns:
    idx int32 [B, k] token ids (most relevant first), probs [B, k] summing to 1 per row (no gradient).
  """
  relevance = jax.lax.stop_gradient(jnp.asarray(relevance, jnp.float32))
  if relevance.ndim != 2:
    raise SpaeInputError(f"relevance must be [B, V], got shape {relevance.shape}.")
  if not 1 <= top_k <= relevance.shape[1]:
    raise SpaeInputError(f"top_k must be in [1, V={relevance.shape[1]}], got {top_k}.")
  if temperature <= 0:
    raise SpaeInputError(f"teacher temperature must be > 0, got {temperature}.")
  vals, idx = jax.lax.top_k(relevance, top_k)
  return idx.astype(jnp.int32), jax.nn.softmax(vals / temperature, axis=-1)


def _check_semantic_shapes(targets, codebook, idx, probs):
  if targets.ndim != 3:
    raise SpaeInputError(f"semantic targets must be [B, n_tokens, d], got shape {targets.shape}.")
  if codebook.ndim != 2 or codebook.shape[1] != targets.shape[2]:
    raise SpaeInputError(f"codebook must be [V, d={targets.shape[2]}], got shape {codebook.shape}.")
  if idx.shape != probs.shape or idx.ndim != 2 or idx.shape[0] != targets.shape[0]:
    raise SpaeInputError(f"teacher idx/probs must both be [B={targets.shape[0]}, k], "
                         f"got {idx.shape} and {probs.shape}.")


def semantic_loss(targets: Array, codebook: Array, idx: Array, probs: Array, tau: float, *,
                  vocab_chunk: int = 8192, codebook_grad: bool = False) -> Array:
  """Cross-entropy from the teacher distribution p to the soft assignment q of each token.

  q_k(t) = softmax_k(−||t − E_k||² / τ) over the whole vocabulary, so per token

    CE(t) = −Σ_k p_k log q_k(t) = Σ_j p_j ||t − E_{idx_j}||² / τ + logsumexp_k(−||t − E_k||² / τ),

  using Σ_j p_j = 1. The first term gathers only the k teacher rows; the second is computed in
  vocabulary chunks (`neg_dist_logsumexp`), so nothing of size [tokens, V] is ever materialised.
  The teacher is a constant. The gradient flows to t, and to the codebook only with `codebook_grad` (a trainable
  code map that the semantic loss may move: the teacher's words toward their images' targets, the rest away).

  Args:
    targets: [B, n, d] per-token targets t (the SAQ targets of the semantic layers, concatenated).
    codebook: [V, d] codes (the frozen embeddings, or a trainable map of them).
    idx: int [B, k] teacher token ids; probs: [B, k] teacher probabilities (rows sum to 1).
    tau: softmax temperature of the soft assignment.
    codebook_grad: let the gradient reach the codebook too (default: only the targets).
  Returns:
    scalar: the mean CE over tokens and batch.
  """
  targets = jnp.asarray(targets, jnp.float32)
  codebook = jnp.asarray(codebook, jnp.float32)
  codebook = codebook if codebook_grad else jax.lax.stop_gradient(codebook)
  probs = jax.lax.stop_gradient(jnp.asarray(probs, jnp.float32))
  _check_semantic_shapes(targets, codebook, idx, probs)
  b, n, d = targets.shape
  rows = codebook[idx]  # [B, k, d]
  # ||t − E_j||² = ||t||² − 2 t·E_j + ||E_j||², only for the k teacher rows.
  dot = jnp.einsum("bnd,bkd->bnk", targets, rows, precision=jax.lax.Precision.HIGHEST)
  sq = jnp.sum(targets * targets, -1)[..., None] - 2.0 * dot + jnp.sum(rows * rows, -1)[:, None, :]
  first = jnp.einsum("bnk,bk->bn", sq, probs) / tau
  lse = neg_dist_logsumexp(targets.reshape(b * n, d), codebook, tau, vocab_chunk=vocab_chunk,
                           codebook_grad=codebook_grad).reshape(b, n)
  return jnp.mean(first + lse)


def semantic_loss_dense(targets: Array, codebook: Array, idx: Array, probs: Array, tau: float, *,
                        codebook_grad: bool = False) -> Array:
  """Reference `semantic_loss` that builds the dense [B, n, V] log-softmax (tests and tiny vocabularies)."""
  targets = jnp.asarray(targets, jnp.float32)
  codebook = jnp.asarray(codebook, jnp.float32)
  codebook = codebook if codebook_grad else jax.lax.stop_gradient(codebook)
  _check_semantic_shapes(targets, codebook, idx, probs)
  d2 = jnp.sum(jnp.square(targets[:, :, None, :] - codebook[None, None]), -1)  # [B, n, V]
  logq = jax.nn.log_softmax(-d2 / tau, axis=-1)
  p = jnp.zeros((targets.shape[0], codebook.shape[0])).at[jnp.arange(targets.shape[0])[:, None], idx].add(probs)
  return jnp.mean(-jnp.einsum("bnv,bv->bn", logq, jax.lax.stop_gradient(p)))


def semantic_layer_weights(step: Array | int, num_semantic_layers: int, base: float = 1.0, decay: float = 0.5, *,
                           schedule: Literal["constant", "warmup", "cosine"] = "constant",
                           warmup_steps: int = 0, total_steps: int | None = None,
                           final_ratio: float = 0.0) -> Array:
  """Per-layer semantic loss weights [num_semantic_layers], top layer first.

    w_l(step) = base · decay^(l−1) · ramp(step),   l = 1 (top) … n

    ramp(step) = warm(step) · shape(step)
    warm(step) = min(1, step / warmup_steps)            (1 when warmup_steps = 0)
    shape(step) = 1                                     for 'constant' and 'warmup'
                = r + (1 − r)·½(1 + cos(π·u))           for 'cosine', r = final_ratio,
                  u = clip((step − warmup_steps) / (total_steps − warmup_steps), 0, 1)

  'constant' ignores warmup_steps (ramp ≡ 1); 'warmup' is the linear ramp only; 'cosine' is the linear
  ramp then a cosine decay from 1 to final_ratio at total_steps. `step` may be traced.
  """
  if num_semantic_layers < 1:
    raise SpaeInputError(f"num_semantic_layers must be >= 1, got {num_semantic_layers}.")
  if schedule not in ("constant", "warmup", "cosine"):
    raise SpaeInputError(f"semantic weight schedule must be 'constant', 'warmup' or 'cosine', got {schedule!r}.")
  if schedule == "cosine" and (total_steps is None or total_steps <= warmup_steps):
    raise SpaeInputError(f"the 'cosine' semantic schedule needs total_steps > warmup_steps ({warmup_steps}), "
                         f"got {total_steps}.")
  step = jnp.asarray(step, jnp.float32)
  ramp = jnp.ones((), jnp.float32)
  if schedule != "constant" and warmup_steps > 0:
    ramp = jnp.minimum(1.0, step / warmup_steps)
  if schedule == "cosine":
    u = jnp.clip((step - warmup_steps) / (total_steps - warmup_steps), 0.0, 1.0)
    ramp = ramp * (final_ratio + (1.0 - final_ratio) * 0.5 * (1.0 + jnp.cos(math.pi * u)))
  layer_w = base * decay ** jnp.arange(num_semantic_layers, dtype=jnp.float32)
  return layer_w * ramp


# ------------------------------------------------------------------------------------ progressive
def sample_prefix(rng: Array, num_layers: int, *, min_layers: int = 1) -> Array:
  """A pyramid prefix length drawn uniformly from {min_layers, …, num_layers}: int32 scalar (traceable).

  Call `int(...)` on it outside jit if a Python int is needed.
  """
  if not 1 <= min_layers <= num_layers:
    raise SpaeInputError(f"need 1 <= min_layers <= num_layers, got min_layers={min_layers}, "
                         f"num_layers={num_layers}.")
  return jax.random.randint(rng, (), min_layers, num_layers + 1, dtype=jnp.int32)


def pick_prefix_recon(rng: Array, recons: Sequence[Array], *, min_layers: int = 1) -> tuple[Array, Array]:
  """Progressive training: a random prefix's latent reconstruction, alongside the full one (recons[-1]).

  Args:
    recons: the L per-prefix latent reconstructions r_1..r_L, each [B, h, w, d] (from `saq_quantize`).
  Returns:
    (r_prefix [B, h, w, d], prefix int32 scalar in [min_layers, L]). Decode r_prefix and recons[-1]
    (e.g. concatenated on the batch axis) and add both reconstruction losses.
  """
  prefix = sample_prefix(rng, len(recons), min_layers=min_layers)
  return jnp.stack(list(recons))[prefix - 1], prefix


def monotone_loss(y: Array, y_previous: Array, target: Array, prefix: Array) -> Array:
  """Each added layer must make the picture better: mean over images of relu(e_k − e_{k−1}), e the per-image MSE
  of a prefix-k reconstruction `y` and of the prefix-(k−1) one `y_previous` [B, H, W, C] against `target`.

  e_{k−1} enters stopped, so the gradient only asks prefix k to do better, never prefix k−1 to do worse. Zero where
  `prefix` (int scalar, traceable) is 1: there is no shorter prefix to beat.
  """
  err = lambda a: jnp.mean(jnp.square(jnp.asarray(a, jnp.float32) - jnp.asarray(target, jnp.float32)),
                           axis=tuple(range(1, jnp.ndim(target))))
  worse = jax.nn.relu(err(y) - jax.lax.stop_gradient(err(y_previous)))
  return jnp.where(prefix > 1, jnp.mean(worse), 0.0)
