import re

import numpy as np
import pyarrow.parquet as pq
import pytest

from pathvqa.data.prepare import load_split
from pathvqa.evaluation.baselines import prior_scores as prior_baseline
from pathvqa.models.tokenizers import tiny_vocab
from pathvqa.synth import generator as synthetic
from pathvqa.synth import questions
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
    for name, seed, style in (
        ("a", 7, "pathvqa"),
        ("b", 7, "pathvqa"),
        ("c", 8, "pathvqa"),
        ("d", 7, "simple"),
    ):
        synthetic.write(tmp_path / name, counts, size=40, seed=seed, progress=False, style=style)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")
    assert all(_files(tmp_path / "a")[n] != _files(tmp_path / "c")[n] for n in _files(tmp_path / "a"))
    assert all(_files(tmp_path / "a")[n] != _files(tmp_path / "d")[n] for n in _files(tmp_path / "a"))


def test_splits_share_no_image(synth_dir):
    keys = {
        split: {s.image_key for s in load_split(str(synth_dir), split, progress=False).samples}
        for split in ("train", "validation", "test")
    }
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["validation"]
    assert not keys["validation"] & keys["test"]


def test_yes_no_balanced_per_template_and_open_answers_spread():
    rows = synthetic.generate_split("train", 2000, 32, seed=0, progress=False, style="simple")
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


