"""What matters for honest evaluation on a dataset (``pathvqa data-stats``), and its shape beside the
official PathVQA's.

Per split: the yes/no share, the answer vocabulary and its long tail, duplicates. Across splits: the
images and question–answer pairs a later split shares with an earlier one (leakage), test answers never
seen in training, and the question-only prior (majority training answer per question: a floor no image
model should miss).

The shape: what makes PathVQA hard is a long tail of open answers, test answers never seen in training,
questions whose wording gives the answer away, several questions per image. The shape figures say how
close another dataset (yours, or the embedded synthetic one) comes to that (``pathvqa data-stats
--reference pathvqa``). Every row counts (no deduplication): the published splits are scored that way.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Any

from pathvqa.config import MAX_PIXELS
from pathvqa.data.prepare import RESTAINED, Sample, SplitData, load_split
from pathvqa.data.regions import region_counts
from pathvqa.data.spec import DatasetSpec
from pathvqa.errors import DataError
from pathvqa.evaluation.baselines import QuestionPrior, prior_scores
from pathvqa.scoring.metrics import every_protocol, score

SPLITS = ("train", "validation", "test")


def dataset_stats(
    source: str | DatasetSpec, split: str = "train", max_pixels: int = MAX_PIXELS
) -> dict[str, Any]:
    """``split``'s statistics at the top level (duplicates skipped as training skips them, and counted),
    plus ``across_splits`` over the other standard splits that exist."""
    main = load_split(source, split, max_pixels=max_pixels, allow_empty=True)
    out = main.stats()
    regions = region_counts(source, split)
    if regions:
        out["regions"] = regions
    out["stain"] = stain_of(main.samples)
    other = _other_lab(source, split, main, max_pixels)
    if other:
        out["other_lab"] = other
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
    prior = None
    if "train" in splits and "test" in splits:
        prior = prior_scores(splits["train"].samples, whole["test"].samples)
        across["unseen_test_answers"] = unseen_answers(splits["train"].samples, whole["test"].samples)
        across["question_prior"] = question_prior(prior)
    if "train" in splits:
        test = whole["test"].samples if "test" in whole else None
        # the shape's prior is fitted on every training row, as the published figures are
        shape_prior = prior if whole["train"] is splits["train"] else None
        out["shape"] = shape_figures(whole["train"].samples, test, shape_prior)
    out["across_splits"] = across
    return out


STAIN_IMAGES = 200
"""A split's stain profile is read off its first distinct images, up to this many."""


def stain_of(samples: list[Sample]) -> dict[str, float] | None:
    """Mean haematoxylin, eosin and DAB optical density and mean RGB of the split's first distinct images."""
    from pathvqa.data.stain import profile

    images = list({s.image_key: s for s in samples}.values())[:STAIN_IMAGES]
    return profile([s.image for s in images]) if images else None


def _other_lab(source, split: str, main: SplitData, max_pixels: int) -> dict[str, Any] | None:
    """The split's other-lab twin (``pathvqa synth --other-lab``), if the dataset has one: its rows, whether
    it asks the same questions, its stain profile."""
    name = split + RESTAINED
    try:
        twin = load_split(source, name, max_pixels=max_pixels, progress=False)
    except DataError:
        return None
    asked = [(s.id, s.question, s.answer) for s in twin.samples]
    same = asked == [(s.id, s.question, s.answer) for s in main.samples]
    return {"split": name, "rows": len(twin.samples), "same_questions": same, "stain": stain_of(twin.samples)}


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


def question_prior(metrics: dict[str, Any]) -> dict[str, Any]:
    """The question-only prior's headline scores (fitted on deduplicated training rows, on every test row)."""
    keys = ("exact_match", "meteor", "closed_accuracy", "open_exact_match", "open_recall")
    # under every other protocol: its first two columns (closed accuracy and its open score)
    others = {p.key: {k: metrics[p.key][k] for k in p.columns[:2]} for p in every_protocol()}
    return {**{k: metrics[k] for k in keys}, **others}


FIRST_WORDS = ("what", "is", "does", "where", "are", "how")

