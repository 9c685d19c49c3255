"""The language-model interface shared by the JAX-native and the remote (OpenAI-compatible) models.

`TextTokenizer` and `LanguageModel` are the contract; `LanguageModelBase` implements the text-level methods
(`score_text`, `generate_text`) on top of the id-level ones, and `Trie` / `choose_next` hold the decoding
constraint logic that every backend shares.
"""

from __future__ import annotations

import abc
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from spae._io import SpaeInputError


@runtime_checkable
class TextTokenizer(Protocol):
  """Text <-> token ids in the language model's own vocabulary."""

  vocab_size: int
  bos_id: int | None
  eos_id: int | None

  def encode(self, text: str, *, add_bos: bool = False) -> list[int]: ...

  def decode(self, ids: Sequence[int]) -> str: ...

  def id_to_piece(self, i: int) -> str: ...


@runtime_checkable
class LanguageModel(Protocol):
  """A frozen causal language model.

  Shapes: `logits` maps int ids [B, T] to float32 [B, T, V]; `score` returns [C] summed log-probabilities of
  each continuation given the shared prefix; `generate` returns only the new ids (stop ids excluded).
  """

  tokenizer: TextTokenizer
  max_length: int

  def logits(self, ids: Any) -> np.ndarray: ...

  def score(self, prefix_ids: Sequence[int], continuations: Sequence[Sequence[int]]) -> np.ndarray: ...

  def generate(self, ids: Sequence[int], max_new: int, *, allowed_ids: Iterable[int] | None = None,
               candidates: Sequence[Sequence[int]] | None = None, stop: Sequence[int] | None = None,
               temperature: float = 0.0, seed: int = 0) -> list[int]: ...

  def score_text(self, prefix: str, continuations: Sequence[str]) -> np.ndarray: ...

  def generate_text(self, prompt: str, max_new: int, *, candidates: Sequence[str] | None = None,
                    stop: Sequence[str] | None = None, temperature: float = 0.0, seed: int = 0) -> str: ...


class Trie:
  """Candidate token sequences as a prefix tree: which ids may come next, and where a candidate is complete."""

  def __init__(self, candidates: Sequence[Sequence[int]]):
    if len(candidates) == 0:
      raise SpaeInputError("candidates is empty; pass at least one candidate token sequence.")
    self.root: dict[int, Any] = {}
    for k, cand in enumerate(candidates):
      if len(cand) == 0:
        raise SpaeInputError(f"candidate {k} is empty; every candidate needs at least one token.")
      node = self.root
      for t in cand:
        node = node.setdefault(int(t), {})
      node[-1] = {}  # -1 marks "a candidate ends here"

  def node(self, prefix: Sequence[int]) -> dict[int, Any]:
    node = self.root
    for t in prefix:
      node = node[int(t)]
    return node

  def next_ids(self, prefix: Sequence[int]) -> list[int]:
    return sorted(k for k in self.node(prefix) if k >= 0)

  def is_complete(self, prefix: Sequence[int]) -> bool:
    return -1 in self.node(prefix)


def _as_id_set(ids: Iterable[int] | None, vocab_size: int | None, what: str) -> np.ndarray | None:
  if ids is None:
    return None
  arr = np.unique(np.asarray(list(ids), dtype=np.int64))
  if arr.size == 0:
    raise SpaeInputError(f"{what} is empty; pass at least one token id (or None for no constraint).")
  if arr.min() < 0 or (vocab_size is not None and arr.max() >= vocab_size):
    raise SpaeInputError(f"{what} has ids outside [0, {vocab_size}): min {arr.min()}, max {arr.max()}.")
  return arr


class _Constraint:
  """Per-step allowed ids from an allowed-token set, a trie of candidates, and stop ids."""

  def __init__(self, vocab_size: int | None, allowed_ids, candidates, stop):
    self.allowed = _as_id_set(allowed_ids, vocab_size, "allowed_ids")
    self.stop = _as_id_set(stop, vocab_size, "stop") if stop else np.zeros((0,), np.int64)
    self.trie = Trie(candidates) if candidates is not None else None
    if self.trie is not None:
      for cand in candidates:
        for t in cand:
          if t < 0 or (vocab_size is not None and t >= vocab_size):
            raise SpaeInputError(f"candidate token id {t} is outside [0, {vocab_size}).")
    self.free = self.allowed is None and self.trie is None

  def step(self, generated: Sequence[int]) -> tuple[np.ndarray | None, bool]:
    """Returns (ids allowed next or None for all, done). Stop ids are allowed wherever ending is allowed."""
    if self.trie is None:
      if self.allowed is None:
        return None, False
      return np.union1d(self.allowed, self.stop), False
    nxt = np.asarray(self.trie.next_ids(generated), np.int64)
    complete = self.trie.is_complete(generated)
    if self.allowed is not None:
      nxt = np.intersect1d(nxt, self.allowed)
    if nxt.size == 0:
      return None, True  # a candidate is complete and nothing may follow it
    if complete and self.stop.size:
      nxt = np.union1d(nxt, self.stop)  # a shorter candidate may end here if the model picks a stop id
    return nxt, False


