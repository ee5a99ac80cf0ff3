"""What every ``pathvqa`` command shares: the Typer app, the common options, logging, a run group's test."""

from __future__ import annotations

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


def out_file(path: Path, reads: list[Path], overwrite: bool) -> Path:
    """An ``--out`` file, checked before any work: its folder writable, not what the command ``reads``, and
    an existing file replaced only with ``--overwrite``."""
    from pathvqa.destinations import check_destination

    check_destination(path, reads=reads, file=True)
    if path.exists() and not overwrite:
        raise PathVQAError(f"--out {path} exists: give a new file, or --overwrite to replace it")
    return path


OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace what --out already holds (refused otherwise).")
]


SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Override a config key: --set train.lr=1e-4 (repeatable).")
]


def setup_logging() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "urllib3", "huggingface_hub", "datasets", "accelerate", "timm"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def is_group(folder: Path) -> bool:
    """A run group (``train --seeds``): seed-K folders, no config of its own."""
    from pathvqa.runs import RunDir

    return bool(RunDir(folder).seeds()) and not RunDir(folder).config.is_file()


AbstainOpt = Annotated[
    float | None,
    typer.Option(help="Mark answers less sure than this (a confidence in (0, 1)) as abstained: 'not sure'."),
]
