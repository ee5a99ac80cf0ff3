"""Where commands write: a destination is checked before any work, and results appear whole or not at all.

- :func:`check_destination`: the folder (or the folder a file goes in) can be written: it is not a file,
  it is not under a file, and the nearest folder that exists takes a new entry (tried, then removed); and
  it is apart from everything the command reads (a run, its checkpoints, a dataset, an image): never the
  same, never holding it, never inside it, whatever ``--overwrite`` says. Every command that writes calls
  it, with what it reads, before any work. Nothing is created here: a command that then fails leaves
  nothing behind.
- :func:`write_text_atomic`: a file written beside its place, then renamed over it.
- :func:`replace_folder`: a folder written whole under a temporary name, then renamed into place
  (a previous folder is removed only once the new one is complete).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from pathvqa.errors import PathVQAError


def check_destination(
    path: str | Path, flag: str = "--out", reads: Iterable[str | Path | None] = (), file: bool = False
) -> Path:
    """``path`` as a folder to write into (``file``: a file to write), apart from everything in ``reads``;
    a one-line :class:`PathVQAError` if it cannot be one."""
    path = Path(path)
    check_apart(path, reads, flag)
    if file:
        if path.is_dir():
            raise PathVQAError(f"{flag} {path} is a folder: give a file name")
        check_destination(path.parent, flag)
        return path
    if path.exists() and not path.is_dir():
        raise PathVQAError(f"{flag} {path} is a file: give a folder (it is created if missing)")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise PathVQAError(f"{flag} {path}: {existing} is a file, so no folder can be made under it")
    try:
        probe = tempfile.mkdtemp(prefix=".pathvqa-probe-", dir=existing)
        os.rmdir(probe)
    except OSError as err:
        reason = err.strerror or err.__class__.__name__
        raise PathVQAError(f"{flag} {path}: cannot write in {existing} ({reason})") from None
    return path


def check_apart(path: str | Path, reads: Iterable[str | Path | None], flag: str = "--out") -> None:
    """Refuse ``path`` when it is, holds or lies inside anything in ``reads`` (paths that do not exist, such
    as hub ids, and ``None`` are passed over). Symbolic links are followed: a link to a run is that run."""
    where = Path(path).resolve()
    for read in reads:
        if read is None or not Path(read).exists():
            continue
        source = Path(read).resolve()
        if where == source:
            relation = "is"
        elif where in source.parents:
            relation = "holds"
        elif source in where.parents:
            relation = "lies inside"
        else:
            continue
        what = (
            "is what this command reads"
            if relation == "is"
            else f"{relation} {read}, which this command reads"
        )
        raise PathVQAError(f"{flag} {path} {what}: write elsewhere (--overwrite never replaces what is read)")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to a file beside ``path``, then rename it over ``path`` (never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def is_empty_folder(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


@contextlib.contextmanager
def replace_folder(final: str | Path) -> Iterator[Path]:
    """A temporary folder beside ``final`` to fill; on success it becomes ``final`` (an old ``final`` is
    removed then), on an error it is removed and ``final`` is untouched."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        yield work
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    if final.exists():
        final.rename(old)
    work.rename(final)
    shutil.rmtree(old, ignore_errors=True)
