"""``pathvqa demo``: the offline study end to end on the PathVQA-shaped synthetic set, with a report.

synthetic data (``pathvqa synth`` defaults: 8,000 training pairs as the earlier work sampled, 500
validation, 1,500 test) → question-only prior → untrained blip-tiny ("zero-shot") → fine-tuned
blip-tiny → vlm-tiny (projector alignment, then instruction tuning) → blind evaluations → paired
comparisons of each fine-tuned model with the prior → report (``runs/demo/report/``). The fine-tunes
run side by side, one process each (``runs/demo/<name>.log``), as ``make test``'s learning test runs
them. Finished stages are reused on a rerun (their outputs are on disk) unless ``fresh``; an interrupted
fine-tune resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer
from tqdm.auto import tqdm

from pathvqa import checkpoint, report
from pathvqa.config import load_config, packaged_config
from pathvqa.data import synthetic
from pathvqa.errors import PathVQAError
from pathvqa.evaluate import run, run_baseline
from pathvqa.metrics import compare, describe_difference, find_predictions, read_predictions

TRAINED = {"blip-tiny fine-tuned": "blip_tiny", "vlm-tiny (projector, 2 stages)": "vlm_tiny"}
SIZES = {"train": 8000, "validation": 500, "test": 1500}


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
    overrides: list[str] | None = None,
    extra: list[str] | None = None,
) -> dict[str, dict]:
    """The study; ``extra``: more shipped configs to fine-tune and compare (``llava_tiny``, …)."""
    out = Path(out)
    if fresh and out.exists():
        shutil.rmtree(out)
    data_dir = out / "data"
    if not (data_dir / "synth.json").is_file():
        _stage("PathVQA-shaped synthetic data (8,000 train / 500 validation / 1,500 test pairs, 96 px)")
        synthetic.write(data_dir, SIZES, size=96, seed=0)
    dataset = str(data_dir)
    sets = [f"data.dataset={dataset}", *(overrides or [])]
    trained = {**TRAINED, **{name.replace("_", "-"): name for name in extra or []}}
    for name in trained.values():
        load_config(packaged_config(name), sets)  # every config error before anything trains
    results: dict[str, dict] = {}

    _stage("question-only prior (majority answer per question)")
    results["question-only prior"] = run_baseline(out=out / "prior", dataset=dataset)

    _stage("blip-tiny untrained (zero-shot)")
    results["blip-tiny zero-shot"] = _evaluated(
        out / "blip_tiny_zeroshot", fresh, config=str(packaged_config("blip_tiny")), overrides=sets
    )
    stale = _fine_tune_side_by_side(out, list(trained.values()), sets)
    for label, name in trained.items():
        results[label] = _evaluate_fine_tuned(out / name, fresh or name in stale)

    _stage("report")
    specs = [
        f"question-only prior={out / 'prior'}",
        f"blip-tiny zero-shot={out / 'blip_tiny_zeroshot'}",
        *(f"{label}={out / name}" for label, name in trained.items()),
    ]
    files = report.build(specs, out / "report", title="pathvqa demo: PathVQA-shaped synthetic pathology VQA")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    typer.echo(files["md"].read_text().split("## Published")[0].strip())
    _against_prior(out, trained)
    typer.echo(f"\nreport: {files['html']}")
    return results


def _against_prior(out: Path, trained: dict[str, str]) -> None:
    """Each fine-tuned model against the question-only prior on the same questions (``pathvqa compare``)."""
    prior = read_predictions(find_predictions(out / "prior"))
    for label, name in trained.items():
        result = compare(prior, read_predictions(find_predictions(out / name)))
        (out / name / "vs_prior.json").write_text(json.dumps(result, indent=2))
        typer.echo(f"\n{label} against the question-only prior (B − A, paired 95% interval):")
        for key in ("closed_accuracy", "open_exact_match"):
            typer.echo("  " + describe_difference(key, result["metrics"][key]))


def _fine_tune_side_by_side(out: Path, names: list[str], sets: list[str]) -> set[str]:
    """Fine-tune the shipped configs not finished yet (an interrupted one resumes), side by side, one
    process each sharing the CPU cores (``train.threads``: cores / models; what ``make test`` runs, so the
    demo's figures are the learning test's). Returns the names trained now (their evaluations are stale)."""
    todo = [name for name in names if not (out / name / "train_summary.json").is_file()]
    if not todo:
        return set()
    threads = max(1, (os.cpu_count() or 1) // len(todo))
    _stage(f"fine-tune {', '.join(todo)} side by side ({threads} CPU thread{'s' * (threads > 1)} each)")
    procs = {name: _launch(out, name, [*sets, f"train.threads={threads}"]) for name in todo}
    bars = {
        name: tqdm(desc=f"train {name}", unit="step", position=i, dynamic_ncols=True)
        for i, name in enumerate(todo)
    }
    while any(proc.poll() is None for proc in procs.values()):
        time.sleep(1)
        for name, bar in bars.items():
            bar.update(_steps_done(out / name) - bar.n)
    for bar in bars.values():
        bar.close()
    failed = [name for name, proc in procs.items() if proc.returncode != 0]
    if failed:
        tails = "; ".join(f"{n}: {_last_line(out / f'{n}.log')}" for n in failed)
        raise PathVQAError(f"fine-tuning failed ({tails}); logs in {out}/<name>.log, rerun to resume")
    return set(todo)


def _launch(out: Path, name: str, sets: list[str]) -> subprocess.Popen:
    run_dir = out / name
    resume = checkpoint.latest_valid(run_dir) is not None or any(run_dir.glob("*/checkpoints"))
    command = [sys.executable, "-m", "pathvqa", "train", str(packaged_config(name)), "--out", str(run_dir)]
    command += [arg for s in sets for arg in ("--set", s)] + (["--resume"] if resume else [])
    log = (out / f"{name}.log").open("w")  # a file, not a pipe: nothing can block
    return subprocess.Popen(command, stdout=log, stderr=log)


def _steps_done(run_dir: Path) -> int:
    """Optimizer steps logged so far, over all stages (each stage logs its own ``train.jsonl``)."""
    done = 0
    for log in run_dir.glob("**/logs/train.jsonl"):
        with log.open("rb") as f:  # polled every second: read the end of the log, not all of it
            start = max(0, log.stat().st_size - 4096)
            f.seek(start)
            lines = f.read().decode(errors="replace").splitlines()[1 if start else 0 :]  # a cut first line
        steps = [json.loads(line).get("step", 0) for line in lines[-3:] if line.strip().endswith("}")]
        done += max(steps, default=0)
    return done


def _last_line(path: Path) -> str:
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][-300:] if lines else "no output"


def _evaluate_fine_tuned(run_dir: Path, stale: bool) -> dict[str, Any]:
    """A fine-tuned model evaluated with images and blind (reused from disk unless ``stale``)."""
    name = run_dir.name
    _stage(f"evaluate {name} (normal and blind)")
    metrics = _evaluated(run_dir / "eval", stale, checkpoint_dir=str(run_dir))
    blind = _evaluated(run_dir / "eval_blind", stale, checkpoint_dir=str(run_dir), blind=True)
    return {**metrics, "blind_closed_accuracy": blind["closed_accuracy"]}