@pytest.mark.slow
def test_question_only_prior_needs_the_image_in_the_simple_style(tmp_path):
    synthetic.write(tmp_path, {"train": 2000, "test": 400}, size=32, seed=0, progress=False, style="simple")
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
    first, *table = proc.stdout.strip().splitlines()
    assert "(pathvqa style)" in first and "train 80 pairs" in first
    assert any("question-only prior on test: closed accuracy" in line for line in table)
    png = (tmp_path / "preview.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


@pytest.mark.parametrize("size", [32, 96])
def test_render_shapes(size):
    import numpy as np

    tile = synthetic.Tile("normal glands", "hematoxylin and eosin", False, 3)
    image = synthetic.render(tile, size, np.random.default_rng(0))
    assert image.shape == (size, size, 3) and image.dtype == np.uint8
    assert tile.vessels == 3


# --- the PathVQA-shaped style (the default) ------------------------------------------------------


@pytest.fixture(scope="module")
def pathvqa_shape(tmp_path_factory):
    """Shape figures of a set of the default style at half the default training size (32 px: the shape
    does not depend on the pixels' size)."""
    from pathvqa.analysis.dataset import shape_figures

    out = tmp_path_factory.mktemp("pv")
    synthetic.write(out, {"train": 4000, "test": 1000}, size=32, seed=3, progress=False)
    train, test = (load_split(str(out), s, progress=False, dedupe=False).samples for s in ("train", "test"))
    return shape_figures(train, test), train


@pytest.mark.slow
def test_default_style_has_pathvqas_shape(pathvqa_shape):
    """The issue's bands around the official PathVQA's figures. At half the default training size the
    tail is relatively longer (more distinct answers per row, more unseen test answers) than at 8,000."""
    shape, _ = pathvqa_shape
    assert 0.45 <= shape["yes_no_share"] <= 0.55
    assert shape["open_answers_per_open_train_row"] >= 0.2
    assert 0.2 <= shape["unseen_open_test_answers"] <= 0.45
    assert 2 <= shape["open_answer_words_mean"] <= 3.2
    assert 5.5 <= shape["question_words_mean"] <= 7.5
    assert 0.33 <= shape["first_word_what"] <= 0.48
    assert 0.22 <= shape["first_word_is"] + shape["first_word_are"] <= 0.36
    assert shape["first_word_does"] >= 0.12 and shape["first_word_where"] >= 0.04
    assert 6 <= shape["qa_per_image"] <= 9
    assert 0.60 <= shape["prior_closed_accuracy"] <= 0.75 and shape["prior_open_exact_match"] <= 0.2
    assert 0.02 <= shape["duplicate_share"] <= 0.12


def test_every_answer_is_decided_by_the_tile():
    """Rows of one image are consistent with one set of attributes: a "yes" names what the tile has, a
    "no" what it has not, and the open answers name the same organ / lesion."""
    import numpy as np

    from pathvqa.synth import questions

    rng = np.random.default_rng(0)
    for _ in range(300):
        tile = questions.draw_tile(rng)
        present = {x for x in (tile.finding, tile.secondary) if x}
        for question, answer, _region in questions.ask(tile, rng):
            named = re.fullmatch(r"(?:is there (.+) in this section|does this \w+ show (.+))\?", question)
            if named and "mitotic" not in question:
                subject = named.group(1) or named.group(2)
                assert (subject in present) == (answer == "yes"), (tile, question, answer)
            if question.startswith(("is this section from the", "does this tissue come from the")):
                assert (question.split(" the ")[-1][:-1] == tile.organ) == (answer == "yes")
            if "mitotic figures" in question and not question.startswith("how"):
                assert (answer == "yes") == (tile.mitoses > 0), (tile, question, answer)
            if question.startswith("what does this image show"):
                assert answer == tile.description() and tile.organ in answer


def test_yes_share_per_template_carries_a_language_prior(pathvqa_shape):
    """Closed templates lean one way or the other (the prior), yet overall yes/no stays balanced."""
    from collections import Counter

    _, train = pathvqa_shape
    by_template: dict = {}
    for s in train:
        if s.type == "closed":
            by_template.setdefault(" ".join(s.question.split()[:4]), Counter())[s.target] += 1
    shares = {k: c["yes"] / sum(c.values()) for k, c in by_template.items() if sum(c.values()) >= 100}
    assert shares["does this tissue come"] >= 0.55 and shares["is this section stained"] >= 0.55, shares
    assert shares["is this section from"] <= 0.45 and shares["is this tissue taken"] <= 0.45, shares
    closed = [s for s in train if s.type == "closed"]
    assert 0.45 <= sum(s.target == "yes" for s in closed) / len(closed) <= 0.55


def test_tiny_tokenizer_has_every_word_of_the_style_whole():
    from pathvqa.models.tokenizers import tiny_bert_tokenizer
    from pathvqa.synth import questions

    tokenizer = tiny_bert_tokenizer()
    words = questions.vocabulary()
    assert len(words) > 80
    assert all(tokenizer.tokenize(w) == [w] for w in words)


def test_unknown_style_is_one_line(tmp_path):
    proc = run_cli("synth", "--out", tmp_path / "x", "--style", "fancy", check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == "error: --style 'fancy': use pathvqa or simple"


def test_the_fast_ellipse_draws_skimages_pixels():
    from skimage.draw import ellipse as reference

    from pathvqa.synth.drawing import ellipse

    rng = np.random.default_rng(7)
    for _ in range(3000):  # centres inside and outside the tile, any size and rotation
        shape = (int(rng.integers(8, 120)),) * 2
        r, c = rng.uniform(-10, shape[0] + 10, 2)
        radii, rotation = rng.uniform(0.3, 30, 2), rng.uniform(-4, 4)
        expected = reference(r, c, *radii, shape=shape, rotation=rotation)
        got = ellipse(r, c, *radii, shape, rotation)
        assert all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True)), (r, c, radii, rotation)


def test_every_word_of_the_synthetic_set_is_a_whole_token_of_the_tiny_vocabulary():
    """The tiny models' vocabulary is a committed file: a new synthetic word must be added there on purpose."""
    texts = [
        *synthetic.TISSUES,
        *synthetic.STAINS,
        *synthetic.NUMBERS,
        *synthetic.TISSUE_QUESTIONS.values(),
        *questions.vocabulary(),
    ]
    words = {w for text in texts for w in text.lower().replace("?", " ").replace(".", " ").split()}
    vocab = set(tiny_vocab())
    assert words and not words - vocab, sorted(words - vocab)
    assert len(vocab) == len(tiny_vocab()), "no token twice"
