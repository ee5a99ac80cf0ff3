"""The run folder: the one module that knows the names of what lies inside a run.

```
RUN/
  config.yaml            the resolved config          RunDir.config
  train_summary.json     written last: the run ended  RunDir.summary
  checkpoints/step-N/    one atomic step folder       RunDir.checkpoints (its files: step_config, step_state)
  checkpoints/best.json  the best validation step     RunDir.best
  logs/train.jsonl       one row per logged step      RunDir.train_log
  eval/, eval_blind/     predictions.jsonl, metrics.json (RunDir.eval_dir, metrics_file, predictions_file)
  STAGE/                 a staged config's stages, each a run folder of its own (RunDir.stage)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.yaml"
SUMMARY = "train_summary.json"
CHECKPOINTS = "checkpoints"
BEST = "best.json"
LOGS = "logs"
TRAIN_LOG = "train.jsonl"
TRAINER_STATE = "trainer_state.json"
EVAL, EVAL_BLIND = "eval", "eval_blind"
METRICS, PREDICTIONS = "metrics.json", "predictions.jsonl"
ROW_KINDS = ("train", "validation", "grpo")
"""``logs/train.jsonl`` rows say their kind: a training window, a validation, a GRPO step."""


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

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def summary(self) -> Path:
        return self.path / SUMMARY

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def best(self) -> Path:
        return self.checkpoints / BEST

    @property
    def logs(self) -> Path:
        return self.path / LOGS

    @property
    def train_log(self) -> Path:
        return self.logs / TRAIN_LOG

    def eval_dir(self, blind: bool = False) -> Path:
        return self.path / (EVAL_BLIND if blind else EVAL)

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


def step_config(step: str | Path) -> Path:
    """The resolved config a step folder was saved under."""
    return Path(step) / CONFIG


def step_state(step: str | Path) -> Path:
    """A step folder's trainer state (step, best step and value, data position)."""
    return Path(step) / TRAINER_STATE


def metrics_file(eval_dir: str | Path) -> Path:
    return Path(eval_dir) / METRICS


def predictions_file(eval_dir: str | Path) -> Path:
    return Path(eval_dir) / PREDICTIONS
