"""The PathVQA metric suite: predictions.jsonl → one JSON object.

Definitions (also in docs/evaluation.md, with the same names):

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
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pathvqa.answers import METRIC_KEYS, SCORES, answer_type, correct, exact_match, normalize, row_type
from pathvqa.errors import PathVQAError
from pathvqa.runs import RunDir, predictions_file
from pathvqa.scoring import llava_med, multimedeval, stats, wordnet


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


def strict_table(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per-row scores of the strict protocol: {metric: (N,) array}, NaN where a metric does not apply
    (closed accuracy on open rows, open scores on closed rows). ``correct`` is the per-type headline."""
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


LLAVA_MED_KEYS = (
    "closed_accuracy", "open_recall", "open_precision", "open_f1", "open_bleu1", "open_substring_accuracy",
    "n_closed", "n_open",
)  # fmt: skip


def llava_med_table(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per-row scores of the LLaVA-Med protocol (see ``pathvqa.scoring.llava_med``)."""
    keys = LLAVA_MED_KEYS[:-2]
    table = {key: np.full(len(rows), np.nan) for key in keys}
    for i, row in enumerate(rows):
        prediction, answer = str(row["prediction"]), str(row["answer"])
        if row_type(row) == "closed":
            table["closed_accuracy"][i] = llava_med.closed_hit(prediction, answer)
            continue
        s = llava_med.open_scores(prediction, answer)
        for key in keys[1:]:
            table[key][i] = s[key.removeprefix("open_").replace("substring_accuracy", "substring")]
    return table


def multimedeval_table(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """Per-row scores of the MultiMedEval protocol (see ``pathvqa.scoring.multimedeval``)."""
    table = {key: np.full(len(rows), np.nan) for key in multimedeval.KEYS}
    for i, row in enumerate(rows):
        prediction, answer = str(row["prediction"]), str(row["answer"])
        s = multimedeval.row_scores(prediction, answer)
        for key in ("bleu1", "f1", "recall"):
            table[key][i] = s[key]
        if multimedeval.is_closed(answer):
            table["closed_accuracy"][i] = s["correct"]
        else:
            table["open_recall"][i], table["open_accuracy"][i] = s["recall"], s["correct"]
    return table


SEEN_KEYS = tuple(f"{m}_{part}" for m in ("open_exact_match", "open_recall") for part in ("seen", "unseen"))


def seen_table(rows: list[dict[str, Any]], table: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Open exact match and recall split by whether the answer occurs in the training split (each row's
    ``seen`` flag, written by the evaluation): unseen answers are what no closed-vocabulary model gets."""
    seen = np.array([row.get("seen") is True for row in rows])
    unseen = np.array([row.get("seen") is False for row in rows])
    out = {}
    for metric in ("open_exact_match", "open_recall"):
        for part, mask in (("seen", seen), ("unseen", unseen)):
            out[f"{metric}_{part}"] = np.where(mask, table[metric], np.nan)
    return out


def _mean_or_none(values: np.ndarray) -> float | None:
    """The mean over the rows a metric applies to (not NaN); None when it applies to none."""
    return float(np.nanmean(values)) if (~np.isnan(values)).any() else None


def _summary(table: dict[str, np.ndarray], keys: tuple[str, ...], with_intervals: bool) -> dict[str, Any]:
    closed = int((~np.isnan(table["closed_accuracy"])).sum())
    n = len(table["closed_accuracy"])
    out: dict[str, Any] = {"n": n, "n_closed": closed, "n_open": n - closed}
    for key in keys:
        out[key] = _mean_or_none(table[key])
    if with_intervals:
        out.update({f"{k}_ci": ci for k, ci in stats.intervals({k: table[k] for k in keys}).items()})
    return out


def _split_summary(split: dict[str, np.ndarray], with_intervals: bool) -> dict[str, Any]:
    """``n_open_seen`` / ``n_open_unseen`` and the mean (and interval) of each seen/unseen metric."""
    out: dict[str, Any] = {}
    for part in ("seen", "unseen"):
        out[f"n_open_{part}"] = int((~np.isnan(split[f"open_exact_match_{part}"])).sum())
    for key, values in split.items():
        out[key] = _mean_or_none(values)
    if with_intervals:
        out.update({f"{k}_ci": ci for k, ci in stats.intervals(split).items()})
    return out


@dataclass(frozen=True)
class Protocol:
    """A scoring protocol: its name on the command line, where ``metrics.json`` keeps it, what it
    reports, and whose rules it follows (each module's docstring has them in full)."""

    name: str
    key: str | None
    """Its section in ``metrics.json`` (None: the top level)."""
    keys: tuple[str, ...]
    rules: str


PROTOCOLS = {
    "strict": Protocol(
        "strict", None, METRIC_KEYS,
        "pathvqa's own (``pathvqa.scoring.metrics``): SQuAD normalisation, exact match, METEOR with WordNet, "
        "BLEU-1, token F1; closed accuracy by the first word",
    ),
    "llava-med": Protocol(
        "llava-med", "llava_med", LLAVA_MED_KEYS,
        "LLaVA-Med's evaluation code (``pathvqa.scoring.llava_med``): VQA-v2 normalisation, closed rows by "
        "substring, open recall over answer words: the numbers in most PathVQA papers",
    ),
    "multimedeval": Protocol(
        "multimedeval", "multimedeval", multimedeval.KEYS,
        "MultiMedEval's VQA scoring (``pathvqa.scoring.multimedeval``): word sets, closed rows by recall "
        "≥ 0.4, open rows accurate at recall ≥ 0.75",
    ),
}  # fmt: skip
"""The scoring protocols every evaluation writes to ``metrics.json`` (``pathvqa score --protocol NAME``)."""


def protocol(name: str) -> Protocol:
    """The protocol called ``name``; an unknown name is a one-line error naming the protocols."""
    if name not in PROTOCOLS:
        raise PathVQAError(f"--protocol {name!r}: use {', '.join(PROTOCOLS)}")
    return PROTOCOLS[name]


def protocol_scores(result: dict[str, Any], name: str) -> dict[str, Any]:
    """The part of a :func:`score_all` result that protocol ``name`` reports."""
    key = protocol(name).key
    return result if key is None else result[key]


def score_lines(scores: dict[str, Any]) -> list[str]:
    """``pathvqa score``'s text: one aligned line per score, with its 95% interval."""
    lines = []
    for key, value in scores.items():
        if not key.endswith("_ci") and not isinstance(value, dict):
            ci = scores.get(f"{key}_ci")
            number = value if value is None or key.startswith("n") else f"{value:.4f}"
            lines.append(f"{key:>24}  {number}" + (f"  [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
    return lines


def score(rows: Iterable[dict[str, Any]], intervals: bool = False, protocols: bool = False) -> dict[str, Any]:
    """The strict metric suite over rows with ``answer`` and ``prediction`` (what validation during
    training logs); with ``intervals`` each metric's ``<metric>_ci`` bootstrap interval, with
    ``protocols`` the LLaVA-Med and MultiMedEval protocols under ``llava_med`` and ``multimedeval`` and
    results per question type under ``by_question_type``. :func:`score_all` turns both on. Rows with a
    ``seen`` flag (the answer occurs in the training split) add open exact match and recall on seen and
    unseen answers (``open_exact_match_seen`` …, with ``n_open_seen`` / ``n_open_unseen``)."""
    wordnet.ensure()  # never skip METEOR's synonym stage silently
    rows = list(rows)
    table = strict_table(rows)
    summary = _summary(table, SCORES, intervals)
    result = {key: summary[key] for key in METRIC_KEYS}
    result.update({k: v for k, v in summary.items() if k.endswith("_ci")})
    if any("seen" in row for row in rows):
        split = seen_table(rows, table)
        result.update(_split_summary(split, intervals))
    if protocols:
        med = _summary(llava_med_table(rows), LLAVA_MED_KEYS[:-2], intervals)
        result["llava_med"] = {k: med[k] for k in (*LLAVA_MED_KEYS, *(k for k in med if k.endswith("_ci")))}
        result["multimedeval"] = _summary(multimedeval_table(rows), multimedeval.KEYS, intervals)
        result["by_question_type"] = stats.by_question_type(
            [str(r.get("question", "")) for r in rows], table["correct"]
        )
    return result


def score_all(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """What every evaluation writes to metrics.json and ``pathvqa score --json`` prints: both protocols,
    95% intervals, results per question type."""
    return score(rows, intervals=True, protocols=True)


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
    ids = [row.get("id") for row in rows if row.get("id") is not None]
    if len(set(map(str, ids))) != len(ids):
        repeated = next(i for i in ids if sum(str(j) == str(i) for j in ids) > 1)
        count = len(ids) - len(set(map(str, ids)))
        raise PathVQAError(f"{path}: {count} repeated question ids (e.g. {repeated}): one row per question")
    return rows


def score_file(path: str | Path) -> dict[str, Any]:
    rows = read_predictions(path)
    if not rows:
        raise PathVQAError(f"{path}: no predictions in it (one JSON row per question)")
    return score_all(rows)


HEADLINE = ("exact_match", "closed_accuracy", "open_exact_match")
"""The scores a report pairs against the question-only prior."""
COMPARED = (*HEADLINE, "open_recall", "open_f1", "meteor")
"""What ``compare`` pairs; ``open_f1``: token F1 on the open questions."""


def find_predictions(path: str | Path) -> Path:
    """A predictions file, or the one of an evaluated run / eval folder."""
    path = Path(path)
    for candidate in (path, predictions_file(RunDir(path).eval_dir()), predictions_file(path)):
        if candidate.is_file():
            return candidate
    raise PathVQAError(f"no predictions in {path} (looked for eval/predictions.jsonl and predictions.jsonl)")


def compare(a_rows: list[dict[str, Any]], b_rows: list[dict[str, Any]]) -> dict[str, Any]:
    """B against A on the questions both answered: per metric the paired difference B − A with its
    bootstrap interval, and McNemar's exact test on closed accuracy (strict and LLaVA-Med rules)."""
    a = {row.get("id"): row for row in a_rows}
    b = {row.get("id"): row for row in b_rows}
    common = sorted(i for i in a.keys() & b.keys() if i is not None)
    if not common:
        raise PathVQAError("the two prediction files share no question id: compare runs on the same split")
    for field in ("question", "answer"):  # an id names the same question only if both sides agree on it
        differing = [
            i for i in common
            if field in a[i] and field in b[i] and " ".join(str(a[i][field]).split()) != " ".join(str(b[i][field]).split())
        ]  # fmt: skip
        if differing:
            raise PathVQAError(
                f"{len(differing)} shared ids have different {field}s (e.g. {differing[0]}): not the same "
                "questions: compare evaluations of the same split"
            )
    ta, tb = (strict_table([rows[i] for i in common]) for rows in (a, b))
    for table in (ta, tb):
        table["open_f1"] = np.where(np.isnan(table["open_exact_match"]), np.nan, table["f1"])
    left_out = {"a": len(a_rows) - len(common), "b": len(b_rows) - len(common)}
    result: dict[str, Any] = {"n": len(common), "left_out": left_out, "metrics": {}}
    for key in COMPARED:
        result["metrics"][key] = {
            "a": _mean_or_none(ta[key]),
            "b": _mean_or_none(tb[key]),
            **stats.paired_difference(ta[key], tb[key]),
        }
    closed = ~np.isnan(ta["closed_accuracy"])
    result["mcnemar_closed"] = stats.mcnemar(ta["closed_accuracy"][closed], tb["closed_accuracy"][closed])
    la, lb = (llava_med_table([rows[i] for i in common])["closed_accuracy"] for rows in (a, b))
    result["llava_med_mcnemar_closed"] = stats.mcnemar(la[closed], lb[closed])
    return result


def describe_difference(name: str, entry: dict[str, Any], p: float | None = None) -> str:
    """``closed_accuracy: B − A = +0.031 [−0.004, +0.066], p = 0.09``."""
    if entry["difference"] is None:
        return f"{name}: no question it applies to"
    low, high = entry["ci"]
    text = f"{name}: B − A = {entry['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"
    return text + (f", p = {p:.2g}" if p is not None else "") + f" (n = {entry['n']})"
