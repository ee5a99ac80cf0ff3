"""``pathvqa`` commands that train, evaluate and plan runs: train, eval, export, sweep, plan, demo."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pathvqa.apps.cli_shared import (
    AbstainOpt,
    JsonOpt,
    OverwriteOpt,
    SetOpt,
    app,
    is_group,
    out_folder,
    setup_logging,
)
from pathvqa.errors import Interrupted, PathVQAError, require_checkpoint_folder


def stain_strengths(text: str | None) -> list[float] | None:
    """``--stain-shift 0.05,0.1`` → [0.05, 0.1]; a one-line error for anything but numbers ≥ 0."""
    if text is None:
        return None
    from pathvqa.data.stain import check_strengths

    try:
        strengths = [float(part) for part in text.replace(" ", ",").split(",") if part]
    except ValueError:
        raise PathVQAError(f"--stain-shift {text!r}: give strengths as numbers, e.g. 0.05,0.1") from None
    return check_strengths(strengths, f"--stain-shift {text}")


def _seeds(text: str | None) -> list[int] | None:
    """``--seeds 0,1,2`` → [0, 1, 2]; a malformed list is one line."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.replace(" ", ",").split(",") if part]
    except ValueError:
        raise PathVQAError(
            f"--seeds {text!r}: give whole numbers separated by commas (--seeds 0,1,2)"
        ) from None


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (see configs/).")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints/, logs/, config.yaml.")],
    overrides: SetOpt = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the last complete checkpoint in --out.")
    ] = False,
    seeds: Annotated[
        str | None,
        typer.Option(help="Train once per seed (train.seed), e.g. 0,1,2: a run group, --out/seed-K/ each."),
    ] = None,
) -> None:
    """Fine-tune a model (one training loop for every family; stages run in order)."""
    out_folder(out)
    from pathvqa.config import load_config

    cfg = load_config(config, overrides)  # every config error, before torch or a model loads
    seed_list = _seeds(seeds)
    from pathvqa.runtime.trackers import check_installed

    check_installed(cfg.train.report_to)
    from pathvqa.training.stages import fit, fit_seeds  # which check the model and the splits before any work

    setup_logging()
    try:
        result = fit_seeds(cfg, out, seed_list, resume=resume) if seed_list else fit(cfg, out, resume=resume)
    except Interrupted as err:  # typer turns Ctrl-C into a silent exit 130: say where it stopped
        typer.echo(str(err), err=True)
        raise typer.Exit(130) from None
    from accelerate import PartialState

    if PartialState().is_main_process:
        typer.echo(json.dumps(result))


def _print_metrics(result: dict, as_json: bool) -> None:
    """An evaluation's scores as ``score`` prints them (one JSON object with ``--json``); a run group's
    per seed."""
    from pathvqa.scoring.metrics import score_lines

    if as_json:
        typer.echo(json.dumps(result))
        return
    for seed, metrics in result.get("seeds", {None: result}).items():
        if seed is not None:
            typer.echo(f"seed {seed}:")
        typer.echo(
            f"{metrics.get('model', '')} on {metrics.get('dataset', '?')} [{metrics.get('split', '?')}]: {metrics.get('rows', '')}"
        )
        for line in score_lines(metrics):
            typer.echo(line)


