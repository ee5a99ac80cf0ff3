"""Dataset sources → one random-access table of raw rows ``{image, question, answer[, caption]}``.

Supported sources (checked in this order):

1. a ``save_to_disk`` folder (``dataset_dict.json`` or ``state.json`` inside);
2. a folder in the hub layout, ``data/{split}-*.parquet`` (what ``flaviagiammarino/path-vqa``
   and ``pathvqa synth`` write);
3. a folder of ``{split}.parquet`` / ``{split}-*.parquet``;
4. a folder of ``{split}.jsonl`` whose ``image`` fields are paths relative to the folder;
5. a Hugging Face hub id (``owner/name``), through ``datasets.load_dataset``.

Images stay encoded (``{bytes, path}``) until validation decodes them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pathvqa.config.datasets import FORMATS
from pathvqa.errors import DataError
from pathvqa.offline import offline_unless_reachable

REQUIRED_COLUMNS = ("image", "question", "answer")


INVALID = "_invalid"
"""A row that could not be read as one (a broken JSON line, a conversation turn out of order): counted as a bad
row with what was wrong, never a column."""


@dataclass
class RowTable:
    """Raw rows of one split; ``root`` resolves relative image paths."""

    table: pa.Table | None
    records: list[dict[str, Any]] | None
    root: Path | None
    description: str
    header: list[str] | None = None
    """The file's own column names, as it has them (before ``data.columns`` renames any; a CSV's header)."""
    filtered: int = 0
    """Rows ``data.where`` left out."""

    def __len__(self) -> int:
        return self.table.num_rows if self.table is not None else len(self.records)

    @property
    def columns(self) -> list[str]:
        if self.table is not None:
            return self.table.column_names
        keys = {k for r in self.records for k in r if k != INVALID}
        return sorted(keys) if keys or self.header is None else list(self.header)

    @property
    def file_columns(self) -> list[str]:
        """The columns as the file names them (what a message about a missing column lists)."""
        return list(self.header) if self.header is not None else self.columns

    def row(self, index: int) -> dict[str, Any]:
        if self.table is not None:
            return self.table.slice(index, 1).to_pylist()[0]
        return self.records[index]

    def column(self, name: str) -> list[Any]:
        if self.table is not None:
            return self.table.column(name).to_pylist() if name in self.table.column_names else []
        return [r.get(name) for r in self.records]

    def subset(self, indices: list[int], description: str | None = None) -> RowTable:
        """These rows only, in this order."""
        table = self.table.take(pa.array(indices, type=pa.int64())) if self.table is not None else None
        records = [self.records[i] for i in indices] if self.records is not None else None
        return replace(self, table=table, records=records, description=description or self.description)

    def renamed(self, names: dict[str, str]) -> RowTable:
        """Columns renamed ``{file's name: pathvqa's name}`` (a column already named so is replaced)."""
        header = self.file_columns
        if self.table is not None:
            keep = [c for c in self.table.column_names if c not in names.values() or c in names]
            table = self.table.select(keep)
            table = table.rename_columns([names.get(c, c) for c in table.column_names])
            return replace(self, table=table, records=None, header=header)
        records = [{names.get(k, k): v for k, v in r.items() if k in names or k not in names.values()}
                   for r in self.records]  # fmt: skip
        return replace(self, records=records, header=header)

    def image_bytes(self, value: Any) -> bytes | None:
        """The encoded image of a row's ``image`` field (bytes, ``{bytes, path}``, or a path)."""
        if isinstance(value, dict):
            if value.get("bytes"):
                return value["bytes"]
            value = value.get("path")
        if isinstance(value, bytes | bytearray):
            return bytes(value) or None
        if isinstance(value, str) and value:
            path = Path(value)
            if not path.is_absolute() and self.root is not None:
                path = self.root / path
            try:
                return path.read_bytes()
            except OSError:
                return None
        return None


