"""Does a GRPO step point where supervised fine-tuning would? Gradient cosines at an SFT checkpoint.

On the same training questions, this takes the GRPO stage's gradient (its own sampling, rewards,
advantages and loss: the trainer's methods, nothing rewritten) twice, with two different draws of the
answer groups, and the supervised gradient (the family's token loss on the true answers) once:

- cos(GRPO draw A, GRPO draw B): how much of a GRPO gradient is the same from one draw to the next
  (1: all signal; near 0: mostly sampling noise);
- cos(GRPO, SFT): how far the expected GRPO step goes the way the labels would take the model.

    python scripts/grpo_gradient_agreement.py runs/demo/vlm_tiny --set data.dataset=runs/demo/data
    python scripts/grpo_gradient_agreement.py RUN --set train.grpo.temperature=0.7 --questions 512
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from tqdm.auto import tqdm

from pathvqa.config import load_config
from pathvqa.runtime import checkpoint
from pathvqa.training.grpo import GrpoTrainer

CHUNK = 16  # questions per rollout, as a step of the shipped tiny config


def flat_grad(params: list[torch.Tensor]) -> torch.Tensor:
    """The accumulated gradient as one vector; clears it."""
    vector = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
    for p in params:
        p.grad = None
    return vector


def sft_gradient(trainer: GrpoTrainer, samples: list, params: list[torch.Tensor]) -> torch.Tensor:
    for start in tqdm(range(0, len(samples), CHUNK), desc="SFT gradient", leave=False):
        batch = trainer.model_inputs(samples[start : start + CHUNK]).to(trainer.accelerator.device)
        summed, _ = trainer.family.loss(trainer.bundle, batch)
        summed.backward()
    return flat_grad(params)


def grpo_gradient(trainer: GrpoTrainer, samples: list, params: list[torch.Tensor], draw: int) -> torch.Tensor:
    """The stage's loss gradient over ``samples``, with the answer groups of step ``draw``."""
    trainer.pos.step = draw  # the groups are seeded by (run seed, step, question)
    for start in tqdm(range(0, len(samples), CHUNK), desc=f"GRPO gradient, draw {draw}", leave=False):
        rollout = trainer.rollout(samples[start : start + CHUNK])
        trainer.loss(rollout).numerator.backward()
    return flat_grad(params)


def measure(config: str, sets: list[str], questions: int, seed: int) -> dict[str, float]:
    cfg = load_config(config, sets)
    init = checkpoint.resolve(cfg.train.init_from)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = GrpoTrainer(cfg, Path(scratch) / "run", progress=False, init=init)
        trainer.setup()
        trainer.bundle.model.eval()
        params = [p for p in trainer.bundle.model.parameters() if p.requires_grad]
        order = torch.randperm(len(trainer.samples), generator=torch.Generator().manual_seed(seed))
        chosen = [trainer.samples[i] for i in order[:questions].tolist()]
        cos = torch.nn.functional.cosine_similarity
        sft = sft_gradient(trainer, chosen, params)
        a, b = (grpo_gradient(trainer, chosen, params, draw) for draw in (1, 2))
        trainer.close()
    return {
        "grpo_a_vs_grpo_b": float(cos(a, b, dim=0)),
        "grpo_vs_sft": float((cos(a, sft, dim=0) + cos(b, sft, dim=0)) / 2),
        "grpo_mean_of_draws_vs_sft": float(cos(a + b, sft, dim=0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="the SFT run or checkpoint a GRPO stage would start from")
    parser.add_argument("--config", default="configs/vlm_tiny_grpo.yaml", help="the GRPO stage's config")
    parser.add_argument("--set", action="append", default=[], dest="sets", help="key=value, as pathvqa train")
    parser.add_argument("--questions", type=int, default=256, help="training questions, a seeded sample")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    sets = [f"train.init_from={args.checkpoint}", *args.sets]
    figures = measure(args.config, sets, args.questions, args.seed)
    print(f"{args.checkpoint}, {args.questions} training questions ({args.config} {' '.join(args.sets)})")
    for name, value in figures.items():
        print(f"  cos {name.replace('_vs_', ' vs ').replace('_', ' ')}: {value:.3f}")


if __name__ == "__main__":
    main()
