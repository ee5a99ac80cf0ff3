"""Evaluation: batched generation over a split (``generation.predict``) → predictions.jsonl +
metrics.json. Under ``accelerate launch`` each process takes a share of the batches and the main
process writes them: every question appears exactly once.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from pathvqa.config import RANDOM_WEIGHTS, load_config, random_weights
from pathvqa.data.prepare import load_data_split, load_split, mark_seen, say_rows, spec_of, split_answers
from pathvqa.data.spec import as_spec
from pathvqa.data.stain import check_strengths
from pathvqa.destinations import check_destination, write_text_atomic
from pathvqa.errors import PathVQAError
from pathvqa.evaluation.baselines import QuestionPrior
from pathvqa.evaluation.calibrate import check_calibration, temperature_for
from pathvqa.evaluation.stain_shift import stain_shift as shift_scores
from pathvqa.models.generation import predict
from pathvqa.models.registry import build
from pathvqa.runs import METRICS, PREDICTIONS, RunDir
from pathvqa.runtime.processes import cpu_processes, mixed_precision
from pathvqa.runtime.trackers import log_test_metrics
from pathvqa.runtime.trained import TrainedRun, load, resolve_run
from pathvqa.scoring.confidence import (
    abstains,
    check_threshold,
    expected_calibration_error,
    kept,
    row_confidence,
    scored,
)
from pathvqa.scoring.metrics import score_all
from pathvqa.scoring.strict import strict_table

log = logging.getLogger(__name__)


SAME_EVALUATION = ("source", "dataset", "split", "blind", "limit", "deduplicated")
"""What makes two evaluations the same (``metrics.json`` keys): another one in ``--out`` is not replaced."""


def write_predictions(rows: list[dict], path: Path) -> None:
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))


def _where(source: str | Path, out: Path) -> str:
    """``source`` as ``metrics.json`` records it: relative to the eval folder when it is a path (a copied
    run's evaluation names the copy's checkpoint), as given otherwise (a config, a baseline)."""
    path = Path(source)
    return os.path.relpath(path.resolve(), out.resolve()) if path.exists() else str(source)


def check_eval_folder(out: Path, identity: dict[str, Any], overwrite: bool) -> None:
    """Refuse (before any work) an ``--out`` that holds another evaluation, unless ``overwrite``."""
    if overwrite or not ((out / METRICS).is_file() or (out / PREDICTIONS).is_file()):
        return
    try:
        before = json.loads((out / METRICS).read_text())
    except (OSError, ValueError):
        before = {}
    before = before if isinstance(before, dict) else {}

    def same(key: str) -> bool:
        old, new = before.get(key), identity.get(key)
        if key == "source" and isinstance(old, str) and isinstance(new, str):
            return (out / old).resolve() == (out / new).resolve()
        return old == new

    differ = [key for key in SAME_EVALUATION if key in before and not same(key)]  # older files: fewer keys
    if differ:
        shown = ", ".join(f"{k} {before.get(k)!r} → {identity.get(k)!r}" for k in differ)
        raise PathVQAError(
            f"--out {out} holds another evaluation ({shown}): give another --out, or --overwrite to replace it"
        )


def eval_identity(
    out: Path, source: str | Path, dataset: str, split: str, blind: bool, limit: int | None, dedupe: bool
) -> dict[str, Any]:
    return {
        "source": _where(source, out), "dataset": dataset, "split": split, "blind": blind, "limit": limit,
        "deduplicated": dedupe,
    }  # fmt: skip


def run(
    *,
    out: str | Path,
    dataset: str | None = None,
    split: str | None = None,
    config: str | None = None,
    checkpoint_dir: str | Path | TrainedRun | None = None,
    blind: bool = False,
    limit: int | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
    dedupe: bool = False,
    overwrite: bool = False,
    calibrate: bool | None = None,
    abstain_below: float | None = None,
    stain_shift: list[float] | None = None,
) -> dict[str, Any]:
    """Evaluate a config (zero-shot) or a checkpoint on a split; write predictions.jsonl and metrics.json.

    Every readable row of the split counts, as in published numbers (``dedupe``: drop repeated rows); rows
    that cannot be read are reported with their reasons. ``out`` holding another evaluation is refused
    unless ``overwrite``. Each answer's confidence is calibrated by the run's temperature (``calibrate``:
    see ``calibrate.check_calibration``); answers under ``abstain_below`` are marked abstained. With
    ``stain_shift`` (strengths), the split is answered again under each HED stain jitter (``stain_shift``)."""
    if (config is None) == (checkpoint_dir is None):
        raise PathVQAError("pass exactly one of --config (zero-shot) or --checkpoint")
    check_threshold(abstain_below)
    check_stain_shift(stain_shift, blind)
    out, overrides = Path(out), list(overrides or [])
    if dataset:
        overrides.append(f"data.dataset={dataset}")
    trained = resolve_run(checkpoint_dir, overrides) if checkpoint_dir is not None else None  # once
    source = trained.step if trained else Path(config)
    cfg = trained.config if trained else load_config(config, overrides)
    split = split or cfg.data.test_split
    reads = [source, *spec_of(cfg.data).local_paths()]
    if trained is not None:
        reads.append(trained.stage.checkpoints)
    check_destination(out, reads=reads)  # before the model is built
    calibrate = check_calibration(trained, cfg, calibrate)
    identity = eval_identity(out, source, cfg.data.dataset, split, blind, limit, dedupe)
    check_eval_folder(out, identity, overwrite)
    accelerator = Accelerator(cpu=cpu_processes(), mixed_precision=mixed_precision(cfg))
    if trained is not None:  # the process state first: a 4-bit model is placed on this rank's GPU
        family, bundle = load(trained)
    else:
        family, bundle = build(cfg)
    if not getattr(bundle.model, "hf_device_map", None):  # quantized models are already placed
        bundle.model.to(accelerator.device)
    if random_weights(cfg):
        log.warning("%s: %s", cfg.name, RANDOM_WEIGHTS)
    main = accelerator.is_main_process
    temperature = temperature_for(trained, family, bundle, cfg, accelerator, calibrate, progress and main)
    data = load_data_split(cfg.data, split, limit, progress and main, dedupe=dedupe, say=main)
    rows = predict(family, bundle, data.samples, cfg, accelerator=accelerator, blind=blind, progress=progress)
    shifted = shift_scores(family, bundle, data.samples, cfg, rows, stain_shift, out, accelerator=accelerator)
    result: dict[str, Any] = {}
    if main:
        mark_seen(rows, split_answers(spec_of(cfg.data), cfg.data.train_split))
        right = strict_table(rows)["correct"]  # right or wrong: the strict protocol
        uncalibrated = ece_by_kind([{**r, "confidence": kept(row_confidence(r))} for r in rows], right)
        confide(rows, temperature, abstain_below)
        write_predictions(rows, out / PREDICTIONS)
        result = score_all(rows)
        result.update(
            {"model": cfg.name, **identity, **({"random_weights": True} if random_weights(cfg) else {}),
             "dataset_spec": spec_of(cfg.data).to_json(),  # how the rows were read (report's gallery)
             **data_counts(data, len(rows), dedupe), "processes": accelerator.num_processes,
             "temperature": temperature or None, "uncalibrated_ece": uncalibrated,
             **({"abstention": abstention(rows, abstain_below, right)} if abstain_below is not None else {}),
             **({"stain_shift": shifted} if shifted else {})}
        )  # fmt: skip
        write_text_atomic(out / METRICS, json.dumps(result, indent=2))
        if checkpoint_dir is not None:  # ``source``: the checkpoint folder it resolved to
            _to_trackers(source, result, split, blind)
    accelerator.wait_for_everyone()
    return result


def check_stain_shift(strengths: list[float] | None, blind: bool) -> None:
    """A one-line error for ``--stain-shift`` strengths that are not numbers ≥ 0, or with ``--blind``."""
    if strengths is None:
        return
    check_strengths(strengths, "--stain-shift")
    if blind:
        raise PathVQAError(
            "--stain-shift changes the images' colours and --blind replaces them: give one of the two"
        )


def confide(rows: list[dict], temperature: dict[str, float], abstain_below: float | None) -> None:
    """Each row's ``confidence`` under ``temperature`` (and ``abstained`` under ``abstain_below``)."""
    for row in rows:
        row["confidence"] = kept(row_confidence(row, temperature))
        if abstain_below is not None:
            row["abstained"] = abstains(row["confidence"], abstain_below)