def _parquet_table(files: list[Path], description: str, root: Path) -> RowTable:
    try:
        # memory-mapped: rows are read from the page cache when asked for (data.lazy_images)
        table = pa.concat_tables(
            [pq.read_table(f, memory_map=True) for f in files], promote_options="default"
        )
    except (pa.ArrowException, OSError) as err:
        hint = ""
        if "Nested data conversions not implemented for chunked array" in str(err):
            hint = (
                " (a row group's image column is over 2 GB: rewrite the file in smaller row groups, "
                "pyarrow.parquet.write_table(table, path, row_group_size=1000))"
            )
        raise DataError(f"cannot read parquet in {description}: {err}{hint}") from None
    return RowTable(table, None, root, description)


def _mapped_parquet(files: list[Path], description: str, root: Path) -> RowTable:
    """Parquet converted once into an Arrow file in the datasets cache, then memory-mapped from there (as
    ``datasets.load_dataset`` does): rows stay on disk until read. Parquet itself cannot be mapped, its
    pages are decoded into RAM (and PathVQA repeats each image in every one of its question rows)."""
    from datasets import Dataset

    try:
        ds = Dataset.from_parquet([str(f) for f in files])
    except Exception as err:  # datasets raises arrow, OS and its own errors
        raise DataError(f"cannot read parquet in {description}: {err.__class__.__name__}: {err}") from None
    return _datasets_table(ds, description, root)


def _csv_table(path: Path) -> RowTable:
    """A comma-separated file with a header line, UTF-8 with or without a byte-order mark (Excel's "CSV
    UTF-8"), any line ends."""
    import csv

    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = list(reader.fieldnames or [])
            records = [dict(row) for row in reader]
    except (UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"cannot read {path} as CSV: {err}") from None
    if not header:
        raise DataError(f"{path} is empty: no header line and no rows")
    if len(header) == 1 and (";" in header[0] or "\t" in header[0]):
        separator = "';'" if ";" in header[0] else "a tab"
        raise DataError(
            f"{path} is separated by {separator}, not by commas: save it as comma-separated CSV "
            "(in Excel: CSV UTF-8, comma delimited)"
        )
    if not records:
        raise DataError(f"{path} is empty: a header line ({', '.join(header)}) and no rows")
    return RowTable(None, records, path.parent, str(path), header=header)


def format_rows(name: str):
    """The function ``data.format`` ``name`` reads a file's records with (None: they are rows already)."""
    import importlib

    target = FORMATS[name].rows
    if target is None:
        return None
    module, _, function = target.partition(":")
    return getattr(importlib.import_module(module), function)


