"""Which dataset, read how: a *source* (hub id or folder) in a *format*, a *column map* and a row filter
that turn its raw rows into ``{image, question, answer[, answer_type]}``, and a *preset* that is just data
naming those for a known set (``pathvqa``, ``vqa-rad``, ``slake``).

Anywhere a dataset is named (``--dataset``, ``data.dataset``) ``PRESET:PATH`` (``slake:/data/Slake1.0``)
or a preset alone (``vqa-rad``) works beside a plain folder or hub id; a config can also set
``data.preset`` / ``data.columns`` / ``data.where`` / ``data.format`` / ``data.image_root``.

A set without a validation split (VQA-RAD: train and test) gets one carved out of train, by image: a
seeded ``validation_from_train`` share of train's images, every question about them, and train keeps the
rest; no image is in both. The test split is never carved.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from pathvqa.config import column_clash
from pathvqa.config.datasets import PRESETS
from pathvqa.data.sources import RowTable, SplitNotFound, open_source
from pathvqa.errors import DataError

log = logging.getLogger(__name__)
FIELDS = ("image", "question", "answer", "answer_type")
"""What a column map may name (``answer_type``: CLOSED/OPEN, where the dataset says which is which)."""
TRAIN, TEST = "train", "test"


@dataclass(frozen=True)
class DatasetSpec:
    source: str
    format: str = "auto"
    columns: dict[str, str] = field(default_factory=dict)
    """pathvqa's field → the file's column (``{image: img_name}``)."""
    where: dict[str, Any] = field(default_factory=dict)
    """Keep only rows whose column equals the value (``{q_lang: en}``)."""
    image_root: str | None = None
    """Image paths are relative to this folder (inside a folder source, or absolute); default the source."""
    validation_from_train: float = 0.05
    eval_split: str = "validation"
    seed: int = 0

    def __post_init__(self):
        problem = column_clash(self.columns)
        if problem:
            raise DataError(problem)

    def describe(self) -> str:
        return self.source

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def local_paths(self) -> list[Path]:
        """The folders on this machine the rows and images are read from (none for a hub id): what a
        command's destination must stay apart from."""
        folder = Path(self.source).expanduser()
        if not folder.is_dir():
            return []
        root = folder / self.image_root if self.image_root else folder
        return [folder, *([root] if root != folder else [])]


def preset(name: str, source: str | None = None, **settings: Any) -> DatasetSpec:
    if name not in PRESETS:
        raise DataError(f"unknown dataset preset {name!r} (have {', '.join(PRESETS)})")
    values = {**asdict(PRESETS[name]), **{k: v for k, v in settings.items() if v is not None}}
    values["source"] = source or values["source"]
    if not values["source"]:
        raise DataError(f"preset {name}: give its folder ({name}:/path/to/it or data.dataset)")
    return DatasetSpec(**values)


SPEC_KEYS = ("dataset", "preset", "format", "columns", "where", "image_root", "validation_from_train")


def from_file(path: Path) -> DatasetSpec:
    """A dataset described in YAML (``dataset``, ``preset``, ``format``, ``columns``, ``where``,
    ``image_root``, ``validation_from_train``): what ``--dataset FILE.yaml`` reads. A relative ``dataset``
    is relative to the file."""
    import yaml

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: not a YAML dataset description ({err.__class__.__name__})") from None
    unknown = [k for k in raw if k not in SPEC_KEYS] if isinstance(raw, dict) else ["(not a mapping)"]
    if unknown:
        raise DataError(f"{path}: unknown key(s) {', '.join(unknown)} (use {', '.join(SPEC_KEYS)})")
    source = raw.pop("dataset", None)
    if source and not Path(source).is_absolute() and (path.parent / source).exists():
        source = str(path.parent / source)
    name = raw.pop("preset", None)
    if name:
        return preset(name, source, **raw)
    if not source:
        raise DataError(f"{path}: name the data (dataset: FOLDER or hub id)")
    return DatasetSpec(source, **raw)


def parse(text: str) -> DatasetSpec:
    """``PRESET:PATH``, a preset alone, a dataset YAML, or a plain folder / hub id."""
    if text.endswith((".yaml", ".yml")) and Path(text).is_file():
        return from_file(Path(text))
    name, colon, rest = text.partition(":")
    if colon and name in PRESETS:
        return preset(name, rest or None)
    if colon and re.fullmatch(r"[a-z][a-z0-9_-]+", name) and not Path(text).exists():  # not C:\ nor a path
        raise DataError(f"unknown dataset preset {name!r} in {text!r} (have {', '.join(PRESETS)})")
    if text in PRESETS:
        return preset(text)
    return DatasetSpec(text)


