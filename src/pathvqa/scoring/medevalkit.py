"""MedEvalKit's PathVQA scoring (``pathvqa score --protocol medevalkit``), as its ``PATH_VQA.cal_metrics``
scores the PathVQA test split (``utils/PATH_VQA/PATH_VQA.py`` with ``utils/utils.py``'s ``parse_response``,
``judge_judgement`` and ``judge_open_end_vqa`` of alibaba-damo-academy/MedEvalKit, read in the fork
blackkiring/MedEvalKit). Written anew from its rules, quirks kept:

- the response: the content of its last ``\\boxed{…}`` when it has one (brace-matched, stripped), else
  what lies between its ``<answer>`` and ``</answer>`` tags (every pair, joined by a space) when it has
  the tag; then lowercased and stripped. The answer: lowercased and stripped.
- closed rows are those whose answer is then ``yes`` or ``no``. The response is parsed again: a
  ``boxed`` anywhere in it is replaced as above (by the literal ``None`` when no ``\\boxed{…}`` closes),
  ``<answer>`` likewise, and for each of ``**answer**:``, ``**answer**``, ``*answer*:``, ``**answer:**``,
  ``answer is``, ``answer:``, ``答案:``, ``final answer``, ``final answer is`` that occurs, only what
  follows its last occurrence is kept; newlines and periods are deleted. Right when exactly one of
  ``yes`` and ``no`` occurs in it as a substring and the answer does too: "not", "normal", "abnormal",
  "none" and "unknown" read as "no", and "yes, no" is wrong for both.
- open rows: right when the parsed response (not stripped again: "answer: necrosis" keeps its space
  and is wrong) equals the answer exactly: its ``em``.
- ``closed_accuracy`` over closed rows, ``open_accuracy`` (its ``em``) over open rows, ``accuracy`` over
  every row (its ``total metrics``). Its own ``open`` ``acc`` field divides by the open count twice;
  ``em`` is the mean it means. Its BLEU, ROUGE and set-F1 scores of open answers are not reproduced.
"""

from __future__ import annotations

from typing import Any

from pathvqa.scoring.protocol import Protocol

PATTERNS = (
    "**answer**:", "**answer**", "*answer*:", "**answer:**", "answer is", "answer:", "答案:", "final answer",
    "final answer is",
)  # fmt: skip
"""Its answer markers, in its order: the text after the last occurrence of each that occurs is kept."""
KEYS = ("closed_accuracy", "open_accuracy", "accuracy")


def boxed(text: str) -> str:
    """The content of the last ``\\boxed{…}`` (braces matched, stripped), or the literal ``None``."""
    start = text.rfind("\\boxed{")
    if start == -1:
        return "None"
    depth, content = 0, text[start + len("\\boxed{") :]
    for i, char in enumerate(content):
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth == -1:
            return content[:i].strip()
    return "None"


def tagged(text: str, tag: str = "answer") -> str:
    """Every ``<tag>…</tag>`` span joined by spaces; the text itself when none closes."""
    spans, start = [], text.find(f"<{tag}>")
    while start != -1:
        end = text.find(f"</{tag}>", start + len(tag) + 2)
        if end == -1:
            break
        spans.append(text[start + len(tag) + 2 : end])
        start = text.find(f"<{tag}>", end + len(tag) + 3)
    joined = " ".join(spans).strip()
    return joined or text


def parse(response: str) -> str:
    """Its ``parse_response``: lowercase, a boxed or tagged answer, the text after each answer marker."""
    response = response.lower()
    if "boxed" in response:
        response = boxed(response)
    elif "<answer>" in response:
        response = tagged(response)
    for pattern in PATTERNS:
        if pattern in response:
            response = response.split(pattern)[-1]
    return response


def prepare(response: str) -> str:
    """What ``cal_metrics`` does to a response before judging it."""
    found = boxed(response)
    if found != "None":
        response = found
    elif "<answer>" in response:
        response = tagged(response)
    return response.lower().strip()


def correct(prediction: str, answer: str) -> tuple[bool, bool]:
    """(whether the row is closed, whether the prediction is right) by MedEvalKit's rules."""
    answer, response = answer.lower().strip(), prepare(prediction)
    if answer in ("yes", "no"):
        parsed = parse(response).replace("\n", "").replace(".", "")
        return True, ("yes" in parsed) != ("no" in parsed) and answer in parsed
    return False, parse(response) == answer


def table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-row scores: closed or open accuracy where each applies, and accuracy on every row."""
    import numpy as np

    out = {key: np.full(len(rows), np.nan) for key in KEYS}
    for i, row in enumerate(rows):
        closed, right = correct(str(row["prediction"]), str(row["answer"]))
        out["closed_accuracy" if closed else "open_accuracy"][i] = float(right)
        out["accuracy"][i] = float(right)
    return out


PROTOCOL = Protocol(
    name="medevalkit",
    key="medevalkit",
    keys=KEYS,
    columns=KEYS,
    table=table,
    title="MedEvalKit protocol",
    summary="MedEvalKit's PathVQA scoring: yes/no by substring, open answers by exact match",
    rules=(
        "MedEvalKit's PathVQA scoring (``pathvqa.scoring.medevalkit``): its answer parsing (boxed, "
        "<answer> tags, answer markers), yes/no right when exactly one of yes and no occurs as a substring "
        '("not", "normal" read as no), open answers by exact match after the marker split'
    ),
    intro=(
        'MedEvalKit\'s protocol (its PathVQA scoring: a yes/no answer is right when exactly one of "yes" and '
        '"no" occurs in the response as a substring, so "not" and "normal" read as "no"; an open answer '
        "by exact match after its answer-marker split; accuracy over every question)."
    ),
    order=40,
)
