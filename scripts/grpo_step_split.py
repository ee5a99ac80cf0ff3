"""Where a GRPO step's time goes: sampling the groups vs the forward and backward over the sampled answers.

vlm-tiny's GRPO stage from the demo's fine-tune (run ``make demo`` first), 40 steps on one thread:

    python scripts/grpo_step_split.py
"""

from __future__ import annotations

import shutil
import time

from pathvqa.config import load_config
from pathvqa.training.grpo import GrpoTrainer
from pathvqa.training.stages import fit

OUT = "runs/grpo_step_split"


def timed(clock: dict[str, float], name: str, fn):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            clock[name] += time.perf_counter() - started

    return wrapper


def main() -> None:
    clock = {"sampling": 0.0, "rollout": 0.0, "update": 0.0}
    GrpoTrainer.sample_answers = timed(clock, "sampling", GrpoTrainer.sample_answers)
    GrpoTrainer.rollout = timed(clock, "rollout", GrpoTrainer.rollout)  # sampling + rewards + inputs
    GrpoTrainer.update = timed(clock, "update", GrpoTrainer.update)  # forward, backward, optimizer
    sets = ["data.dataset=runs/demo/data", "train.init_from=runs/demo/vlm_tiny", "train.max_steps=40"]
    sets += ["train.eval_every=1000", "train.threads=1"]
    shutil.rmtree(OUT, ignore_errors=True)
    fit(load_config("configs/vlm_tiny_grpo.yaml", sets), OUT, progress=False)
    steps = clock["rollout"] + clock["update"]
    print(
        {k: round(v, 1) for k, v in clock.items()},
        f"sampling share of step time {clock['sampling'] / steps:.2f}",
    )


if __name__ == "__main__":
    main()
