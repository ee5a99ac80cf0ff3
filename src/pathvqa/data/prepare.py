"""Validated, cleaned samples of one split, and the statistics ``pathvqa data-stats`` prints.

Bad rows never crash a run: each is skipped and counted by reason (``missing_image``,
``undecodable_image``, ``image_too_large``, ``empty_question``, ``missing_answer``,
``duplicate``, ``invalid_row``).
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

from tqdm.auto import tqdm

from pathvqa.answers import answer_type, given_type
from pathvqa.config import MAX_PIXELS, DataConfig
from pathvqa.data.images import BadImage, decode
from pathvqa.data.sources import INVALID, REQUIRED_COLUMNS, RowTable
from pathvqa.data.spec import DatasetSpec, as_spec, open_split, preset
from pathvqa.errors import DataError

log = logging.getLogger(__name__)
_TRAILING_PUNCT = re.compile(r"[\s.,;:!?]+$")


def clean_answer(answer: str) -> str:
    """Training target: strip, lowercase, collapse whitespace, drop trailing punctuation."""
    return _TRAILING_PUNCT.sub("", " ".join(answer.strip().lower().split()))


RESTAINED = "_other_lab"
"""A split drawn again in another lab's stain (``pathvqa synth --other-lab``: ``test_other_lab``): the same
questions in the same order, so they keep the ids of the split it redraws and pair with it question by
question (``pathvqa compare``)."""


def sample_id(split: str, index: int) -> str:
    """A question's id: its split and its row in the split's table (``test-000042``; a restained split's
    rows: the ids of the split it redraws)."""
    return f"{split.removesuffix(RESTAINED)}-{index:06d}"


@dataclass
class Sample:
    id: str
    image_source: bytes | ImageRef
    """Encoded image bytes, or where to read them at batch time (``data.lazy_images``)."""
    image_key: str
    """sha1 of the image bytes: groups questions of one image."""
    question: str
    answer: str
    """The answer as the dataset gives it (metrics normalise it themselves)."""
    target: str
    """Cleaned answer the model is trained to produce."""
    type: str
    caption: str | None = None
    type_given: bool = False
    """``type`` comes from the dataset's own answer type (SLAKE, VQA-RAD), not from the yes/no rule."""

    @property
    def image(self) -> bytes:
        """Encoded image (decoded lazily by the model's data pipeline)."""
        source = self.image_source
        return source if isinstance(source, bytes) else source.load()

    def prediction_row(self, prediction: str, reference: str | None = None) -> dict[str, Any]:
        """This question's row in ``predictions.jsonl``: scored against ``reference`` (default: the answer);
        the dataset's own answer type rides along where it gave one, and decides in the metrics."""
        return {
            "id": self.id,
            "question": self.question,
            "answer": self.answer if reference is None else reference,
            "prediction": prediction,
            "type": self.type,
            **({"answer_type": self.type} if self.type_given else {}),
        }


@dataclass(frozen=True, eq=False)
class ImageRef:
    """Row ``index`` of a split's table: for parquet / Arrow sources a memory-mapped read, so a split
    larger than RAM is never held in it."""

    table: RowTable
    index: int

    def load(self) -> bytes:
        data = self.table.image_bytes(self.table.row(self.index).get("image"))
        if not data:
            raise BadImage("missing_image")
        return data


