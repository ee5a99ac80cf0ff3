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
import json
import logging
from pathlib import Path
from typing import Any

from pathvqa.analysis import latex
from pathvqa.analysis.figures import (
    curves,
    gallery,
    gallery_ids,
    reliability,
    risk_coverage,
    stain_curves,
    sweep_figures,
    type_bars,
    types_of,
)
from pathvqa.analysis.maps import gallery_maps
from pathvqa.analysis.results import CALIBRATION_COLUMNS, COLUMNS, SEEN_COLUMNS, Run, load_run
from pathvqa.config.datasets import PRESETS
from pathvqa.destinations import check_destination
from pathvqa.errors import PathVQAError
from pathvqa.scoring.metrics import HEADLINE, compare, compare_seeds, every_protocol
from pathvqa.scoring.stats import holm, significant
from pathvqa.scoring.strict import PROTOCOL as STRICT
from pathvqa.sweeps.study import SPEC_FILE, open_sweep, trial_folders

log = logging.getLogger(__name__)

# Published PathVQA test-split numbers, shown apart from ours (another dataset), each protocol in its own
# table: a number is only ever set beside numbers scored the same way.
PUBLISHED_OWN_SCORING = [
    {"model": "BLIP zero-shot (earlier work)", "exact_match": 0.25, "meteor": 0.15},
    {"model": "BLIP + LoRA, 8,000 pairs, 3 epochs (earlier work)", "exact_match": 0.46, "meteor": 0.23},
    {
        "model": "BiomedCLIP + Mistral-7B, captioning, no projector (earlier work)",
        "exact_match": 0.0,
        "meteor": 0.02,
    },
    {
        "model": "question-only prior, text-only floor (pathvqa strict protocol, hub test split, 6,719 rows)",
        "exact_match": 0.408,
        "meteor": 0.218,
        "closed_accuracy": 0.681,
    },
]


def _interval(ci: list[float] | None) -> str:
    return f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""


def _number(value: Any, ci: list[float] | None = None) -> str:
    if isinstance(value, float):
        return f"{value:.3f}" + _interval(ci)
    return "–" if value is None else str(value)


def _cell(row: dict[str, Any], column: str) -> str:
    """A value with its 95% interval; a run group's mean ± its sd over seeds, then the interval."""
    sd = row.get(f"{column}_sd")
    if sd is not None and isinstance(row.get(column), float):
        return f"{row[column]:.3f} ± {sd:.3f}" + _interval(row.get(f"{column}_ci"))
    return _number(row.get(column), row.get(f"{column}_ci"))


def markdown_table(rows: list[dict[str, Any]], columns: tuple[str, ...], first: str = "model") -> str:
    header = [first, *columns]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * len(columns) + "|"]
    lines += ["| " + " | ".join([str(r[first]), *(_cell(r, c) for c in columns)]) + " |" for r in rows]
    return "\n".join(lines)


def comparisons(runs: list[Run]) -> list[dict[str, Any]]:
    """Every pair of runs that answered the same questions: B − A with its 95% interval per headline score,
    and its test's p with Holm's adjustment over every test of the report (pairs × scores)."""
    with_predictions = [r for r in runs if r.predictions]
    out, tests = [], []
    for i, a in enumerate(with_predictions):
        for b in with_predictions[i + 1 :]:
            try:
                if a.seeds or b.seeds:  # seeds and questions both vary: the hierarchical bootstrap
                    result = compare_seeds(a.seed_predictions(), b.seed_predictions())
                else:
                    result = compare(list(a.predictions.values()), list(b.predictions.values()))
            except PathVQAError:  # different questions: nothing to pair
                continue
            row: dict[str, Any] = {"pair": f"{b.label} − {a.label}", "n": result["n"]}
            for key in HEADLINE:
                entry = result["metrics"][key]
                row[key] = (
                    "–"
                    if entry["difference"] is None
                    else (f"{entry['difference']:+.3f} [{entry['ci'][0]:+.3f}, {entry['ci'][1]:+.3f}]")
                )
                row[f"{key}_p"] = entry["p"]
                tests.append((row, key))
            out.append(row)
    for (row, key), adjusted in zip(tests, holm([row[f"{key}_p"] for row, key in tests]), strict=True):
        if adjusted is not None:
            row[f"{key}_p_holm"] = significant(adjusted)
            row[f"{key}_p"] = f"{row[f'{key}_p']:.3g} (Holm {significant(adjusted):.3g})"
    return out


