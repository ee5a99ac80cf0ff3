"""The study notes' "another lab's stain": blip-tiny and vlm-tiny trained as shipped, with HED stain
augmentation (``train.augment.stain``) and with Reinhard stain normalisation (``data.stain_normalize``), each
evaluated on the embedded set's test split (with the HED stress
at three strengths, ``eval --stain-shift``) and on its other-lab twin (``test_other_lab``), and each
model's drop from the test split to the other lab's paired question by question.

    python scripts/stain_study.py --out runs/stain [--strength 0.1]
    python scripts/docs.py --record-stain runs/stain     # docs/results/stain.json, then the study's table

The runs train two at a time, one thread each; a rerun skips what is trained and evaluated.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

RECIPES = {"blip-tiny": "blip_tiny", "vlm-tiny": "vlm_tiny"}
STRESS = "0.05,0.1,0.2"


ARMS = ("plain", "hed", "reinhard")
"""As shipped; with HED stain augmentation; with every image normalised to the training images' stain."""


def arms(strength: float, chosen: tuple[str, ...] = ARMS) -> dict[str, list[str]]:
    """Folder name → the ``--set`` overrides of that arm."""
    every = {
        "plain": [],
        "hed": [f"train.augment.stain={{method: hed, strength: {strength}}}"],
        "reinhard": ["data.stain_normalize={method: reinhard}"],
    }
    return {arm: every[arm] for arm in chosen}


def train_all(out: Path, data: Path, strength: float, chosen: tuple[str, ...]) -> None:
    from pathvqa.runs import RunDir

    for arm, sets in arms(strength, chosen).items():
        procs = []
        for name in RECIPES.values():
            if RunDir(out / f"{name}_{arm}").summary.is_file():
                continue  # trained before
            command = [sys.executable, "-m", "pathvqa", "train", f"configs/{name}.yaml", "--out", str(out / f"{name}_{arm}"),
                       "--set", f"data.dataset={data}", "--set", "train.threads=1", "--resume",
                       *(x for s in sets for x in ("--set", s))]  # fmt: skip
            log = (out / f"{name}_{arm}.log").open("w")
            procs.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))
        for proc in procs:
            if proc.wait() != 0:
                raise SystemExit(f"failed: {' '.join(proc.args)} (see its log)")


def evaluate_all(out: Path, strength: float, chosen: tuple[str, ...]) -> None:
    from pathvqa.evaluation.evaluate import run
    from pathvqa.scoring.metrics import compare, read_predictions

    for arm in arms(strength, chosen):
        for name in RECIPES.values():
            folder = out / f"{name}_{arm}"
            if (folder / "other_lab_drop.json").is_file():
                continue  # evaluated before
            run(out=folder / "eval", checkpoint_dir=folder, overwrite=True, progress=False,
                stain_shift=[float(s) for s in STRESS.split(",")])  # fmt: skip
            run(out=folder / "eval_other_lab", checkpoint_dir=folder, split="test_other_lab", overwrite=True,
                progress=False)  # fmt: skip
            rows = [read_predictions(folder / d / "predictions.jsonl") for d in ("eval", "eval_other_lab")]
            (folder / "other_lab_drop.json").write_text(json.dumps(compare(*rows), indent=1))
            print(f"{name} {arm}: done")


KEYS = ("closed_accuracy", "open_exact_match")


def per_question(folder: Path, name: str) -> dict:
    """The strict protocol's right/wrong per question (sorted by id) of an evaluation folder."""
    from pathvqa.scoring.metrics import compared_table, read_predictions

    rows = sorted(read_predictions(folder / name / "predictions.jsonl"), key=lambda r: r["id"])
    return compared_table(rows)


def summarise(out: Path, strength: float, chosen: tuple[str, ...]) -> dict:
    """Per model and arm: the headline scores on the test split, under each stress and on the other lab's
    split, the drop to the other lab (paired); per model: what augmentation changed (the drop's change,
    paired question by question, and the test split's change)."""
    from pathvqa.scoring.stats import paired_difference

    models = {}
    for label, name in RECIPES.items():
        arms_of = {}
        for arm in arms(strength, chosen):
            folder = out / f"{name}_{arm}"
            plain, other = (
                json.loads((folder / d / "metrics.json").read_text()) for d in ("eval", "eval_other_lab")
            )
            drop = json.loads((folder / "other_lab_drop.json").read_text())["metrics"]
            arms_of[arm] = {
                "test": {k: plain[k] for k in KEYS}, "test_ci": {k: plain[f"{k}_ci"] for k in KEYS},
                "other_lab": {k: other[k] for k in KEYS}, "other_lab_ci": {k: other[f"{k}_ci"] for k in KEYS},
                "drop": {k: {x: drop[k][x] for x in ("difference", "ci", "p")} for k in KEYS},
                "stress": plain["stain_shift"]["results"],
            }  # fmt: skip
        tables = {
            arm: {d: per_question(out / f"{name}_{arm}", d) for d in ("eval", "eval_other_lab")}
            for arm in arms_of
        }
        effect: dict[str, dict] = {}
        for arm in [a for a in arms_of if a != "plain"]:
            effect[arm] = {}
            for k in KEYS:
                loss = {a: tables[a]["eval_other_lab"][k] - tables[a]["eval"][k] for a in ("plain", arm)}
                effect[arm][k] = {
                    "drop_change": paired_difference(loss["plain"], loss[arm]),  # > 0: a smaller drop
                    "test_change": paired_difference(tables["plain"]["eval"][k], tables[arm]["eval"][k]),
                }
        models[label] = {"arms": arms_of, "against_shipped": effect}
    return {"strength": strength, "stress": STRESS, "models": models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/stain"))
    parser.add_argument("--strength", type=float, default=0.1, help="the HED augmentation's strength")
    parser.add_argument("--summary-only", action="store_true", help="summarise what is already evaluated")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    args = parser.parse_args()
    from pathvqa.apps.demo import SIZES
    from pathvqa.synth import generator as synthetic

    data = args.out / "data"
    if not synthetic.holds_dataset(data):
        synthetic.write(data, SIZES, size=96, seed=0, other_lab=True)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.summary_only:
        train_all(args.out, data, args.strength, tuple(args.arms))
        evaluate_all(args.out, args.strength, tuple(args.arms))
    summary = summarise(args.out, args.strength, tuple(args.arms))
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"summary: {args.out / 'summary.json'}")


if __name__ == "__main__":
    main()
