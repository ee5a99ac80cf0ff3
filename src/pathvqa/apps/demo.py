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
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import typer
from tqdm.auto import tqdm

from pathvqa.analysis import ceiling, report
from pathvqa.config import load_config, packaged_config
from pathvqa.errors import PathVQAError
from pathvqa.evaluation.evaluate import run, run_baseline
from pathvqa.runs import RunDir, metrics_file
from pathvqa.runtime import checkpoint
from pathvqa.runtime.processes import all_cores, beside_trainings, threads_each
from pathvqa.scoring.metrics import compare, describe_difference, find_predictions, read_predictions
from pathvqa.synth import generator as synthetic

TRAINED = {"blip-tiny fine-tuned": "blip_tiny", "vlm-tiny (projector, 2 stages)": "vlm_tiny"}
GRPO = ("vlm-tiny 150 SFT steps + GRPO", "vlm_tiny_grpo")
SHORT_SFT = ("vlm-tiny, 150 SFT steps", "vlm_tiny_short")
"""``--with grpo``: a short vlm-tiny fine-tune (150 instruction steps instead of 10 epochs: yes/no answers
well below what the model reaches) and a GRPO stage started from it, compared with it. From the full
fine-tune GRPO adds nothing measurable (docs/study/grpo.md)."""
SHORT_SETS = ["stages.instruct.train.max_steps=150", "stages.instruct.train.eval_every=150"]
CONFIG_OF = {SHORT_SFT[1]: "vlm_tiny"}
"""Run folders trained from another folder's shipped config."""
SIZES = {"train": 8000, "validation": 500, "test": 1500}
PRIOR, ZERO_SHOT = "question-only prior", "blip-tiny zero-shot"
CEILING = "ceiling"
"""The demo's folder of what the pixels allow (``analysis.ceiling``): its predictions and metrics."""


def _stage(name: str) -> None:
    tqdm.write(typer.style(f"==> {name}", bold=True), file=sys.stderr)  # clear of any progress bar


def _reused_or(folder: Path, fresh: bool, stage: str, job: Callable[[], dict]) -> dict[str, Any]:
    """The metrics an earlier demo left in ``folder``, unless ``fresh``; else ``job``'s (which replaces what
    the folder holds: stale or fresh)."""
    metrics = metrics_file(folder)
    if metrics.is_file() and not fresh:
        return json.loads(metrics.read_text())
    _stage(stage)
    return job()


def _evaluated(folder: Path, fresh: bool, progress: bool = True, **kwargs) -> dict[str, Any]:
    job = partial(run, out=folder, progress=progress, overwrite=True, **kwargs)
    return _reused_or(folder, fresh, f"evaluate {folder}", job)


