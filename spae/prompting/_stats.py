"""Few-shot results: accuracy with a 95% interval per setting and method, and the printed table."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

# *_raw: the LM's uncalibrated answers where FewShotConfig.calibrate is on (its calibrated ones are "lm" / "oracle").
METHODS = ("lm", "oracle", "jaccard", "ridge", "lm_raw", "oracle_raw")
# Each LM method's oracle: its accuracy over that one's is its "vs_oracle".
_ORACLE_OF = {"lm": "oracle", "lm_raw": "oracle_raw"}


def normal_interval(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
  """95% interval of the mean of per-item values, mean ± z standard errors, unbounded (for dB and other
  unbounded measures); (-inf, inf) for one value, NaN for none."""
  v = np.asarray(values, np.float64)
  if v.size == 0:
    return (float("nan"), float("nan"))
  m = float(v.mean())
  half = z * float(v.std(ddof=1)) / math.sqrt(v.size) if v.size > 1 else float("inf")
  return (m - half, m + half)


def confidence_interval(values: Sequence[float], z: float = 1.96) -> tuple[float, float]:
  """95% interval of the mean of per-episode accuracies: Wilson for 0/1 outcomes, normal otherwise (in [0, 1])."""
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
  lo, hi = normal_interval(v, z)
  return (max(0.0, lo), min(1.0, hi))


def _cell_order(cell: tuple) -> tuple:
  # (ways, shots, repeats, induction, names, layers); None (old rows' induction and names, the oracle's layers)
  # sorts last
  return tuple((v is None, v or 0) for v in cell)


def summarize(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
  """Accuracy, 95% CI and episode count per (ways, shots, repeats, induction, names, layers) and method.

  The oracle's rows (`layers` None: the images' attribute words) form their own cell; every LM entry of the same
  (ways, shots, repeats, induction, names) gets "vs_oracle", its accuracy over the oracle's. `names` is
  'real' / 'nonsense' for sampled episodes, None for episodes read from files (and rows written before it).
  """
  groups: dict[tuple, dict[str, list[float]]] = {}
  for r in rows:
    cell = (r["ways"], r["shots"], r["repeats"], r.get("induction"), r.get("names"), r["layers"])
    g = groups.setdefault(cell, {m: [] for m in METHODS})
    for m in METHODS:
      res = [q.get(f"{m}_correct") for q in r["queries"]]
      if res and all(x is not None for x in res):
        g[m].append(float(np.mean(res)))
  out = []
  for (ways, shots, repeats, induction, names, layers), per in sorted(groups.items(),
                                                                     key=lambda kv: _cell_order(kv[0])):
    for m in METHODS:
      vals = per[m]
      if not vals:
        continue
      lo, hi = confidence_interval(vals)
      out.append({"ways": ways, "shots": shots, "repeats": repeats, "induction": induction, "names": names,
                  "layers": layers, "method": m, "accuracy": float(np.mean(vals)), "ci95": [lo, hi],
                  "episodes": len(vals)})
  oracle = {(s["ways"], s["shots"], s["repeats"], s["induction"], s["names"], s["method"]): s["accuracy"]
            for s in out if s["method"] in _ORACLE_OF.values()}
  for s in out:
    o = oracle.get((s["ways"], s["shots"], s["repeats"], s["induction"], s["names"], _ORACLE_OF.get(s["method"])))
    if s["method"] in _ORACLE_OF and o is not None:
      s["vs_oracle"] = s["accuracy"] / o if o > 0 else float("nan")
  return out


def format_table(summary: Sequence[dict[str, Any]]) -> str:
  """One line per cell and method; the oracle's line (layers "words") after its cell's token lines, and each LM
  line's accuracy over the oracle's in the last column."""
  lines = [f"{'ways':>4} {'shots':>5} {'rep':>3} {'ind':>3} {'names':>8} {'layers':>6} {'method':>8} {'acc':>6}  "
           f"{'95% CI':>15} {'n':>5} {'/oracle':>7}"]
  for s in summary:
    lo, hi = s["ci95"]
    ind = {True: "on", False: "off"}.get(s.get("induction"), "-")
    layers = "words" if s["layers"] is None else s["layers"]
    ratio = f"{s['vs_oracle']:>7.2f}" if "vs_oracle" in s else ""
    names = s.get("names") or "-"
    lines.append(f"{s['ways']:>4} {s['shots']:>5} {s['repeats']:>3} {ind:>3} {names:>8} {layers:>6} "
                 f"{s['method']:>8} {s['accuracy']:>6.3f}  [{lo:.3f}, {hi:.3f}] {s['episodes']:>5} {ratio}".rstrip())
  return "\n".join(lines)
