"""The MultiMedEval scoring protocol for PathVQA (``pathvqa score --protocol multimedeval``), as its
``VQA.evaluate`` scores the ``VQA-Path`` task (``multimedeval/task_families.py`` and ``utils.py`` of
corentin-ryr/MultiMedEval, 1.0.0). Written anew from its rules:

- both texts go through ``clean_str``, which is the VQA-v2 normalisation LLaVA-Med calls
  ``normalize_word`` (same punctuation rule, same 32-period quirk, number words to digits, articles
  dropped, contractions, commas removed): :func:`pathvqa.scoring.llava_med.normalize_word` is reused; the answer
  is lowercased and stripped first, as its ``PathVQA.get_correct_answer`` does.
- tokens are the *set* of whitespace words. Per row: precision and recall of the prediction's word set
  against the answer's (0 when a set is empty), F1 = 2pr / (p + r + 1e-8), BLEU-1 as torchmetrics'
  ``BLEUScore(n_gram=1)`` on the cleaned strings (brevity penalty × clipped unigram precision).
- closed rows (cleaned answer "yes" or "no"): correct when the recall of {answer} — {"no", "not"} for
  a "no" — among the prediction's words is at least 0.4 (so "not" counts as "no", and "yes no" is
  right for both).
- open rows: accurate when recall ≥ 0.75.
- ``bleu1``, ``f1`` and ``recall`` are means over *every* row (closed ones too), as it reports them;
  ``open_recall`` and ``open_accuracy`` over open rows, ``closed_accuracy`` over closed rows.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

from pathvqa.scoring.llava_med import normalize_word
from pathvqa.scoring.protocol import Protocol

CLOSED_RECALL = 0.4
OPEN_RECALL = 0.75
KEYS = ("closed_accuracy", "open_recall", "open_accuracy", "bleu1", "f1", "recall")


def bleu1_tokens(prediction: list[str], reference: list[str]) -> float:
    """BLEU-1 of one hypothesis against one reference: brevity penalty × clipped unigram precision
    (0 when nothing matches; the penalty is 1 only for a hypothesis longer than the reference)."""
    clipped = sum((Counter(prediction) & Counter(reference)).values())
    if not prediction or clipped == 0:
        return 0.0
    brevity = 1.0 if len(prediction) > len(reference) else math.exp(1 - len(reference) / len(prediction))
    return brevity * clipped / len(prediction)


def row_scores(prediction: str, answer: str) -> dict[str, float]:
    """One row's scores: ``recall``, ``precision``, ``f1``, ``bleu1`` and ``correct`` (closed rows: the
    0.4 rule; open rows: recall ≥ 0.75)."""
    truth_text, pred_text = normalize_word(answer.lower().strip()), normalize_word(prediction)
    truth, pred = set(truth_text.split()), set(pred_text.split())
    common = len(pred & truth)
    precision = common / len(pred) if pred else 0.0
    recall = common / len(truth) if truth else 0.0
    scores = {
        "recall": recall,
        "precision": precision,
        "f1": 2 * precision * recall / (precision + recall + 1e-8),
        "bleu1": bleu1_tokens(pred_text.split(), truth_text.split()),
    }
    if truth_text in ("yes", "no"):
        wanted = truth | ({"not"} if truth == {"no"} else set())
        scores["correct"] = float(len(pred & wanted) / len(wanted) >= CLOSED_RECALL)
    else:
        scores["correct"] = float(recall >= OPEN_RECALL)
    return scores


def is_closed(answer: str) -> bool:
    return normalize_word(answer.lower().strip()) in ("yes", "no")


def table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-row scores: bleu1, f1 and recall on every row, closed or open accuracy where each applies."""
    import numpy as np

    out = {key: np.full(len(rows), np.nan) for key in KEYS}
    for i, row in enumerate(rows):
        prediction, answer = str(row["prediction"]), str(row["answer"])
        scores = row_scores(prediction, answer)
        for key in ("bleu1", "f1", "recall"):
            out[key][i] = scores[key]
        if is_closed(answer):
            out["closed_accuracy"][i] = scores["correct"]
        else:
            out["open_recall"][i], out["open_accuracy"][i] = scores["recall"], scores["correct"]
    return out


PROTOCOL = Protocol(
    name="multimedeval",
    key="multimedeval",
    keys=KEYS,
    columns=KEYS,
    table=table,
    title="MultiMedEval protocol",
    summary="MultiMedEval's VQA scoring",
    rules=(
        "MultiMedEval's VQA scoring (``pathvqa.scoring.multimedeval``): word sets, closed rows by recall "
        "≥ 0.4, open rows accurate at recall ≥ 0.75"
    ),
    intro=(
        'MultiMedEval\'s protocol (its VQA scoring: word-set recall, yes/no right at recall ≥ 0.4 with "not" '
        'counted for "no", open right at recall ≥ 0.75; bleu1, f1 and recall over every question).'
    ),
    order=20,
)
