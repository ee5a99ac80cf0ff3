"""Evaluation: predictions for a split → predictions.jsonl + metrics.json."""

from __future__ import annotations

from typing import Any

from pathvqa.baseline import QuestionPrior
from pathvqa.data.prepare import Sample
from pathvqa.metrics import score


def prior_baseline(train: list[Sample], test: list[Sample]) -> dict[str, Any]:
    """Metric suite of the question-only prior (majority answer per question, from train)."""
    return score(QuestionPrior(train).predictions(test))
