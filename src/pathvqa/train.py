"""One training loop for every model family (Hugging Face accelerate).

Single process or ``accelerate launch`` alike: ``train.batch_size`` is the global micro-batch,
split across processes (``split_batches``), and the loss is the mean over the target tokens of all
processes, so one process and N processes take the same steps. Data order is a seeded permutation
per epoch and each sample's augmentation is seeded by (seed, epoch, sample index), so ``--resume``
continues exactly where a checkpoint left off.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.data_loader import prepare_data_loader, skip_first_batches
from accelerate.utils import DistributedType, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from pathvqa import checkpoint
from pathvqa.config import ExperimentConfig, save_config
from pathvqa.data.batches import Collator, ImagePipeline
from pathvqa.data.images import augment
from pathvqa.data.prepare import load_split
from pathvqa.errors import PathVQAError
from pathvqa.metrics import score
from pathvqa.models.registry import build
from pathvqa.models.tuning import trainable_summary

log = logging.getLogger(__name__)


class TrainingDiverged(PathVQAError):
    """The loss became NaN or infinite."""


@dataclass
class Position:
    """Where training is: optimizer steps done, epoch, micro-batches consumed in that epoch."""

    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    best_value: float | None = None
    best_step: int | None = None


def mixed_precision(cfg: ExperimentConfig) -> str:
    wanted = cfg.train.precision
    if not torch.cuda.is_available() or wanted == "fp32":
        return "no"
    if wanted == "auto":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return wanted


def cpu_processes() -> bool:
    """Several processes and no CUDA (``torchrun`` / ``accelerate launch --multi_gpu`` on CPUs):
    accelerate must be told ``cpu=True`` to join them with gloo, or each would train alone."""
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def make_accelerator(cfg: ExperimentConfig, run_dir: Path) -> Accelerator:
    trackers = cfg.train.report_to or None
    return Accelerator(
        cpu=cpu_processes(),
        split_batches=True,
        mixed_precision=mixed_precision(cfg),
        gradient_accumulation_steps=cfg.train.grad_accum,
        log_with=trackers,
        project_dir=str(run_dir / "logs"),
        step_scheduler_with_optimizer=False,
    )


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()


def train_pixels(
    images: torch.Tensor, indices: torch.Tensor, bundle, cfg: ExperimentConfig, epoch: int
) -> torch.Tensor:
    """(B, 3, S, S) uint8 → augmented, normalized pixels. A sample's draw depends only on (seed,
    epoch, its index): the same on one process or many, and after a resume."""
    seeds = [(cfg.train.seed * 1_000_003 + epoch) * 10_000_019 + int(i) for i in indices]
    return bundle.image_spec.normalize(augment(images, cfg.train.augment, seeds))


def load_cfg_split(cfg: ExperimentConfig, split: str, samples: int | None, progress: bool):
    """One split of the config's dataset, validated, with the config's pixel limit and sampling seed."""
    return load_split(
        cfg.data.dataset,
        split,
        max_pixels=cfg.data.max_pixels,
        samples=samples,
        seed=cfg.data.seed,
        progress=progress,
        lazy_images=cfg.data.lazy_images,
    )


def fit(cfg: ExperimentConfig, run_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Train ``cfg`` into ``run_dir``; returns a summary (steps, best step, last checkpoint).

    A config with ``stages`` trains them in order, each in ``run_dir/<stage>/`` (a run folder of its
    own) starting from the previous stage's last checkpoint. ``resume`` skips finished stages and
    continues the unfinished one from its last valid checkpoint.
    """
    run_dir = Path(run_dir)
    if not cfg.stages:
        return _fit_stage(cfg, run_dir, resume, progress)
    if not resume and any(checkpoint.checkpoints(run_dir / s.name) for s in cfg.stages):
        raise _run_exists(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    init, results = None, []
    for stage in cfg.stages:
        stage_dir = run_dir / stage.name
        done = stage_dir / "train_summary.json"
        if done.is_file():  # finished before an interruption
            result = json.loads(done.read_text())
        else:
            started = resume and bool(checkpoint.checkpoints(stage_dir))  # else it starts from `init`
            result = _fit_stage(
                cfg.stage_config(stage), stage_dir, started, progress, init, f"{cfg.name}/{stage.name}"
            )
        init = checkpoint.latest_valid(stage_dir)  # the stage's last checkpoint
        results.append({"stage": stage.name, **result})
    summary = {**results[-1], "stages": results}
    if PartialState(cpu=cpu_processes()).is_main_process:
        (run_dir / "train_summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def _run_exists(run_dir: Path) -> PathVQAError:
    return PathVQAError(f"{run_dir} already holds checkpoints: pass --resume to continue, or use a new --out")


def _fit_stage(
    cfg: ExperimentConfig,
    run_dir: Path,
    resume: bool,
    progress: bool,
    init: Path | None = None,
    label: str | None = None,
) -> dict:
    from pathvqa.evaluate import predict

    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    accelerator = make_accelerator(cfg, run_dir)
    main = accelerator.is_main_process
    start = checkpoint.latest_valid(run_dir) if resume else None
    if resume and start is None and main:
        log.warning("--resume: no valid checkpoint in %s, starting from scratch", run_dir)
    if not resume and checkpoint.checkpoints(run_dir):
        raise _run_exists(run_dir)
    set_seed(cfg.train.seed)

    train_data = load_cfg_split(cfg, cfg.data.train_split, cfg.data.train_samples, progress and main)
    val_samples = []
    if cfg.data.eval_split:
        val_samples = load_cfg_split(cfg, cfg.data.eval_split, cfg.data.eval_samples, False).samples
    if not train_data.samples:
        raise PathVQAError(f"no usable training rows in {cfg.data.dataset} [{cfg.data.train_split}]")

    family, bundle = build(cfg, init=init)
    if start is not None:
        checkpoint.load_weights(bundle, cfg, start)
    params = [p for p in bundle.model.parameters() if p.requires_grad]
    if not params:
        raise PathVQAError("nothing to train: model.tuning is 'frozen' and no module is trainable")
    optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    samples = train_data.samples
    micro_per_epoch = math.ceil(len(samples) / cfg.train.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / cfg.train.grad_accum)
    total_steps = cfg.train.max_steps or math.ceil(cfg.train.epochs * steps_per_epoch)
    scheduler = get_scheduler(
        cfg.train.scheduler if cfg.train.scheduler != "constant" else "constant_with_warmup",
        optimizer,
        num_warmup_steps=int(cfg.train.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )
    bundle.model, optimizer = accelerator.prepare(bundle.model, optimizer)

    pos = Position()
    if start is not None:
        state = checkpoint.load_training_state(start, optimizer, scheduler, accelerator.process_index)
        pos = Position(**{k: state[k] for k in Position.__dataclass_fields__})
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")
        (run_dir / "logs").mkdir(exist_ok=True)
        summary = {**trainable_summary(bundle.model), "train_rows": len(samples), "total_steps": total_steps}
        log.info("training %s: %s", cfg.name, summary)
    accelerator.init_trackers("pathvqa", config={"name": cfg.name, "lr": cfg.train.lr, "steps": total_steps})
    log_file = (run_dir / "logs" / "train.jsonl").open("a") if main else None

    pipeline = ImagePipeline(bundle.image_spec, cfg.data.cache_images, cfg.data.max_pixels)
    collate = Collator(samples, family, bundle, pipeline, cfg.task, train=True)
    bar = tqdm(
        total=total_steps,
        initial=pos.step,
        desc=f"train {label or cfg.name}",
        unit="step",
        disable=not (progress and main),
        dynamic_ncols=True,
    )
    window = {"loss": 0.0, "n": 0, "samples": 0, "t": time.perf_counter()}
    bundle.model.train()
    started = time.perf_counter()

    def write_log(row: dict) -> None:
        if log_file is not None:
            log_file.write(json.dumps(row) + "\n")
            log_file.flush()

    def validate_and_save() -> None:
        record = {"step": pos.step, "epoch": pos.epoch, "time_s": round(time.perf_counter() - started, 2)}
        if val_samples:
            rows = predict(
                family,
                bundle,
                val_samples,
                cfg,
                accelerator=accelerator,
                progress=False,
                pipeline=ImagePipeline(bundle.image_spec, True, cfg.data.max_pixels),
            )
            bundle.model.train()
            metrics = score(rows) if main else {}
            value = metrics.get(cfg.train.best_metric)
            record.update({f"val_{k}": v for k, v in metrics.items()})
            if main and value is not None and (pos.best_value is None or value > pos.best_value):
                pos.best_value, pos.best_step = value, pos.step
            accelerator.log(
                {f"val/{k}": v for k, v in metrics.items() if isinstance(v, float)}, step=pos.step
            )
        write_log(record)
        save()

    def save() -> None:
        rng = checkpoint.rng_state()
        gathered = (
            accelerator.gather_for_metrics([(accelerator.process_index, rng)], use_gather_object=True)
            if accelerator.num_processes > 1
            else [(0, rng)]
        )
        # DeepSpeed ZeRO / FSDP shard parameters across processes: gather a full state dict (every
        # process takes part). Their optimizer state is sharded too and is not saved: a resume there
        # restores weights, schedule, data position and RNG, and restarts the optimizer moments.
        full_state = accelerator.get_state_dict(bundle.model) if sharded else None
        if main:
            state = {k: getattr(pos, k) for k in Position.__dataclass_fields__}
            checkpoint.save(
                run_dir, pos.step, bundle, cfg, None if sharded else optimizer, scheduler, state, dict(gathered),
                full_state=full_state,
            )  # fmt: skip
            if pos.best_step is not None:
                (run_dir / "checkpoints" / "best.json").write_text(
                    json.dumps(
                        {"step": pos.best_step, "metric": cfg.train.best_metric, "value": pos.best_value}
                    )
                )
            checkpoint.prune(
                run_dir, cfg.train.keep_last, {pos.best_step} if pos.best_step is not None else set()
            )
        accelerator.wait_for_everyone()

    sharded = accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)
    if sharded and main:
        log.warning(
            "%s: checkpoints hold gathered weights but not the sharded optimizer state",
            accelerator.distributed_type,
        )
    eval_every = cfg.train.eval_every or steps_per_epoch
    save_every = cfg.train.save_every or eval_every
    while pos.step < total_steps:
        loader = DataLoader(
            epoch_order(len(samples), cfg.train.seed, pos.epoch),
            batch_size=cfg.train.batch_size,
            collate_fn=collate,
            num_workers=cfg.train.num_workers,
        )
        loader = prepare_data_loader(
            loader,
            num_processes=accelerator.num_processes,
            process_index=accelerator.process_index,
            split_batches=True,
        )
        if pos.batch_in_epoch:
            loader = skip_first_batches(loader, pos.batch_in_epoch)
        for batch in loader:
            pos.batch_in_epoch += 1
            batch["pixel_values"] = train_pixels(
                batch.pop("images"), batch.pop("indices"), bundle, cfg, pos.epoch
            )
            batch = {k: v.to(accelerator.device) for k, v in batch.items()}
            with accelerator.accumulate(bundle.model):
                loss_sum, tokens = family.loss(bundle, batch)
                # Mean over the target tokens of all processes (DDP averages gradients over processes,
                # hence the factor): N processes take the step one process takes on the whole batch.
                sums = accelerator.reduce(torch.stack([loss_sum.detach(), tokens.float()]), "sum")
                loss = loss_sum * accelerator.num_processes / sums[1].clamp(min=1)
                mean_loss = (sums[0] / sums[1].clamp(min=1)).item()
                if not math.isfinite(mean_loss):
                    raise TrainingDiverged(
                        f"loss is {mean_loss} at step {pos.step + 1}: stopped; the last "
                        f"good checkpoint is in {run_dir / 'checkpoints'} (try a lower train.lr)"
                    )
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.train.max_grad_norm:
                    accelerator.clip_grad_norm_(params, cfg.train.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            window["loss"] += mean_loss
            window["n"] += 1
            window["samples"] += cfg.train.batch_size
            if not accelerator.sync_gradients:
                continue
            if not accelerator.optimizer_step_was_skipped:
                scheduler.step()
            pos.step += 1
            bar.update(1)
            if pos.step % cfg.train.log_every == 0 or pos.step == total_steps:
                elapsed = time.perf_counter() - window["t"]
                row = {
                    "step": pos.step,
                    "epoch": pos.epoch,
                    "loss": window["loss"] / window["n"],
                    "lr": scheduler.get_last_lr()[0],
                    "samples_per_s": window["samples"] / max(elapsed, 1e-9),
                    "time_s": round(time.perf_counter() - started, 2),
                }
                write_log(row)
                accelerator.log({"train/loss": row["loss"], "train/lr": row["lr"]}, step=pos.step)
                bar.set_postfix(
                    loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.1e}", sps=f"{row['samples_per_s']:.0f}"
                )
                window = {"loss": 0.0, "n": 0, "samples": 0, "t": time.perf_counter()}
            if pos.step == total_steps:
                break
            if pos.step % eval_every == 0:
                validate_and_save()
            elif pos.step % save_every == 0:
                save()
        else:
            pos.epoch += 1
            pos.batch_in_epoch = 0
            continue
        break
    validate_and_save()
    bar.close()
    for tracker in accelerator.trackers:  # not end_training(): it ends the process group, and a next
        tracker.finish()  # stage (or the evaluation after a demo fine-tune) still needs it
    if log_file is not None:
        log_file.close()
    result = {
        "steps": pos.step,
        "best_step": pos.best_step,
        "best_value": pos.best_value,
        "checkpoint": str(run_dir / "checkpoints" / f"step-{pos.step}"),
    }
    if main:  # written last: its presence means the run finished
        (run_dir / "train_summary.json").write_text(json.dumps(result, indent=1))
    return result
