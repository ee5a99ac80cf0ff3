"""What a map of where the model looked costs (``pathvqa explain``, ``predict --explain``): the seconds of
``explain.maps_of`` (captum's forward and backward, the patch grids upsampled) against one forward and one
backward of the family's training loss, both from the same ready inputs, for one answer and for a batch of
eight; and the map end to end (``explain.answer_maps``: the images decoded and the inputs built as well).
blip-tiny and vlm-tiny as configured (random weights: the cost is the architecture's), on the
PathVQA-shaped set. A ratio at or under 1 means a map costs no more than a training step's forward and
backward.

    python benchmarks/explain_cost.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import image_once  # benchmarks/image_once.py, beside this script
import torch

from pathvqa.config import load_config
from pathvqa.data.prepare import load_split
from pathvqa.evaluation.explain import answer_inputs, answer_maps, maps_of
from pathvqa.models.registry import build

RECIPES = ("blip_tiny", "vlm_tiny")
THREADS = 2


def timed(work, repeats: int) -> float:
    """The median seconds of ``work()`` over ``repeats`` calls, after one warm-up call."""
    work()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def forward_backward(family, bundle, tensors):
    """One forward and one backward of the training loss (what a training step costs before the optimizer)."""

    def step():
        bundle.model.zero_grad(set_to_none=True)
        loss, _ = family.loss(bundle, tensors)
        loss.backward()

    return step


def measure(repeats: int = 7) -> dict:
    torch.set_num_threads(THREADS)
    samples = load_split(str(image_once.dataset()), "test", samples=8, seed=0, progress=False).samples
    out = {}
    for name in RECIPES:
        family, bundle = build(load_config(f"configs/{name}.yaml", ["stages=[]"]))
        bundle.model.eval()
        for n in (1, 8):
            batch = [replace(s, target=s.answer) for s in samples[:n]]
            answers = [s.answer for s in batch]
            targets, tensors = answer_inputs(family, bundle, batch, answers)
            mapped = timed(lambda f=family, m=bundle, b=targets, t=tensors: maps_of(f, m, b, t), repeats)
            whole = timed(lambda f=family, m=bundle, b=batch, a=answers: answer_maps(f, m, b, a), repeats)
            trained = timed(forward_backward(family, bundle, tensors), repeats)
            out[f"{name}_{n}"] = {"map_s": round(mapped, 4), "forward_backward_s": round(trained, 4),
                                  "ratio": round(mapped / trained, 2), "map_end_to_end_s": round(whole, 4)}  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    result = measure(parser.parse_args().repeats)
    print(f"{'':16}{'answers':>8}{'map ms':>10}{'fwd+bwd ms':>12}{'ratio':>8}{'end to end ms':>15}")
    for key, row in result.items():
        name, n = key.rsplit("_", 1)
        print(f"{name:16}{n:>8}{1000 * row['map_s']:>10.1f}{1000 * row['forward_backward_s']:>12.1f}"
              f"{row['ratio']:>8.2f}{1000 * row['map_end_to_end_s']:>15.1f}")  # fmt: skip
    print(json.dumps(result))


if __name__ == "__main__":
    main()
