"""How sure a number is: bootstrap intervals over questions, paired differences between two models on
the same questions, McNemar's exact test, and results per question type.

Every interval is a 95% percentile bootstrap over 1,000 seeded resamples of the questions (rows); a
metric defined on a subset (closed or open rows) is the mean over that subset of each resample.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95
SEED = 0
MIN_TYPE_ROWS = 5
"""Question types rarer than this are pooled as ``other``."""


def _weights(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, n) counts: how often each row is drawn in each resample (the same draws for every
    metric, so intervals of one evaluation are consistent with each other)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def intervals(table: dict[str, np.ndarray], resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """{metric: [low, high]} for per-row score arrays (NaN: the metric does not apply to that row)."""
    n = len(next(iter(table.values()), []))
    if n == 0:
        return dict.fromkeys(table)
    weights = _weights(n, resamples, seed)
    return {key: _interval(weights, values) for key, values in table.items()}


def _interval(weights: np.ndarray, values: np.ndarray) -> list[float] | None:
    applies = ~np.isnan(values)
    if not applies.any():
        return None
    counts = weights @ applies  # (R,) rows of the subset in each resample
    sums = weights @ np.where(applies, values, 0.0)
    means = sums[counts > 0] / counts[counts > 0]
    low, high = np.percentile(means, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return [round(float(low), 4), round(float(high), 4)]


def paired_difference(a: np.ndarray, b: np.ndarray) -> dict:
    """B − A on the same questions (NaN where the metric does not apply): the difference of means and
    its bootstrap interval (questions resampled in pairs)."""
    applies = ~np.isnan(a) & ~np.isnan(b)
    if not applies.any():
        return {"difference": None, "ci": None, "n": 0}
    diff = np.where(applies, b - a, np.nan)
    return {
        "difference": round(float(np.nanmean(diff)), 4),
        "ci": _interval(_weights(len(diff)), diff),
        "n": int(applies.sum()),
    }


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray) -> dict:
    """McNemar's exact test on paired right/wrong outcomes: a two-sided binomial test of the discordant
    pairs (A right & B wrong vs A wrong & B right) against 1/2."""
    from scipy.stats import binomtest

    a, b = a_correct.astype(bool), b_correct.astype(bool)
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = 1.0 if only_a + only_b == 0 else float(binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue)
    return {"a_only_right": only_a, "b_only_right": only_b, "p": round(p, 4)}


def question_word(question: str) -> str:
    """The type PathVQA papers tabulate: the first word, with "how many" / "how much" kept together."""
    words = question.lower().replace("?", " ").split()
    if not words:
        return "other"
    if words[0] == "how" and len(words) > 1 and words[1] in ("many", "much"):
        return f"how {words[1]}"
    return words[0]


def by_question_type(questions: list[str], correct: np.ndarray) -> dict[str, dict]:
    """{type: {n, accuracy, ci}} (accuracy: closed accuracy on yes/no rows, exact match on open ones),
    most frequent first; types with fewer than ``MIN_TYPE_ROWS`` questions are pooled as ``other``."""
    words = [question_word(q) for q in questions]
    counts = Counter(words)
    groups: dict[str, list[int]] = defaultdict(list)
    for i, word in enumerate(words):
        groups[word if counts[word] >= MIN_TYPE_ROWS else "other"].append(i)
    out = {}
    for word, rows in sorted(groups.items(), key=lambda kv: (kv[0] == "other", -len(kv[1]), kv[0])):
        values = correct[rows]
        out[word] = {
            "n": len(rows),
            "accuracy": round(float(values.mean()), 4),
            "ci": intervals({"accuracy": values})["accuracy"],
        }
    return out
