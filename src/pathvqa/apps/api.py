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
from pathvqa.evaluation.answerer import Answer, Answerer
from pathvqa.evaluation.evaluate import run
from pathvqa.training.stages import fit

__all__ = ["Answer", "Answerer", "ExperimentConfig", "evaluate", "load_config", "train"]


def train(
    cfg: ExperimentConfig, out: str | Path, resume: bool = False, progress: bool = True
) -> dict[str, Any]:
    """Train ``cfg`` into the run folder ``out`` (every stage; ``resume`` continues a stopped run); returns the
    run's summary (steps, best step, last checkpoint)."""
    return fit(cfg, out, resume=resume, progress=progress)


def evaluate(
    checkpoint: str | Path,
    out: str | Path,
    dataset: str | None = None,
    split: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """Score a run folder or checkpoint on a split (the test split by default); writes
    ``predictions.jsonl`` and ``metrics.json`` into ``out`` and returns the metrics. ``options``: those of
    ``pathvqa eval`` (``blind``, ``limit``, ``overwrite``, ``progress``, …)."""
    return run(out=out, checkpoint_dir=str(checkpoint), dataset=dataset, split=split, **options)
