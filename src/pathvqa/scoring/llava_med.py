"""The LLaVA-Med scoring protocol (``pathvqa score --protocol llava-med``), as its evaluation code scores
PathVQA (``llava/eval/run_eval_batch.py`` and ``eval_metrics/`` of microsoft/LLaVA-Med, v1.0.0): the
numbers in its paper and in most PathVQA papers after it. Written anew from its rules, quirks kept:

- ``normalize_word`` (the VQA-v2 rules): each of ``; / [ ] " { } ( ) = + \\ _ - > < @ ` , ? !`` is
  deleted when, in the original text, it touches a space (or the text holds a digit,digit comma),
  and becomes a space otherwise; a period not followed by a digit is removed — at most 32 of them
  (its ``re.sub`` receives ``re.UNICODE`` = 32 as the count); lowercase; number words none/zero…ten
  become digits; a/an/the are dropped; its contraction table applies; commas are removed; ``' % & :``
  stay.
- closed (yes/no) rows: correct when the normalised answer is a *substring* of the normalised
  prediction — so "no" is found in "not" and in "normal". That is the rule; it is not fixed here.
- open rows: ``tp`` counts the prediction's words that occur in the answer (with their counts in
  the prediction), ``fp`` the other prediction words, ``fn`` the answer's words missing from the
  prediction (with their counts in the answer); recall tp/(tp+fn), precision tp/(tp+fp), F1; all 0
  for an empty prediction or tp = 0. BLEU-1 is nltk's ``sentence_bleu`` with weights (1, 0, 0, 0) on
  whitespace words; substring accuracy as for closed rows.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

from pathvqa.answers import row_type
from pathvqa.scoring.protocol import Protocol

PUNCTUATION = [
    ";",
    "/",
    "[",
    "]",
    '"',
    "{",
    "}",
    "(",
    ")",
    "=",
    "+",
    "\\",
    "_",
    "-",
    ">",
    "<",
    "@",
    "`",
    ",",
    "?",
    "!",
]
NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}  # fmt: skip
ARTICLES = {"a", "an", "the"}
PERIOD = re.compile(r"(?!<=\d)(\.)(?!\d)")  # as written there: the "lookbehind" is a lookahead for "<=digit"
DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")
MAX_PERIODS = 32  # re.UNICODE passed as the `count` argument of re.sub
# The VQA-v2 contraction table (its lowercase entries: the text is lowercased before the lookup, so the
# table's capitalised keys such as "Im" never match). "key value" pairs.
CONTRACTIONS = dict(
    pair.split(" ")
    for pair in (  # noqa: SIM905 (one string reads as the table it is)
        "aint ain't|arent aren't|cant can't|couldve could've|couldnt couldn't|couldn'tve couldn't've|"
        "couldnt've couldn't've|didnt didn't|doesnt doesn't|dont don't|hadnt hadn't|hadnt've hadn't've|"
        "hadn'tve hadn't've|hasnt hasn't|havent haven't|hed he'd|hed've he'd've|he'dve he'd've|hes he's|"
        "howd how'd|howll how'll|hows how's|isnt isn't|itd it'd|itd've it'd've|it'dve it'd've|itll it'll|"
        "let's let's|maam ma'am|mightnt mightn't|mightnt've mightn't've|mightn'tve mightn't've|"
        "mightve might've|mustnt mustn't|mustve must've|neednt needn't|notve not've|oclock o'clock|"
        "oughtnt oughtn't|ow's'at 'ow's'at|'ows'at 'ow's'at|'ow'sat 'ow's'at|shant shan't|"
        "shed've she'd've|she'dve she'd've|she's she's|shouldve should've|shouldnt shouldn't|"
        "shouldnt've shouldn't've|shouldn'tve shouldn't've|somebody'd somebodyd|"
        "somebodyd've somebody'd've|somebody'dve somebody'd've|somebodyll somebody'll|"
        "somebodys somebody's|someoned someone'd|someoned've someone'd've|someone'dve someone'd've|"
        "someonell someone'll|someones someone's|somethingd something'd|somethingd've something'd've|"
        "something'dve something'd've|somethingll something'll|thats that's|thered there'd|"
        "thered've there'd've|there'dve there'd've|therere there're|theres there's|theyd they'd|"
        "theyd've they'd've|they'dve they'd've|theyll they'll|theyre they're|theyve they've|twas 'twas|"
        "wasnt wasn't|wed've we'd've|we'dve we'd've|weve we've|werent weren't|whatll what'll|"
        "whatre what're|whats what's|whatve what've|whens when's|whered where'd|wheres where's|"
        "whereve where've|whod who'd|whod've who'd've|who'dve who'd've|wholl who'll|whos who's|"
        "whove who've|whyll why'll|whyre why're|whys why's|wont won't|wouldve would've|wouldnt wouldn't|"
        "wouldnt've wouldn't've|wouldn'tve wouldn't've|yall y'all|yall'll y'all'll|y'allll y'all'll|"
        "yall'd've y'all'd've|y'alld've y'all'd've|y'all'dve y'all'd've|youd you'd|youd've you'd've|"
        "you'dve you'd've|youll you'll|youre you're|youve you've"
    ).split("|")
)


def normalize_word(text: str) -> str:
    """LLaVA-Med's ``normalize_word`` (its callers lowercase first; so does this)."""
    text = text.lower()
    digit_comma = DIGIT_COMMA.search(text) is not None
    out = text
    for p in PUNCTUATION:  # the test reads the original text; the replacement the running one
        touches_space = f"{p} " in text or f" {p}" in text
        out = out.replace(p, "" if touches_space or digit_comma else " ")
    out = PERIOD.sub("", out, count=MAX_PERIODS)
    words = [NUMBER_WORDS.get(w, w) for w in out.lower().split()]
    words = [CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES]
    return " ".join(words).replace(",", "")


