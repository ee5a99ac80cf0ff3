"""Evaluation: batched generation over a split (``generation.predict``) → predictions.jsonl +
metrics.json. Under ``accelerate launch`` each process takes a share of the batches and the main
process writes them: every question appears exactly once.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pathvqa.baseline import QuestionPrior
from pathvqa.config import load_config
from pathvqa.data.prepare import load_data_split, load_split, mark_seen, split_answers
from pathvqa.errors import PathVQAError
from pathvqa.generation import predict
from pathvqa.inference import load_trained
from pathvqa.metrics import score_all
from pathvqa.models.registry import build
from pathvqa.runtime import cpu_processes, mixed_precision
from pathvqa.trackers import log_test_metrics

log = logging.getLogger(__name__)


def write_predictions(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)


def run(
    *,
    out: str | Path,
    dataset: str | None = None,
    split: str | None = None,
    config: str | None = None,
    checkpoint_dir: str | None = None,
    blind: bool = False,
    limit: int | None = None,
    overrides: list[str] | None = None,
    progress: bool = True,
    dedupe: bool = False,
) -> dict[str, Any]:
    """Evaluate a config (zero-shot) or a checkpoint on a split; write predictions.jsonl and metrics.json.

    Every row of the split counts, as in published numbers (``dedupe``: drop repeated rows)."""
    from accelerate import Accelerator

    if (config is None) == (checkpoint_dir is None):
        raise PathVQAError("pass exactly one of --config (zero-shot) or --checkpoint")
    overrides = list(overrides or [])
    if dataset:
        overrides.append(f"data.dataset={dataset}")
    if checkpoint_dir is not None:
        cfg, family, bundle, source = load_trained(checkpoint_dir, overrides)
    else:
        cfg = load_config(config, overrides)
        family, bundle = build(cfg)
        source = Path(config)
    split = split or cfg.data.test_split
    accelerator = Accelerator(cpu=cpu_processes(), mixed_precision=mixed_precision(cfg))
    if not getattr(bundle.model, "hf_device_map", None):  # quantized models are already placed
        bundle.model.to(accelerator.device)
    data = load_data_split(cfg.data, split, limit, progress and accelerator.is_main_process, dedupe=dedupe)
    rows = predict(family, bundle, data.samples, cfg, accelerator=accelerator, blind=blind, progress=progress)
    result: dict[str, Any] = {}
    if accelerator.is_main_process:
        out = Path(out)
        mark_seen(rows, split_answers(cfg.data.dataset, cfg.data.train_split))
        write_predictions(rows, out / "predictions.jsonl")
        result = score_all(rows)
        result.update(
            {
                "model": cfg.name,
                "source": str(source),
                "dataset": cfg.data.dataset,
                "split": split,
                "blind": blind,
                "skipped_rows": sum(data.skipped.values()),
                "duplicate_rows": data.duplicates,
                "deduplicated": dedupe,
                "processes": accelerator.num_processes,
            }
        )
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
        if checkpoint_dir is not None:  # ``source``: the checkpoint folder it resolved to
            _to_trackers(source, result, split, blind)
    accelerator.wait_for_everyone()
    return result


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
    *, out: str | Path, dataset: str, split: str = "test", dedupe: bool = False, name: str = "question-prior"
) -> dict[str, Any]:
    """The question-only prior (majority training answer per question, images never seen) on ``split``:
    predictions.jsonl and metrics.json, as for a model."""
    if name not in BASELINES:
        raise PathVQAError(f"unknown baseline {name!r} (have {', '.join(BASELINES)})")
    train = load_split(dataset, "train", progress=False).samples  # deduplicated, as training is
    test = load_split(dataset, split, progress=False, dedupe=dedupe)
    rows = mark_seen(QuestionPrior(train).predictions(test.samples), split_answers(dataset, "train"))
    out = Path(out)
    write_predictions(rows, out / "predictions.jsonl")
    metrics = {
        **score_all(rows),
        "model": "question-only prior",
        "dataset": dataset,
        "split": split,
        "duplicate_rows": test.duplicates,
        "deduplicated": dedupe,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
