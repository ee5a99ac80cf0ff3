"""The report: tables, gallery, curves and HTML from two tiny evaluated runs."""

import csv
import json

import pytest
from PIL import Image

from pathvqa.analysis.report import build
from pathvqa.config import load_config
from pathvqa.errors import PathVQAError
from pathvqa.evaluation.evaluate import run
from pathvqa.training.stages import fit
from tests.conftest import run_cli

QUICK = ["train.threads=2", "model.hidden_size=32", "model.num_layers=1", "eval.max_new_tokens=4"]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, synth_dir):
    root = tmp_path_factory.mktemp("runs")
    blip = load_config(
        "configs/blip_tiny.yaml",
        [
            f"data.dataset={synth_dir}",
            *QUICK,
            "model.image_size=32",
            "train.max_steps=6",
            "train.eval_every=3",
        ],
    )
    fit(blip, root / "blip", progress=False)
    run(out=root / "blip" / "eval", checkpoint_dir=str(root / "blip"), progress=False)
    run(out=root / "blip" / "eval_blind", checkpoint_dir=str(root / "blip"), blind=True, progress=False)
    run(
        out=root / "zeroshot",
        config="configs/blip_tiny.yaml",
        overrides=[f"data.dataset={synth_dir}", *QUICK, "model.image_size=32"],
        progress=False,
    )
    return root


