"""The metric suite: predictions.jsonl → one JSON object, every protocol in it.

pathvqa's own protocol (``pathvqa.scoring.strict``) is the top level; every other protocol of the registry
(``pathvqa.scoring.protocol``: LLaVA-Med's, MultiMedEval's, MedEvalKit's…) has its section. Each score is
the mean over the rows it applies to, with a 95% bootstrap interval; ``compare`` pairs two runs' rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pathvqa.answers import METRIC_KEYS, SCORES, row_type
from pathvqa.errors import PathVQAError
from pathvqa.runs import RunDir, predictions_file
from pathvqa.scoring import confidence, protocol, stats, wordnet
from pathvqa.scoring.strict import strict_table

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


def protocol_scores(result: dict[str, Any], name: str) -> dict[str, Any]:
    """The part of a :func:`score_all` result that protocol ``name`` reports."""
    key = protocol.get(name).key
    return result if key is None else result[key]


SHOWN = (*METRIC_KEYS, *SEEN_KEYS, "n_open_seen", "n_open_unseen")
"""What ``score_lines`` shows of a result: the scores and their counts (an evaluation's metrics.json holds
more: where it came from, rows skipped…)."""


def score_lines(scores: dict[str, Any]) -> list[str]:
    """``pathvqa score``'s text: one aligned line per score, with its 95% interval."""
    lines = []
    for key, value in scores.items():
        if key in SHOWN or (key not in METRIC_KEYS and not key.endswith("_ci") and isinstance(value, float)):
            ci = scores.get(f"{key}_ci")
            number = value if value is None or key.startswith("n") else f"{value:.4f}"
            lines.append(f"{key:>24}  {number}" + (f"  [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""))
    return lines


def every_protocol() -> list[protocol.Protocol]:
    """The protocols with a section of their own in ``metrics.json`` (all but pathvqa's own)."""
    return protocol.sections()


def score(rows: Iterable[dict[str, Any]], intervals: bool = False, protocols: bool = False) -> dict[str, Any]:
    """The strict metric suite over rows with ``answer`` and ``prediction`` (what validation during
    training logs); with ``intervals`` each metric's ``<metric>_ci`` bootstrap interval, with
    ``protocols`` every other protocol under its key (``llava_med``, ``multimedeval``, ``medevalkit``…) and
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
        for other in every_protocol():
            result[other.key] = _summary(other.table(rows), other.keys, intervals)
        result["by_question_type"] = stats.by_question_type(
            [str(r.get("question", "")) for r in rows], table["correct"]
        )
        result["calibration"] = confidence.calibration(rows, table["correct"])
    return result


def score_all(rows: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """What every evaluation writes to metrics.json and ``pathvqa score --json`` prints: every protocol,
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


def common_questions(*sides: list[dict[str, Any]]) -> list[str]:
    """The question ids every side answered, checked to be the same questions (the same text and answer
    wherever the rows carry them); a one-line error otherwise."""
    keyed = [{row.get("id"): row for row in rows} for rows in sides]
    common = sorted(set.intersection(*(set(k) for k in keyed)) - {None})
    if not common:
        raise PathVQAError("the prediction files share no question id: compare runs on the same split")
    first = keyed[0]
    for other in keyed[1:]:
        for field in ("question", "answer"):  # an id names the same question only if both sides agree on it
            differing = [
                i for i in common
                if field in first[i] and field in other[i]
                and " ".join(str(first[i][field]).split()) != " ".join(str(other[i][field]).split())
            ]  # fmt: skip
            if differing:
                raise PathVQAError(
                    f"{len(differing)} shared ids have different {field}s (e.g. {differing[0]}): not the same "
                    "questions: compare evaluations of the same split"
                )
    return common


def compared_table(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The strict protocol's per-row scores of the compared metrics (``open_f1``: token F1 on open rows)."""
    table = strict_table(rows)
    table["open_f1"] = np.where(np.isnan(table["open_exact_match"]), np.nan, table["f1"])
    return table


def _holm_over(metrics: dict[str, dict]) -> None:
    """One family of tests: Holm's adjustment over the scores one comparison makes (``p_holm``)."""
    entries = list(metrics.values())
    for entry, adjusted in zip(entries, stats.holm([e.get("p") for e in entries]), strict=True):
        entry["p_holm"] = None if adjusted is None else stats.significant(adjusted)


def compare(
    a_rows: list[dict[str, Any]], b_rows: list[dict[str, Any]], coverage: float | None = None
) -> dict[str, Any]:
    """B against A on the questions both answered: per metric the paired difference B − A with its
    bootstrap interval and its test (``test``, ``p``; ``p_holm``: Holm's adjustment over the metrics
    compared), McNemar's exact test on closed accuracy under every protocol's rule, and, when both sides'
    answers carry confidences, their selective prediction (:func:`selective`; required with ``coverage``)."""
    common = common_questions(a_rows, b_rows)
    a, b = ({row.get("id"): row for row in rows} for rows in (a_rows, b_rows))
    ta, tb = (compared_table([rows[i] for i in common]) for rows in (a, b))
    left_out = {"a": len(a_rows) - len(common), "b": len(b_rows) - len(common)}
    result: dict[str, Any] = {"n": len(common), "left_out": left_out, "metrics": {}}
    for key in COMPARED:
        result["metrics"][key] = {
            "a": _mean_or_none(ta[key]),
            "b": _mean_or_none(tb[key]),
            **stats.paired_difference(ta[key], tb[key]),
            **stats.paired_test(ta[key], tb[key]),
        }
    _holm_over(result["metrics"])
    closed = ~np.isnan(ta["closed_accuracy"])
    result["mcnemar_closed"] = stats.mcnemar(ta["closed_accuracy"][closed], tb["closed_accuracy"][closed])
    for other in every_protocol():  # each protocol's own closed rule, on its own closed rows
        pa, pb = (other.table([rows[i] for i in common])["closed_accuracy"] for rows in (a, b))
        mask = ~np.isnan(pa)
        result[f"{other.key}_mcnemar_closed"] = stats.mcnemar(pa[mask], pb[mask])
    result["selective"] = selective([a[i] for i in common], [b[i] for i in common], coverage)
    return result


def selective(a_rows: list[dict], b_rows: list[dict], coverage: float | None) -> dict[str, Any] | str:
    """Closed and open questions apart, on the rows both sides gave a confidence: AURC and accuracy at
    ``coverage`` (default 0.5) compared pairwise (``confidence.paired_selective``), Holm over the four tests;
    ``n/a`` when a side's answers carry no confidences (a one-line error when ``coverage`` asked for them)."""
    if coverage is not None and not 0 < coverage <= 1:
        raise PathVQAError(
            f"--coverage {coverage}: give the share of questions answered, in (0, 1] (e.g. 0.5)"
        )
    lacking = [
        side
        for side, rows in (("A", a_rows), ("B", b_rows))
        if all(r.get("confidence") is None for r in rows)
    ]
    if lacking:
        if coverage is not None:
            raise PathVQAError(
                f"--coverage: {' and '.join(lacking)}'s predictions carry no confidences (written before answers "
                "carried their scores): evaluate again with pathvqa eval"
            )
        return confidence.NOT_AVAILABLE
    ra, rb = (strict_table(rows)["correct"] for rows in (a_rows, b_rows))
    out: dict[str, Any] = {"coverage": coverage or 0.5}
    for kind in ("closed", "open"):
        both = [i for i, (x, y) in enumerate(zip(a_rows, b_rows, strict=True))
                if row_type(x) == kind and x.get("confidence") is not None and y.get("confidence") is not None]  # fmt: skip
        if both:
            sides = [(np.array([rows[i]["confidence"] for i in both]), right[both]) for rows, right in ((a_rows, ra), (b_rows, rb))]  # fmt: skip
            out[kind] = confidence.paired_selective(*sides, coverage or 0.5)
    _holm_over({f"{k}_{s}": e for k in ("closed", "open") if k in out for s, e in out[k].items()})
    return out


def compare_seeds(a_seeds: list[list[dict[str, Any]]], b_seeds: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Two run groups (each seed's prediction rows) on the questions every seed answered: per metric the
    means over seeds and questions, B − A with a hierarchical bootstrap interval (each side's seeds and the
    shared questions resampled: ``stats.seed_aware_difference``) and its bootstrap p, Holm over the metrics."""
    common = common_questions(*a_seeds, *b_seeds)
    tables = [
        [compared_table([{row.get("id"): row for row in rows}[i] for i in common]) for rows in side]
        for side in (a_seeds, b_seeds)
    ]
    result: dict[str, Any] = {"n": len(common), "seeds": [len(a_seeds), len(b_seeds)], "metrics": {}}
    for key in COMPARED:
        a, b = (np.stack([t[key] for t in side]) for side in tables)  # (seeds, questions)
        difference = stats.seed_aware_difference(a, b)
        result["metrics"][key] = {"a": _mean_or_none(a), "b": _mean_or_none(b), **difference}
    _holm_over(result["metrics"])
    return result


def describe_difference(name: str, entry: dict[str, Any]) -> str:
    """``closed_accuracy: B − A = +0.031 [−0.004, +0.066], p = 0.09 (Holm 0.27; mcnemar, n = 200)``."""
    if entry["difference"] is None:
        return f"{name}: no question it applies to"
    low, high = entry["ci"]
    text = f"{name}: B − A = {entry['difference']:+.3f} [{low:+.3f}, {high:+.3f}]"
    if entry.get("p") is None:
        return text + f" (n = {entry['n']})"
    holm = f"Holm {entry['p_holm']:.2g}; " if entry.get("p_holm") is not None else ""
    return text + f", p = {entry['p']:.2g} ({holm}{entry['test']}, n = {entry['n']})"
