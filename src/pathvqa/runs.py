"""The run folder: the one module that knows the names of what lies inside a run.

```
RUN/
  config.yaml              the resolved config          RunDir.config
  train_summary.json       written last: the run ended  RunDir.summary
  checkpoints/step-N/      one atomic step folder       RunDir.step(N), its files: StepDir
  checkpoints/best.json    the best validation step     RunDir.best
  logs/train.jsonl         one row per logged step      RunDir.train_log
  logs/trackers.json       the tracker runs it opened   RunDir.trackers (TensorBoard's files beside it)
  mlflow.db                MLflow's store, by default   RunDir.mlflow_db
  feature_cache/           a frozen encoder's features  RunDir.feature_cache
  calibration.json         temperatures fitted on validation (eval)  RunDir.calibration
  eval/, eval_blind/       predictions.jsonl, metrics.json (RunDir.eval_dir, metrics_file, predictions_file)
  vs_NAME.json             a paired comparison with NAME (RunDir.comparison)
GROUP/seed-K/              a run group: one config at seeds K, each a run of its own (RunDir.seed, RunDir.seeds)
  STAGE/                   a staged config's stages, each a run folder of its own (RunDir.stage)
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.yaml"
SUMMARY = "train_summary.json"
CHECKPOINTS = "checkpoints"
BEST = "best.json"
LOGS = "logs"
TRAIN_LOG = "train.jsonl"
TRACKERS = "trackers.json"
MLFLOW_DB = "mlflow.db"
FEATURE_CACHE = "feature_cache"
CALIBRATION = "calibration.json"
EVAL, EVAL_BLIND = "eval", "eval_blind"
METRICS, PREDICTIONS = "metrics.json", "predictions.jsonl"
STEP = "step-"
TRAINER_STATE = "trainer_state.json"
WEIGHTS = "weights.safetensors"
TOKENIZER = "tokenizer"
OPTIMIZER, OPTIMIZER_REST = "optimizer.safetensors", "optimizer.json"
SCHEDULER = "scheduler.json"
MANIFEST = "manifest.json"
RNG = "rng-"
COMPARISON = "vs_"
STAIN = "predictions_stain_"
"""``eval --stain-shift``: the answers under each strength, ``predictions_stain_<strength>.jsonl``."""
SEED = "seed-"
"""A run group (one config trained at several seeds): ``GROUP/seed-K/``, each a run (or an evaluation) of its own."""
NAMES = (
    CONFIG, SUMMARY, CHECKPOINTS, BEST, LOGS, TRAIN_LOG, TRACKERS, MLFLOW_DB, FEATURE_CACHE, CALIBRATION, EVAL, EVAL_BLIND,
    METRICS, PREDICTIONS, TRAINER_STATE, WEIGHTS, TOKENIZER, OPTIMIZER, OPTIMIZER_REST, SCHEDULER, MANIFEST,
)  # fmt: skip
"""Every name inside a run folder; ``PATTERNS`` the names made of a number or a name."""
PATTERNS = (
    rf"{STEP}\d+",
    rf"\.tmp-{STEP}\d+-\d+",
    rf"{RNG}\d+\.(safetensors|json)",
    rf"{COMPARISON}\w+\.json",
    rf"{STAIN}[\w.+-]+\.jsonl",
)
ROW_KINDS = ("train", "validation", "grpo")
"""``logs/train.jsonl`` rows say their kind: a training window, a validation, a GRPO step."""


def stain_predictions(strength: float) -> str:
    """The file of an evaluation's answers under HED jitter of ``strength`` (``eval --stain-shift``)."""
    return f"{STAIN}{strength:g}.jsonl"


def is_run_name(name: str) -> bool:
    """Whether ``name`` is one of a run folder's own names (a file or folder this module names)."""
    return name in NAMES or any(re.fullmatch(p, name) for p in PATTERNS)


def row_kind(row: dict) -> str:
    """A training-log row's kind (logs written before rows carried one: told by their keys)."""
    if row.get("kind") in ROW_KINDS:
        return row["kind"]
    return "grpo" if "reward" in row else "train" if "loss" in row else "validation"


