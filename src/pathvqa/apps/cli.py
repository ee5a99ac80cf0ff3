"""The ``pathvqa`` command line: parse arguments, then call one library function per command."""

from __future__ import annotations

import errno
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from pathvqa.config import MAX_PIXELS
from pathvqa.errors import Interrupted, PathVQAError, require_checkpoint_folder
from pathvqa.scoring.protocol import default, registry

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fine-tune and evaluate vision-language models on pathology VQA (PathVQA).",
)


def _version(shown: bool) -> None:
    if shown:
        from importlib.metadata import version

        typer.echo(f"pathvqa {version('pathvqa')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Fine-tune and evaluate vision-language models on pathology VQA (PathVQA)."""


DatasetOpt = Annotated[
    str, typer.Option("--dataset", help="Hub id, dataset folder, or JSONL + images folder.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def out_folder(path: Path) -> Path:
    """An ``--out`` folder, checked before any work: writable, not a file and not under one (it is created
    when missing; a file of that name is never overwritten)."""
    from pathvqa.destinations import check_destination

    return check_destination(path)


OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace what --out already holds (refused otherwise).")
]


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Output folder (hub layout: OUT/data/{split}-*.parquet).")],
    train: Annotated[
        int, typer.Option(min=0, help="Training pairs (the earlier work sampled 8,000).")
    ] = 8000,
    validation: Annotated[int, typer.Option(min=0, help="Validation pairs.")] = 500,
    test: Annotated[int, typer.Option(min=0, help="Test pairs.")] = 1500,
    style: Annotated[
        str,
        typer.Option(help="pathvqa (PathVQA's shape, the default) or simple (small, balanced: smoke tests)."),
    ] = "pathvqa",
    image_size: Annotated[int, typer.Option(min=16, max=1024, help="Tile size in pixels.")] = 96,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    preview: Annotated[Path | None, typer.Option(help="Also write a labelled grid of samples (PNG).")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Generate the synthetic pathology VQA set (the offline default dataset)."""
    out_folder(out)
    from pathvqa.synth import generator as synthetic

    if style not in synthetic.STYLES:
        raise PathVQAError(f"--style {style!r}: use {' or '.join(synthetic.STYLES)}")
    if synthetic.holds_dataset(out) and not overwrite:
        raise PathVQAError(
            f"--out {out} already holds a dataset: give a new folder, or --overwrite to replace it"
        )
    if preview is not None:
        out_folder(preview.parent)
    summary = synthetic.write(
        out, {"train": train, "validation": validation, "test": test}, image_size, seed, style=style
    )
    if preview is not None:
        from pathvqa.data.preview import preview as write_preview

        rows = synthetic.generate_split("test", 64, image_size, seed, progress=False, style=style)
        write_preview(rows, preview, images=8)
    parts = [f"{s} {v['pairs']} pairs/{v['images']} images" for s, v in summary["splits"].items()]
    typer.echo(f"wrote {out} ({style} style): {', '.join(parts)}")
    if train and test:
        from pathvqa.analysis.dataset import shape_figures, shape_table
        from pathvqa.data.prepare import load_split

        splits = [load_split(str(out), s, progress=False, dedupe=False).samples for s in ("train", "test")]
        typer.echo("shape (pathvqa data-stats prints it for any dataset):")
        for line in shape_table(shape_figures(*splits), "pathvqa"):
            typer.echo(line)


@app.command("data-stats")
def data_stats(
    dataset: DatasetOpt,
    split: Annotated[str, typer.Option(help="Split to read.")] = "train",
    max_pixels: Annotated[int, typer.Option(help="Skip images larger than this many pixels.")] = MAX_PIXELS,
    reference: Annotated[
        str,
        typer.Option(help="Shape figures to print beside the dataset's: pathvqa (the official set) or none."),
    ] = "pathvqa",
    as_json: JsonOpt = False,
    overrides: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="How the dataset reads, as train takes it: --set data.columns.image=img_name."
        ),
    ] = None,
) -> None:
    """A split's statistics (rows kept/skipped by reason, duplicates, yes/no share, answer vocabulary), across
    the dataset's splits leakage, unseen test answers and the question-only prior, and the dataset's shape
    figures (long tail, unseen answers, question wording, prior) beside the official PathVQA's."""
    from pathvqa.analysis.dataset import REFERENCES, dataset_stats, shape_table, stats_lines

    if reference not in (*REFERENCES, "none"):
        raise PathVQAError(f"--reference {reference!r}: use {', '.join(REFERENCES)} or none")
    if max_pixels < 1:
        raise PathVQAError(f"--max-pixels {max_pixels}: give a positive number of pixels")
    source = dataset
    if overrides:  # data.* keys as a config takes them, on this dataset
        from pathvqa.config import load_config
        from pathvqa.data.prepare import spec_of

        wrong = [o for o in overrides if not o.startswith("data.")]
        if wrong:
            raise PathVQAError(f"--set {wrong[0]}: data-stats takes data.* keys (how the dataset reads)")
        source = spec_of(load_config(None, [f"data.dataset={dataset}", *overrides]).data)
    stats = dataset_stats(source, split, max_pixels=max_pixels)
    if as_json:
        if reference != "none":
            stats["reference"] = {"name": reference, "shape": REFERENCES[reference]}
        typer.echo(json.dumps(stats))
        return
    for line in stats_lines(dataset, split, stats):
        typer.echo(line)
    if "shape" in stats:
        typer.echo("shape (train; test for the test figures):")
        for line in shape_table(stats["shape"], None if reference == "none" else reference):
            typer.echo(line)


PROTOCOL_HELP = "; ".join(f"{p.name}: {p.summary}" for p in registry().values()) + "."


@app.command()
def score(
    predictions: Annotated[Path, typer.Argument(help="predictions.jsonl (rows with answer and prediction).")],
    protocol: Annotated[str, typer.Option(help=PROTOCOL_HELP)] = default(),
    as_json: JsonOpt = False,
) -> None:
    """Score a predictions file: the metric suite with 95% bootstrap intervals."""
    from pathvqa.scoring import metrics
    from pathvqa.scoring.protocol import get

    get(protocol)  # an unknown protocol stops before any scoring
    shown = metrics.protocol_scores(metrics.score_file(predictions), protocol)
    if as_json:
        typer.echo(json.dumps(shown))
        return
    for line in metrics.score_lines(shown):
        typer.echo(line)


@app.command()
def compare(
    run_a: Annotated[Path, typer.Argument(help="Evaluated run, eval folder or predictions.jsonl (A).")],
    run_b: Annotated[
        Path, typer.Argument(help="The same for B: compared with A on the questions both answered.")
    ],
    as_json: JsonOpt = False,
    coverage: Annotated[
        float | None,
        typer.Option(
            help="Compare selective accuracy at this coverage (the most confident share answered; default 0.5) "
            "beside AURC: needs both runs' confidences."
        ),
    ] = None,
) -> None:
    """B against A on the same questions: paired differences with 95% intervals, a test for each (McNemar's
    exact test for right/wrong scores, a paired permutation test for graded ones) and Holm's adjustment;
    when both runs' answers carry confidences, their AURC and selective accuracy, paired."""
    from pathvqa.scoring.metrics import compare as compare_runs
    from pathvqa.scoring.metrics import compare_seeds, describe_difference, find_predictions, read_predictions

    if any(p.is_dir() and is_group(p) for p in (run_a, run_b)):  # a run group: seeds and questions vary
        from pathvqa.analysis.results import load_run

        result = compare_seeds(*(load_run(str(p)).seed_predictions() for p in (run_a, run_b)))
    else:
        result = compare_runs(*(read_predictions(find_predictions(p)) for p in (run_a, run_b)), coverage)
    if as_json:
        typer.echo(json.dumps(result))
        return
    seeds = f" × {result['seeds'][0]} and {result['seeds'][1]} seeds" if "seeds" in result else ""
    typer.echo(f"A = {run_a}\nB = {run_b}\n{result['n']} questions in common{seeds}")
    if any(result.get("left_out", {}).values()):
        out = result["left_out"]
        typer.echo(f"  left out: {out['a']} rows of A and {out['b']} rows of B that the other did not answer")
    for key, entry in result["metrics"].items():
        typer.echo("  " + describe_difference(key, entry))
    chosen = result.get("selective")
    if isinstance(chosen, dict):
        typer.echo(
            f"selective prediction (most confident first; accuracy at {chosen['coverage']:g} coverage):"
        )
        for kind in ("closed", "open"):
            for key, entry in chosen.get(kind, {}).items():
                typer.echo("  " + describe_difference(f"{kind} {key}", entry))
    elif chosen is not None:
        typer.echo("selective prediction: n/a (a side's predictions carry no confidences)")


SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config key: --set train.lr=1e-4 (repeatable).")
]


def _setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "huggingface_hub", "datasets", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


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

    _setup_logging()
    try:
        result = fit_seeds(cfg, out, seed_list, resume=resume) if seed_list else fit(cfg, out, resume=resume)
    except Interrupted as err:  # typer turns Ctrl-C into a silent exit 130: say where it stopped
        typer.echo(str(err), err=True)
        raise typer.Exit(130) from None
    from accelerate import PartialState

    if PartialState().is_main_process:
        typer.echo(json.dumps(result))


def is_group(folder: Path) -> bool:
    """A run group (``train --seeds``): seed-K folders, no config of its own."""
    from pathvqa.runs import RunDir

    return bool(RunDir(folder).seeds()) and not RunDir(folder).config.is_file()


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


AbstainOpt = Annotated[
    float | None,
    typer.Option(help="Mark answers less sure than this (a confidence in (0, 1)) as abstained: 'not sure'."),
]


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
        str | None, typer.Option(help="question-prior: the majority training answer per question (no model).")
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
) -> None:
    """Generate answers for a split and score them (every readable row counts, as in published numbers;
    rows that cannot be read are listed with their reasons). A run group (``train --seeds``): each seed
    into --out/seed-K/."""
    out_folder(out)
    from pathvqa.scoring.confidence import check_threshold

    check_threshold(abstain_below)
    if checkpoint is not None:  # argument mistakes are said before torch loads (seconds)
        require_checkpoint_folder(checkpoint)
    elif config is not None:
        from pathvqa.config import load_config

        load_config(config, overrides)
    from pathvqa.evaluation.evaluate import run, run_baseline

    if baseline is not None:
        if config or checkpoint or not dataset:
            raise PathVQAError("--baseline takes --dataset (and --split), not --config or --checkpoint")
        result = run_baseline(
            out=out, dataset=dataset, split=split or "test", dedupe=dedupe, name=baseline, overwrite=overwrite
        )
        _print_metrics(result, as_json)
        return

    _setup_logging()
    options = dict(
        out=out, dataset=dataset, split=split, blind=blind, limit=limit, overrides=overrides, dedupe=dedupe,
        overwrite=overwrite, calibrate=calibrate, abstain_below=abstain_below,
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


@app.command("report")
def report_cmd(
    runs: Annotated[
        list[str], typer.Argument(help="Evaluated run folders, optionally labelled: 'LABEL=FOLDER'.")
    ],
    out: Annotated[Path, typer.Option(help="Report folder.")],
    title: Annotated[str, typer.Option(help="Report title.")] = "pathvqa results",
    allow_mixed: Annotated[
        bool, typer.Option(help="Report runs evaluated on different datasets or splits together (warned).")
    ] = False,
    no_references: Annotated[
        bool,
        typer.Option(
            "--no-references", help="Leave out published PathVQA numbers (shown only on its test split)."
        ),
    ] = False,
) -> None:
    """Tables (md/csv/json/LaTeX), gallery, curves (PNG, PDF, SVG) and one self-contained HTML page from run
    folders (a run group: mean ± sd over its seeds)."""
    out_folder(out)
    from pathvqa.analysis.report import build

    files = build(runs, out, title=title, allow_mixed=allow_mixed, references=not no_references)
    typer.echo(f"wrote {', '.join(str(p) for p in files.values())}")


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
    _setup_logging()
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

    _setup_logging()
    run_demo(out, fresh=fresh, overrides=overrides, extra=with_config)


def image_questions(argv: list[str]) -> list[tuple[Path, list[str]]]:
    """``--image A --question q1 --question q2 --image B --question q3`` → [(A, [q1, q2]), (B, [q3])]:
    each ``--question`` belongs to the ``--image`` before it; one before any ``--image`` is refused."""
    pairs: list[tuple[Path, list[str]]] = []
    loose: list[str] = []
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if name not in ("--image", "--question"):
            continue
        value = value if eq else next(args, "")
        if name == "--image":
            pairs.append((Path(value), []))
        elif pairs:
            pairs[-1][1].append(value)
        else:
            loose.append(value)
    if loose:
        raise PathVQAError("give each --question after the --image it is about (--image A --question q)")
    return pairs


@app.command()
def predict(
    checkpoint: Annotated[Path, typer.Option(help="Run folder, checkpoint folder or merged export.")],
    image: Annotated[list[Path], typer.Option(help="An image file (repeatable; its questions follow it).")],
    question: Annotated[list[str], typer.Option(help="A question about the image before it (repeatable).")],
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per answer.")] = False,
    out: Annotated[
        Path | None, typer.Option(help="Also write the answers to this file (JSON lines, written whole).")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --out file.")] = False,
    abstain_below: AbstainOpt = None,
) -> None:
    """Answer questions about images with a trained model (questions about one image: one batch), each with
    its confidence: ``yes (p = 0.93)``, or ``not sure (p = 0.41)`` under --abstain-below."""
    from pathvqa.scoring.confidence import check_threshold

    check_threshold(abstain_below)
    pairs = image_questions(sys.argv[1:]) if image and question else []
    if not pairs or any(not qs for _, qs in pairs):
        raise PathVQAError("give at least one --question for every --image")
    if any(not q.strip() for _, qs in pairs for q in qs):
        raise PathVQAError("the question is empty: ask something about the image")
    for path, _ in pairs:
        if not path.is_file():
            raise PathVQAError(f"image not found: {path}" if not path.exists() else f"{path} is not a file")
    require_checkpoint_folder(checkpoint)
    from pathvqa.evaluation.answerer import Answerer
    from pathvqa.runtime.trained import resolve_run

    trained = resolve_run(checkpoint)  # once: the checkpoint chosen and its config
    if out is not None:
        from pathvqa.destinations import check_destination

        check_destination(out, reads=[*trained.reads(), *(p for p, _ in pairs)], file=True)
        if out.exists() and not overwrite:
            raise PathVQAError(f"--out {out} exists: give a new file, or --overwrite to replace it")
    answerer = Answerer(trained, abstain_below=abstain_below)
    from pathvqa.config import RANDOM_WEIGHTS, random_weights

    if random_weights(answerer.cfg):
        typer.echo(f"note: {answerer.label} has {RANDOM_WEIGHTS}", err=True)
    rows = []
    for path, questions in pairs:
        for answer in answerer.answer(path, questions):
            rows.append({"image": str(path), **asdict(answer)})
            if as_json:
                typer.echo(json.dumps(rows[-1]))
            else:
                typer.echo(
                    answer.shown
                    if len(questions) == 1 and len(pairs) == 1
                    else f"{answer.question} → {answer.shown}"
                )
    if out is not None:
        from pathvqa.destinations import write_text_atomic

        write_text_atomic(out, "".join(json.dumps(row) + "\n" for row in rows))


@app.command()
def explain(
    checkpoint: Annotated[Path, typer.Option(help="Run folder, checkpoint folder or merged export.")],
    out: Annotated[Path, typer.Option(help="The map's PNG (one image), or with --score a folder.")],
    image: Annotated[Path | None, typer.Option(help="An image file.")] = None,
    question: Annotated[str | None, typer.Option(help="A question about the image.")] = None,
    score: Annotated[
        bool,
        typer.Option("--score", help="Map every answer to a split's region questions and score the maps."),
    ] = False,
    dataset: Annotated[
        str | None, typer.Option(help="Dataset source for --score (default: the run's).")
    ] = None,
    split: Annotated[str, typer.Option(help="Split for --score.")] = "test",
    limit: Annotated[int | None, typer.Option(min=1, help="--score: the first N region questions.")] = None,
    overwrite: OverwriteOpt = False,
) -> None:
    """Where the model looked: the map of one answer (gradient × activation at the image's patch features)
    over the image, or with --score how well the maps of a split's answers fall on the regions their
    questions concern (grounding.json: pointing game, mass in the region, beside a uniform map and the same
    model with randomised weights)."""
    if score == (image is not None or question is not None):
        raise PathVQAError("give --image and --question (one map), or --score (a split's maps), not both")
    require_checkpoint_folder(checkpoint)
    from pathvqa.destinations import check_destination
    from pathvqa.runtime.trained import resolve_run

    trained = resolve_run(checkpoint, [f"data.dataset={dataset}"] if dataset else None)
    if score:
        _explain_split(trained, out, split, limit, overwrite)
        return
    if image is None or question is None:
        raise PathVQAError("give both --image and --question")
    if not image.is_file():
        raise PathVQAError(f"image not found: {image}" if not image.exists() else f"{image} is not a file")
    check_destination(out, reads=[*trained.reads(), image], file=True)
    if out.exists() and not overwrite:
        raise PathVQAError(f"--out {out} exists: give a new file, or --overwrite to replace it")
    from pathvqa.analysis.figures import explanation
    from pathvqa.evaluation.answerer import Answerer, check_image, read_questions

    read_questions(question)
    check_image(image, trained.config.data.max_pixels)

    explained = Answerer(trained).explain(image, question)
    explanation(explained.image, explained.saliency, question, explained.answer.shown, out)
    typer.echo(f"{explained.answer.shown}\nmap: {out}")


def _explain_split(trained, out: Path, split: str, limit: int | None, overwrite: bool) -> None:
    from pathvqa.destinations import check_destination
    from pathvqa.evaluation.explain import GROUNDING, regions_of, score_split

    check_destination(out, reads=trained.reads())
    if (out / GROUNDING).exists() and not overwrite:
        raise PathVQAError(f"--out {out} already holds {GROUNDING}: give a new folder, or --overwrite")
    regions_of(trained.config, split)  # a dataset without regions is said before the model loads
    from pathvqa.analysis.figures import grounding_maps
    from pathvqa.runtime.trained import load

    family, bundle = load(trained)
    family.patch_site(bundle)  # a family that cannot map says so before any work
    result, examples = score_split(trained.config, family, bundle, split, out, str(trained.path), limit)
    grounding_maps(examples, out / "maps.png")
    whole = result["table"]["all"]
    typer.echo(
        f"{result['questions']} region questions of {split}: pointing {whole['pointing']} "
        f"(uniform {whole['uniform']}, randomised {whole.get('pointing_randomised')}), mass in region "
        f"{whole['mass']} (randomised {whole.get('mass_randomised')}); {out / GROUNDING}"
    )


@app.command()
def serve(
    checkpoint: Annotated[
        list[str] | None,
        typer.Option(
            help="[LABEL=]run, checkpoint or merged export (repeatable; default: the demo's models)."
        ),
    ] = None,
    host: Annotated[
        str, typer.Option(help="Address to bind (0.0.0.0 accepts other machines: then sign-in is required).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 7860,
    demo_dir: Annotated[Path, typer.Option(help="Demo folder: default models and example images.")] = Path(
        "runs/demo"
    ),
    auth_file: Annotated[
        Path | None,
        typer.Option(help="File of user:password lines for sign-in (or set PATHVQA_AUTH=user:password)."),
    ] = None,
    allow_open: Annotated[
        bool,
        typer.Option(help="Serve a non-loopback --host without sign-in (anyone who reaches it may ask)."),
    ] = False,
    abstain_below: AbstainOpt = None,
) -> None:
    """A web app where every loaded model answers questions about an image, side by side."""
    from pathvqa.apps.serve import serve as run_serve
    from pathvqa.scoring.confidence import check_threshold

    check_threshold(abstain_below)
    _setup_logging()
    app_ = run_serve(
        checkpoint or [],
        abstain_below=abstain_below,
        host=host,
        port=port,
        demo_dir=demo_dir,
        block=False,
        auth_file=auth_file,
        allow_open=allow_open,
    )
    typer.echo(f"pathvqa serve: http://{host}:{port} (Ctrl-C stops)")
    app_.block_thread()


EX_IOERR = 74
"""Exit status when output cannot be written (a full disk, a closed pipe): sysexits.h's EX_IOERR."""
OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EPIPE, errno.EIO, errno.EROFS, errno.EFBIG}


class LineTracker:
    """stderr as the process writes it, remembering whether the last write left a line open (a progress
    bar's residue, when stderr is a file or a pipe): an error then starts on a line of its own."""

    def __init__(self, stream):
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> int:
        if text:
            self.last = text
        return self.stream.write(text)

    def open_line(self) -> bool:
        tty = getattr(self.stream, "isatty", lambda: False)()
        return bool(self.last) and not self.last.endswith("\n") and not (tty and self.last.endswith("\r"))

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def _say(tracker: LineTracker, line: str) -> None:
    typer.echo(("\n" if tracker.open_line() else "") + line, err=True)


def main() -> None:
    """Entry point: user mistakes print one line on stderr and exit with status 2; output that cannot be
    written (a full disk, a closed pipe) one line and status 74."""
    import warnings

    # the libraries' own deprecation notices (transformers, peft calling each other) are not the user's to act on
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"(transformers|peft|accelerate)(\.|$)")
    from typer._click import exceptions as click_errors

    stderr = sys.stderr
    tracker = sys.stderr = LineTracker(stderr)
    try:
        code = app(standalone_mode=False)  # usage errors come here, to be said in one line
        if code == 130:  # typer's own answer to Ctrl-C
            _say(tracker, "interrupted")
        if isinstance(code, int) and code:
            sys.exit(code)
    except click_errors.NoArgsIsHelpError as err:
        err.show()  # the help, as typer prints it
        sys.exit(err.exit_code)
    except click_errors.ClickException as err:
        where = getattr(getattr(err, "ctx", None), "command_path", None) or "pathvqa"
        _say(tracker, f"error: {err.format_message()} (see {where} --help)")
        sys.exit(err.exit_code)
    except PathVQAError as err:
        _say(tracker, f"error: {err}")
        sys.exit(2)
    except KeyboardInterrupt:
        _say(tracker, "interrupted")
        sys.exit(130)
    except OSError as err:
        if err.errno not in OUTPUT_ERRNOS:
            raise
        if err.errno == errno.EPIPE:  # nothing more can reach a closed stdout, not even Python's last flush
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        _say(tracker, f"error: cannot write the output: {err.strerror or err}")
        sys.exit(EX_IOERR)
    finally:
        sys.stderr = stderr
