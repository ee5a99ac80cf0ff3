"""What GRPO could gain on a checkpoint: its greedy answer against the best of G sampled answers.

GRPO raises the probability of the sampled answers that scored better than their group, so what it can
teach about a question is bounded by how often some sample beats the greedy answer (pass@G against
pass@1). This script measures that per question, closed and open apart, on any split: the greedy answers
as ``pathvqa eval`` gives them, and one group of G answers per question sampled as the GRPO stage samples
(the checkpoint's ``train.grpo`` decoding settings, ``--temperature`` aside):

    python scripts/grpo_headroom.py runs/demo/vlm_tiny --split train --questions 300
    python scripts/grpo_headroom.py runs/demo/vlm_tiny --split test --json

Scores are the strict protocol's: closed correct, open exact match and token F1. ``consensus`` is the answer
of the group and the greedy one that overlaps the group's answers most (mean token F1, minimum-Bayes-risk
decoding): what choosing better among the answers the model already gives would score, with nothing more
learned about the image.
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
from tqdm.auto import tqdm

from pathvqa import answers
from pathvqa.data.batches import ImagePipeline
from pathvqa.data.prepare import load_data_split
from pathvqa.models.generation import predict
from pathvqa.runtime.trained import load_trained
from pathvqa.scoring import strict
from pathvqa.training.grpo import sample_group, sampling_config

SCORES = {
    "closed": {"correct": answers.closed_correct},
    "open": {"em": answers.exact_match, "f1": strict.token_f1},
}


def consensus(candidates: list[str], group: list[str]) -> str:
    """The candidate with the highest mean token F1 against the group's answers (the first on a tie)."""
    return max(candidates, key=lambda c: statistics.fmean(strict.token_f1(c, other) for other in group))


def measure(checkpoint: str, split: str, questions: int, g: int, temperature: float, seed: int) -> dict:
    cfg, family, bundle, _ = load_trained(checkpoint)
    samples = load_data_split(cfg.data, split, questions, progress=False).samples
    pipeline = ImagePipeline(bundle.image_size)
    greedy = {
        row["id"]: row["prediction"] for row in predict(family, bundle, samples, cfg, pipeline=pipeline)
    }
    sampling = sampling_config(cfg, cfg.train.grpo.model_copy(update={"temperature": temperature}))
    rows: dict[str, list[dict[str, float]]] = {"closed": [], "open": []}
    for i, sample in enumerate(tqdm(samples, desc="sample groups", unit="question")):
        torch.manual_seed(seed + i)
        group = sample_group(family, bundle, pipeline, cfg.task, sample, g, sampling)
        row = {}
        choice = consensus([*group, greedy[sample.id]], group)
        for name, score in SCORES[sample.type].items():
            values = [score(a, sample.answer) for a in group]
            row |= {f"greedy_{name}": score(greedy[sample.id], sample.answer), f"best_of_{g}_{name}": max(values),
                    f"sampled_{name}": statistics.fmean(values),
                    f"consensus_{name}": score(choice, sample.answer)}  # fmt: skip
        first = next(iter(SCORES[sample.type]))
        row["greedy_wrong_a_sample_right"] = float(row[f"greedy_{first}"] < 1 <= row[f"best_of_{g}_{first}"])
        rows[sample.type].append(row)
    summary = {"checkpoint": checkpoint, "split": split, "generations": g, "temperature": temperature}
    for kind, kept in rows.items():
        if not kept:
            continue
        summary[kind] = {
            "n": len(kept),
            **{k: round(statistics.fmean(r[k] for r in kept), 4) for k in kept[0]},
        }
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="a run or checkpoint folder")
    parser.add_argument("--split", default="test")
    parser.add_argument("--questions", type=int, default=300, help="seeded sample of the split")
    parser.add_argument("--generations", type=int, default=8, help="G, the group size")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="one JSON line instead of the table")
    args = parser.parse_args()
    summary = measure(
        args.checkpoint, args.split, args.questions, args.generations, args.temperature, args.seed
    )
    if args.json:
        print(json.dumps(summary))
        return
    print(f"{args.checkpoint} — {args.split}, G = {args.generations}, temperature {args.temperature}")
    for kind in ("closed", "open"):
        if kind in summary:
            print(f"  {kind:6} " + "  ".join(f"{k} {v}" for k, v in summary[kind].items()))


if __name__ == "__main__":
    main()
