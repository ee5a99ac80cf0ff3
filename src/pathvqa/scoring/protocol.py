"""Scoring protocols as data: each is one module of ``pathvqa.scoring`` that defines ``PROTOCOL`` (its rules in
the module's docstring), and everything that scores or shows scores loops over :func:`registry` — ``score``
and ``metrics.json``, ``compare``, the report's tables, ``pathvqa score --protocol`` and its help, the
protocol reference. A new protocol is one module with its test.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pathvqa.errors import PathVQAError


@dataclass(frozen=True)
class Protocol:
    """One scoring protocol: whose rules, what it reports, how the report shows it."""

    name: str
    """Its name on the command line (``--protocol NAME``)."""
    key: str | None
    """Its section of ``metrics.json`` (``None``: the top level, pathvqa's own)."""
    keys: tuple[str, ...]
    """The scores it reports: means over the rows each applies to, each with a 95% bootstrap interval."""
    columns: tuple[str, ...]
    """The scores its table in the report shows."""
    table: Callable[[list[dict[str, Any]]], dict[str, Any]]
    """Rows (``answer``, ``prediction``, ``type``) → {score: (N,) float array}, NaN where a score does not
    apply (an open score on a closed row); ``closed_accuracy`` among them (what McNemar's test pairs)."""
    title: str
    """Its heading in the report."""
    summary: str
    """One line: whose rules (``pathvqa score --help``)."""
    rules: str
    """What it does (the protocol reference)."""
    intro: str
    """The report's paragraph above its table."""
    order: int = 50
    """Where it stands among the protocols (pathvqa's own first)."""
    published: tuple[dict[str, Any], ...] = ()
    """Published results scored this way on PathVQA's test split: shown beside ours on that split only."""


@functools.cache
def registry() -> dict[str, Protocol]:
    """Every protocol, by name, in order: the ``PROTOCOL`` of each module of ``pathvqa.scoring``."""
    import pathvqa.scoring as package

    found = []
    for module in pkgutil.iter_modules(package.__path__):
        protocol = getattr(importlib.import_module(f"{package.__name__}.{module.name}"), "PROTOCOL", None)
        if isinstance(protocol, Protocol):
            found.append(protocol)
    return {p.name: p for p in sorted(found, key=lambda p: (p.order, p.name))}


def get(name: str) -> Protocol:
    """The protocol called ``name``; an unknown name is a one-line error naming the protocols."""
    protocols = registry()
    if name not in protocols:
        raise PathVQAError(f"--protocol {name!r}: use {', '.join(protocols)}")
    return protocols[name]


def sections() -> list[Protocol]:
    """The protocols that have a section of their own in ``metrics.json`` (every one but pathvqa's own)."""
    return [p for p in registry().values() if p.key is not None]


def default() -> str:
    """The protocol ``pathvqa score`` prints unless told: the first (pathvqa's own)."""
    return next(iter(registry()))
