"""Where and how a run executes: precision, processes, the accelerate ``Accelerator``.

Shared by training and evaluation (neither imports the other for it).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType

from pathvqa.config import ExperimentConfig
from pathvqa.errors import PathVQAError
from pathvqa.runs import RunDir

log = logging.getLogger(__name__)
SHARDED = (DistributedType.DEEPSPEED, DistributedType.FSDP)
_SET_HERE: dict[str, str] = {}  # launch variables this process set itself (a later stage resets them)


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


def is_main_process() -> bool:
    return PartialState(cpu=cpu_processes()).is_main_process


def _config_wins(variable: str, value: str, what: str) -> None:
    """The experiment config is the one source of truth for ``what``: an accelerate launch config (a
    DeepSpeed file's ``gradient_accumulation_steps``, say) reaches the process as ``variable``."""
    launched = os.environ.get(variable)
    if launched is not None and launched != value and is_main_process():
        log.warning(
            "the launch config sets %s to %s; the experiment config's %s is used", what, launched, value
        )
    os.environ[variable] = value


def make_accelerator(cfg: ExperimentConfig, run_dir: Path) -> Accelerator:
    """An Accelerator for training ``cfg`` whose gradient accumulation and clipping are the config's."""
    _config_wins("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", str(cfg.train.grad_accum), "train.grad_accum")
    _config_wins("ACCELERATE_GRADIENT_CLIPPING", str(cfg.train.max_grad_norm or 0.0), "train.max_grad_norm")
    accelerator = Accelerator(
        cpu=cpu_processes(),
        split_batches=True,
        mixed_precision=mixed_precision(cfg),
        gradient_accumulation_steps=cfg.train.grad_accum,
        log_with=cfg.train.report_to or None,
        project_dir=str(RunDir(run_dir).logs),
        step_scheduler_with_optimizer=False,
    )
    plugin = accelerator.state.deepspeed_plugin
    if plugin is not None:  # a DeepSpeed file read before this process started: its value must not win
        plugin.deepspeed_config["gradient_accumulation_steps"] = cfg.train.grad_accum
        plugin.deepspeed_config["gradient_clipping"] = cfg.train.max_grad_norm or 0.0
    if accelerator.gradient_accumulation_steps != cfg.train.grad_accum:
        raise PathVQAError(
            f"accelerate accumulates {accelerator.gradient_accumulation_steps} micro-batches per step but "
            f"train.grad_accum is {cfg.train.grad_accum}: remove gradient_accumulation_steps from the launch config"
        )
    return accelerator


def sharded(accelerator: Accelerator) -> bool:
    """Weights split across processes (DeepSpeed ZeRO / FSDP)."""
    return accelerator.distributed_type in SHARDED


def upcast_trainable(model: torch.nn.Module) -> int:
    """Trainable floating-point weights in fp32 (the master weights of mixed precision: autocast runs the
    matmuls in bf16/fp16, the optimizer updates fp32). Frozen weights keep their dtype. Returns how many
    tensors were cast."""
    cast = 0
    for param in model.parameters():
        if param.requires_grad and param.is_floating_point() and param.dtype != torch.float32:
            param.data = param.data.float()
            cast += 1
    return cast


# ---- CPU cores shared by trainings running side by side (``make demo``, ``make test``) -------------------
def threads_each(jobs: int) -> int:
    """Torch threads for each of ``jobs`` trainings sharing this machine's cores (``train.threads``)."""
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def beside_trainings() -> None:
    """This process works beside trainings that hold the cores: one torch thread (two would oversubscribe
    the cores, and OpenMP threads spin while they wait)."""
    torch.set_num_threads(1)


def all_cores() -> None:
    """The trainings are done: every core for this process."""
    torch.set_num_threads(os.cpu_count() or 1)
