"""``pathvqa`` commands on data and predictions: synth, data-stats, score, compare, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from pathvqa.apps.cli_shared import (
    DatasetOpt,
    JsonOpt,
    OverwriteOpt,
    app,
    is_group,
    out_folder,
)
from pathvqa.config import MAX_PIXELS
from pathvqa.errors import PathVQAError
from pathvqa.scoring.protocol import default, registry


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
    other_lab: Annotated[
        bool,
        typer.Option(
            "--other-lab",
            help="Also write test_other_lab: the test split's questions, its images in another lab's stain colours.",
        ),
    ] = False,
    overwrite: OverwriteOpt = False,
) -> None:
    """Generate the synthetic pathology VQA set (the offline default dataset); with --other-lab, the test split
    again as another lab would stain and scan it (a stain-shift test split)."""
    out_folder(out)
    from pathvqa.synth import generator as synthetic

    if style not in synthetic.STYLES:
        raise PathVQAError(f"--style {style!r}: use {' or '.join(synthetic.STYLES)}")
    if other_lab and (style != "pathvqa" or not test):
        raise PathVQAError(
            "--other-lab redraws the test split in the pathvqa style: give --test N and that style"
        )
    if synthetic.holds_dataset(out) and not overwrite:
        raise PathVQAError(
            f"--out {out} already holds a dataset: give a new folder, or --overwrite to replace it"
        )
    if preview is not None:
        out_folder(preview.parent)
    summary = synthetic.write(
        out,
        {"train": train, "validation": validation, "test": test},
        image_size,
        seed,
        style=style,
        other_lab=other_lab,
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
    maps: Annotated[
        bool,
        typer.Option(
            "--maps", help="Add where each model looked for its gallery answers (loads the models)."
        ),
    ] = False,
) -> None:
    """Tables (md/csv/json/LaTeX), gallery, curves (PNG, PDF, SVG) and one self-contained HTML page from run
    folders (a run group: mean ± sd over its seeds)."""
    out_folder(out)
    from pathvqa.analysis.report import build

    files = build(runs, out, title=title, allow_mixed=allow_mixed, references=not no_references, maps=maps)
    typer.echo(f"wrote {', '.join(str(p) for p in files.values())}")