def as_spec(source: str | DatasetSpec) -> DatasetSpec:
    return source if isinstance(source, DatasetSpec) else parse(str(source))


def open_split(source: str | DatasetSpec, split: str, mapped: bool = False) -> RowTable:
    """The raw rows of ``split`` with the spec's columns, filter and (when missing) carved validation."""
    spec = as_spec(source)
    try:
        table = _read(spec, split, mapped)
    except SplitNotFound as err:
        if split != spec.eval_split or not _carves(spec):
            raise DataError(f"{err}{_carve_hint(spec, split)}") from None
        train = _read(spec, TRAIN, mapped)
        chosen = _carved(spec, train)
        _say_carved(spec, split, len(chosen))
        return train.subset(chosen, f"{train.description} [carved {split}]")
    if split == TRAIN and _carves(spec):  # said where the carved split is read (a baseline never reads it)
        carved = set(_carved(spec, table))
        table = table.subset([i for i in range(len(table)) if i not in carved])
    return table


_SAID: set[tuple] = set()


def _say_carved(spec: DatasetSpec, split: str, rows: int) -> None:
    """The carved-validation notice, once a process however often the split is opened."""
    if (spec.source, split) in _SAID:
        return
    _SAID.add((spec.source, split))
    log.warning(
        "%s has no '%s' split: %.0f%% of train's images (%d rows) carved out as it, seeded "
        "(data.validation_from_train; train keeps the rest)",
        spec.describe(), split, 100 * spec.validation_from_train, rows,
    )  # fmt: skip


def _carves(spec: DatasetSpec) -> bool:
    """A set of train and test only (VQA-RAD): its validation split is carved out of train."""
    if spec.validation_from_train <= 0 or spec.eval_split in (None, TRAIN, TEST):
        return False
    return not _has_split(spec, spec.eval_split) and _has_split(spec, TEST) and _has_split(spec, TRAIN)


def _carve_hint(spec: DatasetSpec, split: str) -> str:
    """For the validation split only: how a set without one gets one, or validates nothing."""
    if split != spec.eval_split or split in (TRAIN, TEST):
        return ""
    return (
        f"; a set with train and test splits gets its '{split}' carved out of train "
        "(data.validation_from_train), or set data.eval_split: null to validate nothing"
    )


def _read(spec: DatasetSpec, split: str, mapped: bool) -> RowTable:
    table = open_source(spec.source, split, mapped, spec.format, spec.image_root)
    for name, column in spec.columns.items():
        if column not in table.columns:
            raise DataError(
                f"data.columns.{name}: no column {column!r} in {table.description} "
                f"(it has: {', '.join(table.file_columns)})"
            )
    if spec.columns:
        table = table.renamed({column: name for name, column in spec.columns.items()})
    before = len(table)
    for column, value in spec.where.items():
        if column not in table.columns:
            raise DataError(
                f"data.where.{column}: no such column in {table.description} "
                f"(it has: {', '.join(table.file_columns)})"
            )
        values = table.column(column)
        table = table.subset([i for i, v in enumerate(values) if v == value])
    if spec.where and before and not len(table):
        shown = ", ".join(f"{k} = {v!r}" for k, v in spec.where.items())
        raise DataError(f"data.where ({shown}) keeps none of the {before} rows of {table.description}")
    return replace(table, filtered=before - len(table))


def _has_split(spec: DatasetSpec, split: str) -> bool:
    try:
        open_source(spec.source, split, False, spec.format, spec.image_root)
    except SplitNotFound:
        return False
    return True


def _identity(value: Any) -> str:
    """An image's identity without decoding it: its path, else the sha1 of its bytes."""
    if isinstance(value, dict):
        value = value.get("path") or value.get("bytes")
    if isinstance(value, bytes | bytearray):
        return hashlib.sha1(value).hexdigest()
    return str(value)


def _carved(spec: DatasetSpec, train: RowTable) -> list[int]:
    """Rows of train whose image is among the seeded share of its images (at least one image; by image:
    all its questions go together). The images are ranked by a seeded hash of their identity."""
    identities = [_identity(value) for value in train.column("image")]
    distinct = sorted(set(identities), key=lambda i: hashlib.sha1(f"{spec.seed}:{i}".encode()).digest())
    count = max(1, round(spec.validation_from_train * len(distinct))) if len(distinct) > 1 else 0
    chosen = set(distinct[:count])
    return [index for index, identity in enumerate(identities) if identity in chosen]


def with_settings(spec: DatasetSpec, **settings: Any) -> DatasetSpec:
    return replace(spec, **{k: v for k, v in settings.items() if v is not None})