def run_demo(
    out: str | Path = "runs/demo",
    fresh: bool = False,
    overrides: list[str] | None = None,
    extra: list[str] | None = None,
) -> dict[str, dict]:
    """The study; ``extra``: more shipped configs to fine-tune and compare (``llava_tiny``, …), and
    ``grpo``: a 150-step vlm-tiny fine-tune and a GRPO stage from it."""
    out = Path(out)
    extra = list(extra or [])
    with_grpo = "grpo" in extra
    extra = [name for name in extra if name != "grpo"]
    data_dir = out / "data"
    if fresh and out.exists():
        if any(out.iterdir()) and not synthetic.holds_dataset(data_dir):
            raise PathVQAError(
                f"--fresh: {out} is not a demo folder (no demo data in {data_dir}), so it is not deleted: "
                "give a new --out, or empty it yourself"
            )
        shutil.rmtree(out)
    if not synthetic.holds_dataset(data_dir):
        _stage("PathVQA-shaped synthetic data (8,000 train / 500 validation / 1,500 test pairs, 96 px)")
        synthetic.write(data_dir, SIZES, size=96, seed=0)
    dataset = str(data_dir)
    sets = [f"data.dataset={dataset}", *(overrides or [])]
    trained = {**TRAINED, **{name.replace("_", "-"): name for name in extra}}
    for name in [*trained.values(), *([GRPO[1]] if with_grpo else [])]:
        load_config(packaged_config(name), sets)  # every config error before anything trains
    results = _train_and_evaluate(out, dataset, sets, trained, fresh)
    if with_grpo:
        results.update(_grpo_after_sft(out, sets, fresh))
        trained = {**trained, **dict([SHORT_SFT, GRPO])}
    _stage("report")
    specs = [
        f"question-only prior={out / 'prior'}",
        f"blip-tiny zero-shot={out / 'blip_tiny_zeroshot'}",
        *(f"{label}={out / name}" for label, name in trained.items()),
    ]
    title = "pathvqa demo: PathVQA-shaped synthetic pathology VQA"
    files = report.build(specs, out / "report", title=title, maps=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    typer.echo(files["md"].read_text().split("## Published")[0].strip())
    gains = _against_prior(out, trained)
    typer.echo("\n" + closed_table(results, gains))
    typer.echo(f"\nreport: {files['html']}")
    return results


def _grpo_after_sft(out: Path, sets: list[str], fresh: bool) -> dict[str, dict]:
    """The short fine-tune, then GRPO from it (every core each), both evaluated, and compared."""
    start = out / SHORT_SFT[1]
    _drop_if_started_elsewhere(out / GRPO[1], start)
    results = _fine_tune_and_evaluate(out, dict([SHORT_SFT]), [*sets, *SHORT_SETS], fresh)
    results |= _fine_tune_and_evaluate(out, dict([GRPO]), [*sets, f"train.init_from={start}"], fresh)
    sft = read_predictions(find_predictions(start))
    against = compare(sft, read_predictions(find_predictions(out / GRPO[1])))
    RunDir(out / GRPO[1]).comparison("sft").write_text(json.dumps(against, indent=2))
    typer.echo(f"\n{GRPO[0]} against {SHORT_SFT[0]} (B − A, paired 95% interval):", err=True)
    for key in ("closed_accuracy", "open_exact_match", "open_f1"):
        typer.echo("  " + describe_difference(key, against["metrics"][key]), err=True)
    return results


def _drop_if_started_elsewhere(run_dir: Path, start: Path) -> None:
    """A GRPO run left by an earlier demo that started it from another checkpoint (the full fine-tune,
    before the short one) is not this demo's: it is trained again."""
    saved = RunDir(run_dir).config
    if saved.is_file() and load_config(saved).train.init_from != str(start):
        _stage(f"{run_dir} started from another checkpoint: training it again")
        shutil.rmtree(run_dir)


def _against_prior(out: Path, trained: dict[str, str]) -> dict[str, dict]:
    """Each fine-tuned model against the question-only prior on the same questions (``pathvqa compare``);
    returns each one's paired closed-accuracy difference, by label."""
    prior = read_predictions(find_predictions(out / "prior"))
    gains = {}
    for label, name in trained.items():
        result = compare(prior, read_predictions(find_predictions(out / name)))
        RunDir(out / name).comparison("prior").write_text(json.dumps(result, indent=2))
        typer.echo(f"\n{label} against the question-only prior (B − A, paired 95% interval):")
        for key in ("closed_accuracy", "open_exact_match"):
            typer.echo("  " + describe_difference(key, result["metrics"][key]))
        gains[label] = result["metrics"]["closed_accuracy"]
    return gains


def closed_table(results: dict[str, dict], gains: dict[str, dict]) -> str:
    """The yes/no questions in one table: each model with images and blind, against the prior, and the
    pixel ceiling's line above them (``results``: the demo's metrics by label; ``gains``: closed − prior)."""
    ceiling_metrics = results.get(ceiling.LABEL)
    top = ceiling_metrics["closed_accuracy"] if ceiling_metrics else None
    lines = [
        "Yes/no questions: with images, blind (grey images), and what the pixels allow",
        "| model | closed accuracy | blind | closed − blind | closed − prior [95%] | below the ceiling |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for label, m in results.items():
        if label == ZERO_SHOT:  # an untrained model's yes/no answers say nothing here
            continue
        closed, blind = m.get("closed_accuracy"), m.get("blind_closed_accuracy")
        gain = gains.get(label) or m.get("closed_minus_prior")  # the ceiling carries its own
        cells = [
            _three(closed),
            _three(blind),
            f"{closed - blind:+.3f}" if blind is not None else "–",
            f"{gain['difference']:+.3f} [{gain['ci'][0]:+.3f}, {gain['ci'][1]:+.3f}]" if gain else "–",
            f"{top - closed:.3f}" if top is not None and m is not ceiling_metrics else "–",
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _three(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _pixel_ceiling(out: Path, dataset: str, fresh: bool, progress: bool = True) -> dict[str, Any]:
    """What the pixels allow on the test split's yes/no questions (reused from disk unless ``fresh``)."""
    folder = out / CEILING
    job = partial(
        ceiling.run, out=folder, dataset=dataset, prior=out / "prior", progress=progress, overwrite=True
    )
    return _reused_or(
        folder, fresh, "what the pixels allow: an attribute classifier on the training images", job
    )


def _train_and_evaluate(
    out: Path, dataset: str, sets: list[str], trained: dict[str, str], fresh: bool
) -> dict[str, dict]:
    """The prior, the zero-shot model, the fine-tunes and their evaluations. Evaluations run beside the
    fine-tunes as soon as one of them frees a core (a model's own as soon as it is trained)."""
    beside = _Beside()
    beside.add(
        PRIOR,
        lambda progress: run_baseline(out=out / "prior", dataset=dataset, overwrite=True),
    )
    zero_shot = {"config": str(packaged_config("blip_tiny")), "overrides": sets}
    beside.add(ZERO_SHOT, partial(_evaluated, out / "blip_tiny_zeroshot", fresh, **zero_shot))
    beside.add(ceiling.LABEL, partial(_pixel_ceiling, out, dataset, fresh))
    done = _fine_tune_and_evaluate(out, trained, sets, fresh, beside)
    order = [PRIOR, ZERO_SHOT, *trained, ceiling.LABEL]
    return {label: done[label] for label in order}


def _fine_tune_and_evaluate(
    out: Path, trained: dict[str, str], sets: list[str], fresh: bool, beside: _Beside | None = None
) -> dict[str, dict]:
    """Fine-tune ``trained`` (label → run folder) side by side and evaluate them; with ``beside``'s jobs."""
    beside = beside or _Beside()
    todo = {label: name for label, name in trained.items() if not RunDir(out / name).summary.is_file()}
    for label, name in trained.items():
        if label not in todo:  # trained by an earlier run: its evaluations are reused unless ``fresh``
            beside.add(label, partial(_evaluate_fine_tuned, out / name, fresh))
    _fine_tune_side_by_side(out, todo, sets, beside)
    return beside.finish()


class _Beside:
    """Jobs run in order on one worker thread: with one CPU thread while fine-tunes hold the other cores
    (``start``), with every core once they are done (``finish``). A job takes ``progress`` (bars only when
    no training bar is on screen)."""

    def __init__(self) -> None:
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="demo-eval")
        self.queued: list[tuple[str, Callable[..., dict]]] = []
        self.futures: dict[str, Future] = {}

    def add(self, label: str, job: Callable[..., dict]) -> None:
        self.queued.append((label, job))

    def start(self, progress: bool = False) -> None:
        for label, job in self.queued:
            self.futures[label] = self.pool.submit(job, progress=progress)
        self.queued.clear()

    def finish(self) -> dict[str, dict]:
        all_cores()
        self.start(progress=True)
        self.pool.shutdown(wait=True)
        return {label: future.result() for label, future in self.futures.items()}  # a job's error raises here


def _fine_tune_side_by_side(out: Path, todo: dict[str, str], sets: list[str], beside: _Beside) -> None:
    """Fine-tune the shipped configs ``todo`` (label → name; an interrupted one resumes) side by side, one
    process each sharing the CPU cores (``train.threads``: cores / models; what ``make test`` runs, so the
    demo's figures are the learning test's). A finished model's evaluation joins ``beside``, which starts
    once a core is free."""
    if not todo:
        return
    threads = threads_each(len(todo))
    _stage(
        f"fine-tune {', '.join(todo.values())} side by side ({threads} CPU thread{'s' * (threads > 1)} each)"
    )
    procs = {name: _launch(out, name, [*sets, f"train.threads={threads}"]) for name in todo.values()}
    bars = {
        name: tqdm(desc=f"train {name}", unit="step", position=i, dynamic_ncols=True)
        for i, name in enumerate(procs)
    }
    running = set(procs)
    while running:
        time.sleep(1)
        for name, bar in bars.items():
            bar.update(_steps_done(out / name) - bar.n)
        for label, name in todo.items():
            if name in running and procs[name].poll() is not None:
                running.discard(name)
                if procs[name].returncode == 0:
                    beside.add(label, partial(_evaluate_fine_tuned, out / name, True))
        if threads * len(running) < (os.cpu_count() or 1):  # a core is free: evaluations run there
            beside_trainings()
            beside.start()
    for bar in bars.values():
        bar.close()
    failed = [name for name, proc in procs.items() if proc.returncode != 0]
    if failed:
        tails = "; ".join(f"{n}: {_last_line(out / f'{n}.log')}" for n in failed)
        raise PathVQAError(f"fine-tuning failed ({tails}); logs in {out}/<name>.log, rerun to resume")


def _launch(out: Path, name: str, sets: list[str]) -> subprocess.Popen:
    run_dir = out / name
    resume = checkpoint.latest_valid(run_dir) is not None or any(run_dir.glob("*/checkpoints"))
    config = packaged_config(CONFIG_OF.get(name, name))
    command = [sys.executable, "-m", "pathvqa", "train", str(config), "--out", str(run_dir)]
    command += [arg for s in sets for arg in ("--set", s)] + (["--resume"] if resume else [])
    log = (out / f"{name}.log").open("w")  # a file, not a pipe: nothing can block
    return subprocess.Popen(command, stdout=log, stderr=log)


def _steps_done(run_dir: Path) -> int:
    """Optimizer steps logged so far, over all stages (each stage logs its own ``train.jsonl``)."""
    done = 0
    for log in RunDir(run_dir).train_logs():
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


def _evaluate_fine_tuned(run_dir: Path, stale: bool, progress: bool = True) -> dict[str, Any]:
    """A fine-tuned model evaluated with images and blind (reused from disk unless ``stale``)."""
    metrics = _evaluated(RunDir(run_dir).eval_dir(), stale, progress, checkpoint_dir=str(run_dir))
    blind = _evaluated(
        RunDir(run_dir).eval_dir(blind=True), stale, progress, checkpoint_dir=str(run_dir), blind=True
    )
    return {**metrics, "blind_closed_accuracy": blind["closed_accuracy"]}