def ece_by_kind(rows: list[dict], right) -> dict[str, float | None]:
    """The expected calibration error of the closed rows' and the open rows' confidences (``right``: each row
    right or wrong)."""
    out = {}
    for kind in ("closed", "open"):
        values, ok = scored(rows, right, kind)
        out[kind] = round(expected_calibration_error(values, ok), 4) if len(values) else None
    return out


def abstention(rows: list[dict], threshold: float, right) -> dict[str, Any]:
    """Coverage and accuracy on the answered questions (``right``: each row right or wrong), closed and open
    apart."""
    out: dict[str, Any] = {"threshold": threshold}
    for kind in ("closed", "open"):
        mine = [i for i, r in enumerate(rows) if r["type"] == kind]
        answered = [i for i in mine if not rows[i].get("abstained")]
        out[kind] = {"n": len(mine), "answered": len(answered),
                     "coverage": round(len(answered) / len(mine), 4) if mine else None,
                     "accuracy_answered": round(float(right[answered].mean()), 4) if answered else None}  # fmt: skip
    return out


def data_counts(data, scored: int, dedupe: bool) -> dict[str, Any]:
    """What ``metrics.json`` says of the rows: how many of the split were scored, and what was left out."""
    skipped = sum(data.skipped.values())
    return {"rows": f"{scored} of {data.rows_total} rows", "limited": data.limits(dedupe), "skipped_rows": skipped,
            "skipped_reasons": dict(data.skipped), "duplicate_rows": data.duplicates, "filtered_rows": data.filtered}  # fmt: skip