@dataclass(frozen=True)
class RunDir:
    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    config = property(lambda self: self.path / CONFIG)
    summary = property(lambda self: self.path / SUMMARY)
    checkpoints = property(lambda self: self.path / CHECKPOINTS)
    best = property(lambda self: self.checkpoints / BEST)
    logs = property(lambda self: self.path / LOGS)
    train_log = property(lambda self: self.logs / TRAIN_LOG)
    trackers = property(lambda self: self.logs / TRACKERS)
    mlflow_db = property(lambda self: self.path / MLFLOW_DB)
    feature_cache = property(lambda self: self.path / FEATURE_CACHE)
    calibration = property(lambda self: self.path / CALIBRATION)

    def step(self, number: int) -> Path:
        """``checkpoints/step-N``."""
        return self.checkpoints / f"{STEP}{number}"

    def unfinished_step(self, number: int, pid: int) -> Path:
        """Where a process writes ``step-N`` before renaming it into place."""
        return self.checkpoints / f".tmp-{STEP}{number}-{pid}"

    def steps(self) -> list[Path]:
        """The step folders under ``checkpoints/`` (complete or not), by step."""
        found = [p for p in self.checkpoints.glob(f"{STEP}*") if p.is_dir() and step_of(p) is not None]
        return sorted(found, key=step_of) if self.checkpoints.is_dir() else []

    def seed(self, number: int) -> RunDir:
        """``seed-K``: the run of a run group trained at seed K."""
        return RunDir(self.path / f"{SEED}{number}")

    def seeds(self) -> dict[int, RunDir]:
        """A run group's seed folders by seed ({} for a plain run)."""
        found = {}
        for folder in self.path.glob(f"{SEED}*") if self.path.is_dir() else []:
            number = folder.name[len(SEED) :]
            if folder.is_dir() and number.isdigit():
                found[int(number)] = RunDir(folder)
        return dict(sorted(found.items()))

    def comparison(self, other: str) -> Path:
        """``vs_OTHER.json``: this run paired with another on the same questions."""
        return self.path / f"{COMPARISON}{other}.json"

    def eval_dir(self, blind: bool = False) -> Path:
        return self.path / (EVAL_BLIND if blind else EVAL)

    def train_logs(self) -> list[Path]:
        """Every training log under this folder: the run's own and each stage's."""
        return sorted(self.path.glob(f"**/{LOGS}/{TRAIN_LOG}"))

    def stage(self, name: str) -> RunDir:
        return RunDir(self.path / name)

    @classmethod
    def of_checkpoint(cls, step: str | Path) -> RunDir:
        """The run (or stage) folder a ``checkpoints/step-N`` folder belongs to (a step folder copied out of
        its run is a run of its own)."""
        step = Path(step)
        return cls(step.parent.parent if step.parent.name == CHECKPOINTS else step)

    def top(self) -> RunDir:
        """The whole run: a stage folder's parent when that parent is a staged run, else this folder."""
        parent = RunDir(self.path.parent)
        if not parent.config.is_file() or parent.path == self.path:
            return self
        import yaml

        stages = (yaml.safe_load(parent.config.read_text()) or {}).get("stages") or []
        staged = any(isinstance(s, dict) and s.get("name") == self.path.name for s in stages)
        return parent if staged else self


def step_of(folder: str | Path) -> int | None:
    """N of a ``step-N`` folder (None for another name)."""
    name = Path(folder).name
    return int(name[len(STEP) :]) if name.startswith(STEP) and name[len(STEP) :].isdigit() else None


@dataclass(frozen=True)
class StepDir:
    """One checkpoint folder, ``checkpoints/step-N``: the files it holds (written by ``runtime.checkpoint``)."""

    path: Path

    def __init__(self, path: str | Path):
        object.__setattr__(self, "path", Path(path))

    config = property(lambda self: self.path / CONFIG)
    state = property(lambda self: self.path / TRAINER_STATE)
    weights = property(lambda self: self.path / WEIGHTS)
    tokenizer = property(lambda self: self.path / TOKENIZER)
    optimizer = property(lambda self: self.path / OPTIMIZER)
    optimizer_rest = property(lambda self: self.path / OPTIMIZER_REST)
    scheduler = property(lambda self: self.path / SCHEDULER)
    manifest = property(lambda self: self.path / MANIFEST)

    def rng(self, rank: int) -> tuple[Path, Path]:
        """Process ``rank``'s random-number state: (tensors, the rest)."""
        return self.path / f"{RNG}{rank}.safetensors", self.path / f"{RNG}{rank}.json"


def step_config(step: str | Path) -> Path:
    """The resolved config a step folder was saved under."""
    return StepDir(step).config


def step_state(step: str | Path) -> Path:
    """A step folder's trainer state (step, best step and value, data position)."""
    return StepDir(step).state


def metrics_file(eval_dir: str | Path) -> Path:
    return Path(eval_dir) / METRICS


def predictions_file(eval_dir: str | Path) -> Path:
    return Path(eval_dir) / PREDICTIONS
