"""The report's pictures: a gallery of answers, training curves, results per question type, and how far
the confidences can be trusted (a reliability diagram, a risk–coverage curve).

Each takes the report's runs (``report.Run``: ``label``, ``predictions`` by id, ``curves``) and writes a
PNG (300 dpi) with a PDF and an SVG of the same figure beside it (for a paper: vector text in DejaVu Sans,
which has every character the labels use, fonts embedded as TrueType), or returns None when there is
nothing to draw.
"""

from __future__ import annotations

import io
import logging
import random
import textwrap
from pathlib import Path

from pathvqa.analysis.results import Run
from pathvqa.answers import correct
from pathvqa.runs import row_kind
from pathvqa.scoring import confidence
from pathvqa.scoring.stats import by_question_type
from pathvqa.scoring.strict import strict_table
from pathvqa.sweeps.spec import Spec

log = logging.getLogger(__name__)


DPI = 300
VECTOR_FORMATS = ("pdf", "svg")


def plt_agg():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matplotlib.rcParams.update({"font.family": "DejaVu Sans", "pdf.fonttype": 42, "svg.fonttype": "path"})
    return plt


def save(fig, path: Path, **options) -> Path:
    """``fig`` as ``path`` (PNG, 300 dpi) and beside it as PDF and SVG, then closed; the PNG's path."""
    fig.savefig(path, dpi=DPI, **options)
    for suffix in VECTOR_FORMATS:
        fig.savefig(path.with_suffix(f".{suffix}"), **options)
    plt_agg().close(fig)
    return path


def vector_files(path: Path) -> list[Path]:
    """The PDF and SVG written beside a figure's PNG."""
    return [path.with_suffix(f".{suffix}") for suffix in VECTOR_FORMATS]


def gallery_ids(runs: list[Run], per_type: int = 4, seed: int = 0) -> list[str]:
    """A seeded choice of questions every run answered: ``per_type`` closed, then ``per_type`` open."""
    with_predictions = [r for r in runs if r.predictions]
    if not with_predictions:
        return []
    common = set.intersection(*(set(r.predictions) for r in with_predictions))
    reference = with_predictions[-1].predictions
    rng = random.Random(seed)
    chosen = []
    for kind in ("closed", "open"):
        ids = sorted(i for i in common if reference[i]["type"] == kind)
        chosen += rng.sample(ids, min(per_type, len(ids)))
    return chosen


def gallery_samples(reference: Run) -> dict:
    """{id: Sample} of the split a run was evaluated on (empty when its metrics name no dataset)."""
    from pathvqa.data.prepare import load_split

    dataset, split = reference.metrics.get("dataset"), reference.metrics.get("split", "test")
    if isinstance(reference.metrics.get("dataset_spec"), dict):
        from pathvqa.data.spec import DatasetSpec

        dataset = DatasetSpec(**reference.metrics["dataset_spec"])
    return {s.id: s for s in load_split(dataset, split, progress=False).samples} if dataset else {}


