"""The language-model interface shared by the JAX-native and the remote (OpenAI-compatible) models.

Capabilities are separate protocols: every backend is a `LanguageModel` (next-token log-probabilities,
scoring, constrained generation, text helpers); a `LogitsModel` also returns full logits for whole sequences
(local models only: a completions server returns the log-probabilities of chosen tokens, not distributions).

`LanguageModelBase` holds the one decoding loop. A backend implements `next_logprobs` (and may override
`score` with a batched version); decoding constraints are a public `Constraint` built from allowed ids,
candidate token sequences (a `Trie`) and stop ids.
"""

from __future__ import annotations

import abc
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from spae._io import SpaeInputError


@runtime_checkable
class TextTokenizer(Protocol):
  """Text <-> token ids in the language model's own vocabulary."""

  vocab_size: int | None
  bos_id: int | None
  eos_id: int | None

  def encode(self, text: str, *, add_bos: bool = False) -> list[int]: ...

  def decode(self, ids: Sequence[int]) -> str: ...

  def id_to_piece(self, i: int) -> str: ...


@runtime_checkable
class LanguageModel(Protocol):
  """A frozen causal language model, local or remote.

  Shapes: `next_logprobs` returns float [V'] log p(next id | ids) (V' >= every id it may return; entries outside
  `among` may be -inf); `score` returns [C] summed log-probabilities of each continuation given the shared
  prefix (`score_many`: the same for several requests); `generate` returns only the new ids (stop ids excluded).
  """

  tokenizer: TextTokenizer
  max_length: int

  def next_logprobs(self, ids: Sequence[int], among: np.ndarray | None = None) -> np.ndarray: ...

  def score(self, prefix_ids: Sequence[int], continuations: Sequence[Sequence[int]]) -> np.ndarray: ...

  def score_many(self, requests: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]]) -> list[np.ndarray]: ...

  def generate(self, ids: Sequence[int], max_new: int, *, allowed_ids: Iterable[int] | None = None,
               candidates: Sequence[Sequence[int]] | None = None, stop: Sequence[int] | None = None,
               temperature: float = 0.0, seed: int = 0) -> list[int]: ...

  def score_text(self, prefix: str, continuations: Sequence[str]) -> np.ndarray: ...

  def generate_text(self, prompt: str, max_new: int, *, candidates: Sequence[str] | None = None,
                    stop: Sequence[str] | None = None, temperature: float = 0.0, seed: int = 0) -> str: ...


@runtime_checkable
class LogitsModel(LanguageModel, Protocol):
  """A `LanguageModel` that also gives full logits: int ids [B, T] -> float32 [B, T, V]."""

  def logits(self, ids: Any) -> np.ndarray: ...


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


