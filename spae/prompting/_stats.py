"""Few-shot results: accuracy with a 95% interval per setting and method, and the printed table."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

METHODS = ("lm", "jaccard", "ridge")


def confidence_interval(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
  """95% interval of the mean of per-episode accuracies: Wilson for 0/1 outcomes, normal otherwise."""
  v = np.asarray(values, np.float64)
  n = v.size
  if n == 0:
    return (float("nan"), float("nan"))
  p = float(v.mean())
  if np.all((v == 0) | (v == 1)):
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))
  half = z * float(v.std(ddof=1)) / math.sqrt(n) if n > 1 else float("inf")
  return (max(0.0, p - half), min(1.0, p + half))


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Accuracy, 95% CI and episode count per (ways, shots, repeats, layers, method)."""
  groups: dict[tuple, dict[str, list[float]]] = {}
  for r in rows:
    g = groups.setdefault((r["ways"], r["shots"], r["repeats"], r["layers"]), {m: [] for m in METHODS})
    for m in METHODS:
      res = [q.get(f"{m}_correct") for q in r["queries"]]
      if res and all(x is not None for x in res):
        g[m].append(float(np.mean(res)))
  out = []
  for (ways, shots, repeats, layers), per in sorted(groups.items()):
    for m in METHODS:
      vals = per[m]
      if not vals:
        continue
      lo, hi = confidence_interval(vals)
      out.append({"ways": ways, "shots": shots, "repeats": repeats, "layers": layers, "method": m,
                  "accuracy": float(np.mean(vals)), "ci95": [lo, hi], "episodes": len(vals)})
  return out


def format_table(summary: Sequence[dict[str, Any]]) -> str:
  lines = [f"{'ways':>4} {'shots':>5} {'rep':>3} {'layers':>6} {'method':>8} {'acc':>6}  {'95% CI':>15} {'n':>5}"]
  for s in summary:
    lo, hi = s["ci95"]
    lines.append(f"{s['ways']:>4} {s['shots']:>5} {s['repeats']:>3} {s['layers']:>6} {s['method']:>8} "
                 f"{s['accuracy']:>6.3f}  [{lo:.3f}, {hi:.3f}] {s['episodes']:>5}")
  return "\n".join(lines)