def gallery(runs: list[Run], path: Path, chosen: list[str]) -> Path | None:
    """Test images with question, ground truth and each model's answer (✓ / ✗): half closed, half open."""
    from PIL import Image

    with_predictions = [r for r in runs if r.predictions]
    if not chosen:
        return None
    reference = with_predictions[-1]
    samples = gallery_samples(reference)
    plt = plt_agg()
    columns, lines = 4, len(with_predictions)
    rows_n = (len(chosen) + columns - 1) // columns
    image_in, text_in, title_in = 3.6, 0.3 + 0.22 * lines, 0.55  # inches per cell: image, answers, title
    height = rows_n * (image_in + text_in + title_in)
    fig, axes = plt.subplots(rows_n, columns, figsize=(4.0 * columns, height), squeeze=False)
    fig.subplots_adjust(
        left=0.01,
        right=0.99,
        top=1 - title_in / height,
        bottom=text_in / height,
        wspace=0.06,
        hspace=(text_in + title_in) / image_in,
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, qid in zip(axes.flat, chosen, strict=False):
        truth = reference.predictions[qid]
        if qid in samples:
            ax.imshow(Image.open(io.BytesIO(samples[qid].image)).convert("RGB"))
        ax.set_title(
            textwrap.shorten(f"Q: {truth['question']}", 46) + f"\nanswer: {truth['answer']}",
            fontsize=9,
            loc="left",
        )
        for line, run in enumerate(with_predictions):
            row = run.predictions[qid]
            ok = bool(correct(row["prediction"], row["answer"], row["type"]))
            said = textwrap.shorten(row["prediction"] or "(empty)", 30)
            said = confidence.readable(said, row.get("confidence"), False)  # with "(p = 0.93)" when scored
            ax.text(
                0.0,
                -0.03 - 0.22 / image_in * line,
                f"{'✓' if ok else '✗'} {run.label}: {said}",
                transform=ax.transAxes,
                fontsize=8.5,
                va="top",
                color="#1a7f37" if ok else "#cf222e",
            )
    save(fig, path)
    return path


def curves(runs: list[Run], path: Path) -> Path | None:
    """Training loss and validation exact match against step, stages joined end to end; GRPO stages'
    mean reward in a third panel (their loss is a signed policy-gradient objective, not a likelihood)."""
    trained = [r for r in runs if r.curves]
    if not trained:
        return None
    plt = plt_agg()
    rewarded = any(
        row_kind(row) == "grpo" for run in trained for _, _, logged in run.curves for row in logged
    )
    fig, axes = plt.subplots(1, 3 if rewarded else 2, figsize=(18 if rewarded else 12, 4.2))
    loss_ax, val_ax = axes[0], axes[1]
    for index, run in enumerate(trained):
        color = f"C{index}"
        offset = 0
        for stage, task, logged in run.curves:
            rows = list({(row_kind(r), r["step"]): r for r in logged}.values())
            # ^ a resumed run logs some steps twice: the later rows (after the resume) are the real ones
            train_rows = sorted((r for r in rows if row_kind(r) == "train"), key=lambda r: r["step"])
            val_rows = sorted(
                (r for r in rows if row_kind(r) == "validation" and "val_exact_match" in r and task == "vqa"),
                key=lambda r: r["step"],
            )
            label = run.label if stage in ("", run.curves[-1][0]) else None
            if rewarded:
                _reward_curve(axes[2], rows, offset, color, label)
            loss_ax.plot(
                [offset + r["step"] for r in train_rows],
                [r["loss"] for r in train_rows],
                color=color,
                label=label,
            )
            val_ax.plot(
                [offset + r["step"] for r in val_rows],
                [r["val_exact_match"] for r in val_rows],
                "o-",
                color=color,
                label=label,
            )
            last = max((r["step"] for r in rows), default=0)
            if stage and stage != run.curves[-1][0]:  # an earlier stage: shade it and name it
                for ax in (loss_ax, val_ax):
                    ax.axvspan(offset, offset + last, color=color, alpha=0.08)
                    ax.text(
                        offset + last / 2,
                        0.02,
                        f"{stage}\n({task})",
                        transform=ax.get_xaxis_transform(),
                        fontsize=7,
                        ha="center",
                        va="bottom",
                        color=color,
                    )
            offset += last
    loss_ax.set(xlabel="optimizer step", ylabel="training loss", title="training loss", yscale="log")
    val_ax.set(
        xlabel="optimizer step",
        ylabel="exact match",
        title="validation exact match (VQA stages)",
        ylim=(0, 1),
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)
    return path


def _reward_curve(ax, rows: list[dict], offset: int, color: str, label: str | None) -> None:
    """A GRPO stage's mean reward of the sampled answers and the share of groups that taught nothing."""
    rows = sorted((r for r in rows if row_kind(r) == "grpo"), key=lambda r: r["step"])
    if rows:
        steps = [offset + r["step"] for r in rows]
        ax.plot(steps, [r["reward"] for r in rows], color=color, label=label)
        ax.plot(steps, [r["same_reward_groups"] for r in rows], ":", color=color, alpha=0.6)
    ax.set(xlabel="optimizer step", ylabel="reward", ylim=(0, None),
           title="GRPO: mean reward (dotted: groups with one reward)")  # fmt: skip


def _confidences(runs: list[Run]) -> list[tuple[Run, dict[str, tuple]]]:
    """Each run whose predictions carry confidences: {kind: (confidence, right or wrong)} (strict protocol)."""
    out = []
    for run in runs:
        rows = list(run.predictions.values())
        if not any(r.get("confidence") is not None for r in rows):
            continue
        right = strict_table(rows)["correct"]
        out.append((run, {kind: confidence.scored(rows, right, kind) for kind in ("closed", "open")}))
    return out


def _closed_and_open(runs: list[Run], path: Path, draw, axes_set: dict, legend: str, diagonal: bool = False):
    """One panel for closed questions, one for open, every run with confidences drawn by ``draw(ax, run,
    confidences, right or wrong)`` on the same axes; None when no run has confidences."""
    scored = _confidences(runs)
    if not scored:
        return None
    plt = plt_agg()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, kind in zip(axes, ("closed", "open"), strict=True):
        if diagonal:
            ax.plot([0, 1], [0, 1], color="#888", linestyle="--", linewidth=1, label="calibrated")
        for run, kinds in scored:
            values, right = kinds[kind]
            if len(values):
                draw(ax, run, values, right)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), **{k: v.format(kind=kind) for k, v in axes_set.items()})
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7.5, loc=legend)
    fig.tight_layout()
    return save(fig, path)


