"""LLM-free probes: how much class information the tokens themselves carry, whatever the LLM.

Both probes see exactly what the LLM sees: the codebook ids of the top `layers` pyramid layers of each support
and query image.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def jaccard(a: Sequence[int], b: Sequence[int]) -> float:
  """|A ∩ B| / |A ∪ B| of two token sets (1.0 for two empty sets)."""
  sa, sb = set(int(x) for x in a), set(int(x) for x in b)
  union = len(sa | sb)
  return 1.0 if union == 0 else len(sa & sb) / union


def jaccard_probe(support_tokens: Sequence[Sequence[int]], support_classes: Sequence[int],
                  query_tokens: Sequence[int]) -> int:
  """Class of the support example whose token set overlaps the query's most (Jaccard); ties -> earliest."""
  sims = [jaccard(s, query_tokens) for s in support_tokens]
  return int(support_classes[int(np.argmax(sims))])


def bag_of_tokens(tokens: Sequence[Sequence[int]], columns: np.ndarray, normalise: bool = True) -> np.ndarray:
  """float [n, len(columns)] token counts restricted to `columns`, each row L2-normalised (raw counts when not
  `normalise`)."""
  col = {int(c): j for j, c in enumerate(columns)}
  x = np.zeros((len(tokens), len(columns)), np.float64)
  for i, t in enumerate(tokens):
    for tok in t:
      j = col.get(int(tok))
      if j is not None:
        x[i, j] += 1.0
  if not normalise:
    return x
  norm = np.linalg.norm(x, axis=1, keepdims=True)
  return x / np.maximum(norm, 1e-12)


def ridge_probe(support_tokens: Sequence[Sequence[int]], support_classes: Sequence[int],
                query_tokens: Sequence[Sequence[int]], num_classes: int, l2: float = 0.1) -> np.ndarray:
  """Closed-form ridge regression on bag-of-token counts (big_vision fewshot_lsr style). -> int [Q] classes.

  Targets are one-hot scaled to {-1, 1}, with a constant bias feature. Only tokens seen in the support set get
  non-zero weights, so the feature space is restricted to them (exact, and independent of the vocabulary
  size); the dual form inverts an [n, n] matrix, n = number of support examples.
  """
  columns = np.unique(np.concatenate([np.asarray(s, np.int64).reshape(-1) for s in support_tokens]))
  xs = bag_of_tokens(support_tokens, columns)
  xq = bag_of_tokens(query_tokens, columns)
  xs = np.concatenate([xs, np.ones((len(xs), 1))], axis=1)
  xq = np.concatenate([xq, np.ones((len(xq), 1))], axis=1)
  y = -np.ones((len(xs), num_classes))
  y[np.arange(len(xs)), np.asarray(support_classes)] = 1.0
  alpha = np.linalg.solve(xs @ xs.T + l2 * np.eye(len(xs)), y)  # [n, C]
  return np.argmax(xq @ xs.T @ alpha, axis=1).astype(np.int64)
