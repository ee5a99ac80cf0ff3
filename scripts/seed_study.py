"""The study notes' recipe comparison over training seeds: blip-tiny and vlm-tiny each trained at three seeds
(``pathvqa train --seeds``) on the demo's PathVQA-shaped set, each seed evaluated, and one report that
shows every score as mean ± sd over the seeds and pairs the recipes (and each with the question-only
prior) by a bootstrap over seeds and questions, with Holm's adjustment.

    python scripts/seed_study.py --out runs/seeds [--seeds 0 1 2]
    python scripts/docs.py --record-seeds runs/seeds     # docs/results/seeds.json, then the study notes' table

The two recipes train side by side, one thread each (a rerun resumes what is there).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

RECIPES = {"blip-tiny": "blip_tiny", "vlm-tiny": "vlm_tiny"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/seeds"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    from pathvqa.analysis.report import build
    from pathvqa.apps.demo import SIZES
    from pathvqa.evaluation.evaluate import run_baseline, run_group
    from pathvqa.synth import generator as synthetic

    data = args.out / "data"
    if not synthetic.holds_dataset(data):
        synthetic.write(data, SIZES, size=96, seed=0)
    seeds = ",".join(map(str, args.seeds))
    procs = []
    for name in RECIPES.values():
        command = [sys.executable, "-m", "pathvqa", "train", f"configs/{name}.yaml", "--out", str(args.out / name),
                   "--seeds", seeds, "--set", f"data.dataset={data}", "--set", "train.threads=1", "--resume"]  # fmt: skip
        procs.append(
            subprocess.Popen(command, stdout=(args.out / f"{name}.log").open("w"), stderr=subprocess.STDOUT)
        )
    for proc in procs:
        if proc.wait() != 0:
            raise SystemExit(f"failed: {' '.join(proc.args)} (see its log)")
    run_baseline(out=args.out / "prior", dataset=str(data), overwrite=True)
    for name in RECIPES.values():
        run_group(
            out=args.out / name / "eval", checkpoint_dir=args.out / name, overwrite=True, progress=False
        )
    specs = [
        f"question-only prior={args.out / 'prior'}",
        *(f"{label}={args.out / n}" for label, n in RECIPES.items()),
    ]
    files = build(specs, args.out / "report", title="pathvqa: blip-tiny and vlm-tiny over training seeds")
    print(files["md"].read_text().split("### ")[0])


if __name__ == "__main__":
    main()