@dataclass
class SplitData:
    split: str
    samples: list[Sample]
    rows_total: int
    skipped: Counter = field(default_factory=Counter)
    duplicates: int = 0
    """Rows repeating an earlier (image, question, answer) row: skipped when deduplicating, else kept."""
    filtered: int = 0
    """Rows ``data.where`` left out (counted in ``rows_total``)."""
    sampled: bool = False
    """``samples`` chose a seeded sample: rows past it were never read (nor counted as skipped)."""

    def counts(self) -> dict[str, Any]:
        """Rows read, kept and left out by reason: what ``metrics.json`` and ``train_summary.json`` record."""
        return {
            "rows_total": self.rows_total, "rows_kept": len(self.samples),
            "skipped_reasons": dict(sorted(self.skipped.items())), "filtered_by_where": self.filtered,
            "duplicates": self.duplicates, "sampled": self.sampled,
        }  # fmt: skip

    def limits(self, dedupe: bool = False) -> list[str]:
        """Why these rows are not the whole split (empty: every row was scored): what a table, a card or a
        report says beside its numbers."""
        out = [f"a seeded sample of {len(self.samples)} of {self.rows_total} rows"] if self.sampled else []
        if self.filtered:
            out.append(f"{self.filtered} rows filtered out by data.where")
        unreadable = sum(n for reason, n in self.skipped.items() if reason != "duplicate")
        if unreadable:
            out.append(f"{unreadable} unreadable rows left out")
        if dedupe and self.skipped.get("duplicate"):
            out.append(f"{self.skipped['duplicate']} repeated rows dropped (--dedupe)")
        return out

    def rows_line(self) -> str:
        """One line: rows kept of the split, and every row left out by reason (never dropped in silence)."""
        kept = len(self.samples)
        line = f"{self.split}: {kept} of {self.rows_total} rows kept"
        if self.sampled:
            line = f"{self.split}: a seeded sample of {kept} rows from {self.rows_total}"
        out = [f"{n} {reason.replace('_', ' ')}" for reason, n in sorted(self.skipped.items())]
        if self.filtered:
            out.append(f"{self.filtered} filtered out by data.where")
        return line + (f"; left out: {', '.join(out)}" if out else "")

    def stats(self, top: int = 10) -> dict[str, Any]:
        answers = Counter(s.target for s in self.samples)
        types = Counter(s.type for s in self.samples)
        yes = sum(1 for s in self.samples if s.target == "yes")
        kept = len(self.samples)
        return {
            "split": self.split,
            "rows_total": self.rows_total,
            "rows_kept": kept,
            "rows_skipped": sum(self.skipped.values()),
            "skipped_reasons": dict(sorted(self.skipped.items())),
            "duplicates": self.duplicates,
            "filtered_by_where": self.filtered,
            "closed": types["closed"],
            "open": types["open"],
            "yes_share_of_closed": round(yes / types["closed"], 4) if types["closed"] else None,
            "images": len({s.image_key for s in self.samples}),
            "unique_answers": len(answers),
            "answers_seen_once": sum(1 for n in answers.values() if n == 1),
            "top10_answer_coverage": round(sum(n for _, n in answers.most_common(10)) / kept, 4)
            if kept
            else None,
            "top_answers": [[a, n] for a, n in answers.most_common(top)],
        }


def _check_row(table: RowTable, row: dict[str, Any], max_pixels: int, decoded: dict[str, str]) -> tuple:
    """Validate one raw row → (image bytes, key, question, answer); raise BadImage on a bad row."""
    if INVALID in row:
        raise BadImage("invalid_row")
    data = table.image_bytes(row.get("image"))
    question = row.get("question")
    if not isinstance(question, str) or not question.strip():
        raise BadImage("empty_question")
    answer = row.get("answer")
    if answer is None or (isinstance(answer, str) and not clean_answer(answer)):
        raise BadImage("missing_answer")
    if not data:
        raise BadImage("missing_image")
    key = hashlib.sha1(data).hexdigest()
    if key not in decoded:  # PathVQA asks several questions per image: decode each image once
        try:
            decode(data, max_pixels)
            decoded[key] = "ok"
        except BadImage as err:
            decoded[key] = err.reason
    if decoded[key] != "ok":
        raise BadImage(decoded[key])
    return data, key, " ".join(question.split()), str(answer).strip()