PATHVQA = {
    "yes_no_share": 0.50,
    "open_answers_per_open_train_row": 0.33,
    "unseen_open_test_answers": 0.29,
    "open_answer_words_mean": 2.6,
    "open_answer_words_median": 1,
    "question_words_mean": 6.3,
    "distinct_questions_per_train_row": 0.38,
    "test_questions_seen_in_train": 0.67,
    **{f"first_word_{w}": s for w, s in zip(FIRST_WORDS, (0.41, 0.26, 0.19, 0.07, 0.03, 0.02), strict=True)},
    "qa_per_image": 7.6,
    "duplicate_share": 0.08,
    "prior_closed_accuracy": 0.68,
    "prior_open_exact_match": 0.13,
}
"""The official PathVQA (``flaviagiammarino/path-vqa``: 19,654 train / 6,719 test pairs), measured with
these same definitions. ``open_answers_per_open_train_row``: 3,223 distinct open answers."""

LABELS = {
    "yes_no_share": "yes/no share",
    "open_answers_per_open_train_row": "distinct open answers per open training row",
    "unseen_open_test_answers": "open test answers never seen in training",
    "open_answer_words_mean": "open answer words: mean",
    "open_answer_words_median": "open answer words: median",
    "question_words_mean": "question words: mean",
    "distinct_questions_per_train_row": "distinct question strings / rows (train)",
    "test_questions_seen_in_train": "test questions whose exact string is in train",
    **{f"first_word_{w}": f"first word: {w}" for w in FIRST_WORDS},
    "qa_per_image": "QA pairs per image",
    "duplicate_share": "exact duplicates after lowercasing",
    "prior_closed_accuracy": "question-only prior on test: closed accuracy",
    "prior_open_exact_match": "question-only prior on test: open exact match",
}
REFERENCES = {"pathvqa": PATHVQA}


def _share(count: int, total: int) -> float | None:
    return round(count / total, 4) if total else None


def _words(text: str) -> int:
    return len(text.replace("?", " ").split())


