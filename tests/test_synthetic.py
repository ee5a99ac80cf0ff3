import pyarrow.parquet as pq
import pytest

from pathvqa.baseline import prior_scores as prior_baseline
from pathvqa.data import synthetic
from pathvqa.data.prepare import load_split
from tests.conftest import run_cli


def _files(folder):
    return {p.name: p.read_bytes() for p in sorted((folder / "data").glob("*.parquet"))}


def test_hub_layout_loads_through_the_data_layer(synth_dir):
    names = sorted(p.name for p in (synth_dir / "data").glob("*.parquet"))
    assert names == [f"{s}-00000-of-00001.parquet" for s in ("test", "train", "validation")]
    schema = pq.read_schema(synth_dir / "data" / "train-00000-of-00001.parquet")
    assert b"huggingface" in schema.metadata and schema.field("image").type.names == ["bytes", "path"]
    for split, pairs in (("train", 240), ("validation", 40), ("test", 80)):
        data = load_split(str(synth_dir), split, progress=False)
        assert data.stats()["rows_kept"] == pairs and not data.skipped
        assert all(s.caption and s.caption.endswith(".") for s in data.samples)


def test_same_arguments_give_identical_bytes_and_another_seed_differs(tmp_path):
    counts = {"train": 60, "validation": 10, "test": 20}
    synthetic.write(tmp_path / "a", counts, size=40, seed=7, progress=False)
    synthetic.write(tmp_path / "b", counts, size=40, seed=7, progress=False)
    synthetic.write(tmp_path / "c", counts, size=40, seed=8, progress=False)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert all(_files(tmp_path / "a")[n] != _files(tmp_path / "c")[n] for n in _files(tmp_path / "a"))


def test_splits_share_no_image(synth_dir):
    keys = {
        split: {s.image_key for s in load_split(str(synth_dir), split, progress=False).samples}
        for split in ("train", "validation", "test")
    }
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["validation"]
    assert not keys["validation"] & keys["test"]


def test_yes_no_balanced_per_template_and_open_answers_spread():
    rows = synthetic.generate_split("train", 2000, 32, seed=0, progress=False)
    closed = [r for r in rows if r["answer"] in ("yes", "no")]
    assert 0.45 <= len(closed) / len(rows) <= 0.55
    for question, yes_share in synthetic.answer_balance(rows).items():
        assert 0.45 <= yes_share <= 0.55, question
    by_question = {}
    for r in rows:
        if r["answer"] not in ("yes", "no"):
            by_question.setdefault(r["question"], []).append(r["answer"])
    for question, answers in by_question.items():
        top = max(answers.count(a) for a in set(answers))
        assert top / len(answers) <= 0.40, question  # the most common answer per question is rare


def test_question_only_prior_needs_the_image(tmp_path):
    synthetic.write(tmp_path, {"train": 2000, "test": 400}, size=32, seed=0, progress=False)
    train = load_split(str(tmp_path), "train", progress=False).samples
    test = load_split(str(tmp_path), "test", progress=False).samples
    result = prior_baseline(train, test)
    assert result["closed_accuracy"] <= 0.60 and result["open_exact_match"] <= 0.45


def test_captions_describe_the_tile():
    tile = synthetic.Tile("carcinoma", "masson trichrome", True, 2)
    assert (
        synthetic.caption(tile)
        == "masson trichrome stained section showing carcinoma with mitotic figures and two blood vessels."
    )


def test_synth_cli_summary_and_preview(tmp_path):
    proc = run_cli(
        "synth",
        "--out",
        tmp_path / "ds",
        "--train",
        80,
        "--validation",
        8,
        "--test",
        40,
        "--image-size",
        40,
        "--preview",
        tmp_path / "preview.png",
    )
    line = proc.stdout.strip()
    assert line.count("\n") == 0 and "train 80 pairs" in line and "question-only baseline" in line
    png = (tmp_path / "preview.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


@pytest.mark.parametrize("size", [32, 96])
def test_render_shapes(size):
    import numpy as np

    tile = synthetic.Tile("normal glands", "hematoxylin and eosin", False, 3)
    image = synthetic.render(tile, size, np.random.default_rng(0))
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert tile.vessels == 3
