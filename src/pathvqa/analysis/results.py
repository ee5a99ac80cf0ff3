"""A run as the report and its figures read it: its metrics, predictions, blind metrics, training curves
and config, from ``[LABEL=]FOLDER`` (an evaluated training run, an eval folder, or a baseline folder)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pathvqa.answers import SCORES
from pathvqa.errors import PathVQAError
from pathvqa.runs import RunDir, metrics_file, predictions_file
from pathvqa.scoring import confidence
from pathvqa.scoring.metrics import read_predictions, score_all
from pathvqa.scoring.protocol import Protocol
from pathvqa.scoring.stats import over_seeds
from pathvqa.scoring.strict import strict_table

COLUMNS = (*SCORES, "blind_closed_accuracy")
CALIBRATION_COLUMNS = (
    "closed_ece", "closed_brier", "closed_aurc", "closed_accuracy_at_50", "open_ece", "open_aurc",
    "open_accuracy_at_50",
)  # fmt: skip
"""The report's confidence table: ``KIND_SCORE`` of ``metrics.json``'s ``calibration[KIND][SCORE]``."""
SEEN_COLUMNS = (
    "open_exact_match_seen", "open_exact_match_unseen", "open_recall_seen", "open_recall_unseen",
    "n_open_seen", "n_open_unseen",
)  # fmt: skip


@dataclass
class Run:
    label: str
    folder: Path
    metrics: dict[str, Any]
    predictions: dict[str, dict]
    blind: dict[str, Any] | None = None
    curves: list[tuple[str, str, list[dict]]] = field(default_factory=list)
    """(stage name, task, train.jsonl rows) per training stage."""
    config: str | None = None
    seeds: list[Run] = field(default_factory=list)
    """A run group's seeds (``train --seeds``): its rows are their mean ± sd, its gallery and curves its
    first seed's."""
    _rescored: dict[str, Any] | None = None

    def seed_predictions(self) -> list[list[dict]]:
        """Each seed's prediction rows (a single run: its own, as one seed)."""
        members = self.seeds or [self]
        return [list(m.predictions.values()) for m in members if m.predictions]

    def row(self) -> dict[str, Any]:
        if self.seeds:
            return over_seeds_row(self.shown_label, [m.row() for m in self.seeds], (*COLUMNS, "n"))
        values = {k: self.metrics.get(k) for k in COLUMNS}
        values["blind_closed_accuracy"] = (self.blind or {}).get("closed_accuracy")
        intervals = {f"{k}_ci": self.metrics.get(f"{k}_ci") for k in COLUMNS}
        intervals["blind_closed_accuracy_ci"] = (self.blind or {}).get("closed_accuracy_ci")
        return {"model": self.shown_label, **values, "n": self.metrics.get("n"), **intervals}

    def calibration_row(self) -> dict[str, Any]:
        """The confidence table's row: from metrics.json, else from the predictions' confidences; ``n/a``
        where the predictions carry none."""
        if self.seeds:
            rows = [m.calibration_row() for m in self.seeds]
            return over_seeds_row(self.shown_label, rows, CALIBRATION_COLUMNS)
        found = self.metrics.get("calibration")
        if found is None and self.predictions:
            rows = list(self.predictions.values())
            found = confidence.calibration(rows, strict_table(rows)["correct"])
        out: dict[str, Any] = {"model": self.shown_label}
        for column in CALIBRATION_COLUMNS:
            kind, score = column.split("_", 1)
            part = (found or {}).get(kind)
            out[column] = part.get(score) if isinstance(part, dict) else confidence.NOT_AVAILABLE
            out[f"{column}_ci"] = part.get(f"{score}_ci") if isinstance(part, dict) else None
        return out

    @property
    def shown_label(self) -> str:
        """The label with what a reader must know: random weights, and what limited the evaluation."""
        label = f"{self.label} (random weights)" if self.metrics.get("random_weights") else self.label
        limited = self.metrics.get("limited")
        if limited is None and self.metrics.get("limit"):  # metrics.json written before it said why
            limited = [f"a seeded sample of {self.metrics['limit']} rows"]
        return f"{label} (limited: {'; '.join(limited)})" if limited else label

    def protocol_row(self, protocol: Protocol) -> dict[str, Any]:
        """This run under another protocol, rescored from its predictions when metrics.json predates it."""
        if self.seeds:
            return over_seeds_row(
                self.shown_label, [m.protocol_row(protocol) for m in self.seeds], (*protocol.columns, "n")
            )
        scores = self.metrics.get(protocol.key)
        if scores is None and self.predictions:
            if self._rescored is None:
                self._rescored = score_all(list(self.predictions.values()))
            scores = self._rescored[protocol.key]
        scores, columns = scores or {}, protocol.columns
        return {"model": self.shown_label, **{k: scores.get(k) for k in columns}, "n": self.metrics.get("n"),
                **{f"{k}_ci": scores.get(f"{k}_ci") for k in columns}}  # fmt: skip

    def seen_row(self) -> dict[str, Any]:
        """Open questions whose answer occurs in the training split, and those whose answer never does."""
        if self.seeds:
            return over_seeds_row(self.shown_label, [m.seen_row() for m in self.seeds], SEEN_COLUMNS)
        return {"model": self.shown_label, **{k: self.metrics.get(k) for k in SEEN_COLUMNS},
                **{f"{k}_ci": self.metrics.get(f"{k}_ci") for k in SEEN_COLUMNS}}  # fmt: skip