PAIR_COLUMNS = (*(c for key in HEADLINE for c in (key, f"{key}_p")), "n")


def _img(path: Path | None) -> str:
    if path is None:
        return "<p><em>(nothing to show)</em></p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{path.stem}">'


def _html_table(rows: list[dict[str, Any]], columns: tuple[str, ...], first: str = "model") -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in (first, *columns))
    body = "".join(
        "<tr>"
        + f"<td>{html.escape(str(r[first]))}</td>"
        + "".join(f"<td>{_cell(r, c)}</td>" for c in columns)
        + "</tr>"
        for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fields = ["model", *COLUMNS, "n", *(f"{k}_ci_{end}" for k in COLUMNS for end in ("low", "high"))]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            flat = {k: row.get(k) for k in ("model", *COLUMNS, "n")}
            for key in COLUMNS:
                low, high = row.get(f"{key}_ci") or (None, None)
                flat.update({f"{key}_ci_low": low, f"{key}_ci_high": high})
            writer.writerow(flat)


def _both(rows: list[dict], columns: tuple[str, ...]) -> tuple[str, str]:
    return markdown_table(rows, columns), _html_table(rows, columns)


def _sections(
    rows: list[dict], protocols: dict[str, list[dict]], pairs: list[dict], lead: tuple[str, ...], shown: bool
) -> dict[str, tuple[str, str]]:
    """(markdown, html) of each table section: ours under the strict protocol, the paired comparisons, open
    questions by seen / unseen answers, ours under every other protocol (``protocols``, by key), and, when
    ``shown``, the published reference rows, each protocol apart. ``lead``: columns before the scores
    (``dataset`` when runs of several datasets are reported together)."""
    pair_cols = PAIR_COLUMNS
    own_cols = ("exact_match", "meteor", "closed_accuracy")
    sections = {
        "ours": _both(rows, (*lead, *COLUMNS, "n")),
        "seen": _both(protocols["seen"], (*lead, *SEEN_COLUMNS)),
        "confidence": _both(protocols["confidence"], (*lead, *CALIBRATION_COLUMNS)),
        "pairs": (
            markdown_table(pairs, pair_cols, "pair") if pairs else "_(no two runs share their questions)_",
            _html_table(pairs, pair_cols, "pair") if pairs else "<p><em>none</em></p>",
        ),
    }
    for other in every_protocol():
        sections[other.key] = _both(protocols[other.key], (*lead, *other.columns, "n"))
        if other.published and shown:
            sections[f"published_{other.key}"] = _both(list(other.published), other.columns)
    if shown:
        sections["own"] = _both(PUBLISHED_OWN_SCORING, own_cols)
    return sections


PUBLISHED_NOTE = (
    "Published numbers on PathVQA's test split, for context: each sits beside our models only under the "
    "protocol it was scored with."
)
NO_REFERENCES = (
    "Published PathVQA numbers are shown only beside evaluations of PathVQA's own test split "
    "(`--no-references` leaves them out there too)."
)


def expand_sweeps(specs: list[str | Path]) -> tuple[list[str], dict[Path, tuple]]:
    """Run specs with each sweep folder replaced by its evaluated trials; each sweep's (spec, study)."""
    runs: list[str] = []
    sweeps: dict[Path, tuple] = {}
    for spec in specs:
        label, sep, path = str(spec).partition("=")
        folder = Path(path if sep else label)
        if (folder / SPEC_FILE).is_file():
            sweeps[folder] = open_sweep(folder)
            runs += [f"{Path(f).name}={f}" for f in trial_folders(sweeps[folder][1])]
        else:
            runs.append(str(spec))
    return runs, sweeps


def evaluated_on(run: Run) -> tuple[str, str] | None:
    """(dataset, split) a run's evaluation scored; a dataset folder by its real path (however it was spelt)."""
    dataset, split = run.metrics.get("dataset"), run.metrics.get("split")
    if dataset is None:
        return None  # written before metrics.json named its dataset
    path = Path(str(dataset))
    return (str(path.resolve()) if path.exists() else str(dataset), str(split or "test"))


def check_same_data(runs: list[Run], allow_mixed: bool) -> None:
    """One table holds evaluations of one dataset and split: others are refused unless ``allow_mixed``."""
    seen: dict[tuple[str, str], list[str]] = {}
    for run in runs:
        key = evaluated_on(run)
        if key is not None:
            seen.setdefault(key, []).append(run.label)
    if len(seen) < 2:
        return
    shown = "; ".join(f"{', '.join(labels)}: {d} [{s}]" for (d, s), labels in seen.items())
    if not allow_mixed:
        raise PathVQAError(
            f"report: these runs were evaluated on different data ({shown}): their scores are not comparable; "
            "report each dataset apart, or pass --allow-mixed"
        )
    log.warning("report: runs evaluated on different data (%s): their scores are not comparable", shown)


def on_pathvqa_test(run: Run) -> bool:
    """Whether a run was scored on PathVQA's official test split: the only data published PathVQA numbers
    may sit beside."""
    named = {run.metrics.get("dataset"), (run.metrics.get("dataset_spec") or {}).get("source")}
    return bool(named & {PRESETS["pathvqa"].source, "pathvqa"}) and run.metrics.get("split", "test") == "test"


def _where(run: Run) -> str:
    return f"{run.metrics.get('dataset', '?')} [{run.metrics.get('split', 'test')}]"


def build(
    specs: list[str | Path],
    out: str | Path,
    title: str = "pathvqa results",
    allow_mixed: bool = False,
    references: bool = True,
    maps: bool = False,
) -> dict[str, Path]:
    """Write the report for runs ``specs`` (a sweep folder: its evaluated trials, and its pictures) into
    ``out``; returns the written files by kind. Runs evaluated on different datasets or splits are refused
    unless ``allow_mixed`` (then every table's rows are grouped by their dataset, named in a first column).
    Published PathVQA numbers appear only when every run was scored on PathVQA's test split, and not at all
    without ``references``. With ``maps``, the gallery's questions again with where each model that can be
    loaded looked for its answer (``gallery_maps.png``: one backward pass per model)."""
    specs, sweeps = expand_sweeps(specs)
    runs = [load_run(s) for s in specs]
    if not runs:
        raise PathVQAError("report: give at least one run folder")
    check_same_data(runs, allow_mixed)
    out = check_destination(out, reads=[*(r.folder for r in runs), *sweeps])
    out.mkdir(parents=True, exist_ok=True)
    mixed = len({_where(r) for r in runs}) > 1
    if mixed:  # grouped by dataset, each row naming its own
        runs = sorted(runs, key=_where)
    rows = [{**({"dataset": _where(r)} if mixed else {}), **r.row()} for r in runs]
    protocols = {"seen": [r.seen_row() for r in runs], "confidence": [r.calibration_row() for r in runs]}
    protocols.update({p.key: [r.protocol_row(p) for r in runs] for p in every_protocol()})  # may rescore once
    if mixed:
        for table in protocols.values():
            for run, row in zip(runs, table, strict=True):
                row["dataset"] = _where(run)
    shown = references and all(on_pathvqa_test(r) for r in runs)
    files = _write_tables(out, title, runs, rows, protocols, shown)
    images = _figures(out, runs, sweeps, gallery_ids(runs), maps)
    sections = _sections(rows, protocols, comparisons(runs), ("dataset",) if mixed else (), shown)
    where = "; ".join(dict.fromkeys(_where(r) for r in runs))
    files["md"] = out / "results.md"
    files["md"].write_text(_markdown(title, where, runs, sections, images))
    files["html"] = out / "report.html"
    files["html"].write_text(_page(title, where, runs, sections, images))
    return {**files, **{k: v for k, v in images.items() if v is not None}}


def _write_tables(
    out: Path, title: str, runs: list[Run], rows: list[dict], protocols: dict, shown: bool
) -> dict:
    """results.json, results.csv and tables.tex."""
    pairs = comparisons(runs)
    summary = {
        "dataset": "; ".join(dict.fromkeys(_where(r) for r in runs)),
        "runs": rows, **protocols, "paired_comparisons": pairs,
        "by_question_type": {r.label: types_of(r) for r in runs if r.predictions},
        "published_pathvqa": {
            "own_scoring": PUBLISHED_OWN_SCORING,
            **{f"{p.key}_protocol": list(p.published) for p in every_protocol() if p.published},
        } if shown else None,
        "gallery_ids": gallery_ids(runs),
    }  # fmt: skip
    files = {"json": out / "results.json", "csv": out / "results.csv", "tex": out / "tables.tex"}
    files["json"].write_text(json.dumps(summary, indent=2))
    _write_csv(files["csv"], rows)
    files["tex"].write_text(_latex(title, runs, rows, protocols))
    return files


def _figures(
    out: Path, runs: list[Run], sweeps: dict, chosen: list[str], maps: bool
) -> dict[str, Path | None]:
    images = {
        "gallery": gallery(runs, out / "gallery.png", chosen),
        "gallery_maps": gallery_maps(runs, out / "gallery_maps.png", chosen) if maps else None,
        "curves": curves(runs, out / "curves.png"),
        "types": type_bars(runs, out / "types.png"),
        "reliability": reliability(runs, out / "reliability.png"),
        "risk_coverage": risk_coverage(runs, out / "risk_coverage.png"),
        "stain_shift": stain_curves(runs, out / "stain_shift.png"),
    }
    for folder, (sweep_spec, study) in sweeps.items():
        prefix = "sweep" if len(sweeps) == 1 else f"sweep_{folder.name}"
        images.update(sweep_figures(sweep_spec, study, out, prefix=prefix))
    return images


PAIRS_INTRO = (
    "Paired differences on the same questions (B − A, 95% interval). p: McNemar's exact test for right/wrong "
    "scores, a paired permutation test for graded ones; a pair with a run group (several training seeds): "
    "means over seeds and questions, the interval and p from a hierarchical bootstrap (each side's seeds and "
    "the questions resampled); in brackets Holm's adjustment over every test in this table. A run group's "
    "scores: mean ± sd over its seeds [95% t interval of the mean]:"
)
CONFIDENCE_INTRO = (
    "How far each answer's confidence can be trusted (pathvqa's definition: a yes/no answer's probability "
    "renormalised over yes and no, else the geometric mean of its tokens' probabilities, under the temperature "
    "fitted on the validation split). ECE: expected calibration error over 15 equal-width bins; Brier: mean "
    "squared error of the confidence (closed); AURC: area under the risk–coverage curve (lower is better); "
    "accuracy_at_50: accuracy on the most confident half. n/a: predictions written without confidences."
)
SEEN_INTRO = (
    "Open questions split by whether their answer occurs in the training split (seen) or never does (unseen): "
    "a model that picks from the answers it was trained on can never get an unseen one."
)


def _latex(title: str, runs: list[Run], rows: list[dict], protocols: dict[str, list[dict]]) -> str:
    """``tables.tex``: pathvqa's protocol and every other, one booktabs table each."""
    split = runs[-1].metrics.get("split", "test")
    where = f"{latex.escape(runs[-1].metrics.get('dataset', '?'))}, split {latex.escape(split)}"
    spread = r"$\pm$: half the 95\% interval (a run group: its sd over seeds)"
    tables = [
        latex.table(
            f"{latex.escape(STRICT.title)} on {where}. {spread}.", "tab:pathvqa-strict", rows, (*COLUMNS, "n")
        )
    ]
    for other in every_protocol():
        caption = f"{latex.escape(other.title)} on {where}. {spread}."
        tables.append(
            latex.table(caption, f"tab:pathvqa-{other.name}", protocols[other.key], (*other.columns, "n"))
        )
    return latex.document(title, tables)


def _markdown(title: str, dataset: str, runs: list[Run], sections: dict, images: dict) -> str:
    md = {k: v[0] for k, v in sections.items()}
    lines = [
        f"# {title}", "", f"Evaluated on `{dataset}` (dataset [split]). {STRICT.intro}", "",
        md["ours"], "", PAIRS_INTRO, "", md["pairs"], "", SEEN_INTRO, "", md["seen"], "",
        "## Confidence", "", CONFIDENCE_INTRO, "", md["confidence"], "",
    ]  # fmt: skip
    for other in every_protocol():
        lines += [f"### {other.title}", "", other.intro, "", md[other.key], ""]
    if "own" not in md:
        lines += [f"_{NO_REFERENCES}_", ""]
    else:
        lines += [
            "## Published reference (PathVQA)", "", PUBLISHED_NOTE, "",
            "### Scored by their authors (exact match, METEOR)", "", md["own"], "",
        ]  # fmt: skip
    for other in every_protocol():
        if f"published_{other.key}" in md:
            lines += [f"### {other.title}: published", "", md[f"published_{other.key}"], ""]
    return "\n".join([*lines, *(f"![{k}]({p.name})" for k, p in images.items() if p is not None), ""])


def _protocol_sections(page: dict) -> str:
    return "".join(
        f"<h3>{html.escape(p.title)}</h3><p>{html.escape(p.intro)}</p>{page[p.key]}" for p in every_protocol()
    )


def _published_sections(page: dict) -> str:
    if "own" not in page:
        return f'<p class="note">{html.escape(NO_REFERENCES)}</p>'
    return (
        f'<h2>Published reference (PathVQA)</h2><p class="note">{html.escape(PUBLISHED_NOTE)}</p>'
        f"<h3>Scored by their authors</h3>{page['own']}"
        + "".join(
            f"<h3>{html.escape(p.title)}: published</h3>{page[f'published_{p.key}']}"
            for p in every_protocol()
            if f"published_{p.key}" in page
        )
    )


FIGURE_SECTIONS = {
    "stain_shift": (
        "<h2>Stain shift</h2>",
        "The test images under another lab's stain, simulated (eval --stain-shift: HED jitter of each strength, "
        "Tellez et al. 2019; strength 0 is the split itself): the same questions, answered again.",
    ),
    "gallery_maps": (
        "<h3>Where each model looked</h3>",
        "Where each model looked for the answer it gave (gradient × activation at the image's patch features; "
        "pathvqa explain): bright is where more of what is there would have made that answer more likely.",
    ),
}
"""The report's figures that appear only when they were drawn: (heading, what the figure shows)."""


def _figure_section(images: dict, key: str) -> str:
    if images.get(key) is None:
        return ""
    heading, intro = FIGURE_SECTIONS[key]
    return f"{heading}<p>{html.escape(intro)}</p>{_img(images[key])}"


def _sweep_section(images: dict) -> str:
    shown = [p for k, p in images.items() if k.startswith("sweep") and p is not None]
    if not shown:
        return ""
    intro = "Each parameter's importance for the objective (Optuna's estimate), and the objective against it."
    return f"<h2>Sweep</h2><p>{intro}</p>" + "".join(_img(p) for p in shown)


def _page(title: str, dataset: str, runs: list[Run], sections: dict, images: dict) -> str:
    page = {k: v[1] for k, v in sections.items()}
    configs = "".join(
        f"<details><summary>{html.escape(r.label)}</summary><pre>{html.escape(r.config)}</pre></details>"
        for r in runs
        if r.config
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}pre{{background:#f6f8fa;padding:1em;overflow:auto}}
.note{{color:#555;font-size:0.95em}}</style></head><body>
<h1>{html.escape(title)}</h1>
<p>Evaluated on <code>{html.escape(str(dataset))}</code> (dataset [split]). {html.escape(STRICT.intro)} Closed accuracy: yes/no questions;
open exact match and recall: the rest.</p>
<h2>Results</h2>{page["ours"]}<p>{html.escape(PAIRS_INTRO)}</p>{page["pairs"]}
<p>{html.escape(SEEN_INTRO)}</p>{page["seen"]}
<h2>Confidence</h2><p>{html.escape(CONFIDENCE_INTRO)}</p>{page["confidence"]}{_img(images["reliability"])}{_img(images["risk_coverage"])}
{_protocol_sections(page)}{_published_sections(page)}<h2>Sample answers</h2>{_img(images["gallery"])}{_figure_section(images, "gallery_maps")}
{_figure_section(images, "stain_shift")}<h2>Training curves</h2>{_img(images["curves"])}
<h2>By question type</h2>{_img(images["types"])}
{_sweep_section(images)}<h2>Configs</h2>{configs or "<p><em>none</em></p>"}
</body></html>
"""
