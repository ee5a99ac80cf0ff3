"""The ``pathvqa`` command line: parse arguments, then call one library function per command."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from pathvqa.errors import PathVQAError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fine-tune and evaluate vision-language models on pathology VQA (PathVQA).",
)

DatasetOpt = Annotated[
    str, typer.Option("--dataset", help="Hub id, dataset folder, or JSONL + images folder.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]


def out_folder(path: Path) -> Path:
    """An ``--out`` folder: created when missing; a file of that name is an error (never overwritten)."""
    if path.exists() and not path.is_dir():
        raise PathVQAError(f"--out {path} is a file: give a folder (it is created if missing)")
    return path


@app.command()
def synth(
    out: Annotated[Path, typer.Option(help="Output folder (hub layout: OUT/data/{split}-*.parquet).")],
    train: Annotated[int, typer.Option(min=0, help="Training pairs.")] = 2000,
    validation: Annotated[int, typer.Option(min=0, help="Validation pairs.")] = 200,
    test: Annotated[int, typer.Option(min=0, help="Test pairs.")] = 400,
    image_size: Annotated[int, typer.Option(min=16, max=1024, help="Tile size in pixels.")] = 96,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    preview: Annotated[Path | None, typer.Option(help="Also write a labelled grid of samples (PNG).")] = None,
) -> None:
    """Generate the synthetic pathology VQA set (the offline default dataset)."""
    out_folder(out)
    from pathvqa.data import synthetic
    from pathvqa.data.prepare import load_split
    from pathvqa.evaluate import prior_baseline

    summary = synthetic.write(out, {"train": train, "validation": validation, "test": test}, image_size, seed)
    if preview is not None:
        from pathvqa.data.preview import preview as write_preview

        write_preview(
            synthetic.generate_split("test", 48, image_size, seed, progress=False), preview, images=8
        )
    parts = [f"{s} {v['pairs']} pairs/{v['images']} images" for s, v in summary["splits"].items()]
    line = f"wrote {out}: {', '.join(parts)}"
    if train and test:
        closed = sum(v["closed_share"] * v["pairs"] for v in summary["splits"].values())
        line += f"; closed share {closed / sum(v['pairs'] for v in summary['splits'].values()):.2f}"
        base = prior_baseline(
            load_split(str(out), "train", progress=False).samples,
            load_split(str(out), "test", progress=False).samples,
        )
        line += (
            f"; question-only baseline: closed acc {base['closed_accuracy']:.2f}, "
            f"open EM {base['open_exact_match']:.2f}"
        )
    typer.echo(line)


@app.command("data-stats")
def data_stats(
    dataset: DatasetOpt,
    split: Annotated[str, typer.Option(help="Split to read.")] = "train",
    max_pixels: Annotated[int, typer.Option(help="Skip images larger than this many pixels.")] = 40_000_000,
    as_json: JsonOpt = False,
) -> None:
    """Validate a split and print its statistics (kept/skipped rows by reason, answer types)."""
    from pathvqa.data.prepare import load_split

    stats = load_split(dataset, split, max_pixels=max_pixels).stats()
    if as_json:
        typer.echo(json.dumps(stats))
        return
    typer.echo(
        f"{dataset} [{split}]: {stats['rows_kept']}/{stats['rows_total']} rows kept "
        f"({stats['closed']} closed, {stats['open']} open, {stats['unique_answers']} unique answers)"
    )
    for reason, count in stats["skipped_reasons"].items():
        typer.echo(f"  skipped {count:>6}  {reason}")
    typer.echo("  top answers: " + ", ".join(f"{a} ({n})" for a, n in stats["top_answers"]))


@app.command()
def score(
    predictions: Annotated[Path, typer.Argument(help="predictions.jsonl (rows with answer and prediction).")],
    as_json: JsonOpt = False,
) -> None:
    """Score a predictions file with the full metric suite."""
    from pathvqa.metrics import score_file

    result = score_file(predictions)
    if as_json:
        typer.echo(json.dumps(result))
        return
    for key, value in result.items():
        typer.echo(f"{key:>18}  {value if value is None or key.startswith('n') else f'{value:.4f}'}")


SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config key: --set train.lr=1e-4 (repeatable).")
]


def _setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "huggingface_hub", "datasets", "accelerate"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="Experiment YAML (see configs/).")],
    out: Annotated[Path, typer.Option(help="Run folder: checkpoints/, logs/, config.yaml.")],
    overrides: SetOpt = None,
    resume: Annotated[
        bool, typer.Option(help="Continue from the last complete checkpoint in --out.")
    ] = False,
) -> None:
    """Fine-tune a model (one training loop for every family; stages run in order)."""
    from pathvqa.config import load_config
    from pathvqa.train import fit

    out_folder(out)
    cfg = load_config(config, overrides)  # every config error is reported before any model loads
    _setup_logging()
    result = fit(cfg, out, resume=resume)
    from accelerate import PartialState

    if PartialState().is_main_process:
        typer.echo(json.dumps(result))


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
) -> None:
    """Generate answers for a split and score them."""
    from pathvqa.evaluate import run

    out_folder(out)
    _setup_logging()
    result = run(
        out=out,
        dataset=dataset,
        split=split,
        config=str(config) if config else None,
        checkpoint_dir=str(checkpoint) if checkpoint else None,
        blind=blind,
        limit=limit,
        overrides=overrides,
    )
    if result:
        typer.echo(json.dumps(result))


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Option(help="Run folder or checkpoints/step-N folder.")],
    out: Annotated[Path, typer.Option(help="Output folder (save_pretrained layout + README.md model card).")],
    merge: Annotated[bool, typer.Option(help="Merge LoRA adapters into the base weights.")] = False,
) -> None:
    """Export a checkpoint for plain transformers / peft."""
    from pathvqa.export import export as run_export

    out_folder(out)
    typer.echo(f"exported to {run_export(checkpoint, out, merge)}")


@app.command("report")
def report_cmd(
    runs: Annotated[
        list[str], typer.Argument(help="Evaluated run folders, optionally labelled: 'LABEL=FOLDER'.")
    ],
    out: Annotated[Path, typer.Option(help="Report folder.")],
    title: Annotated[str, typer.Option(help="Report title.")] = "pathvqa results",
) -> None:
    """Tables (md/csv/json), gallery, curves and one self-contained HTML page from run folders."""
    from pathvqa.report import build

    out_folder(out)
    files = build(runs, out, title=title)
    typer.echo(f"wrote {', '.join(str(p) for p in files.values())}")


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Demo folder (data, runs, results).")] = Path("runs/demo"),
    fresh: Annotated[bool, typer.Option(help="Start over instead of reusing finished stages.")] = False,
    overrides: SetOpt = None,
    with_config: Annotated[
        list[str] | None,
        typer.Option(
            "--with", help="Also fine-tune and compare a shipped config (llava_tiny, …; repeatable)."
        ),
    ] = None,
) -> None:
    """The offline study end to end on the synthetic set: baselines, blip-tiny, vlm-tiny, report."""
    from pathvqa.demo import run_demo

    out_folder(out)
    _setup_logging()
    run_demo(out, fresh=fresh, overrides=overrides, extra=with_config)


def main() -> None:
    """Entry point: user mistakes print one line on stderr and exit with status 2."""
    try:
        app()
    except PathVQAError as err:
        typer.echo(f"error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
