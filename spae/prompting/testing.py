"""Small deterministic language models for tests and smoke runs of the prompting code.

`WordTokenizer` is a whitespace tokenizer whose first ids are a spae `Vocabulary`'s words (so it shares the
codebook's ids), followed by prompt words and single characters (unknown words split into characters, so a label
such as "zebrafish" becomes several tokens). `FunctionLM` turns any `next_logprobs(ids) -> [V]` function into a
`spae.lm` LanguageModel. The model functions below read the prompt structure of `spae.prompting`:

  `prefer_model`    always favours one token sequence (tests that score and generate modes agree);
  `copy_label_model` answers with the label of the support example whose image tokens overlap the query's most
                    (Jaccard), so its accuracy equals the Jaccard probe's;
  `majority_model`  writes, at each output position, the token most in-context examples have there (in-context
                    denoising by majority vote).
"""

from __future__ import annotations

import re
import string
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from spae.lm import LanguageModelBase, TextTokenizer

SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>")
PROMPT_WORDS = ("\n", "Input:", "Output:", "For", "each", "of", "the", "following", "input", "output", "pairs,",
                "is", "[", "]", ",", "|", "Learn", "a", "new", "language", "and", "predict", "tokens", "examples.",
                "following", "dax", "blicket", "slation", "perpo", "shously")
_SPLIT = re.compile(r"\n|[^\s]+")


class WordTokenizer:
  """Whitespace word tokenizer: ids 0..len(words)-1 are `words` (e.g. a spae Vocabulary's words, in order)."""

  def __init__(self, words: Sequence[str], extra: Iterable[str] = ()):
    table: list[str] = []
    for w in list(words) + list(SPECIALS) + list(PROMPT_WORDS) + list(extra) + list(string.ascii_lowercase):
      if w not in table:
        table.append(w)
    self.table = table
    self.index = {w: i for i, w in enumerate(table)}
    self.vocab_size = len(table)
    self.bos_id: int | None = self.index["<bos>"]
    self.eos_id: int | None = self.index["<eos>"]
    self.unk_id = self.index["<unk>"]
    self.newline_id = self.index["\n"]

  def _word_ids(self, w: str) -> list[int]:
    if w in self.index:
      return [self.index[w]]
    return [self.index.get(ch, self.unk_id) for ch in w]  # unknown words split into characters

  def encode(self, text: str, *, add_bos: bool = False) -> list[int]:
    ids = [self.bos_id] if add_bos else []
    for w in _SPLIT.findall(text):
      ids += self._word_ids(w)
    return ids

  def decode(self, ids: Sequence[int]) -> str:
    out, chars = [], []
    for i in ids:
      p = self.table[int(i)]
      if len(p) == 1 and p in string.ascii_lowercase:
        chars.append(p)  # characters of a split word glue back together
        continue
      if chars:
        out.append("".join(chars))
        chars = []
      out.append(p)
    if chars:
      out.append("".join(chars))
    return " ".join(out).replace(" \n ", "\n").replace(" \n", "\n").replace("\n ", "\n")

  def id_to_piece(self, i: int) -> str:
    return self.table[int(i)]


def _log_softmax(x: np.ndarray) -> np.ndarray:
  x = x - x.max()
  return x - np.log(np.exp(x).sum())


class FunctionLM(LanguageModelBase):
  """A LanguageModel (and LogitsModel) from `fn(ids) -> [V] next-token logits` (pure Python; tiny prompts only).

  Decoding and scoring are the base class's, over `next_logprobs`. `calls` counts `score`/`generate` calls and
  `generate_calls` records each generate call's prompt and `max_new`, so tests can check batching.
  """

  def __init__(self, tokenizer: TextTokenizer, fn: Callable[[Sequence[int]], np.ndarray], max_length: int = 100_000):
    self.tokenizer = tokenizer
    self.fn = fn
    self.max_length = max_length
    self.calls = 0
    self.generate_calls: list[dict[str, Any]] = []

  def next_logprobs(self, ids: Sequence[int], among: np.ndarray | None = None) -> np.ndarray:
    return _log_softmax(np.asarray(self.fn([int(i) for i in ids]), np.float64))

  def logits(self, ids: Any) -> np.ndarray:
    ids = np.asarray(ids)
    out = np.zeros(ids.shape + (self.tokenizer.vocab_size,), np.float32)
    for b in range(ids.shape[0]):
      for t in range(ids.shape[1]):
        out[b, t] = self.fn([int(x) for x in ids[b, :t + 1]])
    return out

  def score(self, prefix_ids: Sequence[int], continuations: Sequence[Sequence[int]]) -> np.ndarray:
    self.calls += 1
    return super().score(prefix_ids, continuations)

  def generate(self, ids: Sequence[int], max_new: int, **kwargs: Any) -> list[int]:
    self.calls += 1
    self.generate_calls.append({"prompt": list(ids), "max_new": max_new})
    return super().generate(ids, max_new, **kwargs)


