"""Typed experiment config: YAML file + ``key=value`` overrides, every problem reported at once.

A config has four sections (``data``, ``model``, ``train``, ``eval``) and optional ``stages``
(a list of partial ``train``/``model`` overrides run one after the other, e.g. the two LLaVA
stages). Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pathvqa.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(_Section):
    dataset: str = "runs/data/synthetic"
    """Hub id, a folder (hub layout, ``{split}.parquet``, ``save_to_disk``), or a JSONL + images folder."""
    train_split: str = "train"
    eval_split: str = "validation"
    test_split: str = "test"
    train_samples: int | None = Field(default=None, gt=0)
    """Seeded subsample of the training split (the earlier experiments used 8,000)."""
    eval_samples: int | None = Field(default=200, gt=0)
    """Validation questions scored during training (``null``: all)."""
    seed: int = 0
    max_pixels: int = Field(default=40_000_000, gt=0)
    cache_images: bool = True
    """Keep resized images in memory after the first epoch (small sets, tiny models)."""
    lazy_images: bool = False
    """Read encoded images from the (memory-mapped) dataset files at batch time instead of holding
    them in RAM: for datasets larger than memory (with ``cache_images: false``)."""


class LoraSettings(_Section):
    r: int = Field(default=16, gt=0)
    alpha: int = Field(default=32, gt=0)
    dropout: float = Field(default=0.05, ge=0, lt=1)
    target_modules: list[str] | str = Field(default_factory=lambda: ["qkv", "query", "value"])
    """Module-name suffixes, or one regex matched against the full module name."""
    modules_to_save: list[str] = Field(default_factory=list)
    """Modules trained in full beside the adapters (a random-weight model needs its heads here)."""


class ModelConfig(_Section):
    family: Literal["blip", "vlm"] = "blip"
    name: str = "blip-tiny"
    """BLIP: hub id, local folder or named size. VLM: a label; the parts are ``vision``/``language``."""
    vision: str | None = None
    """VLM image encoder: ``hf-hub:`` open_clip id, HF vision model id, local folder, or ``tiny``."""
    language: str | None = None
    """VLM decoder: any causal LM id or folder, or ``tiny``."""
    projector: str = Field(default="mlp2x_gelu", pattern=r"^(linear|mlp\d+x_gelu)$")
    """VLM projector: ``linear`` or ``mlp<N>x_gelu`` (LLaVA-1.5 uses ``mlp2x_gelu``)."""
    vision_layer: int = -2
    """VLM: the encoder layer whose patch tokens are used (LLaVA: the penultimate, -2)."""
    use_cls: bool = False
    """VLM: keep the CLS token in front of the patch tokens."""
    train_projector: bool = True
    train_vision: bool = False
    """VLM: train the image encoder too (the random-weight tiny sizes need it; LLaVA keeps it frozen)."""
    tuning: Literal["frozen", "lora", "full"] = "lora"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    quantization: Literal["none", "4bit"] = "none"
    trust_remote_code: bool = False
    image_size: int | None = Field(default=None, gt=0)
    """Override the processor's input size (tiny models)."""
    hidden_size: int = Field(default=64, gt=0)
    """Width of the named tiny sizes (ignored for real ids)."""
    num_layers: int = Field(default=2, gt=0)
    """Depth of the named tiny sizes (ignored for real ids)."""


class AugmentConfig(_Section):
    """Label-preserving augmentations for pathology tiles (training only, never at eval)."""

    hflip: bool = True
    vflip: bool = True
    rot90: bool = True
    stain_jitter: float = Field(default=0.05, ge=0, le=0.5)
    """Per-channel scale/shift in optical-density space (mild H&E stain variation)."""


