"""How sure a number is: bootstrap intervals over questions, paired differences between two models on
the same questions with a test for each (McNemar's exact test for right/wrong scores, a paired
permutation test for graded ones), Holm's correction for the many tests one report makes, results over
training seeds (mean, sd, a t interval) and a seed-aware paired interval (a bootstrap over seeds and
questions), and results per question type.

Every interval over questions is a 95% percentile bootstrap over 1,000 seeded resamples of the questions
(rows); a metric defined on a subset (closed or open rows) is the mean over that subset of each resample.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95
SEED = 0
PERMUTATIONS = 9999
"""Random sign flips of a paired permutation test; below ``EXACT_UP_TO`` differing rows every flip is
enumerated instead (an exact test, what scipy's ``permutation_test`` does then)."""
EXACT_UP_TO = 12
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
    return {"a_only_right": only_a, "b_only_right": only_b, "p": significant(p)}


def significant(p: float) -> float:
    """A p-value to 3 significant digits (a small p stays readable, never rounded to 0)."""
    return float(f"{p:.3g}")


def permutation_p(a: np.ndarray, b: np.ndarray, permutations: int = PERMUTATIONS, seed: int = SEED) -> float:
    """Two-sided paired permutation test of mean(B − A) = 0 on the rows both score (NaN elsewhere): each
    pair's two values swap at random (the sign of its difference flips), p = 2 · min(P(T ≤ t), P(T ≥ t)),
    as scipy's ``permutation_test`` (``permutation_type="samples"``) defines it. Exact, every flip
    enumerated, up to ``EXACT_UP_TO`` non-zero differences; else ``permutations`` seeded flips, each side's
    p = (hits + 1) / (flips + 1)."""
    applies = ~np.isnan(a) & ~np.isnan(b)
    diff = (b - a)[applies]
    diff = diff[diff != 0]  # a zero difference flips to itself
    if diff.size == 0:
        return 1.0
    observed = diff.mean()
    if diff.size <= EXACT_UP_TO:
        signs = 1 - 2 * ((np.arange(2**diff.size)[:, None] >> np.arange(diff.size)) & 1)  # (2^n, n)
        null, extra = (signs @ diff) / diff.size, 0
    else:
        rng = np.random.default_rng(seed)
        flips = [
            rng.choice((-1.0, 1.0), size=(min(1000, permutations - s), diff.size))
            for s in range(0, permutations, 1000)
        ]
        null, extra = np.concatenate([f @ diff for f in flips]) / diff.size, 1
    gamma = abs(1e-14 * observed)  # as scipy: ties within rounding count
    less = ((null <= observed + gamma).sum() + extra) / (null.size + extra)
    greater = ((null >= observed - gamma).sum() + extra) / (null.size + extra)
    return float(min(1.0, 2 * min(less, greater)))


def paired_test(a: np.ndarray, b: np.ndarray) -> dict:
    """The test of B − A on the same rows that fits the score: McNemar's exact test when every value is 0
    or 1 (right or wrong), else the paired permutation test."""
    applies = ~np.isnan(a) & ~np.isnan(b)
    values = np.concatenate([a[applies], b[applies]])
    if np.isin(values, (0.0, 1.0)).all():
        return {"test": "mcnemar", "p": mcnemar(a[applies], b[applies])["p"]}
    return {"test": "permutation", "p": significant(permutation_p(a, b))}


def holm(pvalues: list[float | None]) -> list[float | None]:
    """Holm–Bonferroni adjusted p-values (step-down, monotone, capped at 1), in the order given; None stays
    None and is not counted among the tests."""
    order = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    adjusted: list[float | None] = [None] * len(pvalues)
    running, m = 0.0, len(order)
    for rank, (p, i) in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


def over_seeds(values: list[float | None]) -> dict:
    """A score over training seeds: mean, sample sd, and the 95% t interval of the mean (n − 1 degrees of
    freedom); with one seed, no sd and no interval."""
    from scipy.stats import t

    kept = np.array([v for v in values if v is not None], dtype=np.float64)
    if kept.size == 0:
        return {"mean": None, "sd": None, "ci": None, "seeds": 0}
    mean = float(kept.mean())
    if kept.size == 1:
        return {"mean": round(mean, 4), "sd": None, "ci": None, "seeds": 1}
    sd = float(kept.std(ddof=1))
    half = float(t.ppf((1 + LEVEL) / 2, kept.size - 1)) * sd / np.sqrt(kept.size)
    return {"mean": round(mean, 4), "sd": round(sd, 4), "ci": [round(mean - half, 4), round(mean + half, 4)],
            "seeds": int(kept.size)}  # fmt: skip


def seed_aware_difference(a: np.ndarray, b: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """B − A over seeds and questions: ``a`` (seeds of A, N) and ``b`` (seeds of B, N) per-row scores on the
    same N questions (NaN where the score does not apply). The difference of the grand means, and a 95%
    hierarchical bootstrap interval: each resample draws A's seeds and B's seeds with replacement (the two
    models' trainings are independent) and one draw of the questions for both (they answered the same ones),
    so the interval holds the spread between trainings as well as between questions."""
    applies = ~np.isnan(a).any(axis=0) & ~np.isnan(b).any(axis=0)
    if not applies.any():
        return {"difference": None, "ci": None, "n": 0, "seeds": [len(a), len(b)], "test": None, "p": None}
    a, b = a[:, applies], b[:, applies]
    rng = np.random.default_rng(seed)
    n = a.shape[1]
    diffs = np.empty(resamples)
    for r in range(resamples):
        rows = rng.integers(0, n, n)
        seeds_a, seeds_b = rng.integers(0, len(a), len(a)), rng.integers(0, len(b), len(b))
        diffs[r] = b[seeds_b][:, rows].mean() - a[seeds_a][:, rows].mean()
    return {"difference": round(float(b.mean() - a.mean()), 4), **bootstrap_summary(diffs), "n": int(n),
            "seeds": [len(a), len(b)], "test": "hierarchical bootstrap"}  # fmt: skip


def bootstrap_summary(diffs: np.ndarray) -> dict:
    """A bootstrap distribution of a difference → its 95% percentile interval (``ci``) and the bootstrap's own
    two-sided test (``p``): the share of resamples on the other side of zero, doubled, never below 2/(R+1)."""
    low, high = np.percentile(diffs, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    p = min(1.0, 2 * (min(int((diffs <= 0).sum()), int((diffs >= 0).sum())) + 1) / (len(diffs) + 1))
    return {"ci": [round(float(low), 4), round(float(high), 4)], "p": significant(p)}


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
