"""``pathvqa`` commands that answer questions with a trained model: predict, explain, serve."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from pathvqa.apps.cli_shared import (
    AbstainOpt,
    OverwriteOpt,
    app,
    out_file,
    setup_logging,
)
from pathvqa.errors import PathVQAError, require_checkpoint_folder


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
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --out file or --explain maps.")
    ] = False,
    abstain_below: AbstainOpt = None,
    explain_to: Annotated[
        Path | None,
        typer.Option(
            "--explain", help="Also draw where the model looked for each answer: one PNG per answer here."
        ),
    ] = None,
) -> None:
    """Answer questions about images with a trained model (questions about one image: one batch), each with
    its confidence: ``yes (p = 0.93)``, or ``not sure (p = 0.41)`` under --abstain-below; with --explain, the
    map of each answer (as ``pathvqa explain`` draws it)."""
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
    reads = [*trained.reads(), *(p for p, _ in pairs)]
    if out is not None:
        out_file(out, reads, overwrite)
    if explain_to is not None:
        _check_maps_folder(explain_to, reads, overwrite)
    answerer = Answerer(trained, abstain_below=abstain_below)
    from pathvqa.config import RANDOM_WEIGHTS, random_weights

    if random_weights(answerer.cfg):
        typer.echo(f"note: {answerer.label} has {RANDOM_WEIGHTS}", err=True)
    rows = []
    for path, questions in pairs:
        for answer, drawn in _answers(answerer, path, questions, explain_to, len(rows)):
            rows.append({"image": str(path), **asdict(answer), **({"map": drawn} if explain_to else {})})
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


def _check_maps_folder(folder: Path, reads: list[Path], overwrite: bool) -> None:
    from pathvqa.destinations import check_destination

    check_destination(folder, reads=reads)
    if folder.is_dir() and any(folder.glob("*.png")) and not overwrite:
        raise PathVQAError(f"--explain {folder} already holds maps: give a new folder, or --overwrite")


def _answers(answerer, image: Path, questions: list[str], maps: Path | None, done: int):
    """(answer, its map's path or None) for each question about ``image``; with ``maps``, each answer's map
    drawn there as ``<n>-<image name>.png`` (n counts the answers of the whole command)."""
    if maps is None:
        return [(a, None) for a in answerer.answer(image, questions)]
    from pathvqa.analysis.maps import explanation

    maps.mkdir(parents=True, exist_ok=True)
    out = []
    for n, explained in enumerate(answerer.explain(image, questions), start=done + 1):
        path = maps / f"{n}-{image.stem}.png"
        if explained.saliency is not None:
            explanation(
                explained.image, explained.saliency, explained.answer.question, explained.answer.shown, path
            )
        out.append((explained.answer, str(path) if explained.saliency is not None else None))
    return out


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
    from pathvqa.runtime.trained import resolve_run

    trained = resolve_run(checkpoint, [f"data.dataset={dataset}"] if dataset else None)
    if score:
        _explain_split(trained, out, split, limit, overwrite)
        return
    if image is None or question is None:
        raise PathVQAError("give both --image and --question")
    if not image.is_file():
        raise PathVQAError(f"image not found: {image}" if not image.exists() else f"{image} is not a file")
    out_file(out, [*trained.reads(), image], overwrite)
    from pathvqa.analysis.maps import explanation
    from pathvqa.evaluation.answerer import Answerer, check_image, read_questions

    read_questions(question)
    check_image(image, trained.config.data.max_pixels)

    (explained,) = Answerer(trained).explain(image, question)
    if explained.saliency is None:
        raise PathVQAError("the model gave no answer to this question: there is nothing to map")
    explanation(explained.image, explained.saliency, question, explained.answer.shown, out)
    typer.echo(f"{explained.answer.shown}\nmap: {out}")


def _explain_split(trained, out: Path, split: str, limit: int | None, overwrite: bool) -> None:
    from pathvqa.destinations import check_destination
    from pathvqa.evaluation.explain import GROUNDING, regions_of, score_split

    check_destination(out, reads=trained.reads())
    if (out / GROUNDING).exists() and not overwrite:
        raise PathVQAError(f"--out {out} already holds {GROUNDING}: give a new folder, or --overwrite")
    regions_of(trained.config, split)  # a dataset without regions is said before the model loads
    from pathvqa.analysis.maps import cascade_curves, grounding_maps
    from pathvqa.runtime.trained import load

    family, bundle = load(trained)
    family.patch_site(bundle)  # a family that cannot map says so before any work
    result, examples = score_split(trained.config, family, bundle, split, out, str(trained.path), limit)
    grounding_maps(examples, out / "maps.png")
    cascade_curves({trained.config.name: result["cascade"]}, out / "cascade.png")
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
    setup_logging()
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
