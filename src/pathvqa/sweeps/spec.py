"""A sweep spec (``pathvqa sweep SPEC.yaml``): the base config, the search space over its dotted keys, the
objective (a validation metric the config logs; higher is better), Optuna's sampler and pruner, and the
trial budget. Every problem is reported at once, with the configs at every corner of the space checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pathvqa.answers import SCORES
from pathvqa.config import ExperimentConfig, find_config, format_errors, load_config
from pathvqa.errors import ConfigError

Kind = Literal["log_uniform", "uniform", "int", "log_int", "choice"]
KINDS: tuple[str, ...] = get_args(Kind)
CAPTION_SCORES = ("exact_match", "meteor", "bleu1", "f1")


class Param(BaseModel):
    """One key of the search space: ``[a, b, c]`` or ``{choice: [...]}`` (categorical), or
    ``{log_uniform|uniform|int|log_int: [low, high]}``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    kind: Kind
    """How Optuna draws the value: from a range (log-scaled or not, whole numbers or not) or a list."""
    values: list[Any] = Field(min_length=1)
    """``[low, high]`` for a range (low > 0 on a log scale), else the values to choose from."""

    @model_validator(mode="before")
    @classmethod
    def _written_as(cls, raw: Any) -> Any:
        if isinstance(raw, list):
            return {"kind": "choice", "values": raw}
        if isinstance(raw, dict) and len(raw) == 1 and next(iter(raw)) in KINDS:
            kind, values = next(iter(raw.items()))
            return {"kind": kind, "values": values}
        if isinstance(raw, dict) and {"kind", "values"} <= set(raw):  # as to_json writes it
            return raw
        raise ValueError(f"give a list of values or one of {{{', '.join(KINDS)}: [...]}}")

    @model_validator(mode="after")
    def _a_range(self) -> Param:
        if self.kind == "choice":
            return self
        try:  # YAML reads 1e-5 as a string: numbers are numbers here
            low, high = (float(v) for v in self.values)
        except (TypeError, ValueError):
            raise ValueError(f"{self.kind}: give [low, high] as numbers (got {self.values!r})") from None
        if not low < high or (self.kind.startswith("log") and low <= 0):
            raise ValueError(f"{self.kind}: need [low, high] with low < high (and low > 0 for log)")
        self.values = [low, high]
        return self

    def suggest(self, trial, key: str) -> Any:
        """Optuna's draw for config key ``key``."""
        if self.kind == "choice":
            return trial.suggest_categorical(key, self.values)
        low, high = self.values
        if self.kind in ("int", "log_int"):
            return trial.suggest_int(key, int(low), int(high), log=self.kind == "log_int")
        return trial.suggest_float(key, float(low), float(high), log=self.kind == "log_uniform")


class Spec(BaseModel):
    """A sweep spec file; unknown keys are errors, and every problem is reported at once."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)
    base: str = Field("", validate_default=True)
    """The config to sweep: a path or a shipped config's name."""
    space: dict[str, Param] = {}
    """Dotted config keys and their ranges or values."""
    objective: str = ""
    """The validation metric to maximise; empty: the base config's ``train.best_metric``."""
    overrides: list[str] = []
    """``key=value`` overrides applied to every trial's config."""
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    """Optuna's sampler; ``grid`` needs every space key as a list of values."""
    pruner: Literal["median", "none"] = "median"
    """``median`` stops a trial whose in-training validation is below earlier trials' median at the same step."""
    seed: int = Field(0, ge=0, strict=True)
    """The sampler's seed (each worker mixes in its host and process, so workers draw apart)."""
    trials: int = Field(10, ge=1, strict=True)
    """Trials to finish, over all workers together (``pathvqa sweep --trials`` overrides)."""
    heartbeat_s: int = Field(30, ge=1, strict=True)
    """How often a worker marks its trial alive; a trial silent for 3 of these is retried elsewhere."""
    evaluate: bool = True
    """Score each finished trial on the test split."""
    name: str = "sweep"
    """The study's name in its storage; default: the spec file's name."""

    @field_validator("space")
    @classmethod
    def _keys(cls, space: dict[str, Param]) -> dict[str, Param]:
        if not space:
            raise ValueError("empty search space (give at least one key: {log_uniform: [low, high]} …)")
        return space

    @field_validator("base")
    @classmethod
    def _named(cls, base: str) -> str:
        if not base:
            raise ValueError("name the config to sweep (configs/blip_tiny.yaml, …)")
        return base

    @model_validator(mode="after")
    def _grid(self) -> Spec:
        if self.sampler == "grid" and any(p.kind != "choice" for p in self.space.values()):
            raise ValueError("sampler: grid needs every space key as a list of values")
        return self

    def config(
        self, values: dict[str, Any] | None = None, extra: list[str] | None = None
    ) -> ExperimentConfig:
        """The base config with the spec's overrides, ``values`` (dotted keys) and ``extra`` applied."""
        metric = [f"train.best_metric={self.objective}"] if self.objective in SCORES else []
        sets = [*self.overrides, *metric, *(extra or [])]
        return load_config(self.base, sets, values=values)

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, saved: dict[str, Any]) -> Spec:
        return cls.model_validate({k: v for k, v in saved.items() if k in cls.model_fields})


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
    raw = {"name": path.stem, **raw}
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_errors(err), str(path)) from None
    spec.base = str(find_config(spec.base))
    _check_configs(spec, str(path))
    return spec


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
    for key, param in spec.space.items():
        for value in param.values:  # a range's ends, or every choice
            try:
                spec.config({key: value})
            except ConfigError as err:
                problems += [f"space.{key}={value!r}: {p}" for p in err.problems]
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
