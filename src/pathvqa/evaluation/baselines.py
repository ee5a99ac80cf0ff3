"""The question-only prior: answer each question with its most common training answer.

It never looks at the image, so it measures how much of a dataset the language prior alone
solves (the floor every image model must clear).
"""

from __future__ import annotations

from collections import Counter, defaultdict

from pathvqa.data.prepare import Sample


class QuestionPrior:
    def __init__(self, train: list[Sample]):
        by_question: dict[str, Counter] = defaultdict(Counter)
        for s in train:
            by_question[s.question.lower()][s.target] += 1
        self.answers = {q: c.most_common(1)[0][0] for q, c in by_question.items()}
        self.fallback = Counter(s.target for s in train).most_common(1)[0][0] if train else ""

    def predict(self, question: str) -> str:
        return self.answers.get(question.lower(), self.fallback)

    def predictions(self, samples: list[Sample]) -> list[dict]:
        """Rows in the predictions.jsonl contract."""
        return [s.prediction_row(self.predict(s.question)) for s in samples]


def prior_scores(train: list[Sample], test: list[Sample]) -> dict:
    """The metric suite of the question-only prior fitted on ``train``, on ``test``."""
    from pathvqa.scoring.metrics import score_all

    return score_all(QuestionPrior(train).predictions(test))
