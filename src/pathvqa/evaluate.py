"""Evaluation: batched generation over a split → predictions.jsonl + metrics.json.

Questions are sorted by length and generated in batches (no per-sample loop), the model in eval
mode without gradients. Under ``accelerate launch`` each process takes a share of the batches
and the main process gathers them: every question appears exactly once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from pathvqa.baseline import QuestionPrior
from pathvqa.config import ExperimentConfig, load_config
from pathvqa.data.batches import ImagePipeline
from pathvqa.data.prepare import Sample
from pathvqa.errors import PathVQAError
from pathvqa.metrics import score
from pathvqa.models.base import caption_reference


def prior_baseline(train: list[Sample], test: list[Sample]) -> dict[str, Any]:
    """Metric suite of the question-only prior (majority answer per question, from train)."""
    return score(QuestionPrior(train).predictions(test))


def predict(
    family,
    bundle,
    samples: list[Sample],
    cfg: ExperimentConfig,
    *,
    accelerator=None,
    blind: bool = False,
    progress: bool = True,
    pipeline: ImagePipeline | None = None,
) -> list[dict]:
    """Predictions rows (``id, question, answer, prediction, type``) for ``samples``, sorted by id."""
    pipeline = pipeline or ImagePipeline(bundle.image_spec, cfg.data.cache_images, cfg.data.max_pixels)
    size = cfg.eval.batch_size
    order = sorted(range(len(samples)), key=lambda i: (len(samples[i].question), samples[i].id))
    batches = [order[i : i + size] for i in range(0, len(order), size)]
    device = accelerator.device if accelerator is not None else next(bundle.model.parameters()).device
    rank, world = (
        (accelerator.process_index, accelerator.num_processes) if accelerator is not None else (0, 1)
    )
    mine = batches[rank::world]  # round-robin shares; gathered below
    model_was_training = bundle.model.training
    bundle.model.eval()
    rows = []
    with torch.inference_mode():
        for indices in tqdm(
            mine, desc="generate", unit="batch", disable=not (progress and rank == 0), leave=False
        ):
            chosen = [samples[i] for i in indices]
            batch = family.collate(bundle, chosen, cfg.task, train=False)
            batch["pixel_values"] = bundle.image_spec.normalize(pipeline.batch(chosen, blind))
            batch = {k: v.to(device) for k, v in batch.items()}
            if accelerator is not None:
                with accelerator.autocast():
                    answers = family.generate(bundle, batch, cfg.eval)
            else:
                answers = family.generate(bundle, batch, cfg.eval)
            for sample, answer in zip(chosen, answers, strict=True):
                reference = caption_reference(sample) if cfg.task == "caption" else sample.answer
                rows.append(
                    {
                        "id": sample.id,
                        "question": sample.question,
                        "answer": reference,
                        "prediction": answer,
                        "type": sample.type,
                    }
                )
    if model_was_training:
        bundle.model.train()
    if world > 1:
        from accelerate.utils import gather_object

        rows = gather_object(rows)
    unique = {row["id"]: row for row in rows}
    return [unique[k] for k in sorted(unique)]


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
) -> dict[str, Any]:
    """Evaluate a config (zero-shot) or a checkpoint on a split; write predictions.jsonl and metrics.json."""
    from accelerate import Accelerator

    from pathvqa import checkpoint
    from pathvqa.models.registry import build
    from pathvqa.train import cpu_processes, load_cfg_split, mixed_precision

    if (config is None) == (checkpoint_dir is None):
        raise PathVQAError("pass exactly one of --config (zero-shot) or --checkpoint")
    overrides = list(overrides or [])
    if dataset:
        overrides.append(f"data.dataset={dataset}")
    if checkpoint_dir is not None:
        cfg, family, bundle, source = checkpoint.load_for_inference(checkpoint_dir, overrides)
    else:
        cfg = load_config(config, overrides)
        family, bundle = build(cfg)
        source = Path(config)
    split = split or cfg.data.test_split
    accelerator = Accelerator(cpu=cpu_processes(), mixed_precision=mixed_precision(cfg))
    if not getattr(bundle.model, "hf_device_map", None):  # quantized models are already placed
        bundle.model.to(accelerator.device)
    data = load_cfg_split(cfg, split, limit, progress and accelerator.is_main_process)
    rows = predict(family, bundle, data.samples, cfg, accelerator=accelerator, blind=blind, progress=progress)
    result: dict[str, Any] = {}
    if accelerator.is_main_process:
        out = Path(out)
        write_predictions(rows, out / "predictions.jsonl")
        result = score(rows)
        result.update(
            {
                "model": cfg.name,
                "source": str(source),
                "dataset": cfg.data.dataset,
                "split": split,
                "blind": blind,
                "skipped_rows": sum(data.skipped.values()),
                "processes": accelerator.num_processes,
            }
        )
        (out / "metrics.json").write_text(json.dumps(result, indent=2))
    accelerator.wait_for_everyone()
    return result
