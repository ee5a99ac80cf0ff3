"""pathvqa's own scoring protocol (``strict``, the top level of ``metrics.json``): SQuAD-normalised exact
match, METEOR with WordNet, BLEU-1, token F1; closed accuracy by the first word.

- ``normalize(s)``: lowercase → delete ASCII punctuation → drop the words a/an/the → collapse
  whitespace (the SQuAD normalisation).
- ``exact_match``: mean of ``normalize(prediction) == normalize(answer)`` over all rows.
- closed rows: ``normalize(answer)`` is ``yes`` or ``no`` (or the dataset's own answer type says closed);
  ``closed_accuracy``: the first token of ``normalize(prediction)`` equals ``normalize(answer)`` (an
  empty prediction scores 0).
- ``open_exact_match``: exact match over open rows; ``open_recall`` (LLaVA-Med's idea): the share of the
  unique normalized answer tokens that appear among the prediction's tokens.
- ``f1``: SQuAD token F1; ``bleu1``: brevity penalty × clipped unigram precision (nltk
  ``sentence_bleu`` with weights (1, 0, 0, 0)); both on normalized tokens.
- ``meteor``: nltk ``single_meteor_score`` on ``word_tokenize`` tokens with WordNet 3.0 synonyms and the
  defaults alpha 0.9, beta 3, gamma 0.5 (what Hugging Face ``evaluate`` gives).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from pathvqa.answers import SCORES, answer_type, correct, exact_match, normalize, row_type
from pathvqa.scoring import multimedeval, wordnet
from pathvqa.scoring.protocol import Protocol


def open_recall(prediction: str, answer: str) -> float:
    truth = set(normalize(answer).split())
    pred = set(normalize(prediction).split())
    if not truth:
        return float(not pred)
    return len(truth & pred) / len(truth)


def token_f1(prediction: str, answer: str) -> float:
    """SQuAD token F1 between the normalized prediction and answer."""
    pred, truth = normalize(prediction).split(), normalize(answer).split()
    if not pred or not truth:
        return float(pred == truth)
    common = sum((Counter(pred) & Counter(truth)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(truth)
    return 2 * precision * recall / (precision + recall)


def bleu1(prediction: str, answer: str) -> float:
    return multimedeval.bleu1_tokens(normalize(prediction).split(), normalize(answer).split())


def meteor(prediction: str, answer: str) -> float:
    from nltk.tokenize import word_tokenize
    from nltk.translate.meteor_score import single_meteor_score

    # preserve_line=True: the Treebank tokenizer without punkt sentence splitting (punkt is not
    # available offline); identical tokens for one-sentence answers.
    ref = word_tokenize(answer, preserve_line=True)
    hyp = word_tokenize(prediction, preserve_line=True)
    if not hyp or not ref:
        return 0.0
    return float(single_meteor_score(ref, hyp, alpha=0.9, beta=3.0, gamma=0.5, wordnet=wordnet.reader()))


def row_scores(prediction: str, answer: str, kind: str | None = None) -> dict[str, float]:
    """Every per-row score for one prediction (used by the report's gallery too); ``kind``: the row's type
    when the dataset gave it."""
    scores = {
        "exact_match": exact_match(prediction, answer),
        "meteor": meteor(prediction, answer),
        "bleu1": bleu1(prediction, answer),
        "f1": token_f1(prediction, answer),
    }
    kind = kind or answer_type(answer)
    scores["correct"] = correct(prediction, answer, kind)
    if kind == "open":
        scores["recall"] = open_recall(prediction, answer)
    return scores


def strict_table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-row scores of the strict protocol: {metric: (N,) array}, NaN where a metric does not apply
    (closed accuracy on open rows, open scores on closed rows). ``correct`` is the per-type headline."""
    import numpy as np

    table = {key: np.full(len(rows), np.nan) for key in (*SCORES, "correct")}
    for i, row in enumerate(rows):
        s = row_scores(str(row["prediction"]), str(row["answer"]), row_type(row))
        for key in ("exact_match", "meteor", "bleu1", "f1", "correct"):
            table[key][i] = s[key]
        if "recall" in s:
            table["open_exact_match"][i], table["open_recall"][i] = s["exact_match"], s["recall"]
        else:
            table["closed_accuracy"][i] = s["correct"]
    return table


PROTOCOL = Protocol(
    name="strict",
    key=None,
    keys=SCORES,
    columns=SCORES,
    table=strict_table,
    title="Strict protocol (pathvqa's)",
    summary="pathvqa's own, the default",
    rules=(
        "pathvqa's own (``pathvqa.scoring.strict``): SQuAD normalisation, exact match, METEOR with WordNet, "
        "BLEU-1, token F1; closed accuracy by the first word"
    ),
    intro=(
        "Strict protocol (pathvqa's). Every value with its 95% bootstrap interval over questions (1,000 "
        "resamples); `blind_closed_accuracy`: the same model with every image replaced by grey."
    ),
    order=0,
)
