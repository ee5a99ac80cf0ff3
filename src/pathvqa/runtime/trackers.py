"""Experiment trackers (``train.report_to``: TensorBoard, MLflow, W&B, trackio) through accelerate's own
tracker classes: what each is told when a stage starts, which of its runs the stage opened (written to
``logs/trackers.json``), and the test metrics ``pathvqa eval`` adds to that run afterwards.

Offline by default: MLflow logs to ``MLFLOW_TRACKING_URI`` if set, else to an SQLite file in the run
folder (a sweep: in the sweep folder, one experiment for all its trials); W&B honours ``WANDB_MODE``
(``offline`` needs no network; ``wandb sync`` uploads later).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from pathvqa.config import ExperimentConfig
from pathvqa.errors import PathVQAError
from pathvqa.runs import RunDir

log = logging.getLogger(__name__)
PACKAGES = {"tensorboard": "tensorboard", "mlflow": "mlflow", "wandb": "wandb", "trackio": "trackio"}


def check_installed(report_to: list[str]) -> None:
    """One line naming what to install, before anything loads."""
    missing = [name for name in report_to if importlib.util.find_spec(PACKAGES[name]) is None]
    if missing:
        wanted = " ".join(PACKAGES[name] for name in missing)
        raise PathVQAError(f"train.report_to {missing}: not installed here (pip install {wanted})")


def mlflow_uri(cfg: ExperimentConfig, run_dir: Path) -> str:
    """``train.mlflow_uri``, else ``MLFLOW_TRACKING_URI``, else an SQLite store in the run folder."""
    return (
        cfg.train.mlflow_uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{RunDir(run_dir).mlflow_db.resolve()}"
    )


def open_mlflow_store(uri: str, attempts: int = 6) -> None:
    """Create MLflow's store once before workers log to it: processes that start together race to create
    its tables, and the loser waits for the winner instead of failing its trial."""
    from mlflow.tracking import MlflowClient

    for attempt in range(attempts):
        try:
            MlflowClient(uri).search_experiments(max_results=1)
            return
        except Exception as err:  # MLflow wraps the database's error in its own
            racing = any(words in str(err) for words in ("locked", "already exists", "UNIQUE", "duplicate"))
            if not racing or attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))


def init_kwargs(
    cfg: ExperimentConfig, run_dir: Path, label: str, resume: bool = False, store_dir: Path | None = None
) -> dict[str, dict]:
    """Per-tracker arguments for ``Accelerator.init_trackers`` (the run's name is the stage's label). A
    resumed stage continues the tracker runs it opened before (``logs/trackers.json``), not new ones.
    ``store_dir``: where the default MLflow store is (a staged run's folder; else ``run_dir``)."""
    kwargs: dict[str, dict] = {}
    before = _opened(Path(run_dir)) if resume else {}
    if "mlflow" in cfg.train.report_to:
        import mlflow

        uri = mlflow_uri(cfg, store_dir or run_dir)
        mlflow.set_tracking_uri(uri)
        store = Path(uri.removeprefix("sqlite:///")).parent if uri.startswith("sqlite:///") else None
        same = "mlflow" in before and _tracking_uri(before["mlflow"], Path(run_dir)) == uri
        kwargs["mlflow"] = {
            "run_name": label,
            "tags": {"pathvqa.run_dir": str(Path(run_dir).resolve())},
            **({"logging_dir": str(store / "mlartifacts")} if store else {}),
            **({"run_id": before["mlflow"]["run_id"]} if same else {}),
        }
    if "wandb" in cfg.train.report_to:
        kwargs["wandb"] = {"name": label, "dir": str(RunDir(run_dir).logs)}
        if "wandb" in before:
            kwargs["wandb"].update(id=before["wandb"]["id"], resume="allow")
    if "trackio" in cfg.train.report_to:
        kwargs["trackio"] = {"name": label}
    return kwargs


def flat_config(cfg: ExperimentConfig) -> dict[str, Any]:
    """The resolved config as dotted keys with scalar values (what trackers show as parameters)."""
    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
        else:
            ok = isinstance(node, bool | int | float | str)
            flat[prefix[:-1]] = node if ok else json.dumps(node)

    walk(cfg.model_dump(exclude={"stages"}), "")
    return flat


def record(accelerator, cfg: ExperimentConfig, run_dir: Path, store_dir: Path | None = None) -> None:
    """Write which tracker runs this stage opened, for ``log_test_metrics`` (main process). Paths in the
    run's own folders are written relative to ``run_dir``: a copied run logs to its own files."""
    run_dir, opened = Path(run_dir), {}
    for tracker in accelerator.trackers:
        if tracker.name == "mlflow":
            uri = mlflow_uri(cfg, store_dir or run_dir)
            own = uri == f"sqlite:///{RunDir(store_dir or run_dir).mlflow_db.resolve()}"  # the run's own
            where = (
                {"store": _relative(uri.removeprefix("sqlite:///"), run_dir)}
                if own
                else {"tracking_uri": uri}
            )
            opened["mlflow"] = {**where, "run_id": tracker.active_run.info.run_id}
        elif tracker.name == "tensorboard":
            opened["tensorboard"] = {"logdir": _relative(tracker.logging_dir, run_dir)}
        elif tracker.name == "wandb":
            run = tracker.run
            opened["wandb"] = {
                "id": run.id,
                "project": run.project,
                "dir": _relative(RunDir(run_dir).logs, run_dir),
            }
    RunDir(run_dir).trackers.write_text(json.dumps(opened, indent=1))


def _relative(path: str | Path, run_dir: Path) -> str:
    return os.path.relpath(Path(path).resolve(), run_dir.resolve())


def _tracking_uri(entry: dict, run_dir: Path) -> str:
    """The MLflow URI a record names: its own store relative to the run, or the URI it was given."""
    if "store" in entry:
        return f"sqlite:///{(run_dir / entry['store']).resolve()}"
    return entry["tracking_uri"]


def _opened(run_dir: Path) -> dict[str, dict]:
    path = RunDir(run_dir).trackers
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:  # a record cut short: start new tracker runs
        return {}


def log_test_metrics(checkpoint: Path, metrics: dict[str, Any], split: str, blind: bool) -> list[str]:
    """Add an evaluation's scores to the tracker runs that trained ``checkpoint`` (``RUN/checkpoints/
    step-N``: the record in ``RUN/logs``); returns the trackers used."""
    run_dir = RunDir.of_checkpoint(checkpoint).path
    opened = _opened(run_dir)
    prefix = f"{split}{'_blind' if blind else ''}/"
    values = {prefix + k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and k != "blind"}
    if "mlflow" in opened and importlib.util.find_spec("mlflow"):
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        client = MlflowClient(_tracking_uri(opened["mlflow"], run_dir))
        now = int(time.time() * 1000)
        batch = [Metric(k, v, now, 0) for k, v in values.items()]
        for start in range(0, len(batch), 500):  # MLflow takes at most 1,000 metrics per call
            client.log_batch(opened["mlflow"]["run_id"], metrics=batch[start : start + 500])
    if "tensorboard" in opened:
        from torch.utils.tensorboard import SummaryWriter

        with SummaryWriter(str(run_dir / opened["tensorboard"]["logdir"])) as writer:
            for key, value in values.items():
                writer.add_scalar(key, value, 0)
    if "wandb" in opened and importlib.util.find_spec("wandb"):
        import wandb

        run = wandb.init(id=opened["wandb"]["id"], project=opened["wandb"]["project"], dir=str(run_dir / opened["wandb"]["dir"]), resume="allow")  # fmt: skip
        run.summary.update(values)
        run.finish()
    return sorted(opened)
