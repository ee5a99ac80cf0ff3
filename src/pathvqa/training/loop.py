"""The training loop of one stage (Hugging Face accelerate): :class:`Trainer` sets up (data, model,
optimizer, restore), takes optimizer steps over accumulation windows, validates, saves and closes.

Single process or ``accelerate launch`` alike: ``train.batch_size`` is the global micro-batch,
split across processes (``split_batches``). The loss of an optimizer step is the mean over the
target tokens of its whole accumulation window on all processes, so ``batch 16 × grad_accum 2``
takes the step ``batch 32`` takes, and N processes the step one takes. Data order is a seeded
permutation per epoch and each sample's augmentation is seeded by (seed, epoch, sample index), so
``--resume`` continues exactly where a checkpoint left off.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.data_loader import prepare_data_loader, skip_first_batches
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import get_scheduler

from pathvqa.config import ExperimentConfig, save_config
from pathvqa.data.batches import Collator, ImagePipeline, image_groups
from pathvqa.data.prepare import load_data_split
from pathvqa.errors import Interrupted, PathVQAError
from pathvqa.models.base import ModelInputs, answer_means
from pathvqa.models.feature_cache import FeatureCache, why_not_cached
from pathvqa.models.generation import predict
from pathvqa.models.registry import build
from pathvqa.models.tuning import stored_names, trainable_summary
from pathvqa.runs import RunDir
from pathvqa.runtime import checkpoint, trackers
from pathvqa.runtime.processes import make_accelerator, mixed_precision, sharded, upcast_trainable
from pathvqa.runtime.trained import restore, start_from
from pathvqa.scoring.metrics import score

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


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1000 + epoch)).tolist()


def run_exists(run_dir: Path) -> PathVQAError:
    return PathVQAError(f"{run_dir} already holds checkpoints: pass --resume to continue, or use a new --out")


class Trainer:
    """One training stage of ``cfg`` in ``run_dir`` (``init``: the previous stage's checkpoint)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: Path,
        resume: bool = False,
        progress: bool = True,
        init: Path | None = None,
        label: str | None = None,
        on_validate: Callable[[str, int, dict], None] | None = None,
    ):
        self.cfg, self.run_dir, self.resume, self.init = cfg, run_dir, resume, init
        self.on_validate = on_validate
        """Called on the main process after each validation with (label, step, metrics): a sweep's
        pruner (it may raise to stop the stage)."""
        self.label = label or cfg.name
        self.progress = progress
        self.pos = Position()
        # what setup builds (None until it has): close() and an interrupt look at these whatever setup reached
        self.accelerator: Accelerator | None = None
        self.main = False
        self.total_steps: int | None = None
        self.log_file = None
        self.bar = None
        self.feature_cache = None

    # ---- the stage -------------------------------------------------------------------------------
    def run(self) -> dict:
        try:
            self.setup()
            self.train()
            return self.finish()
        except KeyboardInterrupt:
            raise self._interrupted() from None
        finally:
            self.close()

    def _interrupted(self) -> Interrupted:
        last = checkpoint.latest_valid(self.run_dir)
        kept = f"its last checkpoint is {last.name}" if last else "no checkpoint was saved yet"
        total = self.total_steps
        return Interrupted(
            f"interrupted at step {self.pos.step}{f' of {total}' if total else ''} of {self.label}; {kept}: "
            f"continue with pathvqa train CONFIG --out {self.run_dir.parent if '/' in self.label else self.run_dir}"
            " --resume"
        )

    def setup(self) -> None:
        if self.cfg.train.threads:
            torch.set_num_threads(self.cfg.train.threads)
        trackers.check_installed(self.cfg.train.report_to)
        self.accelerator = make_accelerator(self.cfg, self.run_dir)
        self.main = self.accelerator.is_main_process
        self.start = self._resume_point()
        set_seed(self.cfg.train.seed)
        self._load_data()
        self._build_model()
        self._build_optimizer()
        self._prepare()
        self.cache_features()
        self._make_pipelines()
        self._open_logs()

    def _resume_point(self) -> Path | None:
        start = checkpoint.latest_valid(self.run_dir) if self.resume else None
        if self.resume and start is None and self.main:
            log.warning("--resume: no valid checkpoint in %s, starting from scratch", self.run_dir)
        if not self.resume and checkpoint.checkpoints(self.run_dir):
            raise run_exists(self.run_dir)
        return start

    def _load_data(self) -> None:
        cfg = self.cfg
        train = load_data_split(
            cfg.data, cfg.data.train_split, cfg.data.train_samples, self.progress and self.main, say=self.main
        )
        if not train.samples:
            raise PathVQAError(f"no usable training rows in {cfg.data.dataset} [{cfg.data.train_split}]")
        self.samples = train.samples
        self.val_samples = []
        self.data_counts = {"train": train.counts()}
        if cfg.data.eval_split:
            split = load_data_split(
                cfg.data, cfg.data.eval_split, cfg.data.eval_samples, False, say=self.main
            )
            self.val_samples = split.samples
            self.data_counts["validation"] = split.counts()

    def _build_model(self) -> None:
        cfg = self.cfg
        if self.init is not None:
            self.family, self.bundle = start_from(cfg, self.init)
        else:
            self.family, self.bundle = build(cfg)
        if self.start is not None:
            restore(self.bundle, cfg, self.start)
        if mixed_precision(cfg) != "no":
            upcast_trainable(self.bundle.model)  # fp32 master weights under bf16/fp16 autocast
        if not any(p.requires_grad for p in self.bundle.model.parameters()):
            raise PathVQAError("nothing to train: model.tuning is 'frozen' and no module is trainable")

    def _build_optimizer(self) -> None:
        cfg, model = self.cfg.train, self.bundle.model
        params = [p for p in model.parameters() if p.requires_grad]
        fused = cfg.fused_adamw if cfg.fused_adamw is not None else self.accelerator.device.type == "cuda"
        fused = (fused and all(p.is_floating_point() for p in params)) or None
        self.optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=fused)
        self.accum = self.accelerator.gradient_accumulation_steps  # what accelerate does (= train.grad_accum)
        micro_per_epoch = math.ceil(len(self.samples) / cfg.batch_size)
        self.steps_per_epoch = math.ceil(micro_per_epoch / self.accum)
        self.total_steps = cfg.max_steps or math.ceil(cfg.epochs * self.steps_per_epoch)
        updates = self.total_steps * self.updates_per_step()
        self.scheduler = get_scheduler(
            cfg.scheduler if cfg.scheduler != "constant" else "constant_with_warmup",
            self.optimizer,
            num_warmup_steps=int(cfg.warmup_ratio * updates),
            num_training_steps=updates,
        )

    def updates_per_step(self) -> int:
        """Optimizer updates per training step (the schedule spans all of them)."""
        return 1

    def _prepare(self) -> None:
        acc = self.accelerator
        self.sharded = sharded(acc)
        if self.sharded and self.val_samples:
            raise PathVQAError(
                f"validation during training generates answers, which {acc.distributed_type.value} cannot do "
                "with weights sharded across processes: set data.eval_split=null (checkpoints are still "
                "saved) and score the checkpoint afterwards with `pathvqa eval --checkpoint`"
            )
        self.bundle.model, self.optimizer = acc.prepare(self.bundle.model, self.optimizer)
        if self.start is not None:
            state = checkpoint.load_training_state(
                self.start, self.optimizer, self.scheduler, acc.process_index
            )
            self.pos = Position(**{k: state[k] for k in Position.__dataclass_fields__})
        if self.sharded and self.main:
            log.warning(
                "%s: checkpoints hold gathered weights but not the sharded optimizer state",
                acc.distributed_type,
            )

    def cache_features(self) -> None:
        """Reuse a frozen image encoder's features across epochs (``model.cache_image_features``)."""
        self.feature_cache = None
        if not self.cfg.model.cache_image_features:
            return
        reason = (
            "weights are sharded across processes"
            if self.sharded
            else why_not_cached(self.bundle.image_encoder, self.cfg.train.augment.stain_jitter)
        )
        if reason is None:
            folder = RunDir(self.run_dir).feature_cache
            self.feature_cache = FeatureCache(
                self.bundle.image_encoder, folder, self.cfg.model.feature_cache_mb
            )
        if self.main:
            log.info(
                "image features %s", f"not cached: {reason}" if reason else "cached: each image encoded once"
            )

    def _make_pipelines(self) -> None:
        self.val_pipeline = ImagePipeline.for_data(self.cfg.data, self.bundle.image_size, cache=True)
        self.collate = self.make_collate()

    # ---- hooks: what a stage method (``GrpoTrainer``) replaces ---------------------------------------
    def make_collate(self) -> Callable[[list[int]], Any]:
        """The training loader's ``collate_fn``: sample indices → what :meth:`train_step` takes (here the
        model inputs, augmented)."""
        cfg = self.cfg
        pipeline = ImagePipeline.for_data(cfg.data, self.bundle.image_size)
        if cfg.train.num_workers:  # decode once, here: forked workers then share the cache
            pipeline.warm(self.samples, progress=self.progress and self.main)
        return Collator(
            self.samples, self.family, self.bundle, pipeline, cfg.task,
            train=True, augment=cfg.train.augment, seed=cfg.train.seed, share_images=cfg.data.group_by_image,
        )  # fmt: skip

    def collate_for(self, epoch: int) -> Callable[[list[int]], Any]:
        """The ``collate_fn`` of one epoch (augmentation draws from the epoch)."""
        self.collate.epoch = epoch
        return self.collate

    def train_step(self, micro_batches: list) -> dict[str, Any]:
        """The method's own work in one step over an accumulation window (forward, backward, optimizer
        update); returns what :meth:`log_step` logs. Supervised: every micro-batch's summed loss is divided
        by the target tokens (or answers, ``train.loss_average``) of the whole window on all processes (one
        reduction)."""
        acc = self.accelerator
        per_answer = self.cfg.train.loss_average == "answers"
        local = float(sum(inputs.answers if per_answer else inputs.targets for inputs in micro_batches))
        count = acc.reduce(torch.tensor(local, device=acc.device), "sum")
        # accelerate divides by grad_accum and DDP averages over processes: undo both, divide by the count
        scale = acc.num_processes * self.accum / count.clamp(min=1)
        loss_sum = self.backward_window(micro_batches, self._summed_loss, scale)
        loss_sum, count = torch.stack([acc.reduce(loss_sum, "sum"), count]).tolist()  # the step's host sync
        self.optimizer_step(loss_sum / max(count, 1.0))
        return {
            "loss_sum": loss_sum,
            "count": count,
            "samples": self.cfg.train.batch_size * len(micro_batches),
        }

    def _summed_loss(self, inputs: ModelInputs) -> torch.Tensor:
        """A micro-batch's loss summed over its target tokens, or over its answers' token means."""
        batch = inputs.to(self.accelerator.device)
        if self.cfg.train.loss_average == "tokens":
            return self.family.loss(self.bundle, batch)[0]
        logp, mask = self.family.token_logprobs(self.bundle, batch)  # (B, T) each
        return -answer_means(logp, mask).sum()

    def _open_logs(self) -> None:
        cfg, acc = self.cfg, self.accelerator
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, RunDir(self.run_dir).config)
            RunDir(self.run_dir).logs.mkdir(exist_ok=True)
            summary = {**trainable_summary(self.bundle.model), "train_rows": len(self.samples)}
            log.info("training %s: %s", cfg.name, {**summary, "total_steps": self.total_steps})
            self.log_file = RunDir(self.run_dir).train_log.open("a")
        staged = "/" in self.label  # a stage of a staged config: "<run folder>/<stage>" in the trackers
        name = f"{self.run_dir.parent.name}/{self.run_dir.name}" if staged else self.run_dir.name
        resumed = self.start is not None  # the tracker runs go on; their parameters were logged at the start
        config = None if resumed else {**trackers.flat_config(cfg), "total_steps": self.total_steps}
        store = self.run_dir.parent if staged else self.run_dir  # a staged run: one MLflow store for all
        kwargs = trackers.init_kwargs(cfg, self.run_dir, name, resume=resumed, store_dir=store)
        acc.init_trackers(cfg.train.experiment, config, init_kwargs=kwargs)
        if self.main:
            trackers.record(acc, cfg, self.run_dir, store_dir=store)
        self.bar = tqdm(
            total=self.total_steps,
            initial=self.pos.step,
            desc=f"train {self.label}",
            unit="step",
            disable=not (self.progress and self.main),
            dynamic_ncols=True,
        )

    # ---- training --------------------------------------------------------------------------------
    def train(self) -> None:
        cfg = self.cfg.train
        eval_every = cfg.eval_every or self.steps_per_epoch
        save_every = cfg.save_every or eval_every
        self.bundle.model.train()
        self.started = time.perf_counter()
        self.window = {"loss": 0.0, "count": 0.0, "samples": 0, "t": time.perf_counter()}
        while self.pos.step < self.total_steps:
            for micro_batches in self._windows(self._loader()):
                self.step(micro_batches)
                if self.pos.step == self.total_steps:
                    return
                if self.pos.step % eval_every == 0:
                    self.validate()
                    self.save()
                elif self.pos.step % save_every == 0:
                    self.save()
            self.pos.epoch += 1
            self.pos.batch_in_epoch = 0

    def _loader(self):
        """This epoch's micro-batches (the seeded order; already-consumed ones skipped after a resume)."""
        cfg = self.cfg
        collate = self.collate_for(self.pos.epoch)
        workers = cfg.train.num_workers
        order = epoch_order(len(self.samples), cfg.train.seed, self.pos.epoch)
        if cfg.data.group_by_image:  # each image's questions consecutive: batches share their images
            order = image_groups(self.samples, order)
        loader = DataLoader(
            order,
            batch_size=cfg.train.batch_size,
            collate_fn=collate,
            num_workers=workers,
            multiprocessing_context="fork" if workers else None,
        )
        acc = self.accelerator
        loader = prepare_data_loader(
            loader, num_processes=acc.num_processes, process_index=acc.process_index, split_batches=True
        )
        return skip_first_batches(loader, self.pos.batch_in_epoch) if self.pos.batch_in_epoch else loader

    def _windows(self, loader):
        """Accumulation windows: ``grad_accum`` micro-batches each (the last of an epoch may be shorter)."""
        window = []
        for inputs in loader:
            window.append(inputs)
            if len(window) == self.accum:
                yield window
                window = []
        if window:
            yield window

    def step(self, micro_batches: list) -> None:
        """One training step: the method's :meth:`train_step`, the position moved on, the step logged."""
        logged = self.train_step(micro_batches)
        self.pos.batch_in_epoch += len(micro_batches)
        self.pos.step += 1
        self.bar.update(1)
        self.log_step(logged)

    def backward_window(self, micro_batches: list, loss_of, scale: torch.Tensor) -> torch.Tensor:
        """Forward (``loss_of``: a micro-batch's summed loss) and backward of ``loss × scale`` for each
        micro-batch, gradients synchronised across processes once, after the last; the detached sum."""
        acc, model = self.accelerator, self.bundle.model
        loss_sum = torch.zeros((), device=acc.device)
        for i, batch in enumerate(micro_batches):
            last = i == len(micro_batches) - 1
            acc.gradient_state._set_sync_gradients(last)  # this window, not a micro-batch counter, decides
            with nullcontext() if last else acc.no_sync(model):
                total = loss_of(batch)
                acc.backward(total * scale)
            loss_sum += total.detach()
        return loss_sum

    def optimizer_step(self, mean_loss: float) -> None:
        """Stop on a non-finite loss (before anything is saved); else clip, step, schedule."""
        acc = self.accelerator
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(
                f"loss is {mean_loss} at step {self.pos.step + 1}: stopped; the last good checkpoint is in "
                f"{RunDir(self.run_dir).checkpoints} (try a lower train.lr)"
            )
        if self.cfg.train.max_grad_norm:
            acc.clip_grad_norm_(
                self.bundle.model.parameters(), self.cfg.train.max_grad_norm
            )  # the prepared model's
        self.optimizer.step()
        self.optimizer.zero_grad()
        if not acc.optimizer_step_was_skipped:
            self.scheduler.step()

    def log_step(self, logged: dict[str, Any]) -> None:
        """Log what :meth:`train_step` returned: the window's mean loss every ``log_every`` steps."""
        window = self.window
        window["loss"] += logged["loss_sum"]
        window["count"] += logged["count"]
        window["samples"] += logged["samples"]
        if self.pos.step % self.cfg.train.log_every and self.pos.step != self.total_steps:
            return
        elapsed = time.perf_counter() - window["t"]
        row = {
            "step": self.pos.step,
            "epoch": self.pos.epoch,
            "loss": window["loss"] / max(window["count"], 1.0),
            "lr": self.scheduler.get_last_lr()[0],
            "samples_per_s": window["samples"] / max(elapsed, 1e-9),
            "time_s": round(time.perf_counter() - self.started, 2),
        }
        self.write_log("train", row)
        self.accelerator.log({"train/loss": row["loss"], "train/lr": row["lr"]}, step=self.pos.step)
        self.bar.set_postfix(
            loss=f"{row['loss']:.3f}", lr=f"{row['lr']:.1e}", sps=f"{row['samples_per_s']:.0f}"
        )
        self.window = {"loss": 0.0, "count": 0.0, "samples": 0, "t": time.perf_counter()}

    def write_log(self, kind: str, row: dict) -> None:
        """One row of the training log, its kind first (``runs.ROW_KINDS``: train, validation, grpo)."""
        if self.log_file is not None:
            self.log_file.write(json.dumps({"kind": kind, **row}) + "\n")
            self.log_file.flush()

    # ---- validation and checkpoints --------------------------------------------------------------
    def validate(self) -> None:
        """Score the validation questions (if any); log the row; track the best step."""
        cfg, pos, acc = self.cfg, self.pos, self.accelerator
        record = {
            "step": pos.step,
            "epoch": pos.epoch,
            "time_s": round(time.perf_counter() - self.started, 2),
        }
        if self.val_samples:
            rows = predict(
                self.family, self.bundle, self.val_samples, cfg,
                accelerator=acc, progress=False, pipeline=self.val_pipeline,
            )  # fmt: skip
            metrics = score(rows) if self.main else {}
            value = metrics.get(cfg.train.best_metric)
            record.update({f"val_{k}": v for k, v in metrics.items()})
            if self.main and value is not None and (pos.best_value is None or value > pos.best_value):
                pos.best_value, pos.best_step = value, pos.step
            acc.log({f"val/{k}": v for k, v in metrics.items() if isinstance(v, float)}, step=pos.step)
            if self.main and self.on_validate is not None:
                self.on_validate(self.label, pos.step, metrics)
        self.write_log("validation", record)

    def save(self) -> None:
        acc, pos = self.accelerator, self.pos
        rng = checkpoint.rng_state()
        gathered = (
            acc.gather_for_metrics([(acc.process_index, rng)], use_gather_object=True)
            if acc.num_processes > 1
            else [(0, rng)]
        )
        # DeepSpeed ZeRO / FSDP shard parameters across processes: gather a full state dict (every
        # process takes part). Their optimizer state is sharded too and is not saved: a resume there
        # restores weights, schedule, data position and RNG, and restarts the optimizer moments.
        full_state = acc.get_state_dict(self.bundle.model) if self.sharded else None
        if self.main:
            names = stored_names(self.bundle, self.cfg.model.tuning)
            optimizer = None if self.sharded else self.optimizer
            checkpoint.save(
                self.run_dir, pos.step, self.bundle, self.cfg, names, optimizer, self.scheduler, asdict(pos),
                dict(gathered), full_state=full_state,
            )  # fmt: skip
            if pos.best_step is not None:
                best = {"step": pos.best_step, "metric": self.cfg.train.best_metric, "value": pos.best_value}
                RunDir(self.run_dir).best.write_text(json.dumps(best))
            keep = {pos.best_step} if pos.best_step is not None else set()
            checkpoint.prune(self.run_dir, self.cfg.train.keep_last, keep)
        acc.wait_for_everyone()

    def finish(self) -> dict:
        self.validate()
        self.save()
        result = {
            "steps": self.pos.step,
            "best_step": self.pos.best_step,
            "best_value": self.pos.best_value,
            "checkpoint": str(RunDir(self.run_dir).step(self.pos.step)),
            "data": self.data_counts,
        }
        if self.main:  # written last: its presence means the run finished
            RunDir(self.run_dir).summary.write_text(json.dumps(result, indent=1))
        return result

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.feature_cache is not None:
            self.feature_cache.close()
            if self.main:
                log.info("feature cache: %s", self.feature_cache.summary())
        if self.accelerator is not None:
            for tracker in self.accelerator.trackers:  # not end_training(): it ends the process group, and a
                tracker.finish()  # next stage (or the evaluation after a demo fine-tune) still needs it
        if self.log_file is not None:
            self.log_file.close()
