"""How sure an answer is, and whether that can be trusted: one definition of confidence, its calibration
(expected calibration error, Brier score), selective prediction (the risk–coverage curve, AURC, accuracy at
a coverage), and temperature scaling fitted on a validation split.

Confidence (each prediction row's ``confidence``, from what generation returned with the answer):

- a closed question answered "yes" or "no": the model's probability of its answer renormalised over
  {yes, no} at the first answer token, ``p = σ(±z / T)`` with ``z = log p(yes) − log p(no)`` there (``+`` for
  a "yes", ``−`` for a "no");
- any other answer: the length-normalised sequence probability, the geometric mean of its tokens'
  probabilities, ``exp(mean log p / T)``.

``T`` is 1 unless a temperature was fitted (one for closed answers, one for open ones): by minimising, on
the validation split's predictions, the negative log-likelihood of the reference yes/no answer (closed) and
of being right (open).

Expected calibration error: 15 equal-width bins of confidence, closed on the left (a confidence of exactly 1
in a bin of its own), the bins' |accuracy − mean confidence| weighted by their share of the rows:
torchmetrics' ``BinaryCalibrationError(n_bins=15, norm="l1")`` on (confidence, right or wrong), which a test
holds it equal to. AURC: the mean over k of the error rate among the k most confident answers.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from pathvqa.answers import exact_match, normalize, row_type
from pathvqa.errors import PathVQAError

BINS = 15
COVERAGES = (0.9, 0.8, 0.5)
RESAMPLES = 1000
SEED = 0


def row_confidence(row: dict[str, Any], temperature: dict[str, float] | None = None) -> float | None:
    """A prediction row's confidence (see the module's docstring); None when its generation gave no scores."""
    temperature = temperature or {}
    if row.get("yes_no_logit") is not None:
        z = row["yes_no_logit"] / temperature.get("closed", 1.0)
        sign = 1.0 if str(row["prediction"]).strip().lower().startswith("yes") else -1.0
        return _sigmoid(sign * z)
    if row.get("logprob_mean") is not None:
        return math.exp(row["logprob_mean"] / temperature.get("open", 1.0))
    return None


def check_threshold(abstain_below: float | None) -> None:
    """``--abstain-below P``: a confidence strictly between 0 and 1."""
    if abstain_below is not None and not 0 < abstain_below < 1:
        raise PathVQAError(f"--abstain-below {abstain_below}: give a confidence between 0 and 1 (e.g. 0.6)")


def abstains(confidence: float | None, abstain_below: float | None) -> bool:
    """Whether an answer of this (kept) confidence is marked "not sure": the value a user reads is the value
    compared, so an answer shown at exactly the threshold is never withheld."""
    return confidence is not None and abstain_below is not None and confidence < abstain_below


def readable(answer: str, confidence: float | None, abstained: bool) -> str:
    """An answer as a person reads it: ``yes (p = 0.93)``, or ``not sure (p = 0.41)`` under the threshold."""
    if confidence is None:
        return answer
    return f"not sure (p = {confidence:.2f})" if abstained else f"{answer} (p = {confidence:.2f})"


def kept(value: float | None) -> float | None:
    """A confidence as a prediction row keeps it: six significant digits (a ranking survives the rounding)."""
    return None if value is None else float(f"{value:.6g}")


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def reliability_bins(
    confidence: np.ndarray, correct: np.ndarray, bins: int = BINS
) -> list[tuple[float, float, int]]:
    """(mean confidence, accuracy, rows) of each non-empty bin: equal-width bins closed on the left,
    [k/bins, (k+1)/bins), a confidence of exactly 1 in a bin of its own (torchmetrics' binning). What a
    reliability diagram draws and the expected calibration error is made of."""
    index = np.searchsorted(np.linspace(0.0, 1.0, bins + 1), confidence, side="right") - 1
    out = []
    for b in range(bins + 1):
        mask = index == b
        if mask.any():
            out.append((float(confidence[mask].mean()), float(correct[mask].mean()), int(mask.sum())))
    return out


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    """The bins' |accuracy − mean confidence| weighted by their share of the rows (:func:`reliability_bins`)."""
    n = len(confidence)
    return float(
        sum(rows / n * abs(acc - mean) for mean, acc, rows in reliability_bins(confidence, correct, bins))
    )


def brier(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Mean squared difference between the confidence and the outcome (1 right, 0 wrong)."""
    return float(np.mean((confidence - correct) ** 2))


def risk_coverage(confidence: np.ndarray, correct: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coverage, risk) after each answer, most confident first (ties in the order given)."""
    order = np.argsort(-confidence, kind="stable")
    errors = np.cumsum(1.0 - correct[order])
    k = np.arange(1, len(order) + 1)
    return k / len(order), errors / k


def aurc(confidence: np.ndarray, correct: np.ndarray) -> float:
    """Area under the risk–coverage curve: the mean risk over the k most confident answers, over every k."""
    return float(risk_coverage(confidence, correct)[1].mean())


def accuracy_at(confidence: np.ndarray, correct: np.ndarray, coverage: float) -> float:
    """Accuracy of the ceil(coverage · n) most confident answers."""
    keep = max(1, math.ceil(coverage * len(confidence)))
    order = np.argsort(-confidence, kind="stable")[:keep]
    return float(correct[order].mean())


def summary(confidence: np.ndarray, correct: np.ndarray, closed: bool) -> dict[str, Any]:
    """The calibration and selective-prediction scores of one kind of question, each with a 95% bootstrap
    interval over its rows; ``gain_at_50``: accuracy on the most confident half minus accuracy on all (its
    interval from the same resamples: above zero when the confidence ranks right answers first)."""
    scores = {
        "ece": expected_calibration_error,
        **({"brier": brier} if closed else {}),
        "aurc": aurc,
        **{f"accuracy_at_{round(100 * c)}": (lambda c_, k_, c=c: accuracy_at(c_, k_, c)) for c in COVERAGES},
        "gain_at_50": lambda c_, k_: accuracy_at(c_, k_, 0.5) - float(k_.mean()),
    }
    out: dict[str, Any] = {
        "n": len(confidence),
        "accuracy": float(correct.mean()),
        "mean_confidence": float(confidence.mean()),
    }
    rng = np.random.default_rng(SEED)
    draws = rng.integers(0, len(confidence), size=(RESAMPLES, len(confidence)))
    for name, score in scores.items():
        out[name] = round(score(confidence, correct), 4)
        values = [score(confidence[d], correct[d]) for d in draws]
        out[f"{name}_ci"] = [round(float(v), 4) for v in np.percentile(values, [2.5, 97.5])]
    out["ece_bins"] = BINS
    return out


def paired_selective(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], coverage: float = 0.5
) -> dict[str, dict[str, Any]]:
    """B against A on the same questions (``a``, ``b``: (confidence, right or wrong), row for row): AURC and
    accuracy at ``coverage``, each side's value, B − A, a 95% paired bootstrap interval (one draw of the
    questions for both) and the bootstrap's p (``stats.bootstrap_summary``)."""
    from pathvqa.scoring.stats import bootstrap_summary

    scores = {"aurc": aurc, f"accuracy_at_{round(100 * coverage)}": lambda c, k: accuracy_at(c, k, coverage)}
    n = len(a[0])
    draws = np.random.default_rng(SEED).integers(0, n, size=(RESAMPLES, n))
    out = {}
    for name, score in scores.items():
        diffs = np.array([score(b[0][d], b[1][d]) - score(a[0][d], a[1][d]) for d in draws])
        value_a, value_b = score(*a), score(*b)
        out[name] = {"a": round(value_a, 4), "b": round(value_b, 4), "difference": round(value_b - value_a, 4),
                     **bootstrap_summary(diffs), "n": n, "test": "paired bootstrap"}  # fmt: skip
    return out


def fit_temperature(logits: np.ndarray, outcome: np.ndarray, kind: str) -> float:
    """The temperature that minimises the validation NLL: ``closed``: ``logits`` are z = log p(yes) − log
    p(no) and ``outcome`` 1 where the reference is yes; ``open``: ``logits`` are mean token log-probabilities
    and ``outcome`` 1 where the answer was right. A bounded 1-D search (scipy)."""
    from scipy.optimize import minimize_scalar

    eps = 1e-12

    def nll(log_t: float) -> float:
        t = math.exp(log_t)
        p = 1.0 / (1.0 + np.exp(-logits / t)) if kind == "closed" else np.exp(np.minimum(logits / t, 0.0))
        p = np.clip(p, eps, 1 - eps)
        return float(-np.mean(outcome * np.log(p) + (1 - outcome) * np.log(1 - p)))

    found = minimize_scalar(nll, bounds=(math.log(0.05), math.log(20.0)), method="bounded")
    return round(math.exp(found.x), 4)


def scored(rows: list[dict[str, Any]], correct: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """(confidence, right or wrong) of the rows of one kind (``closed`` / ``open``) that carry a confidence."""
    chosen = [i for i, r in enumerate(rows) if row_type(r) == kind and r.get("confidence") is not None]
    values = np.array([rows[i]["confidence"] for i in chosen], dtype=np.float64)
    return values, np.asarray(correct, dtype=np.float64)[chosen]


def calibration(rows: list[dict[str, Any]], correct: np.ndarray) -> dict[str, Any]:
    """``metrics.json``'s ``calibration``: closed and open questions apart (:func:`summary` of their rows'
    ``confidence`` against ``correct``, each row right or wrong by the strict protocol); ``"n/a"`` for a
    kind whose rows carry no confidence (predictions written before answers carried their scores)."""
    out: dict[str, Any] = {}
    for kind in ("closed", "open"):
        values, right = scored(rows, correct, kind)
        out[kind] = summary(values, right, closed=kind == "closed") if len(values) else NOT_AVAILABLE
    return out


NOT_AVAILABLE = "n/a"
"""What a calibration score says for rows without confidences (predictions written before answers carried
their scores)."""


MIN_ROWS = 10
"""Fewer validation rows of a kind than this: its temperature stays 1."""


def fit_from_rows(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Temperatures for closed and open answers from validation prediction rows (their ``yes_no_logit`` /
    ``logprob_mean``): the closed one by the reference yes/no answer, the open one by being right."""
    closed = [r for r in rows if row_type(r) == "closed" and r.get("yes_no_logit") is not None]
    opened = [r for r in rows if row_type(r) == "open" and r.get("logprob_mean") is not None]
    out: dict[str, Any] = {"n_closed": len(closed), "n_open": len(opened)}
    if len(closed) >= MIN_ROWS:
        z = np.array([r["yes_no_logit"] for r in closed])
        yes = np.array([normalize(str(r["answer"])) == "yes" for r in closed], dtype=np.float64)
        out["closed"] = fit_temperature(z, yes, "closed")
    if len(opened) >= MIN_ROWS:
        mean = np.array([r["logprob_mean"] for r in opened])
        right = np.array(
            [exact_match(str(r["prediction"]), str(r["answer"])) for r in opened], dtype=np.float64
        )
        out["open"] = fit_temperature(mean, right, "open")
    return out