class TrainConfig(_Section):
    epochs: float = Field(default=3, gt=0)
    max_steps: int | None = Field(default=None, gt=0)
    """Optimizer steps; overrides ``epochs`` when set."""
    batch_size: int = Field(default=16, gt=0)
    """Global micro-batch (split across processes)."""
    grad_accum: int = Field(default=1, gt=0)
    lr: float = Field(default=1e-4, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """``auto``: bf16 on a GPU that supports it, else fp16 on GPU, fp32 on CPU."""
    seed: int = 42
    eval_every: int | None = Field(default=None, gt=0)
    """Validate every N optimizer steps (``null``: at the end of each epoch)."""
    save_every: int | None = Field(default=None, gt=0)
    """Checkpoint every N optimizer steps (``null``: when validating)."""
    keep_last: int = Field(default=2, gt=0)
    best_metric: str = "exact_match"
    log_every: int = Field(default=10, gt=0)
    report_to: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=lambda: ["tensorboard"]
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    num_workers: int = Field(default=0, ge=0)
    threads: int | None = Field(default=None, gt=0)
    """CPU threads for torch (``null``: torch's default)."""


class EvalConfig(_Section):
    batch_size: int = Field(default=32, gt=0)
    max_new_tokens: int = Field(default=12, gt=0)
    num_beams: int = Field(default=1, gt=0)


class StageConfig(_Section):
    """One training stage: a name plus overrides of ``task``, ``model``, ``train`` and ``eval`` keys."""

    name: str
    task: Literal["vqa", "caption"] | None = None
    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    eval: dict[str, Any] = Field(default_factory=dict)


class ExperimentConfig(_Section):
    name: str = "experiment"
    task: Literal["vqa", "caption"] = "vqa"
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    stages: list[StageConfig] = Field(default_factory=list)

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, v: str) -> str:
        if not v or "/" in v or v.startswith("."):
            raise ValueError("must be a plain folder name (no '/', not starting with '.')")
        return v

    @model_validator(mode="after")
    def _check_combinations(self) -> ExperimentConfig:
        problems = []
        if self.model.family == "vlm" and not (self.model.vision and self.model.language):
            problems.append("model.vision and model.language are required when model.family is 'vlm'")
        if self.model.quantization == "4bit" and self.model.tuning == "full":
            problems.append("model.quantization '4bit' needs model.tuning 'lora' or 'frozen' (QLoRA)")
        names = [stage.name for stage in self.stages]
        if len(set(names)) != len(names):
            problems.append(f"stages: names must be unique (got {names})")
        for stage in self.stages:
            if not stage.name or "/" in stage.name or stage.name.startswith("."):
                problems.append(f"stages[{stage.name}]: name must be a plain folder name")
            try:
                self.stage_config(stage)
            except ConfigError as err:
                problems.extend(f"stages[{stage.name}].{p}" for p in err.problems)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def stage_config(self, stage: StageConfig) -> ExperimentConfig:
        """This config with one stage's overrides applied (and ``stages`` emptied)."""
        raw = self.model_dump()
        raw["stages"] = []
        if stage.task:
            raw["task"] = stage.task
        for section in ("model", "train", "eval"):
            raw[section] = _deep_merge(raw[section], getattr(stage, section))
        return validate(raw, source=f"stage {stage.name}")


def parse_overrides(pairs: list[str]) -> tuple[dict[str, Any], list[str]]:
    """``["train.lr=1e-4", "data.dataset=x"]`` → nested dict; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    problems = []
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            problems.append(f"override {pair!r}: expected key=value")
            continue
        try:
            parsed = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            parsed = value
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(f"override {pair!r}: {part} is set twice")
                break
        else:
            node[parts[-1]] = parsed
    return nested, problems


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), list):
            out[key] = _merge_named(out[key], value, key)
        else:
            out[key] = value
    return out


def _merge_named(items: list[Any], extra: dict[str, Any], where: str) -> list[Any]:
    """``stages.instruct.train.lr=1e-4``: merge into the list entry named ``instruct``."""
    items = copy.deepcopy(items)
    names = [item.get("name") if isinstance(item, dict) else None for item in items]
    for name, value in extra.items():
        if name not in names or not isinstance(value, dict):
            raise ConfigError([f"override {where}.{name}: no entry named {name!r} (have {names})"])
        index = names.index(name)
        items[index] = _deep_merge(items[index], value)
    return items


def _format_errors(err: ValidationError) -> list[str]:
    problems = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif "input" in e and not isinstance(e["input"], dict | list):
            msg += f" (got {e['input']!r})"
        problems.append(f"{where}: {msg}")
    return problems


def validate(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a raw dict; raise :class:`ConfigError` listing every problem."""
    if not isinstance(raw, dict):
        raise ConfigError(["top level must be a mapping of sections"], source)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err), source) from None


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read a YAML config (or start from defaults), apply ``key=value`` overrides, validate."""
    raw: dict[str, Any] = {}
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError([f"file not found: {path}"], source)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(
                [f"not valid YAML ({err.__class__.__name__}: {err})".replace("\n", " ")], source
            ) from None
    extra, problems = parse_overrides(overrides or [])
    if problems:
        raise ConfigError(problems, source)
    if not isinstance(raw, dict):
        raise ConfigError(["top level must be a mapping of sections"], source)
    return validate(_deep_merge(raw, extra), source)


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