def reliability(runs: list[Run], path: Path) -> Path | None:
    """Reliability diagrams, closed and open questions apart: each confidence bin's accuracy against its
    mean confidence (15 equal-width bins, a marker's area its rows), every model on one axis, ECE in the
    legend; the diagonal is a perfectly calibrated model."""

    def draw(ax, run, values, right):
        bins = confidence.reliability_bins(values, right)
        ece = confidence.expected_calibration_error(values, right)
        x, y = [b[0] for b in bins], [b[1] for b in bins]
        line = ax.plot(x, y, linewidth=1.2, label=f"{run.label} (ECE {ece:.3f})")
        ax.scatter(x, y, s=[8 + 120 * b[2] / len(values) for b in bins], color=line[0].get_color(), alpha=0.8)

    labels = {"xlabel": "confidence", "ylabel": "accuracy",
              "title": f"{{kind}} questions: reliability ({confidence.BINS} bins)"}  # fmt: skip
    return _closed_and_open(runs, path, draw, labels, "upper left", diagonal=True)


def risk_coverage(runs: list[Run], path: Path) -> Path | None:
    """Risk (error rate of the answered questions) against coverage (the share answered, most confident
    first), closed and open apart, every model on one axis, AURC in the legend: where a threshold for
    ``--abstain-below`` is read off."""

    def draw(ax, run, values, right):
        coverage, risk = confidence.risk_coverage(values, right)
        ax.plot(
            coverage, risk, linewidth=1.3, label=f"{run.label} (AURC {confidence.aurc(values, right):.3f})"
        )

    labels = {"xlabel": "coverage (share answered)", "ylabel": "risk (error rate answered)",
              "title": "{kind} questions: risk–coverage"}  # fmt: skip
    return _closed_and_open(runs, path, draw, labels, "lower right")


def stain_curves(runs: list[Run], path: Path) -> Path | None:
    """Closed accuracy and open exact match against the HED stress's strength (``eval --stain-shift``), one
    line per model with its 95% intervals; strength 0 is the unshifted split."""
    shifted = [(r, r.metrics["stain_shift"]) for r in runs if isinstance(r.metrics.get("stain_shift"), dict)]
    if not shifted:
        return None
    plt = plt_agg()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, title in zip(axes, ("closed_accuracy", "open_exact_match"), ("closed accuracy", "open exact match"),
                              strict=True):  # fmt: skip
        for run, shift in shifted:
            points = [(0.0, run.metrics.get(key), run.metrics.get(f"{key}_ci"))]
            points += [
                (r["strength"], r.get(key), r.get(f"{key}_ci")) for r in shift["results"] if r["strength"]
            ]
            points = [p for p in points if p[1] is not None]
            x, y = [p[0] for p in points], [p[1] for p in points]
            low = [v - (p[2] or (v, v))[0] for v, p in zip(y, points, strict=True)]
            high = [(p[2] or (v, v))[1] - v for v, p in zip(y, points, strict=True)]
            ax.errorbar(x, y, yerr=[low, high], marker="o", capsize=3, label=run.label)
        ax.set_xlabel(f"HED stress strength ({shifted[0][1]['method']})")
        ax.set_ylabel(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, path)


