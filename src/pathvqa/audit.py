"""What matters for honest evaluation on a dataset (``pathvqa data-stats``): per split the yes/no share,
the answer vocabulary and its long tail, duplicates; across splits the images and question–answer
pairs a later split shares with an earlier one (leakage), test answers never seen in training, the
question-only prior (majority training answer per question: a floor no image model should miss), and
the dataset's shape figures beside the official PathVQA's (``pathvqa.shape``).
"""

from __future__ import annotations

from typing import Any

from pathvqa.baseline import prior_scores
from pathvqa.config import MAX_PIXELS
from pathvqa.data.prepare import Sample, SplitData, load_split
from pathvqa.errors import DataError
from pathvqa.shape import shape_figures

SPLITS = ("train", "validation", "test")


def dataset_stats(source: str, split: str = "train", max_pixels: int = MAX_PIXELS) -> dict[str, Any]:
    """``split``'s statistics at the top level (duplicates skipped as training skips them, and counted),
    plus ``across_splits`` over the other standard splits that exist."""
    main = load_split(source, split, max_pixels=max_pixels, allow_empty=True)
    out = main.stats()
    splits = {split: main}
    for name in SPLITS:
        if name != split:
            try:
                splits[name] = load_split(source, name, max_pixels=max_pixels, progress=False)
            except DataError:
                continue
    order = sorted(splits, key=lambda s: SPLITS.index(s) if s in SPLITS else len(SPLITS))
    across: dict[str, Any] = {"splits": {s: len(splits[s].samples) for s in order}, "leakage": {}}
    for i, earlier in enumerate(order):
        for later in order[i + 1 :]:
            across["leakage"][f"{earlier}->{later}"] = leakage(splits[earlier], splits[later])
    whole = {
        name: _every_row(source, splits[name], max_pixels) for name in ("train", "test") if name in splits
    }
    if "train" in splits and "test" in splits:
        across["unseen_test_answers"] = unseen_answers(splits["train"].samples, whole["test"].samples)
        across["question_prior"] = question_prior(splits["train"], whole["test"])
    if "train" in splits:
        test = whole["test"].samples if "test" in whole else None
        out["shape"] = shape_figures(whole["train"].samples, test)
    out["across_splits"] = across
    return out


def _every_row(source: str, data: SplitData, max_pixels: int) -> SplitData:
    """The split with its repeated rows (published numbers and shape figures count every row)."""
    if data.skipped["duplicate"] == 0:
        return data
    return load_split(source, data.split, max_pixels=max_pixels, dedupe=False, progress=False)


def leakage(earlier: SplitData, later: SplitData) -> dict[str, int]:
    """Images, question–answer pairs and whole rows of ``later`` already in ``earlier``."""
    images = {s.image_key for s in earlier.samples}
    pairs = {(s.question.lower(), s.target) for s in earlier.samples}
    rows = {(s.image_key, s.question.lower(), s.target) for s in earlier.samples}
    later_images = {s.image_key for s in later.samples}
    return {
        "shared_images": len(images & later_images),
        "rows_with_a_seen_image": sum(s.image_key in images for s in later.samples),
        "shared_question_answer_pairs": len(pairs & {(s.question.lower(), s.target) for s in later.samples}),
        "rows_with_a_seen_question_answer_pair": sum(
            (s.question.lower(), s.target) in pairs for s in later.samples
        ),
        "rows_seen_exactly": sum((s.image_key, s.question.lower(), s.target) in rows for s in later.samples),
    }


def unseen_answers(train: list[Sample], test: list[Sample]) -> dict[str, Any]:
    """Open test rows whose answer never occurs in training: no closed-vocabulary model can get them."""
    known = {s.target for s in train}
    open_rows = [s for s in test if s.type == "open"]
    unseen = sum(s.target not in known for s in open_rows)
    return {
        "open_rows": len(open_rows),
        "unseen": unseen,
        "share": round(unseen / len(open_rows), 4) if open_rows else None,
    }


def question_prior(train: SplitData, test: SplitData) -> dict[str, Any]:
    """The question-only prior, fitted on (deduplicated) training rows, scored on every test row."""
    metrics = prior_scores(train.samples, test.samples)
    keys = ("exact_match", "meteor", "closed_accuracy", "open_exact_match", "open_recall")
    return {
        **{k: metrics[k] for k in keys},
        "llava_med": {k: metrics["llava_med"][k] for k in ("closed_accuracy", "open_recall")},
    }
