"""Dataset formats and presets: the two tables ``data.format`` and ``data.preset`` (and ``PRESET:FOLDER``
wherever a dataset is named) take their values from. A new preset is one entry of :data:`PRESETS`; a new
format one entry of :data:`FORMATS` naming the function that reads its rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Format:
    """How a split's file turns into question rows."""

    rows: str | None
    """``module:function(records, path) -> rows`` applied to a JSON / JSONL file's records (None: each
    record is a row already, whatever the file)."""
    help: str


FORMATS: dict[str, Format] = {
    "auto": Format(None, "each row of the split's file is a question (parquet, JSONL, JSON array, CSV, save_to_disk)"),
    "llava": Format(
        "pathvqa.data.sources:llava_rows",
        "LLaVA/ShareGPT conversations in a JSON or JSONL file: one question per human→gpt turn",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class Preset:
    """A known set: where it is and how its rows read (sizes and protocols: docs/datasets.md)."""

    source: str | None
    """Hub id, or None when the release is a folder the user names (``slake:/data/Slake1.0``)."""
    columns: dict[str, str] = field(default_factory=dict)
    """pathvqa's field → the file's column; ``answer_type`` there: the dataset says closed or open."""
    where: dict[str, Any] = field(default_factory=dict)
    """Rows kept: column → value."""
    image_root: str | None = None
    """Image paths are relative to this folder inside the release."""


PRESETS: dict[str, Preset] = {
    "pathvqa": Preset("flaviagiammarino/path-vqa"),
    "vqa-rad": Preset("flaviagiammarino/vqa-rad"),
    "slake": Preset(  # the release folder: imgs/xmlabN/source.jpg and {train,validation,test}.json
        None,
        columns={"image": "img_name", "answer_type": "answer_type"},
        where={"q_lang": "en"},
        image_root="imgs",
    ),
}