def shape_figures(
    train: list[Sample], test: list[Sample] | None = None, prior: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The figures of :data:`PATHVQA` for a training split (and a test split, for those that need one);
    ``prior``: the question-only prior's scores on ``test``, where they were computed already."""
    open_rows = [s for s in train if s.type == "open"]
    questions = [s.question.lower() for s in train]
    firsts = Counter(q.split()[0] if q.split() else "" for q in questions)
    rows = Counter((s.image_key, s.question.lower(), s.target) for s in train)
    answer_words = [_words(s.target) for s in open_rows]
    out: dict[str, Any] = {
        "yes_no_share": _share(len(train) - len(open_rows), len(train)),
        "open_answers_per_open_train_row": _share(len({s.target for s in open_rows}), len(open_rows)),
        "unseen_open_test_answers": None,
        "open_answer_words_mean": round(statistics.fmean(answer_words), 2) if answer_words else None,
        "open_answer_words_median": statistics.median(answer_words) if answer_words else None,
        "question_words_mean": round(statistics.fmean(map(_words, questions)), 2) if questions else None,
        "distinct_questions_per_train_row": _share(len(set(questions)), len(questions)),
        "test_questions_seen_in_train": None,
        **{f"first_word_{w}": _share(firsts[w], len(questions)) for w in FIRST_WORDS},
        "qa_per_image": round(len(train) / len({s.image_key for s in train}), 2) if train else None,
        "duplicate_share": _share(sum(n - 1 for n in rows.values()), len(train)),
        "prior_closed_accuracy": None,
        "prior_open_exact_match": None,
    }
    if test:
        prior = prior or score(QuestionPrior(train).predictions(test))  # the two figures need no intervals
        out.update(_test_figures(train, test, set(questions), prior))
    return out


def _test_figures(
    train: list[Sample], test: list[Sample], train_questions: set[str], prior: dict[str, Any]
) -> dict[str, Any]:
    return {
        "unseen_open_test_answers": unseen_answers(train, test)["share"],
        "test_questions_seen_in_train": _share(
            sum(s.question.lower() in train_questions for s in test), len(test)
        ),
        "prior_closed_accuracy": prior["closed_accuracy"],
        "prior_open_exact_match": prior["open_exact_match"],
    }


def _stain_lines(split: str, stats: dict) -> list[str]:
    """The split's stain profile, and its other-lab twin's beside it."""

    def said(p: dict) -> str:
        return (f"haematoxylin {p['haematoxylin']:.3f}, eosin {p['eosin']:.3f}, DAB {p['dab']:.3f}; "
                f"RGB ({p['red']:.0f}, {p['green']:.0f}, {p['blue']:.0f})")  # fmt: skip

    if not stats.get("stain"):
        return []
    lines = [f"  stain (mean optical density; mean colour): {split}: {said(stats['stain'])}"]
    other = stats.get("other_lab")
    if other:
        same = "the same questions" if other["same_questions"] else "NOT the same questions"
        lines.append(f"  {' ' * 42}{other['split']}: {said(other['stain'])} ({other['rows']} rows, {same})")
    return lines


def stats_lines(dataset: str, split: str, stats: dict) -> list[str]:
    """``pathvqa data-stats``'s text: a split's rows, answers, skipped rows, leakage and the prior."""
    lines = [
        f"{dataset} [{split}]: {stats['rows_kept']}/{stats['rows_total']} rows kept "
        f"({stats['closed']} closed, yes share {stats['yes_share_of_closed']}; {stats['open']} open; "
        f"{stats['duplicates']} duplicate rows)",
        f"  answers: {stats['unique_answers']} unique, {stats['answers_seen_once']} seen once, "
        f"top 10 cover {stats['top10_answer_coverage']}",
    ]
    lines += [f"  skipped {count:>6}  {reason}" for reason, count in stats["skipped_reasons"].items()]
    if stats.get("filtered_by_where"):
        lines.append(f"  filtered {stats['filtered_by_where']:>5}  by data.where")
    lines.append("  top answers: " + ", ".join(f"{a} ({n})" for a, n in stats["top_answers"]))
    if stats.get("regions"):
        kinds = ", ".join(f"{kind} {n}" for kind, n in stats["regions"].items())
        lines.append(
            f"  regions: {sum(stats['regions'].values())} of {stats['rows_total']} questions concern one "
            f"({kinds}): pathvqa explain --score measures where the model looked against them"
        )
    lines += _stain_lines(split, stats)
    across = stats["across_splits"]
    for pair, leak in across["leakage"].items():
        lines.append(
            f"  {pair}: {leak['shared_images']} shared images ({leak['rows_with_a_seen_image']} rows), "
            f"{leak['shared_question_answer_pairs']} shared question-answer pairs "
            f"({leak['rows_with_a_seen_question_answer_pair']} rows), {leak['rows_seen_exactly']} rows seen exactly"
        )
    if "question_prior" in across:
        prior, unseen = across["question_prior"], across["unseen_test_answers"]
        others = "; ".join(
            f"{p.title.removesuffix(' protocol')}: "
            + ", ".join(f"{k} {_f(v)}" for k, v in prior[p.key].items())
            for p in every_protocol()
        )
        lines.append(
            f"  question-only prior on test: EM {_f(prior['exact_match'])}, closed {_f(prior['closed_accuracy'])}, "
            f"open EM {_f(prior['open_exact_match'])} ({others}); {unseen['unseen']} of {unseen['open_rows']} "
            "open test answers never occur in train"
        )
    return lines


def _f(value: float | None) -> str:
    """A score to three places, or n/a (no question of that kind)."""
    return "n/a" if value is None else f"{value:.3f}"


def shape_table(figures: dict[str, Any], reference: str | None = None) -> list[str]:
    """Aligned lines: figure, this dataset's value (and the reference dataset's)."""
    ref = REFERENCES.get(reference or "", {})
    head = f"  {'shape figure':<48} {'this dataset':>12}" + (f" {reference:>12}" if ref else "")
    lines = [head]
    for key, label in LABELS.items():
        lines.append(
            f"  {label:<48} {_text(figures.get(key)):>12}" + (f" {_text(ref[key]):>12}" if ref else "")
        )
    return lines


def _text(value: Any) -> str:
    return "—" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)