def run_group(*, out: str | Path, checkpoint_dir: str | Path, **options: Any) -> dict[str, Any]:
    """Each seed of a run group (``GROUP/seed-K/``) evaluated as :func:`run` evaluates a run, into
    ``out/seed-K/``; returns ``{"seeds": {K: metrics}}``."""
    seeds = RunDir(checkpoint_dir).seeds()
    if not seeds:
        raise PathVQAError(
            f"{checkpoint_dir} holds no seed-K runs (a run group: pathvqa train --seeds 0,1,2)"
        )
    out = RunDir(out)
    return {
        "seeds": {k: run(out=out.seed(k).path, checkpoint_dir=r.path, **options) for k, r in seeds.items()}
    }


def _to_trackers(checkpoint: Path, metrics: dict[str, Any], split: str, blind: bool) -> None:
    """The scores, also in the tracker runs the training opened (a tracker's failure loses nothing)."""
    try:
        used = log_test_metrics(checkpoint, metrics, split, blind)
    except Exception as err:  # metrics.json is written: a tracker that cannot take them only warns
        log.warning("could not add the scores to the trackers: %s: %s", err.__class__.__name__, err)
        return
    if used:
        log.info("scores added to the training's tracker runs: %s", ", ".join(used))


BASELINES = ("question-prior",)


def run_baseline(
    *,
    out: str | Path,
    dataset: str,
    split: str = "test",
    dedupe: bool = False,
    name: str = "question-prior",
    overwrite: bool = False,
) -> dict[str, Any]:
    """The question-only prior (majority training answer per question, images never seen) on ``split``:
    predictions.jsonl and metrics.json, as for a model."""
    if name not in BASELINES:
        raise PathVQAError(f"unknown baseline {name!r} (have {', '.join(BASELINES)})")
    out = check_destination(out, reads=as_spec(dataset).local_paths())
    identity = eval_identity(out, name, dataset, split, False, None, dedupe)
    check_eval_folder(out, identity, overwrite)
    train = load_split(dataset, "train", progress=False).samples  # deduplicated, as training is
    test = load_split(dataset, split, progress=False, dedupe=dedupe)
    say_rows(test)
    rows = mark_seen(QuestionPrior(train).predictions(test.samples), split_answers(dataset, "train"))
    write_predictions(rows, out / PREDICTIONS)
    metrics = {
        **score_all(rows),
        "model": "question-only prior",
        **identity,
        "rows": f"{len(rows)} of {test.rows_total} rows",
        "limited": test.limits(dedupe),
        "skipped_rows": sum(test.skipped.values()),
        "skipped_reasons": dict(test.skipped),
        "duplicate_rows": test.duplicates,
        "filtered_rows": test.filtered,
    }
    write_text_atomic(out / METRICS, json.dumps(metrics, indent=2))
    return metrics
