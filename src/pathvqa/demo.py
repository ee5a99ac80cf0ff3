"""``pathvqa demo``: the offline study end to end on the synthetic set.

synthetic data → question-only prior → untrained blip-tiny ("zero-shot") → fine-tuned
blip-tiny → blind evaluation → results table. Finished stages are reused on a rerun (their
outputs are on disk) unless ``fresh``.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import typer

from pathvqa import checkpoint
from pathvqa.baseline import QuestionPrior
from pathvqa.config import load_config
from pathvqa.data import synthetic
from pathvqa.data.prepare import load_split
from pathvqa.evaluate import prior_baseline, run, write_predictions
from pathvqa.train import fit

COLUMNS = ("exact_match", "meteor", "bleu1", "f1", "closed_accuracy", "open_exact_match", "open_recall")


def _stage(name: str) -> None:
    typer.secho(f"==> {name}", bold=True, err=True)


def _evaluated(folder: Path, fresh: bool, **kwargs) -> dict[str, Any]:
    metrics = folder / "metrics.json"
    if metrics.is_file() and not fresh:
        return json.loads(metrics.read_text())
    return run(out=folder, **kwargs)


def run_demo(
    out: str | Path = "runs/demo",
    fresh: bool = False,
    config: str = "configs/blip_tiny.yaml",
    overrides: list[str] | None = None,
) -> dict[str, dict]:
    out = Path(out)
    if fresh and out.exists():
        shutil.rmtree(out)
    data_dir = out / "data"
    if not (data_dir / "synth.json").is_file():
        _stage("synthetic data (2,000 train / 200 validation / 400 test pairs, 96 px)")
        synthetic.write(data_dir, {"train": 2000, "validation": 200, "test": 400}, size=96, seed=0)
    dataset = str(data_dir)
    results: dict[str, dict] = {}

    _stage("question-only prior (majority answer per question)")
    train = load_split(dataset, "train", progress=False).samples
    test = load_split(dataset, "test", progress=False).samples
    prior_dir = out / "prior"
    write_predictions(QuestionPrior(train).predictions(test), prior_dir / "predictions.jsonl")
    results["question-only prior"] = prior_baseline(train, test)

    sets = [f"data.dataset={dataset}", *(overrides or [])]
    _stage("blip-tiny untrained (zero-shot)")
    results["blip-tiny zero-shot"] = _evaluated(
        out / "blip_tiny_zeroshot", fresh, config=config, overrides=sets
    )

    run_dir = out / "blip_tiny"
    if not (run_dir / "train_summary.json").is_file():  # unfinished (e.g. interrupted): resume it
        _stage("fine-tune blip-tiny")
        fit(load_config(config, sets), run_dir, resume=checkpoint.latest_valid(run_dir) is not None)
        fresh = True  # evaluations of an earlier, unfinished model are stale
    _stage("evaluate fine-tuned blip-tiny (normal and blind)")
    results["blip-tiny fine-tuned"] = _evaluated(run_dir / "eval", fresh, checkpoint_dir=str(run_dir))
    blind = _evaluated(run_dir / "eval_blind", fresh, checkpoint_dir=str(run_dir), blind=True)
    results["blip-tiny fine-tuned"]["blind_closed_accuracy"] = blind["closed_accuracy"]

    (out / "results.json").write_text(json.dumps(results, indent=2))
    typer.echo(table(results))
    return results


def table(results: dict[str, dict]) -> str:
    header = ["model", *COLUMNS, "blind_closed_accuracy", "n"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, m in results.items():
        cells = [
            f"{m[c]:.3f}" if isinstance(m.get(c), float) else "–" for c in (*COLUMNS, "blind_closed_accuracy")
        ]
        lines.append("| " + " | ".join([name, *cells, str(m.get("n", ""))]) + " |")
    return "\n".join(lines)