def _json_table(path: Path) -> RowTable:
    """A JSON array of records."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read {path} as JSON: {err}") from None
    if not isinstance(entries, list):
        raise DataError(f"{path}: give a JSON array of rows (one object per question)")
    if not entries:
        raise DataError(f"{path} is empty: an array with no rows")
    rows = [e if isinstance(e, dict) else {INVALID: f"entry {i}"} for i, e in enumerate(entries)]
    return RowTable(None, rows, path.parent, str(path))


def llava_rows(entries: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """:func:`conversation_rows`, refusing a file in which no entry is a conversation (plain rows read with
    ``data.format: llava``)."""
    if not any(isinstance(e.get("conversations"), list) for e in entries):
        keys = sorted({k for e in entries for k in e if k != INVALID})
        raise DataError(
            f"{path}: data.format llava reads LLaVA conversations ({{image, conversations: [{{from: human, …}}, "
            f"{{from: gpt, …}}]}}), but no entry has any (its keys: {', '.join(keys) or 'none'}): "
            "for rows of image, question and answer leave data.format at auto"
        )
    return conversation_rows(entries)


def conversation_rows(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """LLaVA/ShareGPT entries ``{id, image, conversations: [{from: human, value: "<image>\\n…"}, {from: gpt,
    value: …}, …]}`` → one ``{id, image, question, answer}`` row per human→gpt turn (``<image>`` removed)."""
    rows: list[dict[str, Any]] = []
    for entry in entries:
        turns = entry.get("conversations")
        if not isinstance(turns, list):
            rows.append({INVALID: f"entry {entry.get('id', '?')}: no conversations"})
            continue
        pairs = zip(turns[::2], turns[1::2], strict=False)
        for n, (ask, reply) in enumerate(pairs):
            if not (isinstance(ask, dict) and isinstance(reply, dict)) or (
                ask.get("from"),
                reply.get("from"),
            ) != (
                "human",
                "gpt",
            ):
                rows.append({INVALID: f"entry {entry.get('id', '?')} turn {n}"})
                continue
            question = str(ask.get("value", "")).replace("<image>", " ").strip()
            rows.append({"id": f"{entry.get('id', '')}-{n}", "image": entry.get("image"), "question": question,
                         "answer": reply.get("value")})  # fmt: skip
    return rows


def _jsonl_table(path: Path) -> RowTable:
    records = []
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        raise DataError(f"cannot read {path} as JSON lines: not UTF-8 text ({err.reason})") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = {INVALID: f"line {lineno}"}  # counted as a bad row, not a crash
        records.append(row if isinstance(row, dict) else {INVALID: f"line {lineno}"})
    if not records:
        raise DataError(f"{path} is empty: no rows")
    return RowTable(None, records, path.parent, str(path))


def _datasets_table(ds: Any, description: str, root: Path | None) -> RowTable:
    from datasets import Image

    if "image" in ds.column_names:
        ds = ds.cast_column("image", Image(decode=False))
    if getattr(ds, "_indices", None) is not None:  # a selected/shuffled save_to_disk: rows in its order
        ds = ds.flatten_indices()
    return RowTable(ds.data.table, None, root, description)


def looks_like_hub_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "/", "~"))


def open_source(
    source: str, split: str, mapped: bool = False, fmt: str = "auto", root: str | None = None
) -> RowTable:
    """Find ``split`` in ``source`` and return its raw rows; fail at once if it is not there.

    ``mapped``: parquet files are read through the datasets cache (one Arrow file per split, memory-
    mapped) instead of into RAM; hub and save_to_disk sources are memory-mapped either way. ``fmt``:
    ``llava`` reads ``{split}.json`` as conversations. ``root``: image paths are relative to it (a folder
    source's subfolder, or any folder; default the source folder)."""
    path = Path(source).expanduser()
    if path.is_dir():
        table = _open_folder(path, split, mapped, fmt, path / root if root else path)
        return table
    if path.is_file():
        raise DataError(f"dataset source {source} is a file; pass the folder that holds it")
    if looks_like_hub_id(source):
        return _open_hub(source, split)
    raise DataError(
        f"dataset not found: {source} (not a folder, and not a hub id like flaviagiammarino/path-vqa); "
        "make one with `pathvqa synth --out DIR`"
    )


SPLIT_FILES = {
    "parquet": ("data/{split}-*.parquet", "data/{split}.parquet", "{split}.parquet", "{split}-*.parquet"),
    "jsonl": ("{split}.jsonl",),
    "json": ("{split}.json",),
    "csv": ("{split}.csv",),
}
"""Where a folder holds a split, by format (a save_to_disk folder aside): one format per split."""


def _split_files(path: Path, split: str) -> dict[str, list[Path]]:
    """The files of ``split`` in ``path``, by format (only the formats that have any)."""
    found = {}
    for fmt, patterns in SPLIT_FILES.items():
        for pattern in patterns:
            files = sorted(path.glob(pattern.format(split=split)))
            if files:
                found[fmt] = files
                break
    return found


def folder_splits(path: Path) -> list[str]:
    """The splits a folder holds (what a message about a missing split lists); in a folder of parquet
    splits, those only (a JSON file beside them is a note, such as the synthetic set's ``synth.json``)."""
    import re

    by_format: dict[str, set[str]] = {}
    claimed: set[Path] = set()
    for fmt, patterns in SPLIT_FILES.items():
        for pattern in sorted(patterns, key=lambda p: "-*" not in p):  # train-0000.parquet is split train
            regex = re.escape(pattern).replace(r"\{split\}", "(?P<split>[^/]+?)").replace(r"\*", "[^/]*")
            for file in sorted(set(path.glob(pattern.replace("{split}", "*"))) - claimed):
                match = re.fullmatch(regex, file.relative_to(path).as_posix())
                if match and file.is_file():
                    by_format.setdefault(fmt, set()).add(match["split"])
                    claimed.add(file)
    if "parquet" in by_format:
        return sorted(by_format["parquet"])
    return sorted(set().union(*by_format.values()))


def _open_folder(path: Path, split: str, mapped: bool, fmt: str, root: Path) -> RowTable:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        from datasets import DatasetDict, load_from_disk

        ds = load_from_disk(str(path))
        if isinstance(ds, DatasetDict):
            if split not in ds:
                raise SplitNotFound(f"split '{split}' not in {path} (it has: {', '.join(ds)})")
            ds = ds[split]
        return _datasets_table(ds, f"{path} [{split}]", path)
    found = _split_files(path, split)
    if len(found) > 1:
        files = " and ".join(str(files[0].relative_to(path)) for files in found.values())
        raise DataError(f"split '{split}' is in two formats in {path} ({files}): keep one of them")
    rows = format_rows(fmt)
    if "parquet" in found:
        if rows is not None:
            raise DataError(
                f"data.format {fmt} reads JSON or JSONL files; split '{split}' of {path} is parquet"
            )
        read = _mapped_parquet if mapped else _parquet_table
        return read(found["parquet"], f"{path} [{split}]", path)
    readers = {"jsonl": _jsonl_table, "json": _json_table, "csv": _csv_table}
    kind = next((k for k in readers if k in found), None)
    if kind is not None:
        file = found[kind][0]
        table = replace(readers[kind](file), root=root)
        if rows is not None:
            if kind == "csv":
                raise DataError(f"data.format {fmt} reads JSON or JSONL files, not {file}")
            table = replace(table, records=rows(table.records, file), header=None)
        return table
    has = folder_splits(path)
    looked = ", ".join(p.format(split=split) for ps in SPLIT_FILES.values() for p in ps)
    raise SplitNotFound(
        f"split '{split}' not found in {path} (it has: {', '.join(has) or 'no split files'}; looked for "
        f"{looked} and a save_to_disk folder)"
    )


class SplitNotFound(DataError):
    """The source has no such split (a set with only train and test may carve its validation split)."""


def _open_hub(source: str, split: str) -> RowTable:
    from datasets import load_dataset

    try:
        offline_unless_reachable()
        ds = load_dataset(source, split=split)
    except ValueError as err:
        if "Unknown split" in str(err) or "should be one of" in str(err):
            raise SplitNotFound(f"split '{split}' not in {source}: {str(err)[:200]}") from None
        raise _hub_error(source, split, err) from None
    except Exception as err:  # the hub raises many types (connection, 404, offline mode)
        raise _hub_error(source, split, err) from None
    return _datasets_table(ds, f"{source} [{split}]", None)


def _hub_error(source: str, split: str, err: Exception) -> DataError:
    offline = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("HF_DATASETS_OFFLINE")
    return DataError(
        f"could not load dataset '{source}' split '{split}' from the Hugging Face hub"
        f"{' (offline mode is on)' if offline else ''}: {err.__class__.__name__}: {str(err)[:200]}. "
        f"Where the network allows, run `python -c \"import datasets; datasets.load_dataset('{source}')"
        ".save_to_disk('DIR')\"` and pass DIR, or copy its parquet files into DIR/data/"
    )
