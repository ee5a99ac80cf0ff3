"""The results section of a paper, from run folders: tables, a gallery of answers, curves, one HTML page.

``pathvqa report [LABEL=]RUN ... --out DIR`` reads each run's ``eval/metrics.json`` (or
``metrics.json``), ``predictions.jsonl``, ``eval_blind/metrics.json``, ``logs/train.jsonl`` (per
stage for staged runs) and ``config.yaml``, and writes ``results.md/csv/json``, ``gallery.png``,
``curves.png``, ``types.png`` and a self-contained ``report.html``.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import random
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pathvqa.errors import PathVQAError
from pathvqa.metrics import closed_correct, exact_match, read_predictions

COLUMNS = (
    "exact_match",
    "meteor",
    "bleu1",
    "f1",
    "closed_accuracy",
    "open_exact_match",
    "open_recall",
    "blind_closed_accuracy",
)
# Published PathVQA test-split numbers, shown apart from ours: they come from another dataset.
PUBLISHED = [
    {"model": "BLIP zero-shot (earlier work)", "exact_match": 0.25, "meteor": 0.15},
    {"model": "BLIP + LoRA, 8,000 pairs, 3 epochs (earlier work)", "exact_match": 0.46, "meteor": 0.23},
    {
        "model": "BiomedCLIP + Mistral-7B, captioning, no projector (earlier work)",
        "exact_match": 0.0,
        "meteor": 0.02,
    },
    {
        "model": "LLaVA-Med 7B, fine-tuned (Li et al., 2023)",
        "closed_accuracy": "≈0.91",
        "open_recall": "0.38–0.40",
    },
]


@dataclass
class Run:
    label: str
    folder: Path
    metrics: dict[str, Any]
    predictions: dict[str, dict]
    blind: dict[str, Any] | None = None
    curves: list[tuple[str, str, list[dict]]] = field(default_factory=list)
    """(stage name, task, train.jsonl rows) per training stage."""
    config: str | None = None

    def row(self) -> dict[str, Any]:
        values = {k: self.metrics.get(k) for k in COLUMNS}
        values["blind_closed_accuracy"] = (self.blind or {}).get("closed_accuracy")
        return {"model": self.label, **values, "n": self.metrics.get("n")}


def load_run(spec: str | Path) -> Run:
    """A run from ``[LABEL=]FOLDER``: an evaluated training run, an eval folder, or a baseline folder."""
    label, sep, path = str(spec).partition("=")
    folder = Path(path if sep else label)
    label = label if sep else folder.name
    found = next((p for p in (folder / "eval", folder) if (p / "metrics.json").is_file()), None)
    if found is None:
        raise PathVQAError(
            f"{folder}: no metrics.json (evaluate it first: pathvqa eval --checkpoint {folder} --out {folder}/eval)"
        )
    metrics = json.loads((found / "metrics.json").read_text())
    predictions = {}
    if (found / "predictions.jsonl").is_file():
        predictions = {r["id"]: r for r in read_predictions(found / "predictions.jsonl")}
    blind_file = folder / "eval_blind" / "metrics.json"
    run = Run(
        label,
        folder,
        metrics,
        predictions,
        json.loads(blind_file.read_text()) if blind_file.is_file() else None,
    )
    config_file = folder / "config.yaml"
    source = Path(str(metrics.get("source", "")))
    if not config_file.is_file() and source.suffix in (".yaml", ".yml") and source.is_file():
        config_file = source  # a zero-shot evaluation of a config
    if config_file.is_file():
        run.config = config_file.read_text()
        raw = yaml.safe_load(run.config) or {}
        stages = raw.get("stages") or []
        for stage in stages or [{"name": None, "task": raw.get("task", "vqa")}]:
            log = folder / (stage["name"] or "") / "logs" / "train.jsonl"
            if log.is_file():
                rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
                run.curves.append((stage["name"] or "", stage.get("task") or raw.get("task", "vqa"), rows))
    return run


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "–" if value is None else str(value)


def markdown_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    header = ["model", *columns]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * len(columns) + "|"]
    lines += ["| " + " | ".join([r["model"], *(_number(r.get(c)) for c in columns)]) + " |" for r in rows]
    return "\n".join(lines)


def _judge(row: dict) -> bool:
    score = closed_correct if row["type"] == "closed" else exact_match
    return bool(score(row["prediction"], row["answer"]))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


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


def gallery(runs: list[Run], path: Path, chosen: list[str]) -> Path | None:
    """Test images with question, ground truth and each model's answer (✓ / ✗): half closed, half open."""
    from PIL import Image

    from pathvqa.data.prepare import load_split

    with_predictions = [r for r in runs if r.predictions]
    if not chosen:
        return None
    reference = with_predictions[-1]
    dataset, split = reference.metrics.get("dataset"), reference.metrics.get("split", "test")
    samples = {s.id: s for s in load_split(dataset, split, progress=False).samples} if dataset else {}
    plt = _plt()
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
            ok = _judge(row)
            ax.text(
                0.0,
                -0.03 - 0.22 / image_in * line,
                f"{'✓' if ok else '✗'} {run.label}: {textwrap.shorten(row['prediction'] or '(empty)', 30)}",
                transform=ax.transAxes,
                fontsize=8.5,
                va="top",
                color="#1a7f37" if ok else "#cf222e",
            )
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def curves(runs: list[Run], path: Path) -> Path | None:
    """Training loss and validation exact match against step, stages joined end to end."""
    trained = [r for r in runs if r.curves]
    if not trained:
        return None
    plt = _plt()
    fig, (loss_ax, val_ax) = plt.subplots(1, 2, figsize=(12, 4.2))
    for index, run in enumerate(trained):
        color = f"C{index}"
        offset = 0
        for stage, task, logged in run.curves:
            rows = list({(("val" if "val_n" in r else "train"), r["step"]): r for r in logged}.values())
            # ^ a resumed run logs some steps twice: the later rows (after the resume) are the real ones
            train_rows = sorted((r for r in rows if "loss" in r), key=lambda r: r["step"])
            val_rows = sorted(
                (r for r in rows if "val_exact_match" in r and task == "vqa"), key=lambda r: r["step"]
            )
            label = run.label if stage in ("", run.curves[-1][0]) else None
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
    for ax in (loss_ax, val_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def question_types(rows: list[dict]) -> dict[str, str]:
    """id → a question-type label: the question itself for template sets (≤ 12 distinct), else its first word."""
    distinct = {r["question"].strip().lower() for r in rows}
    key = (
        (lambda q: q.strip().lower()) if len(distinct) <= 12 else (lambda q: (q.split() or ["?"])[0].lower())
    )
    return {r["id"]: f"{key(r['question'])} [{r['type']}]" for r in rows}


def type_bars(runs: list[Run], path: Path) -> Path | None:
    """Per question type: closed accuracy (yes/no) or exact match (open), one bar per model."""
    with_predictions = [r for r in runs if r.predictions]
    if not with_predictions:
        return None
    types = question_types(list(with_predictions[-1].predictions.values()))
    labels = sorted(set(types.values()), key=lambda t: (t.endswith("[open]"), t))
    plt = _plt()
    import numpy as np

    fig, ax = plt.subplots(
        figsize=(min(20, max(8, 0.5 * len(labels) * (1 + len(with_predictions) / 2))), 4.8)
    )
    width = 0.8 / len(with_predictions)
    for index, run in enumerate(with_predictions):
        scores = []
        for label in labels:
            rows = [run.predictions[i] for i, t in types.items() if t == label and i in run.predictions]
            scores.append(sum(_judge(r) for r in rows) / len(rows) if rows else 0.0)
        ax.bar(np.arange(len(labels)) + index * width, scores, width, label=run.label)
    ax.set_xticks(np.arange(len(labels)) + 0.4 - width / 2)
    ax.set_xticklabels([textwrap.fill(t, 22) for t in labels], fontsize=7, rotation=30, ha="right")
    ax.set(ylabel="accuracy (closed) / exact match (open)", ylim=(0, 1.05), title="by question type")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _img(path: Path | None) -> str:
    if path is None:
        return "<p><em>(nothing to show)</em></p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{path.stem}">'


def _html_table(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("model", *columns))
    body = "".join(
        "<tr>"
        + f"<td>{html.escape(r['model'])}</td>"
        + "".join(f"<td>{_number(r.get(c))}</td>" for c in columns)
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def build(specs: list[str | Path], out: str | Path, title: str = "pathvqa results") -> dict[str, Path]:
    """Write the report for runs ``specs`` into ``out``; returns the written files by kind."""
    runs = [load_run(s) for s in specs]
    if not runs:
        raise PathVQAError("report: give at least one run folder")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = [r.row() for r in runs]
    dataset = runs[-1].metrics.get("dataset", "?")
    published_cols = ("exact_match", "meteor", "closed_accuracy", "open_recall")
    files = {"json": out / "results.json", "csv": out / "results.csv", "md": out / "results.md"}
    chosen = gallery_ids(runs)
    summary = {"dataset": dataset, "runs": rows, "published_pathvqa": PUBLISHED, "gallery_ids": chosen}
    files["json"].write_text(json.dumps(summary, indent=2))
    with files["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["model", *COLUMNS, "n"])
        writer.writeheader()
        writer.writerows(rows)
    images = {
        "gallery": gallery(runs, out / "gallery.png", chosen),
        "curves": curves(runs, out / "curves.png"),
        "types": type_bars(runs, out / "types.png"),
    }
    reference_note = (
        "Published numbers on the real PathVQA test split, for context only: they come from a "
        f"different dataset than the table above (`{dataset}`) and are not comparable column by column."
    )
    files["md"].write_text(
        "\n".join(
            [
                f"# {title}",
                "",
                f"Dataset: `{dataset}`, split `{runs[-1].metrics.get('split', 'test')}`. "
                "`blind_closed_accuracy`: the same model with every image replaced by grey.",
                "",
                markdown_table(rows, (*COLUMNS, "n")),
                "",
                "## Published reference (PathVQA, not this dataset)",
                "",
                reference_note,
                "",
                markdown_table(PUBLISHED, published_cols),
                "",
                *(f"![{k}]({p.name})" for k, p in images.items() if p is not None),
                "",
            ]
        )
    )
    configs = "".join(
        f"<details><summary>{html.escape(r.label)}</summary><pre>{html.escape(r.config)}</pre></details>"
        for r in runs
        if r.config
    )
    files["html"] = out / "report.html"
    files["html"].write_text(
        f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}pre{{background:#f6f8fa;padding:1em;overflow:auto}}
.note{{color:#555;font-size:0.95em}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Dataset <code>{html.escape(str(dataset))}</code>. Closed accuracy: yes/no questions; open exact match and
recall: the rest; blind: every image replaced by grey (what the question alone gives).</p>
<h2>Results</h2>{_html_table(rows, (*COLUMNS, "n"))}
<h2>Published reference (PathVQA)</h2><p class="note">{html.escape(reference_note)}</p>{_html_table(PUBLISHED, published_cols)}
<h2>Sample answers</h2>{_img(images["gallery"])}
<h2>Training curves</h2>{_img(images["curves"])}
<h2>By question type</h2>{_img(images["types"])}
<h2>Configs</h2>{configs or "<p><em>none</em></p>"}
</body></html>
"""
    )
    return {**files, **{k: v for k, v in images.items() if v is not None}}
