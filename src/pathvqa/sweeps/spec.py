"""A sweep spec (``pathvqa sweep SPEC.yaml``): the base config, the search space over its dotted keys, the
objective (a validation metric the config logs; higher is better), Optuna's sampler and pruner, and the
trial budget. Every problem is reported at once, with the configs at every corner of the space checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from pathvqa.answers import SCORES
from pathvqa.config import ExperimentConfig, find_config, load_config
from pathvqa.errors import ConfigError

KINDS = ("log_uniform", "uniform", "int", "log_int", "choice")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
CAPTION_SCORES = ("exact_match", "meteor", "bleu1", "f1")


@dataclass
class Param:
    key: str
    kind: str
    values: list[Any]

    def extremes(self) -> list[Any]:
        """Values that reach every corner of the range (what the spec check builds configs with)."""
        return self.values if self.kind == "choice" else [self.values[0], self.values[1]]

    def suggest(self, trial) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, self.values)
        low, high = self.values
        if self.kind in ("int", "log_int"):
            return trial.suggest_int(self.key, int(low), int(high), log=self.kind == "log_int")
        return trial.suggest_float(self.key, float(low), float(high), log=self.kind == "log_uniform")


@dataclass
class Spec:
    base: str
    space: list[Param]
    objective: str
    overrides: list[str] = field(default_factory=list)
    sampler: str = "tpe"
    pruner: str = "median"
    seed: int = 0
    trials: int = 10
    heartbeat_s: int = 30
    evaluate: bool = True
    name: str = "sweep"

    def config(
        self, values: dict[str, Any] | None = None, extra: list[str] | None = None
    ) -> ExperimentConfig:
        """The base config with the spec's overrides, ``values`` (dotted keys) and ``extra`` applied."""
        metric = [f"train.best_metric={self.objective}"] if self.objective in SCORES else []
        sets = [*self.overrides, *metric, *(extra or [])]
        return load_config(self.base, sets, values=values)

    def to_json(self) -> dict[str, Any]:
        plain = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "space"}
        return {**plain, "space": {p.key: {p.kind: p.values} for p in self.space}}

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> Spec:
        plain = {f.name: saved[f.name] for f in fields(cls) if f.name != "space"}
        return cls(**plain, space=[Param(k, *next(iter(v.items()))) for k, v in saved["space"].items()])


def _param(key: str, raw: Any, problems: list[str]) -> Param | None:
    """``[a, b, c]`` or ``{choice: [...]}``: categorical; ``{log_uniform|uniform|int|log_int: [low, high]}``."""
    if isinstance(raw, list):
        raw = {"choice": raw}
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in KINDS:
        problems.append(f"space.{key}: give a list of values or one of {{{', '.join(KINDS)}: [...]}}")
        return None
    kind, values = next(iter(raw.items()))
    if not isinstance(values, list) or not values:
        problems.append(f"space.{key}.{kind}: give a non-empty list")
        return None
    if kind == "choice":
        return Param(key, kind, values)
    try:  # YAML reads 1e-5 as a string: numbers are numbers here
        low, high = (float(v) for v in values)
    except (TypeError, ValueError):
        problems.append(f"space.{key}.{kind}: give [low, high] as numbers (got {values!r})")
        return None
    if len(values) != 2 or not low < high or (kind.startswith("log") and low <= 0):
        problems.append(f"space.{key}.{kind}: need [low, high] with low < high (and low > 0 for log)")
        return None
    return Param(key, kind, [low, high])


def load_spec(path: str | Path) -> Spec:
    """Read and check a sweep spec; every problem in one :class:`ConfigError`."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError([f"file not found: {path}"], str(path))
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError([f"not a YAML spec ({err.__class__.__name__})"], str(path)) from None
    if not isinstance(raw, dict):
        raise ConfigError(["top level must be a mapping (base, space, objective, …)"], str(path))
    problems: list[str] = []
    known = {"base", "space", "objective", "overrides", "sampler", "pruner", "seed", "trials", "heartbeat_s"}
    problems += [f"{key}: unknown key" for key in raw if key not in known | {"evaluate", "name"}]
    space = raw.get("space") or {}
    if not isinstance(space, dict) or not space:
        problems.append("space: empty search space (give at least one key: {log_uniform: [low, high]} …)")
        space = {}
    params = [p for key, value in space.items() if (p := _param(str(key), value, problems))]
    spec = Spec(
        base=str(find_config(raw.get("base") or "")) if raw.get("base") else "",
        space=params,
        objective=str(raw.get("objective") or ""),
        overrides=[str(s) for s in raw.get("overrides") or []],
        name=str(raw.get("name") or path.stem),
        **{k: raw[k] for k in ("sampler", "pruner", "seed", "trials", "heartbeat_s", "evaluate") if k in raw},
    )
    _check_values(spec, problems)
    if not spec.base:
        problems.append("base: name the config to sweep (configs/blip_tiny.yaml, …)")
    if problems:
        raise ConfigError(problems, str(path))
    _check_configs(spec, str(path))
    return spec


def _check_values(spec: Spec, problems: list[str]) -> None:
    if spec.sampler not in SAMPLERS:
        problems.append(f"sampler: {spec.sampler!r} is not one of {', '.join(SAMPLERS)}")
    if spec.sampler == "grid" and any(p.kind != "choice" for p in spec.space):
        problems.append("sampler: grid needs every space key as a list of values")
    if spec.pruner not in PRUNERS:
        problems.append(f"pruner: {spec.pruner!r} is not one of {', '.join(PRUNERS)}")
    for key in ("seed", "trials", "heartbeat_s"):
        value = getattr(spec, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if key == "seed" else 1):
            problems.append(f"{key}: must be a whole number{'' if key == 'seed' else ' ≥ 1'} (got {value!r})")


def _check_configs(spec: Spec, source: str) -> None:
    """The base config with every corner of the space, and the objective it must log: all errors at once."""
    try:
        base = spec.config(extra=[])
    except ConfigError as err:
        extra = [_not_logged(spec.objective, None)] if spec.objective and spec.objective not in SCORES else []
        raise ConfigError([*err.problems, *extra], source) from None
    if not spec.objective:
        spec.objective = base.train.best_metric
    problems: list[str] = []
    if spec.objective not in SCORES or not _logs(base, spec.objective):
        problems.append(_not_logged(spec.objective, base))
    for param in spec.space:
        for value in param.extremes():
            try:
                spec.config({param.key: value})
            except ConfigError as err:
                problems += [f"space.{param.key}={value!r}: {p}" for p in err.problems]
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)), source)


def _logs(cfg: ExperimentConfig, metric: str) -> bool:
    """Whether validation during training scores ``metric`` (the last stage decides)."""
    last = cfg.stage_config(cfg.stages[-1]) if cfg.stages else cfg
    return bool(last.data.eval_split) and (last.task == "vqa" or metric in CAPTION_SCORES)


def _not_logged(metric: str, cfg: ExperimentConfig | None) -> str:
    if cfg is not None and not cfg.data.eval_split:
        return f"objective: {metric!r} is not logged: the config validates nothing (data.eval_split is null)"
    return f"objective: {metric!r} is not a validation metric the config logs (one of {', '.join(SCORES)})"
