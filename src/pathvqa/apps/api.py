"""The Python API: what the command line does, as functions on the same code.

from pathlib import Path
from pathvqa.apps.api import Answerer, evaluate, load_config, train

cfg = load_config("configs/blip_tiny.yaml", ["train.max_steps=200"])   # YAML + --set overrides
train(cfg, "runs/mine")                                                 # pathvqa train
metrics = evaluate("runs/mine", out="runs/mine/eval")                   # pathvqa eval (all protocols)
print(metrics["closed_accuracy"], metrics["llava_med"]["open_recall"])
model = Answerer("runs/mine")                                           # pathvqa predict / serve
for answer in model.answer(Path("tile.png").read_bytes(), ["what stain is used?"]):
    print(answer.question, "→", answer.answer)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pathvqa.config import ExperimentConfig, load_config
from pathvqa.errors import PathVQAError
from pathvqa.evaluation.answerer import Answer, Answerer
from pathvqa.evaluation.evaluate import run
from pathvqa.runtime.trained import TrainedRun, resolve_run
from pathvqa.training.stages import fit

__all__ = [
    "Answer", "Answerer", "ExperimentConfig", "PathVQAError", "TrainedRun", "evaluate", "load_config",
    "resolve_run", "train",
]  # fmt: skip


def _path(value: Any, what: str) -> Path:
    if not isinstance(value, str | Path) or not str(value):
        raise PathVQAError(f"{what} must be a path (str or Path), got {type(value).__name__}")
    return Path(value)


def train(
    cfg: ExperimentConfig | str | Path, out: str | Path, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train ``cfg`` (a config, or an experiment YAML's path) into the run folder ``out`` (every stage;
    ``resume`` continues a stopped run); returns the run's summary (steps, best step, last checkpoint)."""
    if not isinstance(cfg, ExperimentConfig):
        cfg = load_config(_path(cfg, "cfg (an ExperimentConfig or an experiment YAML)"))
    return fit(cfg, _path(out, "out"), resume=resume, progress=progress)


def evaluate(
    checkpoint: str | Path | TrainedRun,
    out: str | Path,
    dataset: str | None = None,
    split: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Score a run folder or checkpoint on a split (the test split by default); writes
    ``predictions.jsonl`` and ``metrics.json`` into ``out`` and returns the metrics. ``options``: those of
    ``pathvqa eval`` (``blind``, ``limit``, ``overwrite``, ``progress``, …). ``out`` is checked before any
    work."""
    trained = checkpoint if isinstance(checkpoint, TrainedRun) else _path(checkpoint, "checkpoint")
    return run(out=_path(out, "out"), checkpoint_dir=trained, dataset=dataset, split=split, **options)
