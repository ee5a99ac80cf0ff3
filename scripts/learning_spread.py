"""How much the tiny recipes' test scores move with the seed and the thread count: the numbers behind the
learning tests' thresholds (tests/test_recipes.py) and the README's spread table.

For each seed: a PathVQA-shaped set (``pathvqa synth`` defaults, that seed), the question-only prior on
its test split, then blip-tiny and vlm-tiny trained from scratch (``train.seed`` = the seed) with 1 thread
each side by side (what ``make test`` does) and/or 2 threads one after the other (what ``make demo``
does), each scored with images and blind, and compared with the prior on the same questions.

    python scripts/learning_spread.py --seeds 0 1 2 --threads 1 2 --out runs/spread
    python scripts/learning_spread.py --set data.group_by_image=false --out runs/spread-ungrouped
    python scripts/learning_spread.py --set blip_tiny:train.epochs=8 --out runs/spread-short
    python scripts/learning_spread.py --recipes llava_tiny --seeds 5 6 --threads 2 --out runs/spread-llava

``--set RECIPE:KEY=VALUE`` overrides one recipe's config only; ``--set KEY=VALUE`` both.

Appends one JSON line per trained model to OUT/spread.jsonl (a rerun skips what is there) and prints
the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

RECIPES = ["blip_tiny", "vlm_tiny"]
"""The recipes measured (``--recipes``: e.g. ``llava_tiny``)."""


def pathvqa(*args: str, log: Path | None = None) -> subprocess.Popen:
    out = log.open("w") if log else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "pathvqa", *map(str, args)], stdout=out, stderr=out)


def wait(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"failed: {' '.join(map(str, proc.args))}")


def overrides(recipe: str, sets: list[str]) -> list[str]:
    """``--set`` arguments for ``recipe``: plain overrides and those prefixed ``RECIPE:``."""
    mine = [s.split(":", 1)[1] if s.startswith(f"{recipe}:") else s for s in sets]
    return [a for s in mine if not s.startswith(tuple(f"{r}:" for r in RECIPES)) for a in ("--set", s)]


def measure(seed: int, threads: int, root: Path, sets: list[str]) -> list[dict]:
    from pathvqa.evaluation.evaluate import run, run_baseline
    from pathvqa.scoring.metrics import compare, find_predictions, read_predictions
    from pathvqa.synth import generator as synthetic

    data = root / f"data-{seed}"
    if not synthetic.holds_dataset(data):
        synthetic.write(data, {"train": 8000, "validation": 500, "test": 1500}, size=96, seed=seed)
    prior = run_baseline(out=root / f"prior-{seed}", dataset=str(data))
    runs = {name: root / f"{name}-s{seed}-t{threads}" for name in RECIPES}
    commands = [
        ["train", f"configs/{name}.yaml", "--out", folder, "--set", f"data.dataset={data}",
         "--set", f"train.threads={threads}", "--set", f"train.seed={seed}", *overrides(name, sets)]
        for name, folder in runs.items()
    ]  # fmt: skip
    if threads == 1:  # side by side, as make test trains them
        wait([pathvqa(*c, log=Path(f"{c[3]}.log")) for c in commands])
    else:
        for c in commands:
            wait([pathvqa(*c, log=Path(f"{c[3]}.log"))])
    rows = []
    for name, folder in runs.items():
        normal = run(out=folder / "eval", checkpoint_dir=str(folder), progress=False)
        blind = run(out=folder / "eval_blind", checkpoint_dir=str(folder), blind=True, progress=False)
        paired = compare(
            read_predictions(find_predictions(root / f"prior-{seed}")),
            read_predictions(folder / "eval" / "predictions.jsonl"),
        )
        rows.append(
            {
                "recipe": name, "seed": seed, "threads": threads,
                "closed_accuracy": normal["closed_accuracy"], "open_exact_match": normal["open_exact_match"],
                "open_exact_match_unseen": normal.get("open_exact_match_unseen"),
                "blind_closed_accuracy": blind["closed_accuracy"],
                "prior_closed_accuracy": prior["closed_accuracy"], "prior_open_exact_match": prior["open_exact_match"],
                "closed_minus_prior": paired["metrics"]["closed_accuracy"],
                "open_em_minus_prior": paired["metrics"]["open_exact_match"],
            }
        )  # fmt: skip
    return rows


def table(rows: list[dict]) -> None:
    keys = ("closed_accuracy", "open_exact_match", "blind_closed_accuracy", "prior_closed_accuracy")
    print(
        f"{'recipe':<10} {'seed':>4} {'thr':>3} "
        + " ".join(f"{k[:18]:>18}" for k in keys)
        + "  closed−prior [95%]   open EM−prior [95%]"
    )
    for r in rows:
        c, o = r["closed_minus_prior"], r["open_em_minus_prior"]
        print(
            f"{r['recipe']:<10} {r['seed']:>4} {r['threads']:>3} "
            + " ".join(f"{r[k]:>18.3f}" for k in keys)
            + f"  {c['difference']:+.3f} [{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]"
            + f"  {o['difference']:+.3f} [{o['ci'][0]:+.3f}, {o['ci'][1]:+.3f}]"
        )
    for recipe in RECIPES:
        mine = [r for r in rows if r["recipe"] == recipe]
        for key in ("closed_accuracy", "open_exact_match", "blind_closed_accuracy"):
            values = [r[key] for r in mine]
            if len(values) > 1:
                print(f"{recipe} {key}: mean {statistics.fmean(values):.3f}, min {min(values):.3f}, "
                      f"max {max(values):.3f}, sd {statistics.stdev(values):.3f} (n = {len(values)})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path("runs/spread"))
    parser.add_argument("--recipes", nargs="+", default=RECIPES, help="shipped configs to measure")
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], help="config override (repeatable)"
    )
    args = parser.parse_args()
    RECIPES[:] = args.recipes
    args.out.mkdir(parents=True, exist_ok=True)
    log = args.out / "spread.jsonl"
    done = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    for seed in args.seeds:
        for threads in args.threads:
            if any(r["seed"] == seed and r["threads"] == threads and r["recipe"] in RECIPES for r in done):
                continue
            rows = measure(seed, threads, args.out, args.sets)
            with log.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            done += rows
    table(
        [
            r
            for r in done
            if r["seed"] in args.seeds and r["threads"] in args.threads and r["recipe"] in RECIPES
        ]
    )


if __name__ == "__main__":
    main()