class Constraint:
  """What a decoder may emit: an allowed-id set, a set of candidate sequences, and stop ids.

  Args:
    allowed_ids: every emitted id must be one of these (None: any id).
    candidates: the output must be one of these token sequences (a `Trie`; None: any sequence).
    stop: ids that end generation; they are never part of the output. With `candidates`, a stop id is allowed
      only where a candidate is complete.
    vocab_size: ids must lie in [0, vocab_size) (None: unchecked).

  `step(generated)` says which ids may come next after the ids generated so far, and whether decoding is done.
  """

  def __init__(self, *, allowed_ids: Iterable[int] | None = None, candidates: Sequence[Sequence[int]] | None = None,
               stop: Iterable[int] | None = None, vocab_size: int | None = None):
    self.allowed = _as_id_set(allowed_ids, vocab_size, "allowed_ids")
    stop = list(stop) if stop is not None else []
    self.stop = _as_id_set(stop, vocab_size, "stop") if stop else np.zeros((0,), np.int64)
    self.stop_set = frozenset(int(s) for s in self.stop)
    self.trie = Trie(candidates) if candidates is not None else None
    if self.trie is not None:
      for cand in candidates:
        for t in cand:
          if t < 0 or (vocab_size is not None and t >= vocab_size):
            raise SpaeInputError(f"candidate token id {t} is outside [0, {vocab_size}).")

  @property
  def free(self) -> bool:
    """True when any id may come next at every step (only stop ids are special)."""
    return self.allowed is None and self.trie is None

  def step(self, generated: Sequence[int]) -> tuple[np.ndarray | None, bool]:
    """(int [k] ids allowed next, or None for any id; done). Stop ids are included wherever ending is allowed."""
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
  """The decoding loop, scoring and the text-level API, over a backend's `next_logprobs`.

  Text rules: the prefix / prompt is encoded with BOS (when the tokenizer has one); a continuation or candidate
  gets the ids it has right after the prompt (those it adds to the prompt's encoding), as in one encoded text.
  So write the space: after "Output:", " cat" is '▁cat' (SentencePiece, with or without a dummy prefix) or
  'Ġcat' (byte-level BPE), while "cat" is glued to the colon.
  """

  tokenizer: TextTokenizer
  max_length: int

  @abc.abstractmethod
  def next_logprobs(self, ids: Sequence[int], among: np.ndarray | None = None) -> np.ndarray:
    """float [V'] log p(next id | ids). Only the entries of `among` (int [k]; None: all ids) need be exact;
    the others may be -inf. V' covers every id the model may emit."""

  def score(self, prefix_ids: Sequence[int], continuations: Sequence[Sequence[int]]) -> np.ndarray:
    """[C] float: sum_j log p(cont_j | prefix, cont_<j) for each continuation (token by token; backends batch)."""
    prefix = self._as_ids(prefix_ids, "prefix_ids")
    if not prefix:
      raise SpaeInputError("prefix_ids is empty; start it with BOS (tokenizer.bos_id) at least.")
    conts = self._check_continuations(prefix, continuations)
    out = np.zeros((len(conts),), np.float64)
    for i, c in enumerate(conts):
      for j, t in enumerate(c):
        out[i] += float(self.next_logprobs(prefix + c[:j], np.asarray([t], np.int64))[t])
    return out

  def score_many(self, requests: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]]) -> list[np.ndarray]:
    """`score` of each (prefix_ids, continuations) request, in order (a backend may share work between them)."""
    return [self.score(prefix, conts) for prefix, conts in requests]

  def generate(self, ids: Sequence[int], max_new: int, *, allowed_ids: Iterable[int] | None = None,
               candidates: Sequence[Sequence[int]] | None = None, stop: Sequence[int] | None = None,
               temperature: float = 0.0, seed: int = 0) -> list[int]:
    """New ids only (stop ids are not returned).

    `allowed_ids` restricts every emitted id to that set; `candidates` restricts the output to one of the
    candidate sequences (a trie constraint; generation ends when a candidate is complete and cannot be
    extended, or at a stop id where a candidate is complete). temperature 0 is greedy; otherwise sampling
    is seeded by `seed`, so equal seeds give equal outputs.
    """
    prompt = self._as_ids(ids, "ids")
    if not prompt:
      raise SpaeInputError("ids is empty; start the prompt with BOS (tokenizer.bos_id) at least.")
    if max_new < 0:
      raise SpaeInputError(f"max_new must be >= 0, got {max_new}.")
    self._check_length(len(prompt) + max_new, "len(ids) + max_new")
    cons = Constraint(allowed_ids=allowed_ids, candidates=candidates, stop=stop,
                      vocab_size=self.tokenizer.vocab_size)
    return self._decode(prompt, max_new, cons, temperature, seed)

  def _decode(self, prompt: list[int], max_new: int, cons: Constraint, temperature: float, seed: int) -> list[int]:
    """The decoding loop: one `next_logprobs` call per emitted id."""
    rng = np.random.default_rng(seed)
    out: list[int] = []
    for _ in range(max_new):
      allowed, done = cons.step(out)
      if done:
        break
      logp = self.next_logprobs(prompt + out, allowed)
      nxt = choose_next(logp, allowed, temperature, rng)
      if nxt in cons.stop_set:
        break
      out.append(nxt)
    return out

  # ------------------------------------------------------------------ text level
  def _encode_prompt(self, text: str) -> list[int]:
    return list(self.tokenizer.encode(text, add_bos=self.tokenizer.bos_id is not None))

  def _encode_after(self, prompt: str, prompt_ids: list[int], text: str) -> list[int]:
    """The ids `text` adds after `prompt` (encoded in one piece); on its own if the tokenizer merges across."""
    joint = self._encode_prompt(prompt + text)
    if joint[:len(prompt_ids)] == prompt_ids:
      return joint[len(prompt_ids):]
    return list(self.tokenizer.encode(text))

  def score_text(self, prefix: str, continuations: Sequence[str]) -> np.ndarray:
    """[C] log p(continuation | prefix) for text continuations (see the class docstring for the rules)."""
    if isinstance(continuations, str):
      raise SpaeInputError("continuations must be a list of strings, not one string.")
    prompt = self._encode_prompt(prefix)
    conts = [self._encode_after(prefix, prompt, c) for c in continuations]
    for c, ids in zip(continuations, conts):
      if not ids:
        raise SpaeInputError(f"continuation {c!r} encodes to no tokens; use a non-empty string.")
    return self.score(prompt, conts)

  def generate_text(self, prompt: str, max_new: int, *, candidates: Sequence[str] | None = None,
                    stop: Sequence[str] | None = None, temperature: float = 0.0, seed: int = 0) -> str:
    """Generated text (without the prompt). `stop` strings end the output, which is cut before them."""
    ids = self._encode_prompt(prompt)
    cand_ids = None
    if candidates is not None:
      if isinstance(candidates, str):
        raise SpaeInputError("candidates must be a list of strings, not one string.")
      cand_ids = [self._encode_after(prompt, ids, c) for c in candidates]
    stop_ids: list[int] = []
    for s in stop or ():
      ids = self.tokenizer.encode(s)
      if len(ids) == 1:  # a single-token stop string can end generation early at the id level
        stop_ids.append(int(ids[0]))
    if self.tokenizer.eos_id is not None:
      stop_ids.append(int(self.tokenizer.eos_id))
    new = self.generate(ids, max_new, candidates=cand_ids, stop=stop_ids or None,
                        temperature=temperature, seed=seed)
    text = self.tokenizer.decode(new)
    cut = min((text.find(s) for s in (stop or ()) if s and text.find(s) >= 0), default=-1)
    return text if cut < 0 else text[:cut]

  # ------------------------------------------------------------------ checks
  def _id_limit(self) -> int | None:
    """Ids must lie below this (None: unchecked, e.g. a server that does not report its vocabulary size)."""
    return self.tokenizer.vocab_size

  def _as_ids(self, ids: Sequence[int], what: str) -> list[int]:
    try:  # one id where a list of them belongs, or ragged nesting, is not a sequence of ids
      arr = None if isinstance(ids, (str, bytes)) else np.asarray(list(ids))
    except (TypeError, ValueError):
      arr = None
    if arr is None:
      raise SpaeInputError(f"{what} must be a flat sequence of token ids, got {type(ids).__name__} {ids!r:.40}.")
    if arr.ndim != 1:
      raise SpaeInputError(f"{what} must be a flat sequence of token ids, got shape {arr.shape}.")
    if arr.size == 0:
      return []
    limit = self._id_limit()
    if not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or (limit is not None and arr.max() >= limit):
      raise SpaeInputError(f"{what} must be integer token ids in [0, {limit}).")
    return [int(i) for i in arr]

  def _check_continuations(self, prefix: list[int], continuations: Sequence[Sequence[int]]) -> list[list[int]]:
    if isinstance(continuations, (str, bytes)):
      raise SpaeInputError("continuations must be a list of token-id sequences, not text (score_text takes text).")
    if len(continuations) == 0:
      raise SpaeInputError("continuations is empty; pass a list of at least one token-id sequence.")
    conts = [self._as_ids(c, f"continuations[{i}]") for i, c in enumerate(continuations)]
    if any(len(c) == 0 for c in conts):
      raise SpaeInputError("every continuation needs at least one token.")
    self._check_length(len(prefix) + max(len(c) for c in conts), "len(prefix_ids) + longest continuation")
    return conts

  def _check_length(self, n: int, what: str) -> None:
    if n > self.max_length:
      raise SpaeInputError(f"{what} = {n} exceeds the model context max_length={self.max_length}; inputs are "
                           "never truncated: shorten the prompt (e.g. fewer shots) or continuations.")
