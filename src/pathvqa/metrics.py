"""The PathVQA metric suite: predictions.jsonl → one JSON object.

Definitions (also in the README, with the same names):

- ``normalize(s)``: lowercase → delete ASCII punctuation → drop the words a/an/the → collapse
  whitespace (the SQuAD normalisation).
- ``exact_match``: mean of ``normalize(prediction) == normalize(answer)`` over all rows.
- closed rows: ``normalize(answer)`` is ``yes`` or ``no``; ``closed_accuracy``: the first token
  of ``normalize(prediction)`` equals ``normalize(answer)`` (empty prediction scores 0).
- ``open_exact_match``: exact match over open rows; ``open_recall`` (LLaVA-Med): share of the
  unique normalized answer tokens that appear among the prediction's tokens.
- ``f1``: SQuAD token F1; ``bleu1``: brevity penalty × clipped unigram precision (nltk
  ``sentence_bleu`` with weights (1, 0, 0, 0)); both on normalized tokens.
- ``meteor``: nltk ``single_meteor_score`` on ``word_tokenize`` tokens with WordNet 3.0
  synonyms and the defaults alpha 0.9, beta 3, gamma 0.5 (what Hugging Face ``evaluate`` gives).
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pathvqa.errors import PathVQAError

CLOSED_ANSWERS = ("yes", "no")
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
_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    text = _PUNCT.sub("", text.lower())
    return " ".join(_ARTICLES.sub(" ", text).split())


def question_type(answer: str) -> str:
    return "closed" if normalize(answer) in CLOSED_ANSWERS else "open"


def exact_match(prediction: str, answer: str) -> float:
    return float(normalize(prediction) == normalize(answer))


def closed_correct(prediction: str, answer: str) -> float:
    """First token of the normalized prediction equals the yes/no answer ("not" is not "no")."""
    tokens = normalize(prediction).split()
    return float(bool(tokens) and tokens[0] == normalize(answer))


def open_recall(prediction: str, answer: str) -> float:
    truth = set(normalize(answer).split())
    pred = set(normalize(prediction).split())
    if not truth:
        return float(not pred)
    return len(truth & pred) / len(truth)


def token_f1(prediction: str, answer: str) -> float:
    pred, truth = normalize(prediction).split(), normalize(answer).split()
    if not pred or not truth:
        return float(pred == truth)
    common = sum((Counter(pred) & Counter(truth)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(truth)
    return 2 * precision * recall / (precision + recall)


def bleu1(prediction: str, answer: str) -> float:
    pred, truth = normalize(prediction).split(), normalize(answer).split()
    if not pred or not truth:
        return 0.0
    clipped = sum((Counter(pred) & Counter(truth)).values())
    brevity = 1.0 if len(pred) > len(truth) else math.exp(1 - len(truth) / len(pred))
    return brevity * clipped / len(pred)


def meteor(prediction: str, answer: str) -> float:
    from nltk.tokenize import word_tokenize
    from nltk.translate.meteor_score import single_meteor_score

    # preserve_line=True: the Treebank tokenizer without punkt sentence splitting (punkt is not
    # available offline); identical tokens for one-sentence answers.
    ref = word_tokenize(answer, preserve_line=True)
    hyp = word_tokenize(prediction, preserve_line=True)
    if not hyp or not ref:
        return 0.0
    return float(single_meteor_score(ref, hyp, alpha=0.9, beta=3.0, gamma=0.5))


def row_scores(prediction: str, answer: str) -> dict[str, float]:
    """Every per-row score for one prediction (used by the report's gallery too)."""
    scores = {
        "exact_match": exact_match(prediction, answer),
        "meteor": meteor(prediction, answer),
        "bleu1": bleu1(prediction, answer),
        "f1": token_f1(prediction, answer),
    }
    if question_type(answer) == "closed":
        scores["correct"] = closed_correct(prediction, answer)
    else:
        scores["recall"] = open_recall(prediction, answer)
        scores["correct"] = scores["exact_match"]
    return scores


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def score(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Aggregate the metric suite over rows with ``answer`` and ``prediction``."""
    from pathvqa import wordnet

    wordnet.ensure()  # never skip METEOR's synonym stage silently
    per_row = {k: [] for k in ("exact_match", "meteor", "bleu1", "f1")}
    closed, open_em, open_rec = [], [], []
    for row in rows:
        s = row_scores(str(row["prediction"]), str(row["answer"]))
        for key in per_row:
            per_row[key].append(s[key])
        if "recall" in s:
            open_em.append(s["exact_match"])
            open_rec.append(s["recall"])
        else:
            closed.append(s["correct"])
    n = len(per_row["exact_match"])
    result: dict[str, Any] = {"n": n}
    result.update({key: _mean(values) for key, values in per_row.items()})
    result.update(n_closed=len(closed), closed_accuracy=_mean(closed))
    result.update(n_open=len(open_em), open_exact_match=_mean(open_em), open_recall=_mean(open_rec))
    return {key: result[key] for key in METRIC_KEYS}


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """Read predictions.jsonl; each row needs ``answer`` and ``prediction``."""
    path = Path(path)
    if path.is_dir():
        raise PathVQAError(f"{path} is a folder: give its predictions.jsonl")
    if not path.is_file():
        raise PathVQAError(f"predictions file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise PathVQAError(f"{path}: cannot be read as UTF-8 text ({err.__class__.__name__})") from None
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise PathVQAError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
        missing = [k for k in ("answer", "prediction") if not isinstance(row, dict) or k not in row]
        if missing:
            raise PathVQAError(f"{path}:{lineno}: missing {', '.join(missing)}")
        wrong = [k for k in ("answer", "prediction") if not isinstance(row[k], str)]
        if wrong:
            found = ", ".join(f"{k} is {json.dumps(row[k])}" for k in wrong)
            raise PathVQAError(f"{path}:{lineno}: {found} (answers and predictions are strings)")
        rows.append(row)
    return rows


def score_file(path: str | Path) -> dict[str, Any]:
    return score(read_predictions(path))
