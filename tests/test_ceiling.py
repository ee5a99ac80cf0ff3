"""The pixel ceiling (analysis/ceiling.py): the rule answers every closed question of the embedded set as the
generator did when it is given the true attributes, and the classifier's run writes what the demo reads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pathvqa.analysis import ceiling
from pathvqa.data.prepare import load_split
from pathvqa.errors import DataError
from pathvqa.synth.questions import draw_tile
from tests.conftest import run_cli


def test_a_caption_reads_back_as_its_tile():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        tile = draw_tile(rng)
        assert ceiling.attributes(tile.caption()) == tile


@pytest.mark.parametrize(
    "caption", ["", "a photo of a cat.", "hematoxylin and eosin stained section: odd lung."]
)
def test_a_caption_of_another_set_is_an_error(caption):
    with pytest.raises(DataError, match="not a caption of the embedded set"):
        ceiling.attributes(caption)


def test_the_rule_on_the_true_tiles_gives_every_closed_answer(pathvqa_dir):
    """The ceiling's rule is the generator's own definition of "yes": with the true attributes it gets every
    closed row right, and answers no open question."""
    samples = load_split(str(pathvqa_dir), "train", progress=False, dedupe=False).samples
    closed = [s for s in samples if s.type == "closed"]
    assert len(closed) > 250
    assert all(ceiling.answer(s.question, ceiling.attributes(s.caption)) == s.answer for s in closed)
    opened = [s for s in samples if s.type == "open"]
    assert all(ceiling.answer(s.question, ceiling.attributes(s.caption)) is None for s in opened)


def test_run_writes_closed_predictions_and_the_paired_gain(pathvqa_dir, tmp_path):
    from pathvqa.evaluation.evaluate import run_baseline

    run_baseline(out=tmp_path / "prior", dataset=str(pathvqa_dir))
    settings = ceiling.Settings(epochs=1, width=8)
    metrics = ceiling.run(
        out=tmp_path / "ceiling", dataset=str(pathvqa_dir), prior=tmp_path / "prior", settings=settings
    )
    rows = [
        json.loads(line) for line in (tmp_path / "ceiling" / "predictions.jsonl").read_text().splitlines()
    ]
    test = load_split(str(pathvqa_dir), "test", progress=False, dedupe=False).samples
    assert len(rows) == sum(s.type == "closed" for s in test) and {r["prediction"] for r in rows} <= {
        "yes",
        "no",
    }
    assert metrics["model"] == ceiling.LABEL and 0 <= metrics["closed_accuracy"] <= 1
    assert set(metrics["attribute_accuracy"]) == set(ceiling.VALUES)
    assert metrics["closed_minus_prior"]["ci"][0] <= metrics["closed_minus_prior"]["difference"]
    assert (
        json.loads((tmp_path / "ceiling" / "metrics.json").read_text())["closed_accuracy"]
        == metrics["closed_accuracy"]
    )


def test_a_set_without_the_generators_captions_is_one_clear_error(synth_dir, tmp_path):
    with pytest.raises(DataError, match="embedded set"):
        ceiling.run(out=tmp_path / "c", dataset=str(synth_dir), settings=ceiling.Settings(epochs=1))
    assert not (tmp_path / "c").exists()


def test_the_cli_baseline_refuses_to_replace_an_evaluation(pathvqa_dir, tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "predictions.jsonl").write_text("kept\n")
    result = run_cli(
        "eval",
        "--baseline",
        "pixel-ceiling",
        "--dataset",
        str(pathvqa_dir),
        "--out",
        str(tmp_path / "c"),
        check=False,
    )
    assert result.returncode == 2 and "--overwrite" in result.stderr.strip().splitlines()[-1]
    assert (tmp_path / "c" / "predictions.jsonl").read_text() == "kept\n"
    result = run_cli(
        "eval", "--baseline", "nope", "--dataset", str(pathvqa_dir), "--out", str(tmp_path / "d"), check=False
    )
    assert result.returncode == 2 and "pixel-ceiling" in result.stderr


def test_the_demos_yes_no_table_sets_each_model_below_the_ceiling():
    from pathvqa.apps.demo import PRIOR, ZERO_SHOT, closed_table

    gain = {"difference": 0.05, "ci": [0.02, 0.08]}
    results = {
        PRIOR: {"closed_accuracy": 0.65},
        ZERO_SHOT: {"closed_accuracy": 0.0},
        "model": {"closed_accuracy": 0.70, "blind_closed_accuracy": 0.55},
        ceiling.LABEL: {
            "closed_accuracy": 0.90,
            "closed_minus_prior": {"difference": 0.25, "ci": [0.2, 0.3]},
        },
    }
    rows = {
        line.split(" | ")[0].lstrip("| "): line
        for line in closed_table(results, {"model": gain}).splitlines()
    }
    assert ZERO_SHOT not in rows
    assert rows["model"] == "| model | 0.700 | 0.550 | +0.150 | +0.050 [+0.020, +0.080] | 0.200 |"
    assert rows[ceiling.LABEL].endswith("| +0.250 [+0.200, +0.300] | – |")
    assert rows[PRIOR].endswith("| 0.250 |")
