"""The Python API: what the command line does, as functions on the same code. From a fresh clone after
``make setup`` (the README's example, which a test runs as written):

from pathvqa.apps.api import Answerer, evaluate, load_config, sample, synth, train

synth("runs/data/synthetic", train=400, validation=50, test=100)       # pathvqa synth (the embedded set)
cfg = load_config("configs/blip_tiny.yaml", ["train.max_steps=30"])    # YAML + --set overrides
train(cfg, "runs/mine")                                                 # pathvqa train
metrics = evaluate("runs/mine", out="runs/mine/eval", limit=50)         # pathvqa eval (every protocol)
print(metrics["closed_accuracy"], metrics["llava_med"]["open_recall"])
image, question, answer = sample("runs/data/synthetic", split="test")   # a test tile, its question, answer
model = Answerer("runs/mine")                                           # pathvqa predict / serve
print(question, "→", model.answer(image, question)[0].answer, f"(truth: {answer})")
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
    "resolve_run", "sample", "synth", "train",
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


def synth(
    out: str | Path, train: int = 8000, validation: int = 500, test: int = 1500, size: int = 96, seed: int = 0
) -> Path:
    """The embedded PathVQA-shaped set in ``out`` (``pathvqa synth``); a folder that holds a dataset already
    is left as it is."""
    from pathvqa.destinations import check_destination
    from pathvqa.synth import generator

    out = check_destination(_path(out, "out"))
    if not generator.holds_dataset(out):
        generator.write(out, {"train": train, "validation": validation, "test": test}, size=size, seed=seed)
    return out


def sample(dataset: str | Path, split: str = "test", index: int = 0):
    """(PIL image, question, answer) of one row of a dataset's split: something to ask a model about."""
    from pathvqa.data.images import decode
    from pathvqa.data.prepare import load_split

    rows = load_split(str(dataset), split, samples=index + 1, progress=False).samples
    if index >= len(rows):
        raise PathVQAError(f"{dataset} [{split}] has {len(rows)} rows: no row {index}")
    row = rows[index]
    return decode(row.image, 10**9), row.question, row.answer