@app.command("eval")
def eval_cmd(
    out: Annotated[Path, typer.Option(help="Folder for predictions.jsonl and metrics.json.")],
    config: Annotated[
        Path | None, typer.Option(help="Experiment YAML: evaluate the model as built (zero-shot).")
    ] = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Run folder or checkpoints/step-N folder.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset source (default: the config's).")] = None,
    split: Annotated[str | None, typer.Option(help="Split (default: the config's test split).")] = None,
    blind: Annotated[
        bool, typer.Option(help="Replace every image with a grey one (language-prior check).")
    ] = False,
    limit: Annotated[int | None, typer.Option(min=1, help="Evaluate a seeded sample of N questions.")] = None,
    overrides: SetOpt = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            help="question-prior: the majority training answer per question (no model); pixel-ceiling: what "
            "the pixels allow on the embedded set's yes/no questions (an attribute classifier, not a VQA model)."
        ),
    ] = None,
    dedupe: Annotated[
        bool, typer.Option(help="Drop repeated (image, question, answer) rows of the split.")
    ] = False,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
    calibrate: Annotated[
        bool | None,
        typer.Option(
            "--calibrate/--no-calibrate",
            help="Fit a temperature for the confidences on the validation split (default: when there is one).",
        ),
    ] = None,
    abstain_below: AbstainOpt = None,
    stain_shift: Annotated[
        str | None,
        typer.Option(
            help="Also answer the split with its images' stain shifted in HED space at these strengths "
            "(e.g. 0.05,0.1): scores per strength, paired with the unshifted ones."
        ),
    ] = None,
) -> None:
    """Generate answers for a split and score them (every readable row counts, as in published numbers;
    rows that cannot be read are listed with their reasons). A run group (``train --seeds``): each seed
    into --out/seed-K/."""
    out_folder(out)
    from pathvqa.scoring.confidence import check_threshold

    check_threshold(abstain_below)
    strengths = stain_strengths(stain_shift)
    if checkpoint is not None:  # argument mistakes are said before torch loads (seconds)
        require_checkpoint_folder(checkpoint)
    elif config is not None:
        from pathvqa.config import load_config

        load_config(config, overrides)
    from pathvqa.evaluation.evaluate import run

    if baseline is not None:
        if config or checkpoint or not dataset:
            raise PathVQAError("--baseline takes --dataset (and --split), not --config or --checkpoint")
        result = _baseline(out, dataset, split or "test", dedupe, baseline, overwrite)
        _print_metrics(result, as_json)
        return

    setup_logging()
    options = dict(
        out=out, dataset=dataset, split=split, blind=blind, limit=limit, overrides=overrides, dedupe=dedupe,
        overwrite=overwrite, calibrate=calibrate, abstain_below=abstain_below, stain_shift=strengths,
    )  # fmt: skip
    if checkpoint is not None and is_group(checkpoint):
        from pathvqa.evaluation.evaluate import run_group

        _print_metrics(run_group(checkpoint_dir=checkpoint, **options), as_json)
        return
    result = run(config=str(config) if config else None, checkpoint_dir=checkpoint, **options)
    if result:
        _print_metrics(result, as_json)


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Option(help="Run folder or checkpoints/step-N folder.")],
    out: Annotated[Path, typer.Option(help="Output folder (save_pretrained layout + README.md model card).")],
    merge: Annotated[bool, typer.Option(help="Merge LoRA adapters into the base weights.")] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Export a checkpoint for plain transformers / peft (into a new or empty folder)."""
    out_folder(out)
    require_checkpoint_folder(checkpoint)
    from pathvqa.apps.export import check_export
    from pathvqa.apps.export import export as run_export

    trained = check_export(checkpoint, out, merge, overwrite)  # resolved once, checked before torch loads
    typer.echo(f"exported to {run_export(trained, out, merge, overwrite)}")


@app.command()
def sweep(
    target: Annotated[
        Path, typer.Argument(help="Sweep spec YAML (configs/sweeps/), or a sweep folder with --status.")
    ],
    out: Annotated[Path | None, typer.Option(help="Sweep folder: trial-NNN run folders, sweep.db.")] = None,
    trials: Annotated[
        int | None, typer.Option(min=1, help="Finished trials the study should hold (default: the spec's).")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(help="Optuna storage URL shared by workers (default sqlite:///OUT/sweep.db)."),
    ] = None,
    status: Annotated[
        bool, typer.Option("--status", help="Show the trials and the best; run nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --status: one JSON object.")] = False,
) -> None:
    """Search hyper-parameters with Optuna; every machine runs the same command to add a worker."""
    from pathvqa.sweeps import study as sweeps

    if status:
        result = sweeps.status(target, out, storage)
        typer.echo(json.dumps(result, indent=1) if as_json else sweeps.status_table(result))
        return
    if out is None:
        raise PathVQAError("sweep: give --out DIR (the sweep folder; every worker names the same one)")
    out_folder(out)
    setup_logging()
    result = sweeps.run_sweep(target, out, trials=trials, storage=storage)
    typer.echo(sweeps.status_table(sweeps.status(out, storage=storage)))
    typer.echo(json.dumps(result))


@app.command()
def plan(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (see configs/).")],
    overrides: SetOpt = None,
    gpu_gb: Annotated[float, typer.Option(min=1, help="GPU memory to plan for, in GB.")] = 16.0,
    as_json: JsonOpt = False,
) -> None:
    """Parameters per part and estimated GPU memory per stage, from the hub config (no weights)."""
    from pathvqa.config import load_config

    cfg = load_config(config, overrides)
    from pathvqa.analysis.plan import plan as make_plan
    from pathvqa.analysis.plan import plan_table

    result = make_plan(cfg, gpu_gb)
    typer.echo(json.dumps(result, indent=1) if as_json else "\n".join(plan_table(result)))


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Demo folder (data, runs, results).")] = Path("runs/demo"),
    fresh: Annotated[bool, typer.Option(help="Start over instead of reusing finished stages.")] = False,
    overrides: SetOpt = None,
    with_config: Annotated[
        list[str] | None,
        typer.Option(
            "--with",
            help="Also fine-tune and compare a shipped config (llava_tiny, …; repeatable); grpo: a "
            "150-step vlm-tiny fine-tune and a GRPO stage from it.",
        ),
    ] = None,
) -> None:
    """The offline study end to end on the synthetic set: baselines, blip-tiny, vlm-tiny, report."""
    out_folder(out)
    from pathvqa.apps.demo import run_demo

    setup_logging()
    run_demo(out, fresh=fresh, overrides=overrides, extra=with_config)


def _baseline(out: str, dataset: str, split: str, dedupe: bool, name: str, overwrite: bool) -> dict:
    """A baseline's evaluation: the question-only prior, or the pixel ceiling (``analysis.ceiling``)."""
    from pathvqa.analysis import ceiling
    from pathvqa.evaluation.evaluate import BASELINES, run_baseline

    if name not in (*BASELINES, ceiling.NAME):
        raise PathVQAError(f"unknown baseline {name!r} (have {', '.join((*BASELINES, ceiling.NAME))})")
    if name != ceiling.NAME:
        return run_baseline(
            out=out, dataset=dataset, split=split, dedupe=dedupe, name=name, overwrite=overwrite
        )
    if dedupe:
        raise PathVQAError("--baseline pixel-ceiling answers every row of the split: leave out --dedupe")
    return ceiling.run(out=out, dataset=dataset, split=split, progress=True, overwrite=overwrite)