def choose_next(logits: np.ndarray, allowed: np.ndarray | None, temperature: float,
                rng: np.random.Generator) -> int:
  """Greedy (temperature 0) or sampled choice of the next id among `allowed` (all ids if None). logits: [V]."""
  logits = np.asarray(logits, np.float64)
  if allowed is not None:
    masked = np.full_like(logits, -np.inf)
    masked[allowed] = logits[allowed]
    logits = masked
  if temperature <= 0.0:
    return int(np.argmax(logits))
  z = logits / temperature
  z = z - np.max(z)
  p = np.exp(z)
  p /= p.sum()
  return int(rng.choice(len(p), p=p))


class LanguageModelBase(abc.ABC):
  """Implements the text-level API over the id-level one.

  Text rules: the prefix / prompt is encoded with BOS (when the tokenizer has one); each continuation or
  candidate is encoded on its own, without BOS. Sentencepiece adds a leading-space marker to a text's first
  word, so " cat" and "cat" both encode as '▁cat': write label continuations as whole words.
  """

  tokenizer: TextTokenizer
  max_length: int

  @abc.abstractmethod
  def logits(self, ids: Any) -> np.ndarray:
    """ids: int [B, T] -> float32 [B, T, V]."""

  @abc.abstractmethod
  def score(self, prefix_ids: Sequence[int], continuations: Sequence[Sequence[int]]) -> np.ndarray:
    """[C] sum over each continuation's tokens of log p(token | prefix, earlier continuation tokens)."""

  @abc.abstractmethod
  def generate(self, ids: Sequence[int], max_new: int, *, allowed_ids: Iterable[int] | None = None,
               candidates: Sequence[Sequence[int]] | None = None, stop: Sequence[int] | None = None,
               temperature: float = 0.0, seed: int = 0) -> list[int]:
    """New ids only (stop ids are not returned).

    `allowed_ids` restricts every emitted id to that set; `candidates` restricts the output to one of the
    candidate sequences (a trie constraint; generation ends when a candidate is complete and cannot be
    extended, or at a stop id where a candidate is complete). temperature 0 is greedy; otherwise sampling
    is seeded by `seed`, so equal seeds give equal outputs.
    """

  def _encode_prompt(self, text: str) -> list[int]:
    return list(self.tokenizer.encode(text, add_bos=self.tokenizer.bos_id is not None))

  def score_text(self, prefix: str, continuations: Sequence[str]) -> np.ndarray:
    """[C] log p(continuation | prefix) for text continuations (see the class docstring for the rules)."""
    if isinstance(continuations, str):
      raise SpaeInputError("continuations must be a list of strings, not one string.")
    conts = [list(self.tokenizer.encode(c)) for c in continuations]
    for c, ids in zip(continuations, conts):
      if not ids:
        raise SpaeInputError(f"continuation {c!r} encodes to no tokens; use a non-empty string.")
    return self.score(self._encode_prompt(prefix), conts)

  def generate_text(self, prompt: str, max_new: int, *, candidates: Sequence[str] | None = None,
                    stop: Sequence[str] | None = None, temperature: float = 0.0, seed: int = 0) -> str:
    """Generated text (without the prompt). `stop` strings end the output, which is cut before them."""
    cand_ids = None
    if candidates is not None:
      if isinstance(candidates, str):
        raise SpaeInputError("candidates must be a list of strings, not one string.")
      cand_ids = [list(self.tokenizer.encode(c)) for c in candidates]
    stop_ids: list[int] = []
    for s in stop or ():
      ids = self.tokenizer.encode(s)
      if len(ids) == 1:  # a single-token stop string can end generation early at the id level
        stop_ids.append(int(ids[0]))
    if self.tokenizer.eos_id is not None:
      stop_ids.append(int(self.tokenizer.eos_id))
    new = self.generate(self._encode_prompt(prompt), max_new, candidates=cand_ids, stop=stop_ids or None,
                        temperature=temperature, seed=seed)
    text = self.tokenizer.decode(new)
    cut = min((text.find(s) for s in (stop or ()) if s and text.find(s) >= 0), default=-1)
    return text if cut < 0 else text[:cut]
