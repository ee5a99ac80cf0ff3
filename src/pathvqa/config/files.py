"""Configs as files: a YAML file (or a shipped config by name) plus ``key=value`` overrides → a validated
:class:`ExperimentConfig`; saving one; and which keys a ``--resume`` may change.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from pathvqa.config.schema import ExperimentConfig, _deep_merge, _Replacing, validate
from pathvqa.errors import ConfigError


def parse_overrides(pairs: list[str] | str) -> tuple[dict[str, Any], list[str]]:
    """``["train.lr=1e-4", "data.dataset=x"]`` (or one such string) → nested dict; values are parsed as
    YAML scalars."""
    nested: dict[str, Any] = {}
    problems = []
    for pair in [pairs] if isinstance(pairs, str) else pairs:
        if not isinstance(pair, str):
            problems.append(f"override {pair!r}: give 'key=value' text")
            continue
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {pair!r}: expected key=value")
            continue
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        problem = _set_dotted(nested, key.strip(), parsed)
        if problem:
            problems.append(f"override {pair!r}: {problem}")
    return nested, problems


def _set_dotted(nested: dict[str, Any], key: str, value: Any) -> str | None:
    """``nested[a][b][c] = value`` for ``key`` ``a.b.c``; a problem, or None."""
    if isinstance(value, dict):
        value = _Replacing(value)
    node = nested
    parts = key.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            return f"{part} is set twice"
    node[parts[-1]] = value
    return None


PACKAGED = Path(__file__).parent.parent / "configs"
"""The configs that ship with pathvqa (``configs/`` in a checkout links here)."""


def packaged_config(name: str) -> Path:
    """``blip_tiny``, ``blip_tiny.yaml`` or ``configs/blip_tiny.yaml`` → the config shipped with pathvqa."""
    return PACKAGED / f"{Path(name).name.removesuffix('.yaml')}.yaml"


def find_config(path: str | Path) -> Path:
    """``path`` if it is a file, else the shipped config of that name (so ``configs/x.yaml`` works from
    any directory), else ``path`` (reported as not found)."""
    path = Path(path)
    if path.is_file() or path.suffix not in ("", ".yaml") or len(path.parts) > 2:
        return path
    shipped = packaged_config(str(path))
    return shipped if shipped.is_file() and path.parent.name in ("", "configs") else path


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | str | None = None,
    values: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """Read a YAML config (or start from defaults), apply ``key=value`` overrides (a list, or one string),
    then ``values`` (dotted keys → Python values, as a sweep samples them), validate."""
    raw: dict[str, Any] = {}
    source = "config"
    if path is not None and not isinstance(path, str | Path):
        raise ConfigError([f"give the experiment YAML's path (str or Path), not {type(path).__name__}"])
    if overrides is not None and not isinstance(overrides, str | list | tuple):
        raise ConfigError([f"overrides: give a list of 'key=value' strings, not {type(overrides).__name__}"])
    if path is not None:
        path = find_config(path)
        source = str(path)
        if path.is_dir():
            raise ConfigError(["is a folder: give an experiment YAML file (see configs/)"], source)
        if not path.is_file():
            raise ConfigError([f"file not found: {path}"], source)
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise ConfigError(["not UTF-8 text"], source) from None
        except yaml.YAMLError as err:
            raise ConfigError(
                [f"not valid YAML ({err.__class__.__name__}: {err})".replace("\n", " ")], source
            ) from None
        if raw is None:
            raise ConfigError(["the file is empty: start from a shipped config (configs/)"], source)
    extra, problems = parse_overrides(overrides or [])
    for key, value in (values or {}).items():
        problem = _set_dotted(extra, key, value)
        if problem:
            problems.append(f"{key}: {problem}")
    if problems:
        raise ConfigError(problems, source)
    if not isinstance(raw, dict):
        raise ConfigError(["top level must be a mapping of sections"], source)
    return validate(_deep_merge(raw, extra), source)


def with_overrides(cfg: ExperimentConfig, overrides: list[str] | str) -> ExperimentConfig:
    """``cfg`` with ``key=value`` overrides applied, validated again (every problem at once)."""
    extra, problems = parse_overrides(overrides)
    if problems:
        raise ConfigError(problems)
    return validate(_deep_merge(cfg.model_dump(), extra))


RESUMABLE = {
    "train": {"max_steps", "epochs", "eval_every", "save_every", "keep_last", "log_every", "report_to",
              "experiment", "mlflow_uri", "num_workers", "threads"},
    "data": {"eval_samples"},
}  # fmt: skip
"""Keys a resumed run may change (``--resume --set ...``): how long it trains, how it logs, validates and
saves; nothing that changes the weights a step computes. Every ``eval`` key may change too."""


def resume_differences(saved: ExperimentConfig, wanted: ExperimentConfig) -> list[str]:
    """The dotted keys where ``wanted`` differs from a run's own config in what a resume may not change."""

    def flat(node: Any, prefix: str, out: dict[str, Any]) -> dict[str, Any]:
        if isinstance(node, dict) and node:
            for key, value in node.items():
                flat(value, f"{prefix}{key}.", out)
        elif isinstance(node, list) and node and all(isinstance(v, dict) and "name" in v for v in node):
            for value in node:  # stages, by name
                flat(value, f"{prefix}{value['name']}.", out)
        else:
            out[prefix[:-1]] = node
        return out

    def free(key: str) -> bool:
        parts = key.split(".")
        section = parts[2] if parts[0] == "stages" and len(parts) > 2 else parts[0]
        return section == "eval" or parts[-1] in RESUMABLE.get(section, set())

    a, b = flat(saved.model_dump(), "", {}), flat(wanted.model_dump(), "", {})
    return [k for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k) and not free(k)]


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
