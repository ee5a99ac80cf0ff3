"""Shape figures (``pathvqa data-stats``) and open answers seen / unseen in training."""

from __future__ import annotations

import json

from pathvqa.analysis.dataset import PATHVQA, shape_figures
from pathvqa.data.prepare import Sample, load_split
from pathvqa.evaluation.evaluate import run_baseline
from tests.conftest import run_cli


def _sample(i: int, question: str, answer: str, image: str = "img") -> Sample:
    kind = "closed" if answer in ("yes", "no") else "open"
    return Sample(f"s{i}", b"", image, question, answer, answer, kind)


def test_figures_by_hand():
    train = [
        _sample(0, "is this lung?", "yes", "a"),
        _sample(1, "is this lung?", "yes", "a"),  # an exact repeat
        _sample(2, "what organ is this?", "lung", "a"),
        _sample(3, "what organ is this?", "colon", "b"),
        _sample(4, "where is the lesion from?", "the left lung", "b"),
        _sample(5, "does this show necrosis?", "no", "b"),
    ]
    test = [
        _sample(6, "is this lung?", "no", "c"),
        _sample(7, "what organ is this?", "kidney", "c"),
        _sample(8, "what organ is this?", "colon", "c"),
        _sample(9, "how many cells?", "two", "c"),
    ]
    shape = shape_figures(train, test)
    assert shape["yes_no_share"] == 0.5 and shape["qa_per_image"] == 3.0
    assert shape["open_answers_per_open_train_row"] == 1.0  # 3 distinct of 3 open rows
    assert (
        shape["open_answer_words_mean"] == round((1 + 1 + 3) / 3, 2)
        and shape["open_answer_words_median"] == 1
    )
    assert shape["duplicate_share"] == round(1 / 6, 4)
    assert shape["first_word_is"] == round(2 / 6, 4) and shape["first_word_where"] == round(1 / 6, 4)
    assert shape["unseen_open_test_answers"] == round(2 / 3, 4)  # kidney, two
    assert shape["test_questions_seen_in_train"] == 0.75
    assert shape["prior_closed_accuracy"] == 0.0  # the prior says "yes" for "is this lung?"
    assert set(shape) == set(PATHVQA)


def test_data_stats_prints_the_shape_beside_pathvqa(pathvqa_dir):
    proc = run_cli("data-stats", "--dataset", pathvqa_dir)
    table = proc.stdout.split("shape (train; test for the test figures):")[1].splitlines()
    assert "pathvqa" in table[1]
    assert next(line for line in table if "never seen in training" in line).split()[-1] == "0.29"
    row = next(line for line in table if "QA pairs per image" in line)
    assert float(row.split()[-1]) == 7.6 and 6 <= float(row.split()[-2]) <= 9
    stats = json.loads(run_cli("data-stats", "--dataset", pathvqa_dir, "--json").stdout)
    assert stats["reference"]["shape"] == PATHVQA and stats["shape"]["duplicate_share"] > 0
    bad = run_cli("data-stats", "--dataset", pathvqa_dir, "--reference", "vqa-rad", check=False)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --reference 'vqa-rad': use pathvqa or none"


def test_evaluation_splits_open_answers_by_seen_in_training(tmp_path, pathvqa_dir):
    metrics = run_baseline(out=tmp_path, dataset=str(pathvqa_dir))
    rows = [json.loads(line) for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    known = {s.target for s in load_split(str(pathvqa_dir), "train", progress=False, dedupe=False).samples}
    open_rows = [r for r in rows if r["type"] == "open"]
    assert all(r["seen"] == (r["answer"] in known) for r in open_rows)
    assert all("seen" not in r for r in rows if r["type"] == "closed")
    assert metrics["n_open_seen"] + metrics["n_open_unseen"] == metrics["n_open"]
    assert metrics["n_open_unseen"] > 0 and metrics["open_exact_match_unseen"] == 0.0  # the prior never can
    assert metrics["open_exact_match_seen_ci"] is not None and "multimedeval" in metrics
    scored = json.loads(run_cli("score", tmp_path / "predictions.jsonl", "--json").stdout)
    assert scored["open_exact_match_seen"] == metrics["open_exact_match_seen"]