def types_of(run: Run) -> dict[str, dict]:
    """{question type: {n, accuracy, ci}} of a run, from its predictions (see ``stats.by_question_type``)."""
    rows = list(run.predictions.values())
    return by_question_type([r["question"] for r in rows], strict_table(rows)["correct"])


def type_bars(runs: list[Run], path: Path) -> Path | None:
    """Per question type (first word, as PathVQA papers tabulate): closed accuracy on yes/no rows, exact
    match on open ones, one bar per model with its 95% interval, n under each type."""
    with_predictions = [r for r in runs if r.predictions]
    if not with_predictions:
        return None
    per_run = [types_of(r) for r in with_predictions]
    labels = list(per_run[-1])
    plt = plt_agg()
    import numpy as np

    fig, ax = plt.subplots(figsize=(min(20, max(8, 0.9 * len(labels) * (1 + len(per_run) / 3))), 4.8))
    width = 0.8 / len(per_run)
    for index, (run, types) in enumerate(zip(with_predictions, per_run, strict=True)):
        values = [types.get(t, {}).get("accuracy", 0.0) for t in labels]
        cis = [types.get(t, {}).get("ci") or [v, v] for t, v in zip(labels, values, strict=True)]
        errors = np.array(
            [
                [v - lo for v, (lo, _) in zip(values, cis, strict=True)],
                [hi - v for v, (_, hi) in zip(values, cis, strict=True)],
            ]
        )
        ax.bar(
            np.arange(len(labels)) + index * width,
            values,
            width,
            yerr=errors.clip(min=0),
            capsize=2,
            label=run.label,
        )
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2)
    ax.set_xticklabels([f"{t}\nn={per_run[-1][t]['n']}" for t in labels], fontsize=8)
    ax.set(
        ylabel="accuracy (yes/no) / exact match (open)",
        ylim=(0, 1.1),
        title="by question type (95% intervals)",
    )
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=min(4, len(per_run)))
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()  # the legend sits under the axes, clear of the bars
    save(fig, path, bbox_inches="tight")
    return path


def sweep_figures(spec: Spec, study, out: Path, prefix: str = "sweep") -> dict:
    """Parameter importances and the objective against each parameter (Optuna's matplotlib plots)."""
    import warnings

    import optuna
    from optuna.visualization import matplotlib as plots

    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    plt_agg()  # the Agg backend, before Optuna draws
    files: dict[str, Path | None] = {f"{prefix}_importance": None, f"{prefix}_slices": None}
    drawings = {f"{prefix}_importance": plots.plot_param_importances, f"{prefix}_slices": plots.plot_slice}
    for name, draw in drawings.items():
        if len(complete) < 2:
            log.warning("sweep %s: %d completed trial(s): no %s picture", spec.name, len(complete), name)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            axes = draw(study)
        first = axes.flat[0] if hasattr(axes, "flat") else axes
        figure = first.figure
        figure.suptitle(f"sweep {spec.name}: {spec.objective} (validation), completed trials")
        # Optuna's colour bar sits right of the slice panels: room for it there, no tight_layout
        if name.endswith("slices"):
            figure.set_size_inches(4.5 * len(spec.space) + 1.5, 4.2)
            figure.subplots_adjust(left=0.08, right=0.86, top=0.86, bottom=0.16, wspace=0.25)
            for bar in figure.axes[len(spec.space) :]:  # the colour bar: right of the last panel
                bar.set_position((0.89, 0.16, 0.015, 0.70))
        else:
            figure.set_size_inches(7.5, 1.5 + 0.6 * len(spec.space))
            figure.tight_layout()
        files[name] = out / f"{name}.png"
        save(figure, files[name])
    return files