def over_seeds_row(label: str, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> dict[str, Any]:
    """One row of a run group: each column's mean over its seeds' rows, with ``_sd`` and the 95% t interval
    of the mean as ``_ci`` (``stats.over_seeds``); counts as the first seed's."""
    out: dict[str, Any] = {"model": f"{label} ({len(rows)} seeds)", "seeds": len(rows)}
    for column in columns:
        values = [r.get(column) for r in rows]
        if column == "n" or column.startswith("n_"):
            out[column] = values[0]
            continue
        summary = over_seeds([v if isinstance(v, int | float) else None for v in values])
        out[column], out[f"{column}_sd"], out[f"{column}_ci"] = summary["mean"], summary["sd"], summary["ci"]
    return out


def load_run(spec: str | Path) -> Run:
    """A run from ``[LABEL=]FOLDER``: an evaluated training run, an eval folder, a baseline folder, or a run
    group (``seed-K`` folders, each one of those)."""
    label, sep, path = str(spec).partition("=")
    if sep and not (label.strip() and path.strip()):
        raise PathVQAError(f"{spec!r}: give LABEL=FOLDER with both parts (or the folder alone)")
    folder = Path(path if sep else label)
    label = label if sep else folder.name
    seeds = RunDir(folder).seeds() if not RunDir(folder).config.is_file() else {}
    evaluated = RunDir(RunDir(folder).eval_dir()).seeds()  # eval --checkpoint GROUP --out GROUP/eval
    if seeds and evaluated and not metrics_file(RunDir(next(iter(seeds.values())).path).eval_dir()).is_file():
        seeds = evaluated
    if seeds:
        members = [load_run(f"{label} seed {k}={seed.path}") for k, seed in seeds.items()]
        first = members[0]
        return Run(
            label, folder, first.metrics, first.predictions, first.blind, first.curves, first.config, members
        )
    found = next((p for p in (RunDir(folder).eval_dir(), folder) if metrics_file(p).is_file()), None)
    if found is None:
        raise PathVQAError(
            f"{folder}: no metrics.json (evaluate it first: pathvqa eval --checkpoint {folder} --out {folder}/eval)"
        )
    metrics = _read_json(metrics_file(found))
    predictions = {}
    if predictions_file(found).is_file():
        predictions = {r["id"]: r for r in read_predictions(predictions_file(found))}
    blind_file = metrics_file(RunDir(folder).eval_dir(blind=True))
    run = Run(
        label,
        folder,
        metrics,
        predictions,
        _read_json(blind_file) if blind_file.is_file() else None,
    )
    config_file = RunDir(folder).config
    source = found / str(metrics.get("source", ""))  # recorded relative to the eval folder (or absolute)
    if not config_file.is_file() and source.suffix in (".yaml", ".yml") and source.is_file():
        config_file = source  # a zero-shot evaluation of a config
    if config_file.is_file():
        run.config = config_file.read_text()
        raw = yaml.safe_load(run.config) or {}
        stages = raw.get("stages") or []
        for stage in stages or [{"name": None, "task": raw.get("task", "vqa")}]:
            log = RunDir(folder).stage(stage["name"] or "").train_log
            if log.is_file():
                rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
                run.curves.append((stage["name"] or "", stage.get("task") or raw.get("task", "vqa"), rows))
    return run


def _read_json(path: Path) -> dict[str, Any]:
    """A result file as a mapping, or one line saying it is damaged."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        reason = err.msg if isinstance(err, json.JSONDecodeError) else "not UTF-8 text"
        raise PathVQAError(f"{path}: damaged ({reason}): evaluate the run again to rewrite it") from None
    if not isinstance(value, dict):
        raise PathVQAError(f"{path}: damaged (not a JSON object): evaluate the run again to rewrite it")
    return value
