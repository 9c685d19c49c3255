"""Codebook ids of the images of few-shot episodes, each image encoded once for a whole sweep."""

from __future__ import annotations

from typing import Hashable, Iterable

import numpy as np
from tqdm.auto import tqdm

from spae._tokenizer import Tokenizer, TokenPyramid
from spae.data import LabelledSource
from spae.prompting._episodes import Episode, load_image_from

__all__ = ["TokenCache"]


class TokenCache:
  """Codebook ids per image key, encoding each distinct image once (in batches), only as deep as asked: the
  first k layers' ids do not depend on the layers below them, and the fine layers' search dominates the cost."""

  def __init__(self, tokenizer: Tokenizer, source: LabelledSource, batch_size: int = 16):
    self.tokenizer, self.source, self.batch_size = tokenizer, source, batch_size
    self._pyr: dict[Hashable, TokenPyramid] = {}
    self._all = tokenizer.config.pyramid.num_layers

  def _missing(self, keys: Iterable[Hashable], layers: int) -> list[Hashable]:
    return list(dict.fromkeys(k for k in keys if k not in self._pyr or self._pyr[k].num_layers < layers))

  def prefetch(self, keys: Iterable[Hashable], layers: int | None = None) -> None:
    """Encodes the keys not yet encoded to `layers` layers (default: all)."""
    layers = layers or self._all
    todo = self._missing(keys, layers)
    for i in range(0, len(todo), self.batch_size):
      chunk = todo[i:i + self.batch_size]
      imgs = [self.tokenizer.preprocess(load_image_from(self.source, k))[0][0] for k in chunk]
      # pad to a fixed batch so the jitted encoder compiles once, whatever the number of new images
      imgs += [imgs[0]] * (self.batch_size - len(imgs))
      pyr = self.tokenizer.encode(np.stack(imgs), layers=layers)
      for j, k in enumerate(chunk):
        self._pyr[k] = pyr[j]

  def encode_all(self, keys: Iterable[Hashable], progress: bool = True, layers: int | None = None) -> None:
    """Encodes every key not yet encoded to `layers` layers (default: all), with a progress bar."""
    layers = layers or self._all
    todo = self._missing(keys, layers)
    with tqdm(total=len(todo), desc="encoding images", unit="img", disable=not progress or not todo) as bar:
      for i in range(0, len(todo), 4 * self.batch_size):
        self.prefetch(todo[i:i + 4 * self.batch_size], layers)
        bar.update(len(todo[i:i + 4 * self.batch_size]))

  def _read(self, key: Hashable, layers: int) -> list[int]:
    pyr = self._pyr.get(key)
    if pyr is None or pyr.num_layers < layers:  # one dict lookup on the per-prompt path when already encoded
      self.prefetch([key], layers)
      pyr = self._pyr[key]
    return [int(t) for t in pyr.codebook_ids(layers)[0]]

  def ids(self, key: Hashable, layers: int) -> list[int]:
    """Codebook ids of one image's first `layers` layers."""
    return self._read(key, layers)

  def all_ids(self, key: Hashable) -> list[int]:
    """Codebook ids of every layer of one image."""
    return self._read(key, self._all)

  def episode(self, episode: Episode, layers: int) -> dict[Hashable, list[int]]:
    """Codebook ids of every image of an episode (support and queries), computed once for all its prompts."""
    self.prefetch(episode.image_keys(), layers)
    return {k: self.ids(k, layers) for k in episode.image_keys()}