def prefer_model(vocab_size: int, preferred: Sequence[int], bonus: float = 8.0, seed: int = 0
                 ) -> Callable[[Sequence[int]], np.ndarray]:
  """Fixed random logits plus a large bonus for continuing the token sequence `preferred`.

  The bonus goes to preferred[j] where j = the longest prefix of `preferred` that the sequence ends with, so
  `preferred` is the most likely continuation and greedy decoding writes it. Include the label terminator
  (e.g. the newline id) in `preferred` to make the model end the label there.
  """
  base = np.random.default_rng(seed).normal(0, 1, vocab_size).astype(np.float32)
  pref = [int(t) for t in preferred]

  def fn(ids: Sequence[int]) -> np.ndarray:
    out = base.copy()
    j = 0
    for k in range(len(pref), 0, -1):
      if len(ids) >= k and list(ids[-k:]) == pref[:k]:
        j = k
        break
    if j < len(pref):
      out[pref[j]] += bonus
    return out

  return fn


def _segments(ids: Sequence[int], tok: WordTokenizer) -> list[tuple[list[int], list[int]]]:
  """Splits a prompt into (input ids, output ids) pairs at "Input:" / "Output:" / newline markers."""
  inp, outp = tok.index["Input:"], tok.index["Output:"]
  pairs: list[tuple[list[int], list[int]]] = []
  state, cur_in, cur_out = None, [], []
  for t in ids:
    if t == inp:
      if state == "out":
        pairs.append((cur_in, cur_out))
      state, cur_in, cur_out = "in", [], []
    elif t == outp and state == "in":
      state = "out"
    elif t == tok.newline_id and state == "out":
      pairs.append((cur_in, cur_out))
      state, cur_in, cur_out = None, [], []
    elif state == "in":
      cur_in.append(t)
    elif state == "out":
      cur_out.append(t)
  if state is not None:
    pairs.append((cur_in, cur_out))
  return pairs


def copy_label_model(tok: WordTokenizer, image_ids: Iterable[int], bonus: float = 20.0
                     ) -> Callable[[Sequence[int]], np.ndarray]:
  """Continues the last "Output:" with the label of the support example nearest to the query (Jaccard on the
  image-token ids of the inputs; ties -> earliest example), then a newline."""
  image = set(int(i) for i in image_ids)

  def fn(ids: Sequence[int]) -> np.ndarray:
    out = np.zeros(tok.vocab_size, np.float32)
    pairs = _segments(ids, tok)
    if len(pairs) < 2:
      return out
    *support, (q_in, q_out) = pairs
    q = {t for t in q_in if t in image}
    best, best_sim = None, -1.0
    for s_in, s_out in support:
      s = {t for t in s_in if t in image}
      sim = len(q & s) / max(1, len(q | s))
      if sim > best_sim:
        best, best_sim = s_out, sim
    nxt = best[len(q_out)] if len(q_out) < len(best) else tok.newline_id
    out[nxt] += bonus
    return out

  return fn


def majority_model(tok: WordTokenizer, bonus: float = 20.0) -> Callable[[Sequence[int]], np.ndarray]:
  """Writes at output position j the token that most in-context examples' outputs have at position j."""

  def fn(ids: Sequence[int]) -> np.ndarray:
    out = np.zeros(tok.vocab_size, np.float32)
    pairs = _segments(ids, tok)
    if len(pairs) < 2:
      return out
    *examples, (_, q_out) = pairs
    j = len(q_out)
    votes = [o[j] for _, o in examples if len(o) > j]
    if votes:
      vals, counts = np.unique(votes, return_counts=True)
      out[int(vals[np.argmax(counts)])] += bonus
    return out

  return fn


__all__ = ["WordTokenizer", "FunctionLM", "prefer_model", "copy_label_model", "majority_model"]
