"""Temperature scaling of a trained run's confidences: fitted once per checkpoint on the validation split's
predictions (``scoring.confidence.fit_from_rows``: one temperature for closed answers, one for open ones)
and kept in the run folder (``RunDir.calibration``), where ``eval``, ``predict``, ``serve`` and the API
read it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from pathvqa.data.prepare import load_data_split, spec_of
from pathvqa.data.spec import open_split
from pathvqa.destinations import write_text_atomic
from pathvqa.errors import DataError, PathVQAError
from pathvqa.models.generation import predict
from pathvqa.runs import RunDir
from pathvqa.runtime.trained import TrainedRun
from pathvqa.scoring.confidence import fit_from_rows

log = logging.getLogger(__name__)


def saved_temperature(trained: TrainedRun) -> dict[str, float]:
    """The temperatures fitted for this checkpoint ({} when none were: confidences stay as generated)."""
    if trained.exported:
        return {}
    path = RunDir(trained.stage.path).calibration
    try:
        saved = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:
        return {}
    if saved.get("step") != trained.step.name:
        return {}
    return {k: saved[k] for k in ("closed", "open") if k in saved}


def temperature_for(
    trained: TrainedRun | None, family, bundle, cfg, accelerator=None, calibrate: bool = True,
    progress: bool = True,
) -> dict[str, float]:  # fmt: skip
    """The run's temperatures: read when this checkpoint has them, else fitted on its validation split
    (said in one line) and saved; {} without ``calibrate`` (what :func:`check_calibration` says)."""
    if not calibrate:
        return {}
    split = cfg.data.eval_split
    saved = saved_temperature(trained)
    if saved:
        return saved
    main = accelerator is None or accelerator.is_main_process
    samples = load_data_split(cfg.data, split, None, False, say=False).samples
    rows = predict(family, bundle, samples, cfg, accelerator=accelerator, progress=progress)
    fitted = fit_from_rows(rows)
    if main:
        record: dict[str, Any] = {"step": trained.step.name, "split": split, **fitted}
        write_text_atomic(RunDir(trained.stage.path).calibration, json.dumps(record, indent=1))
        log.info(
            "confidence calibrated on %d %s questions: temperature %s closed, %s open (--no-calibrate: none)",
            len(rows), split, fitted.get("closed", 1.0), fitted.get("open", 1.0),
        )  # fmt: skip
    return {k: fitted[k] for k in ("closed", "open") if k in fitted}


def calibration_problem(trained: TrainedRun | None, cfg) -> str | None:
    """Why no temperature can be fitted for this evaluation (None: one can)."""
    if trained is None:
        return "a zero-shot evaluation has no run folder to keep a temperature in"
    if trained.exported:
        return f"{trained.path} is an export: calibrate the run it came from"
    split = cfg.data.eval_split
    if not split or not _has(cfg, split):
        return f"{trained.path} has no validation split ({split or 'data.eval_split: null'}) to fit a temperature on"
    return None


def check_calibration(trained: TrainedRun | None, cfg, calibrate: bool | None) -> bool:
    """Whether this evaluation's confidences get a temperature: not with ``--no-calibrate`` (False), nor where
    none can be fitted (:func:`calibration_problem`), which ``--calibrate`` (True) makes a one-line error,
    said before any model loads."""
    if calibrate is False:
        return False
    problem = calibration_problem(trained, cfg)
    if problem and calibrate:
        raise PathVQAError(f"--calibrate: {problem}: evaluate with --no-calibrate")
    return problem is None


def _has(cfg, split: str) -> bool:
    try:
        open_split(spec_of(cfg.data), split)
    except DataError:
        return False
    return True
