"""Where commands write: a destination is checked before any work, and results appear whole or not at all.

- :func:`check_destination`: the folder (or the folder a file goes in) can be written: it is not a file,
  it is not under a file, and the nearest folder that exists takes a new entry (tried, then removed).
  Nothing is created here: a command that then fails leaves nothing behind.
- :func:`write_text_atomic`: a file written beside its place, then renamed over it.
- :func:`replace_folder`: a folder written whole under a temporary name, then renamed into place
  (a previous folder is removed only once the new one is complete).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pathvqa.errors import PathVQAError


def check_destination(path: str | Path, flag: str = "--out") -> Path:
    """``path`` as a folder to write into; a one-line :class:`PathVQAError` if it cannot be one."""
    path = Path(path)
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
