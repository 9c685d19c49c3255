"""A tiny built-in vocabulary and tokenizer for smoke runs and tests (untrained: its words mean nothing yet)."""

from __future__ import annotations

import hashlib

import numpy as np

from spae import _specs
from spae._nets import AutoencoderConfig
from spae._pyramid import PyramidSpec
from spae._tokenizer import Tokenizer, TokenizerConfig
from spae._vocab import Vocabulary

_WORDS = """
red orange yellow green blue purple pink brown black white gray gold silver dark light bright pale
circle square triangle star cross ring line dot stripe grid wave spiral heart diamond oval shape
small large tiny huge big little tall short wide narrow thick thin round sharp flat curved
cat dog bird fish horse cow sheep lion tiger bear mouse rabbit frog snake duck owl
tree flower grass leaf forest garden field river lake sea ocean beach sand rock stone mountain hill
sky cloud sun moon rain snow fire water ice wind storm night day morning evening shadow
house door window wall roof road bridge tower city street car bus train boat plane bike
apple banana orange bread cake milk tea coffee cheese egg rice soup salad pizza sugar salt
man woman child boy girl baby face hand eye head hair foot arm smile friend people
book pen paper table chair bed lamp clock phone cup bowl plate box bag hat shoe shirt
above below left right top bottom middle center near far inside outside behind front under over
one two three four many few some all none first last next other same different
happy sad calm loud quiet soft hard warm cold hot wet dry clean dirty old new young
""".split()


def tiny_vocabulary(dim: int = 32, seed: int = 0) -> Vocabulary:
  """~300 English words with deterministic pseudo-random embeddings (character-trigram hashing).

  Words sharing trigrams get correlated rows, so the table has some structure; it is not semantic.
  """
  words = list(dict.fromkeys(_WORDS))
  rng = np.random.default_rng(seed)
  proj = rng.standard_normal((4096, dim)).astype(np.float32) / np.sqrt(8.0)
  rows = []
  for w in words:
    padded = f"<{w}>"
    grams = [padded[i:i + 3] for i in range(len(padded) - 2)]
    idx = [int(hashlib.md5(g.encode()).hexdigest()[:8], 16) % 4096 for g in grams]
    rows.append(proj[idx].sum(axis=0) / np.sqrt(len(idx)))
  return Vocabulary.from_arrays(words, np.stack(rows), metadata={"source": "spae tiny built-in word list"})


_specs.register_name("vocab", "tiny", lambda spec: tiny_vocabulary(), form="tiny[:DIM]")


@_specs.register_scheme("vocab", "tiny", "tiny[:DIM]")
def _tiny_of_dim(spec: _specs.Spec) -> Vocabulary:
  if not spec.body.isdigit() or int(spec.body) < 1:
    raise spec.error("needs a whole number of dimensions after 'tiny:'")
  return tiny_vocabulary(dim=int(spec.body))


def tiny_config(dim: int = 32, image_size: int = 32) -> TokenizerConfig:
  """A 32 px tokenizer with an 8×8 latent and pyramid (1, 2, 4, 8): 85 tokens."""
  return TokenizerConfig(
      image_size=image_size,
      autoencoder=AutoencoderConfig(channels=16, channel_multipliers=(1, 2, 2), num_res_blocks=1, latent_dim=dim,
                                    norm_groups=8),
      pyramid=PyramidSpec((1, 2, 4, 8)))


def tiny_tokenizer(seed: int = 0, dim: int = 32, image_size: int = 32) -> Tokenizer:
  return Tokenizer(tiny_config(dim, image_size), tiny_vocabulary(dim, seed), seed=seed)