def closed_hit(prediction: str, answer: str) -> float:
    """LLaVA-Med's closed rule: the normalized answer is a substring of the normalized prediction."""
    return float(normalize_word(answer) in normalize_word(prediction))


def open_scores(prediction: str, answer: str) -> dict[str, float]:
    """recall, precision, f1, bleu1 and substring hit of one open row."""
    pred, truth = normalize_word(prediction), normalize_word(answer)
    scores = {"substring": float(truth in pred), "bleu1": _bleu1(pred, truth)}
    scores.update(zip(("f1", "precision", "recall"), _f1(pred, truth), strict=True))
    return scores


def _f1(prediction: str, answer: str) -> tuple[float, float, float]:
    # normalised again although its caller already did, as LLaVA-Med's calculate_f1score does
    pred, truth = Counter(normalize_word(prediction).split()), Counter(normalize_word(answer).split())
    if not pred or not truth:
        return 0.0, 0.0, 0.0
    tp = sum(n for w, n in pred.items() if w in truth)
    fp = sum(n for w, n in pred.items() if w not in truth)
    fn = sum(n for w, n in truth.items() if w not in pred)
    if tp == 0:
        return 0.0, 0.0, 0.0
    precision, recall = tp / (tp + fp), tp / (tp + fn)
    return 2 * precision * recall / (precision + recall), precision, recall


def _bleu1(prediction: str, answer: str) -> float:
    import warnings

    from nltk.translate.bleu_score import sentence_bleu

    with warnings.catch_warnings():  # nltk warns when there is no overlap; the score is 0 then
        warnings.simplefilter("ignore")
        return float(sentence_bleu([answer.split()], prediction.split(), weights=(1, 0, 0, 0)))


KEYS = (
    "closed_accuracy",
    "open_recall",
    "open_precision",
    "open_f1",
    "open_bleu1",
    "open_substring_accuracy",
)
COLUMNS = ("closed_accuracy", "open_recall", "open_precision", "open_f1", "open_bleu1")


def table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-row scores: the closed rule on closed rows, the open scores on open rows (NaN elsewhere)."""
    import numpy as np

    out = {key: np.full(len(rows), np.nan) for key in KEYS}
    for i, row in enumerate(rows):
        prediction, answer = str(row["prediction"]), str(row["answer"])
        if row_type(row) == "closed":
            out["closed_accuracy"][i] = closed_hit(prediction, answer)
            continue
        scores = open_scores(prediction, answer)
        for key in KEYS[1:]:
            out[key][i] = scores[key.removeprefix("open_").replace("substring_accuracy", "substring")]
    return out


PROTOCOL = Protocol(
    name="llava-med",
    key="llava_med",
    keys=KEYS,
    columns=COLUMNS,
    table=table,
    title="LLaVA-Med protocol",
    summary="LLaVA-Med's evaluation code: the numbers in most PathVQA papers",
    rules=(
        "LLaVA-Med's evaluation code (``pathvqa.scoring.llava_med``): VQA-v2 normalisation, closed rows by "
        "substring, open recall over answer words: the numbers in most PathVQA papers"
    ),
    intro=(
        "LLaVA-Med's protocol (its evaluation code's rules: substring matching for yes/no, word recall for open "
        "questions)."
    ),
    order=10,
    published=(
        {
            "model": "LLaVA-Med 7B, fine-tuned (Li et al., 2023)",
            "closed_accuracy": "≈0.91",
            "open_recall": "0.38–0.40",
        },
        {
            "model": "question-only prior, text-only floor (hub test split, 6,719 rows)",
            "closed_accuracy": 0.681,
            "open_recall": 0.145,
        },
    ),
)
