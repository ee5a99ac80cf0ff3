"""The shape of a VQA dataset in a dozen figures, and the official PathVQA's beside them.

What makes PathVQA hard is its shape: a long tail of open answers, test answers never seen in
training, questions whose wording gives the answer away, several questions per image. These figures
say how close another dataset (yours, or the embedded synthetic one) comes to that shape
(``pathvqa data-stats --reference pathvqa``). Every row counts (no deduplication): the published
splits are scored that way.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from pathvqa.baseline import QuestionPrior
from pathvqa.data.prepare import Sample
from pathvqa.metrics import closed_correct, exact_match

FIRST_WORDS = ("what", "is", "does", "where", "are", "how")

PATHVQA = {
    "yes_no_share": 0.50,
    "open_answers_per_open_train_row": 0.33,
    "unseen_open_test_answers": 0.29,
    "open_answer_words_mean": 2.6,
    "open_answer_words_median": 1,
    "question_words_mean": 6.3,
    "distinct_questions_per_train_row": 0.38,
    "test_questions_seen_in_train": 0.67,
    **{f"first_word_{w}": s for w, s in zip(FIRST_WORDS, (0.41, 0.26, 0.19, 0.07, 0.03, 0.02), strict=True)},
    "qa_per_image": 7.6,
    "duplicate_share": 0.08,
    "prior_closed_accuracy": 0.68,
    "prior_open_exact_match": 0.13,
}
"""The official PathVQA (``flaviagiammarino/path-vqa``: 19,654 train / 6,719 test pairs), measured with
these same definitions. ``open_answers_per_open_train_row``: 3,223 distinct open answers."""

LABELS = {
    "yes_no_share": "yes/no share",
    "open_answers_per_open_train_row": "distinct open answers per open training row",
    "unseen_open_test_answers": "open test answers never seen in training",
    "open_answer_words_mean": "open answer words: mean",
    "open_answer_words_median": "open answer words: median",
    "question_words_mean": "question words: mean",
    "distinct_questions_per_train_row": "distinct question strings / rows (train)",
    "test_questions_seen_in_train": "test questions whose exact string is in train",
    **{f"first_word_{w}": f"first word: {w}" for w in FIRST_WORDS},
    "qa_per_image": "QA pairs per image",
    "duplicate_share": "exact duplicates after lowercasing",
    "prior_closed_accuracy": "question-only prior on test: closed accuracy",
    "prior_open_exact_match": "question-only prior on test: open exact match",
}
REFERENCES = {"pathvqa": PATHVQA}


def _share(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None


def _words(text: str) -> int:
    return len(text.replace("?", " ").split())


def answers_seen(train: list[Sample]) -> set[str]:
    """The cleaned answers of a training split (what "seen" means for an open answer)."""
    return {s.target for s in train}


def shape_figures(train: list[Sample], test: list[Sample] | None = None) -> dict[str, Any]:
    """The figures of :data:`PATHVQA` for a training split (and a test split, for those that need one)."""
    open_rows = [s for s in train if s.type == "open"]
    questions = [s.question.lower() for s in train]
    firsts = Counter(q.split()[0] if q.split() else "" for q in questions)
    rows = Counter((s.image_key, s.question.lower(), s.target) for s in train)
    answer_words = [_words(s.target) for s in open_rows]
    out: dict[str, Any] = {
        "yes_no_share": _share(len(train) - len(open_rows), len(train)),
        "open_answers_per_open_train_row": _share(len({s.target for s in open_rows}), len(open_rows)),
        "unseen_open_test_answers": None,
        "open_answer_words_mean": round(statistics.fmean(answer_words), 2) if answer_words else None,
        "open_answer_words_median": statistics.median(answer_words) if answer_words else None,
        "question_words_mean": round(statistics.fmean(map(_words, questions)), 2) if questions else None,
        "distinct_questions_per_train_row": _share(len(set(questions)), len(questions)),
        "test_questions_seen_in_train": None,
        **{f"first_word_{w}": _share(firsts[w], len(questions)) for w in FIRST_WORDS},
        "qa_per_image": round(len(train) / len({s.image_key for s in train}), 2) if train else None,
        "duplicate_share": _share(sum(n - 1 for n in rows.values()), len(train)),
        "prior_closed_accuracy": None,
        "prior_open_exact_match": None,
    }
    if test:
        out.update(_test_figures(train, test, set(questions)))
    return out


def _test_figures(train: list[Sample], test: list[Sample], train_questions: set[str]) -> dict[str, Any]:
    known = answers_seen(train)
    open_test = [s for s in test if s.type == "open"]
    prior = QuestionPrior(train)
    closed = [closed_correct(prior.predict(s.question), s.answer) for s in test if s.type == "closed"]
    opened = [exact_match(prior.predict(s.question), s.answer) for s in open_test]
    return {
        "unseen_open_test_answers": _share(sum(s.target not in known for s in open_test), len(open_test)),
        "test_questions_seen_in_train": _share(
            sum(s.question.lower() in train_questions for s in test), len(test)
        ),
        "prior_closed_accuracy": round(statistics.fmean(closed), 4) if closed else None,
        "prior_open_exact_match": round(statistics.fmean(opened), 4) if opened else None,
    }


def shape_table(figures: dict[str, Any], reference: str | None = None) -> list[str]:
    """Aligned lines: figure, this dataset's value (and the reference dataset's)."""
    ref = REFERENCES.get(reference or "", {})
    head = f"  {'shape figure':<48} {'this dataset':>12}" + (f" {reference:>12}" if ref else "")
    lines = [head]
    for key, label in LABELS.items():
        lines.append(
            f"  {label:<48} {_text(figures.get(key)):>12}" + (f" {_text(ref[key]):>12}" if ref else "")
        )
    return lines


def _text(value: Any) -> str:
    return "—" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)
