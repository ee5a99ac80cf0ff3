"""What an answer is, in one place and without torch: its type (closed or open), its normal form, when it
is right, and the names of the scores and rewards built on that.

Every layer asks this module: data preparation types a sample, the metrics and the report's gallery judge
a prediction, the config checks a best-metric or reward name, GRPO's built-in rewards are assembled from
it.
"""

from __future__ import annotations

import re
import string
from typing import Any

TYPES = ("closed", "open")
CLOSED_ANSWERS = ("yes", "no")
"""Where a dataset gives no answer type of its own, a yes/no answer makes a question closed."""

METRIC_KEYS = (
    "n",
    "exact_match",
    "meteor",
    "bleu1",
    "f1",
    "n_closed",
    "closed_accuracy",
    "n_open",
    "open_exact_match",
    "open_recall",
)
"""The strict protocol's keys in ``metrics.json``."""
SCORES = tuple(k for k in METRIC_KEYS if not k.startswith("n"))
"""The strict protocol's scores (the count keys aside): what ``train.best_metric`` may name."""

REWARDS = {
    "closed_exact_match": ("closed", "exact_match"),
    "closed_correct": ("closed", "correct"),
    "open_exact_match": ("open", "exact_match"),
    "open_token_f1": ("open", "token_f1"),
    "llava_med_closed": ("closed", "llava_med_closed"),
    "llava_med_open_recall": ("open", "llava_med_recall"),
}
"""GRPO's built-in rewards: name → (the rows it scores, the per-row score). A user's own reward is named by
import path, ``module:function``."""

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """The form answers are compared in: lowercase, no punctuation, no articles, single spaces."""
    text = _PUNCT.sub("", text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def answer_type(answer: str) -> str:
    """The yes/no rule: ``closed`` for a yes or no answer, else ``open``."""
    return "closed" if normalize(answer) in CLOSED_ANSWERS else "open"


def given_type(value: Any) -> str | None:
    """A dataset's own answer type (SLAKE's and VQA-RAD's ``CLOSED`` / ``OPEN``), or None."""
    text = str(value).strip().lower() if value is not None else ""
    return text if text in TYPES else None


def row_type(row: dict[str, Any]) -> str:
    """A prediction row's type: the dataset's own (``answer_type``) where it gave one, else the yes/no rule."""
    return given_type(row.get("answer_type")) or answer_type(str(row["answer"]))


def exact_match(prediction: str, answer: str) -> float:
    """1 when the normalized prediction equals the normalized answer, else 0."""
    return float(normalize(prediction) == normalize(answer))


def closed_correct(prediction: str, answer: str) -> float:
    """First token of the normalized prediction equals the normalized answer ("not" is not "no")."""
    tokens = normalize(prediction).split()
    return float(bool(tokens) and tokens[0] == normalize(answer))


def correct(prediction: str, answer: str, kind: str) -> float:
    """The strict protocol's headline per row: closed rows by their first word, open rows by exact match."""
    return closed_correct(prediction, answer) if kind == "closed" else exact_match(prediction, answer)
