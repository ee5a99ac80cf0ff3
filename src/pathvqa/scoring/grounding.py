"""Whether a map of where the model looked falls on the region the question concerns: the pointing game and
the share of the map's mass inside the region, each beside what a uniform map scores (the region's share of
the image) and what the same model with randomised weights scores, with bootstrap intervals.

A map is a non-negative (H, W) array at the image's size; a region an (H, W) boolean mask.

- **Pointing game**: whether the map's peak lies inside the region. Where several pixels share the peak
  value, the share of them inside: so a map equal to the region scores 1 and a uniform map scores the
  region's share of the image (the chance of a random point).
- **Mass in region**: the map's sum inside the region over its sum everywhere (a map that is zero
  everywhere counts as uniform).
- **Uniform**: both scores of a uniform map, the region's area share: the bar a map must clear.
- **Rank correlation**: Spearman's ρ between the trained model's map and the randomised model's map of the
  same answer (Adebayo et al. 2018: a map that survives randomising the weights explains nothing about them).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
from scipy import stats as scipy_stats

RESAMPLES = 1000
SEED = 0


def pointing(saliency: np.ndarray, region: np.ndarray) -> float:
    """The share of the map's peak pixels that lie inside the region (1 or 0 unless the peak is tied)."""
    peak = saliency >= saliency.max()
    return float(region[peak].mean())


def mass_in(saliency: np.ndarray, region: np.ndarray) -> float:
    """The map's mass inside the region over its mass everywhere (a zero map: the region's area share)."""
    total = float(saliency.sum())
    return float(saliency[region].sum()) / total if total > 0 else float(region.mean())


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's ρ of two maps over their pixels (None where either is constant)."""
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(scipy_stats.spearmanr(a.ravel(), b.ravel()).statistic)


def question_scores(
    saliency: np.ndarray, randomised: np.ndarray | None, region: np.ndarray
) -> dict[str, float]:
    """One question's scores: pointing and mass for the trained map, the uniform map and the randomised map."""
    out = {
        "pointing": pointing(saliency, region),
        "mass": mass_in(saliency, region),
        "uniform": float(region.mean()),
    }
    if randomised is not None:
        out["pointing_randomised"] = pointing(randomised, region)
        out["mass_randomised"] = mass_in(randomised, region)
        out["rank_correlation"] = rank_correlation(saliency, randomised)
    return out


def _interval(values: np.ndarray, rng: np.random.Generator) -> list[float]:
    draws = rng.integers(0, len(values), size=(RESAMPLES, len(values)))
    return [round(float(v), 4) for v in np.percentile(values[draws].mean(axis=1), [2.5, 97.5])]


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean of each score over ``rows`` (each :func:`question_scores` of one question), with a 95% bootstrap
    interval, and the paired gains over the uniform map and over the randomised model."""
    out: dict[str, Any] = {"n": len(rows)}
    if not rows:
        return out
    rng = np.random.default_rng(SEED)
    columns = {k: np.array([r[k] for r in rows if r.get(k) is not None], float) for k in rows[0]}
    for name, values in columns.items():
        if len(values):
            out[name] = round(float(values.mean()), 4)
            out[f"{name}_ci"] = _interval(values, rng)
    for score in ("pointing", "mass"):
        gains = {"over_uniform": columns["uniform"]}
        if f"{score}_randomised" in columns:
            gains["over_randomised"] = columns[f"{score}_randomised"]
        for name, other in gains.items():
            diff = columns[score] - other
            out[f"{score}_gain_{name}"] = round(float(diff.mean()), 4)
            out[f"{score}_gain_{name}_ci"] = _interval(diff, rng)
    return out


def grounding_table(rows: list[dict[str, Any]], kinds: list[str], right: list[bool]) -> dict[str, Any]:
    """All questions, then by region kind and by whether the answer was right."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, (kind, ok) in enumerate(zip(kinds, right, strict=True)):
        groups[f"kind:{kind}"].append(i)
        groups["answer:right" if ok else "answer:wrong"].append(i)
    table = {"all": summarise(rows)}
    for name in sorted(groups):
        table[name] = summarise([rows[i] for i in groups[name]])
    return table