def load_split(
    source: str | DatasetSpec,
    split: str,
    *,
    max_pixels: int = MAX_PIXELS,
    samples: int | None = None,
    seed: int = 0,
    progress: bool = True,
    lazy_images: bool = False,
    dedupe: bool = True,
    allow_empty: bool = False,
) -> SplitData:
    """Load, validate and clean one split (a split whose every row is bad is an error unless
    ``allow_empty``: statistics still count them); with ``samples``, a seeded sample of that many valid rows.

    Every image is decoded once here (bad ones are skipped and counted); ``lazy_images`` keeps only a
    reference to each row, not its bytes. Rows repeating an earlier (image, question, answer) are
    counted, and skipped when ``dedupe`` (training; published test numbers count every row)."""
    table = open_split(source, split, mapped=lazy_images)
    if not len(table) and not table.filtered:
        raise DataError(f"{table.description} is empty: no rows")
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise DataError(
            f"{table.description} lacks column(s) {', '.join(missing)} (its columns: "
            f"{', '.join(table.file_columns)}): name yours with data.columns (--set data.columns.image=COLUMN, "
            "or a dataset YAML)"
        )
    order = list(range(len(table)))
    if samples is not None and samples < len(order):
        random.Random(seed).shuffle(order)  # seeded sample; kept rows are re-sorted below
    skipped: Counter = Counter()
    duplicates = 0
    seen: set[tuple[str, str, str]] = set()
    decoded: dict[str, str] = {}
    images: dict[str, bytes] = {}  # one copy of each image's bytes, however many questions ask about it
    kept: list[Sample] = []
    has_caption = "caption" in table.columns
    bar = tqdm(order, desc=f"validate {split}", unit="row", disable=not progress, leave=False)
    for index in bar:
        if samples is not None and len(kept) >= samples:
            break
        row = table.row(index)
        try:
            data, key, question, answer = _check_row(table, row, max_pixels, decoded)
        except BadImage as err:
            skipped[err.reason] += 1
            continue
        if (key, question, answer) in seen:
            duplicates += 1
            if dedupe:
                skipped["duplicate"] += 1
                continue
        seen.add((key, question, answer))
        target = clean_answer(answer)
        caption = row.get("caption") if has_caption else None
        given = given_type(row.get("answer_type"))
        kept.append(
            Sample(
                sample_id(split, index),
                ImageRef(table, index) if lazy_images else images.setdefault(key, data),
                key,
                question,
                answer,
                target,
                given or answer_type(target),
                caption,
                type_given=given is not None,
            )
        )
    kept.sort(key=lambda s: s.id)
    if len(table) and not kept and samples != 0 and not allow_empty:
        reasons = ", ".join(f"{n} {reason}" for reason, n in skipped.most_common())
        raise DataError(f"{table.description}: every row was skipped ({reasons}): nothing to read")
    sampled = samples is not None and samples < len(table)
    return SplitData(split, kept, len(table) + table.filtered, skipped, duplicates, table.filtered, sampled)


def spec_of(data: DataConfig) -> DatasetSpec:
    """The dataset a config's ``data`` section names, read as it says."""
    settings = {
        "format": data.format if data.format != "auto" else None, "columns": data.columns or None,
        "where": data.where or None, "image_root": data.image_root,
        "validation_from_train": data.validation_from_train, "eval_split": data.eval_split, "seed": data.seed,
    }  # fmt: skip
    if data.preset:
        default = DataConfig.model_fields["dataset"].default
        spec = preset(data.preset, None if data.dataset == default else data.dataset, **settings)
        return replace(spec, eval_split=data.eval_split)
    base = as_spec(data.dataset)
    chosen = {k: v for k, v in settings.items() if v is not None or k == "eval_split"}  # null: no validation
    return DatasetSpec(**{**base.__dict__, **chosen})


def check_splits(data: DataConfig) -> None:
    """The splits a training reads are there (a missing one said in one line before any work)."""
    spec = spec_of(data)
    for split in (data.train_split, data.eval_split):
        if split:
            open_split(spec, split)


def say_rows(data: SplitData) -> None:
    """The split's rows-kept line in the log: a warning when any row was left out."""
    left_out = bool(data.skipped) or bool(data.filtered)
    log.log(logging.WARNING if left_out else logging.INFO, "%s", data.rows_line())


def load_data_split(
    data: DataConfig, split: str, samples: int | None, progress: bool, dedupe: bool = True, say: bool = True
) -> SplitData:
    """One split of a config's dataset, validated, with the config's pixel limit and sampling seed; its
    rows-kept line is logged (``say``)."""
    loaded = load_split(
        spec_of(data),
        split,
        max_pixels=data.max_pixels,
        samples=samples,
        seed=data.seed,
        progress=progress,
        lazy_images=data.lazy_images,
        dedupe=dedupe,
    )
    if say:
        say_rows(loaded)
    return loaded


def split_answers(source: str | DatasetSpec, split: str) -> set[str] | None:
    """The cleaned answers of a split, read from its answer column alone (no image is decoded); None
    when the dataset has no such split. What "seen in training" means for an open test answer."""
    try:
        table = open_split(source, split)
    except DataError:
        return None
    if table.table is not None:
        answers = table.table.column("answer").to_pylist() if "answer" in table.columns else []
    else:
        answers = [r.get("answer") for r in table.records]
    return {clean_answer(a) for a in answers if isinstance(a, str) and clean_answer(a)}


def mark_seen(rows: list[dict], seen: set[str] | None) -> list[dict]:
    """Give each open prediction row ``seen``: whether its answer occurs in the training split."""
    if seen is not None:
        for row in rows:
            if row["type"] == "open":
                row["seen"] = clean_answer(str(row["answer"])) in seen
    return rows