def test_report_from_two_runs_writes_every_file(tmp_path, two_runs):
    files = build(
        [f"untrained={two_runs / 'zeroshot'}", f"fine-tuned={two_runs / 'blip'}"],
        tmp_path / "report",
        maps=True,
    )
    for name in (
        "results.md",
        "results.csv",
        "results.json",
        "gallery.png",
        "curves.png",
        "types.png",
        "reliability.png",
        "risk_coverage.png",
        "report.html",
    ):
        assert (tmp_path / "report" / name).stat().st_size > 200, name
    assert set(files) >= {
        "md",
        "csv",
        "json",
        "html",
        "gallery",
        "curves",
        "types",
        "reliability",
        "risk_coverage",
    }

    rows = list(csv.DictReader((tmp_path / "report" / "results.csv").open()))
    assert [r["model"] for r in rows] == ["untrained", "fine-tuned"]
    assert rows[1]["blind_closed_accuracy"] and not rows[0]["blind_closed_accuracy"]
    summary = json.loads((tmp_path / "report" / "results.json").read_text())
    eval_metrics = json.loads((two_runs / "blip" / "eval" / "metrics.json").read_text())
    assert summary["runs"][1]["exact_match"] == eval_metrics["exact_match"] and summary["runs"][1]["n"] == 80

    # at least 8 gallery questions, half closed and half open
    predictions = {
        json.loads(x)["id"]: json.loads(x) for x in (two_runs / "blip" / "eval" / "predictions.jsonl").open()
    }
    kinds = [predictions[i]["type"] for i in summary["gallery_ids"]]
    assert kinds == ["closed"] * 4 + ["open"] * 4

    # published PathVQA numbers never beside an evaluation of another dataset
    md = (tmp_path / "report" / "results.md").read_text()
    ours = md
    assert "## Published reference" not in md and "≈0.91" not in md and "earlier work" not in md
    assert "shown only beside evaluations of PathVQA's own test split" in md and "fine-tuned" in ours
    # the other protocol ours sit under, and the open questions split by seen / unseen answers
    assert (
        "### MultiMedEval protocol" in ours
        and "### MedEvalKit protocol" in ours
        and "open_exact_match_unseen" in ours
    )
    mme = eval_metrics["multimedeval"]
    assert summary["multimedeval"][1]["closed_accuracy"] == mme["closed_accuracy"]
    seen = summary["seen"][1]
    assert seen["n_open_seen"] + seen["n_open_unseen"] == eval_metrics["n_open"]

    page = (tmp_path / "report" / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6 and 'src="http' not in page
    # where each loadable model looked (the zero-shot evaluation of a config has no model folder to load)
    assert (
        "Where each model looked" in page
        and "gallery_maps.png" in (tmp_path / "report" / "results.md").read_text()
    )
    with Image.open(files["gallery_maps"]) as drawn:  # 8 questions × (the image, the fine-tuned model's map)
        assert drawn.height > 3 * drawn.width, "one row per gallery question, two columns"
    assert "<details><summary>fine-tuned</summary>" in page and "name: blip_tiny" in page  # configs embedded


def test_report_refuses_a_folder_without_metrics(tmp_path):
    with pytest.raises(PathVQAError, match=r"no metrics\.json"):
        build([tmp_path], tmp_path / "out")
    proc = run_cli("report", tmp_path, "--out", tmp_path / "out", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and len(proc.stderr.splitlines()) == 1


@pytest.mark.slow
def test_a_run_group_trains_evaluates_and_reports_over_seeds(tmp_path, two_runs, synth_dir):
    """train --seeds trains one run per seed, eval scores each, the report shows mean ± sd over seeds and
    pairs the group with a run by the hierarchical bootstrap; compare does the same."""
    sets = [a for s in [f"data.dataset={synth_dir}", *QUICK, "model.image_size=32", "train.max_steps=2",
                        "data.eval_samples=8"] for a in ("--set", s)]  # fmt: skip
    run_cli("train", "configs/blip_tiny.yaml", "--out", tmp_path / "group", "--seeds", "0,1", *sets)
    assert sorted(p.name for p in (tmp_path / "group").iterdir()) == ["seed-0", "seed-1"]
    shown = run_cli(
        "eval", "--checkpoint", tmp_path / "group", "--out", tmp_path / "group" / "eval", "--limit", "24"
    )
    assert "seed 0:" in shown.stdout and "closed_accuracy" in shown.stdout
    build([f"group={tmp_path / 'group'}", f"fine-tuned={two_runs / 'blip'}"], tmp_path / "report")
    summary = json.loads((tmp_path / "report" / "results.json").read_text())
    group = summary["runs"][0]
    seeds = [
        json.loads((tmp_path / "group" / "eval" / f"seed-{k}" / "metrics.json").read_text()) for k in (0, 1)
    ]
    assert group["seeds"] == 2 and group["exact_match"] == pytest.approx(
        (seeds[0]["exact_match"] + seeds[1]["exact_match"]) / 2, abs=1e-4
    )
    assert "±" in (tmp_path / "report" / "results.md").read_text()
    assert "(limited: a seeded sample of 24 of 80 rows) (2 seeds)" in group["model"], group["model"]
    pair = summary["paired_comparisons"][0]
    assert pair["n"] == 24 and "Holm" in pair["exact_match_p"]
    compared = json.loads(run_cli("compare", tmp_path / "group" / "eval", two_runs / "blip", "--json").stdout)
    assert (
        compared["seeds"] == [2, 1]
        and compared["metrics"]["closed_accuracy"]["test"] == "hierarchical bootstrap"
    )


def test_tables_tex_is_balanced_booktabs_and_figures_come_as_vectors(tmp_path, two_runs):
    from pathvqa.analysis import latex
    from pathvqa.scoring.protocol import registry

    build(
        [f"untrained={two_runs / 'zeroshot'}", f"fine_tuned & 100%={two_runs / 'blip'}"], tmp_path / "report"
    )
    tex = (tmp_path / "report" / "tables.tex").read_text()
    assert not latex.balanced(tex), latex.balanced(tex)
    assert tex.count(r"\begin{table}") == len(registry()) and tex.count(r"\toprule") == len(registry())
    assert r"fine\_tuned \& 100\%" in tex and r"\textbf{" in tex and r"$\pm$" in tex
    for block in tex.split(r"\begin{tabular}")[1:]:  # every row has the header's number of cells
        lines = [line for line in block.split(r"\bottomrule")[0].splitlines() if line.endswith(r"\\")]
        assert len({line.count(" & ") for line in lines}) == 1, lines
    assert latex.balanced(r"\begin{table}{x}\end{tabular}") and latex.balanced("{a")
    for name in ("gallery", "curves", "types"):
        for suffix in ("pdf", "svg"):
            assert (tmp_path / "report" / f"{name}.{suffix}").stat().st_size > 1000, (name, suffix)
    from PIL import Image

    assert Image.open(tmp_path / "report" / "types.png").info["dpi"][0] == pytest.approx(300, abs=1)


def test_published_numbers_only_beside_pathvqas_test_split_and_mixed_data_grouped(tmp_path, two_runs):
    """A run scored on PathVQA's test split gets the published rows (unless --no-references); runs of two
    datasets are refused in one line, and with --allow-mixed every table names each row's dataset."""
    import shutil

    pathvqa = tmp_path / "on_pathvqa"
    shutil.copytree(two_runs / "blip" / "eval", pathvqa)
    metrics = json.loads((pathvqa / "metrics.json").read_text())
    metrics.update(dataset="flaviagiammarino/path-vqa")  # as an evaluation of PathVQA's test split says
    (pathvqa / "metrics.json").write_text(json.dumps(metrics))
    build([f"mine={pathvqa}"], tmp_path / "with")
    md = (tmp_path / "with" / "results.md").read_text()
    ours, published = md.split("## Published reference")
    assert "LLaVA-Med 7B" in published and "≈0.91" not in ours and "earlier work" in published
    build([f"mine={pathvqa}"], tmp_path / "without", references=False)
    assert "## Published reference" not in (tmp_path / "without" / "results.md").read_text()
    refused = run_cli("report", pathvqa, two_runs / "blip", "--out", tmp_path / "mixed", check=False)
    assert refused.returncode == 2 and "--allow-mixed" in refused.stderr and not (tmp_path / "mixed").exists()
    build([f"pathvqa={pathvqa}", f"synthetic={two_runs / 'blip'}"], tmp_path / "mixed", allow_mixed=True)
    table = (tmp_path / "mixed" / "results.md").read_text()
    assert "| model | dataset |" in table and "flaviagiammarino/path-vqa [test]" in table
