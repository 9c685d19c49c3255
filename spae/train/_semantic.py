"""How the trainer reads its semantic teacher: the relevance over the vocabulary (through captions, centred or
standardised on reference images, mirrored, whole words only), the sub-vocabulary it names most, and its labels of a
set of images (docs/method.md, "Semantic guidance" and "The refit's own reading of the teacher").
"""

from __future__ import annotations

import re
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from spae._io import SpaeInputError
from spae._vocab import Vocabulary
from spae.train._config import SemanticConfig

__all__ = ["caption_word_mask", "caption_words", "label_images", "most_named", "teacher_relevance"]

# Images per teacher call when labelling many; the last batch is padded so that one program serves every batch.
LABEL_BATCH = 64


def teacher_relevance(teacher: Any, vocab: Vocabulary, sem: SemanticConfig, reference: Callable[[int], np.ndarray], *,
                      mirrored: bool = False, standardised: bool = False) -> Any:
  """The teacher's RelevanceFn over `vocab`, read through its first training captions, centred on the first training
  images and restricted to whole words where `sem` asks (docs/method.md, "Centred, whole-word relevance" and
  "Caption-bank relevance"). `mirrored` / `standardised`: the refit's reading (`semantic.refit_mirrored` /
  `refit_standardised`): each image averaged with its mirror, and each word's centred score divided by its spread
  over the same centring images. reference(n): the first n training images [n, S, S, 3] as the teacher sees them."""
  allowed = teacher.whole_word_mask(vocab) if sem.whole_words else None
  if sem.whole_words and allowed is None:  # checked before centring, which embeds the reference images
    raise SpaeInputError(f"semantic.whole_words needs a teacher with a text tokenizer; {sem.teacher!r} has none.")
  fn = teacher.relevance_fn(vocab)
  if mirrored:
    fn = fn.mirror_averaged()
  if sem.caption_bank:
    bank = getattr(teacher, "caption_bank", None)
    if bank is None:
      raise SpaeInputError(f"semantic.caption_bank needs a teacher that keeps its training captions (a LiT folder "
                           f"with captions.npz: tools/train_default_teacher.py --captions); {sem.teacher!r} has "
                           "none. Set semantic.caption_bank=0 or retrain the teacher.")
    if len(bank) < sem.caption_bank:
      raise SpaeInputError(f"semantic.caption_bank={sem.caption_bank} but the teacher {sem.teacher!r} keeps "
                           f"{len(bank)} captions; set semantic.caption_bank <= {len(bank)}.")
    fn = fn.through_captions(bank[:sem.caption_bank], sem.caption_tau)
  if sem.centre_images:
    images = reference(sem.centre_images)
    fn = fn.standardised(images) if standardised else fn.centred(images)
  return fn if allowed is None else fn.restricted(allowed)


def label_images(distribution: Callable, reading: Any, mask: jax.Array,
                 images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """The teacher's top-k words and their probabilities for each of `images` [N, S, S, 3]: (idx [N, k] rows of the
  vocabulary, probs [N, k]). distribution(reading, mask, images [B, ...]) -> (idx, probs) is the trainer's jitted
  teacher distribution; mask [V] bool, the words it may name."""
  idx, probs = [], []
  for start in range(0, len(images), LABEL_BATCH):
    x = images[start:start + LABEL_BATCH]
    x = np.concatenate([x, np.repeat(x[-1:], LABEL_BATCH - len(x), axis=0)])  # one shape, one compile
    i, p = jax.device_get(distribution(reading, mask, jnp.asarray(x)))
    idx.append(np.asarray(i))
    probs.append(np.asarray(p))
  return np.concatenate(idx)[:len(images)], np.concatenate(probs)[:len(images)]


def caption_word_mask(source: Any, vocab: Any, num_captions: int) -> np.ndarray:
  """bool [V]: the codebook words (as `vocab.words` shows them) that occur as whole lower-case words in the first
  `num_captions` captions of `source` (`semantic.vocab_from_captions`). Raises SpaeInputError when the source has
  no captions or none of their words is in the codebook."""
  if not getattr(source, "has_captions", False):
    raise SpaeInputError(f"semantic.vocab_from_captions needs training data with captions; "
                         f"{getattr(source, 'name', source)!r} has none. Set semantic.vocab_from_captions=0.")
  mask = caption_words(vocab, [source.caption(i) or "" for i in range(min(num_captions, len(source)))])
  if not mask.any():
    raise SpaeInputError(f"no word of the first {num_captions} training captions is a codebook word; set "
                         "semantic.vocab_from_captions=0.")
  return mask


def caption_words(vocab: Any, captions: list[str]) -> np.ndarray:
  """bool [V]: the codebook words (as `vocab.words` shows them) that are a run of letters a-z of one of `captions`
  in lower case: the rule of `semantic.vocab_from_captions` and of a semantic head's words."""
  found: set[str] = set()
  for c in captions:
    found.update(re.findall(r"[a-z]+", c.lower()))
  return np.array([w in found for w in vocab.words(np.arange(len(vocab)))], bool)


def most_named(counts: np.ndarray, size: int) -> np.ndarray:
  """The (at most) `size` rows with the highest counts, zero counts dropped; ties go to the lower row. The rule
  that picks a semantic sub-vocabulary from how often the teacher names each word (`semantic.vocab_size`)."""
  order = np.lexsort((np.arange(len(counts)), -np.asarray(counts)))[:size]
  return order[np.asarray(counts)[order] > 0]
