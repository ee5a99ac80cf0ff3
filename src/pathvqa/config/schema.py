"""The experiment config's typed sections: ``data``, ``model`` (one class per family), ``train`` (with
``augment`` and ``grpo``), ``eval`` and ``stages``, and the validation that reports every problem at once.
Unknown keys are errors, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal, Union

from pydantic import (
    Discriminator,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)

from pathvqa.answers import REWARDS
from pathvqa.answers import SCORES as BEST_METRICS
from pathvqa.config.datasets import FORMATS, PRESETS
from pathvqa.config.families import discovered
from pathvqa.config.sections import (
    ModelSection,
    Section,
)
from pathvqa.errors import ConfigError

MAX_PIXELS = 40_000_000
"""Images larger than this many pixels are skipped as bad rows (decompression bombs): the one default."""


def column_clash(columns: dict[str, str]) -> str | None:
    """Two fields mapped to one of the file's columns (``{image: question, question: question}``), said."""
    by_column: dict[str, list[str]] = {}
    for name, column in columns.items():
        by_column.setdefault(column, []).append(name)
    clashes = [
        f"{' and '.join(names)} both to {column!r}" for column, names in by_column.items() if len(names) > 1
    ]
    return f"data.columns maps {'; '.join(clashes)}: give each its own column" if clashes else None


class StainNormalizeConfig(Section):
    """Stain normalisation of every image, in training and evaluation alike (``data.stain_normalize``)."""

    method: Literal["macenko", "reinhard"] = "macenko"
    """``macenko`` (stain vectors from the optical density, Macenko et al. 2009) or ``reinhard`` (Lab mean
    and spread, Reinhard et al. 2001); torchstain's implementations."""
    target: str | None = None
    """An image file whose stain the others take on; default: fitted on a seeded mosaic of 16 training
    images, so no external image is needed (the same mosaic in training and evaluation)."""


class DataConfig(Section):
    dataset: str = "runs/data/synthetic"
    """Hub id, a folder (hub layout, ``{split}.parquet``, ``save_to_disk``), or a JSONL + images folder."""
    train_split: str = "train"
    """The split trained on."""
    eval_split: str | None = "validation"
    """Scored during training (``null``: no validation; checkpoints are still saved)."""
    test_split: str = "test"
    """The split ``pathvqa eval`` scores by default."""
    train_samples: int | None = Field(default=None, gt=0)
    """Seeded subsample of the training split (the earlier experiments used 8,000)."""
    eval_samples: int | None = Field(default=200, gt=0)
    """Validation questions scored during training (``null``: all)."""
    seed: int = 0
    """Seed of the training subsample (``train_samples``) and of a carved validation split."""
    max_pixels: int = Field(default=MAX_PIXELS, gt=0)
    """Images larger than this many pixels are skipped as bad rows (decompression bombs)."""
    cache_images: bool = True
    """Keep resized images in memory after the first epoch (small sets, tiny models)."""
    group_by_image: bool = False
    """Training batches hold whole images' question sets (images in a seeded order per epoch), so the
    vision tower runs once per image of a batch; augmentation is then drawn per image, not per question."""
    preset: Literal[tuple(PRESETS)] | None = None
    """A known set's layout (``slake``: English rows of its release folder, ``answer_type`` from the data;
    ``vqa-rad``: train/test only); ``data.dataset`` names its folder (``slake``) or overrides its hub id."""
    format: Literal[tuple(FORMATS)] = "auto"
    """How the split's file reads (``config.datasets.FORMATS``): ``auto`` (a question per row) or ``llava``
    (LLaVA/ShareGPT conversations in ``{split}.json`` / ``.jsonl``, one question per human→gpt turn)."""
    columns: dict[str, str] = Field(default_factory=dict)
    """The file's column for ``image``, ``question``, ``answer`` and optionally ``answer_type`` (CLOSED/OPEN:
    then it decides closed vs open in every metric), e.g. ``{image: img_name}``."""
    where: dict[str, Any] = Field(default_factory=dict)
    """Keep only rows whose column equals the value (``{q_lang: en}``)."""
    image_root: str | None = None
    """Image paths in the rows are relative to this folder (default: the dataset folder)."""
    validation_from_train: float = Field(default=0.05, ge=0, lt=1)
    """With no ``eval_split`` in the set: this share of train's images becomes it (seeded, by image)."""
    stain_normalize: StainNormalizeConfig | None = None
    """Normalise every image's stain to one target (``{method: macenko}``; ``null``: as they are)."""
    lazy_images: bool = False
    """Read encoded images from the (memory-mapped) dataset files at batch time instead of holding
    them in RAM: for datasets larger than memory (with ``cache_images: false``). A parquet folder is
    converted once into an Arrow file in the datasets cache (``HF_DATASETS_CACHE``) and mapped from there."""

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, v: dict[str, str]) -> dict[str, str]:
        unknown = [k for k in v if k not in ("image", "question", "answer", "answer_type")]
        if unknown:
            raise ValueError(f"map image, question, answer or answer_type (not {', '.join(unknown)})")
        problem = column_clash(v)
        if problem:
            raise ValueError(problem.removeprefix("data.columns "))
        return v


FAMILY_CONFIGS: dict[str, type[ModelSection]] = discovered()
"""Every family's ``model`` section by ``model.family`` (``pathvqa.config.families``); the first is the default."""
BlipModelConfig, VlmModelConfig, HfModelConfig = (FAMILY_CONFIGS[f] for f in ("blip", "vlm", "hf"))
_ANY_FAMILY_KEYS = {key for cls in FAMILY_CONFIGS.values() for key in cls.model_fields}


def _family_of(value: Any) -> str:
    default = next(iter(FAMILY_CONFIGS))
    if isinstance(value, dict):
        return value.get("family", default)
    return getattr(value, "family", default)


def model_union() -> Any:
    """The ``model`` field's type: one section class per ``model.family``, the family key picks it."""
    tagged = tuple(Annotated[cls, Tag(name)] for name, cls in FAMILY_CONFIGS.items())
    return Annotated[Union[tagged], Discriminator(_family_of)]  # noqa: UP007 (a union built from a table)


ModelConfig = model_union()
"""One class per ``model.family``; the family key picks it (the first family when absent)."""


class StainAugmentConfig(Section):
    """Stain augmentation in HED space (Tellez et al. 2019; ``data.stain``): each tile's haematoxylin, eosin
    and DAB concentrations scaled by U(1 − s, 1 + s) and shifted by U(−s, s)."""

    method: Literal["hed"] = "hed"
    """How the stain is varied: ``hed`` (colour deconvolution, Tellez's HED jitter)."""
    strength: float = Field(default=0.05, ge=0, le=1)
    """s: 0.05 is Tellez's "HED-light", 0.2 "HED-strong"."""


class AugmentConfig(Section):
    """Label-preserving augmentations for pathology tiles (training only, never at eval)."""

    hflip: bool = True
    """Random horizontal flips."""
    vflip: bool = True
    """Random vertical flips."""
    rot90: bool = True
    """Random rotations by multiples of 90°."""
    stain_jitter: float = Field(default=0.05, ge=0, le=0.5)
    """Per-channel scale/shift in optical-density space (mild H&E stain variation)."""
    stain: StainAugmentConfig | None = None
    """Stain augmentation in HED space, on top of ``stain_jitter`` (``{method: hed, strength: 0.05}``)."""


class GrpoConfig(Section):
    """Group relative policy optimisation (``train.method: grpo``), with TRL's names and defaults."""

    num_generations: int = Field(default=8, ge=2)
    """Answers sampled per question (G): each question's group is scored against itself."""
    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature of the group's answers (log-probabilities are taken at it, as TRL does)."""
    top_p: float = Field(default=1.0, gt=0, le=1)
    """Nucleus sampling of the group's answers."""
    max_new_tokens: int | None = Field(default=None, gt=0)
    """Longest sampled answer (``null``: ``eval.max_new_tokens``); dr_grpo divides by it."""
    beta: float = Field(default=0.0, ge=0)
    """KL coefficient to the starting policy (0: no reference model is computed)."""
    epsilon: float = Field(default=0.2, gt=0, lt=1)
    """Lower clipping bound of the probability ratio (TRL's ``epsilon``)."""
    epsilon_high: float | None = Field(default=None, gt=0)
    """Upper clip (DAPO's clip-higher); ``null``: ``epsilon``."""
    loss_type: Literal["grpo", "dr_grpo", "dapo"] = "dapo"
    """How token losses are averaged (TRL's ``loss_type``): per answer (``grpo``), per batch token budget (``dr_grpo``) or per token (``dapo``)."""
    scale_rewards: Literal["group", "batch", "none"] = "group"
    """Advantages divided by the reward std of the group, of the batch, or not at all (TRL's ``scale_rewards``)."""
    num_iterations: int = Field(default=1, ge=1)
    """Optimizer updates per sampled batch (μ); above 1 the ratio to the sampling policy is clipped."""
    rewards: dict[str, float] = Field(
        default_factory=lambda: {"closed_exact_match": 1.0, "open_exact_match": 1.0}
    )
    """Reward name → weight; a reward that does not apply to a question (closed vs open) gives it nothing."""

    @field_validator("rewards")
    @classmethod
    def _known_rewards(cls, v: dict[str, float]) -> dict[str, float]:
        if not v:
            raise ValueError("needs at least one reward")
        unknown = [name for name in v if name not in REWARDS and ":" not in name]
        if unknown:
            raise ValueError(f"unknown reward {unknown} (one of {', '.join(REWARDS)}, or module:function)")
        return v


class TrainConfig(Section):
    method: Literal["sft", "grpo"] = "sft"
    """``sft``: next-token loss on the reference answers; ``grpo``: sampled answers, rewarded (``grpo``)."""
    grpo: GrpoConfig = Field(default_factory=GrpoConfig)
    """GRPO settings (``train.grpo.*``), used when ``method: grpo``."""
    init_from: str | None = None
    """Start from this run folder (its best checkpoint) or checkpoint: an SFT run before a GRPO stage.
    With ``stages``, the first stage starts there."""
    epochs: float = Field(default=3, gt=0)
    """Passes over the training split (fractions allowed); ``max_steps`` wins when set."""
    max_steps: int | None = Field(default=None, gt=0)
    """Optimizer steps; overrides ``epochs`` when set."""
    batch_size: int = Field(default=16, gt=0)
    """Global micro-batch (split across processes); with ``method: grpo`` questions, each sampled G times."""
    grad_accum: int = Field(default=1, gt=0)
    """Micro-batches per optimizer step (the effective batch is ``batch_size × grad_accum × processes``)."""
    lr: float = Field(default=1e-4, gt=0)
    """Peak learning rate (AdamW)."""
    weight_decay: float = Field(default=0.01, ge=0)
    """AdamW weight decay."""
    fused_adamw: bool | None = None
    """AdamW's fused kernel (one per step instead of one per tensor, HF Trainer's default); ``null``: on
    CUDA only. Faster on CPU too, but it rounds differently from the per-tensor kernel the tiny
    recipes' learning bars were measured with."""
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    """Share of the steps spent warming the learning rate up from 0."""
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate schedule after warm-up."""
    max_grad_norm: float | None = Field(default=1.0, gt=0)
    """Gradients are clipped to this norm (``null``: no clipping)."""
    loss_average: Literal["tokens", "answers"] = "tokens"
    """What the ``sft`` loss is a mean over (GRPO's is ``train.grpo.loss_type``). ``tokens``: every target
    token of the step, as Hugging Face's Trainer and TRL's SFT average it, so a long answer weighs more than
    a "yes". ``answers``: each answer's token mean first, then the answers, as TRL's ``grpo`` loss type
    averages completions; from the answers' log-probabilities, so without the label smoothing BLIP's own
    loss has."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """``auto``: bf16 on a GPU that supports it, else fp16 on GPU, fp32 on CPU."""
    seed: int = 42
    """Seed of initialisation, data order, augmentation and sampling."""
    eval_every: int | None = Field(default=None, gt=0)
    """Validate every N optimizer steps (``null``: at the end of each epoch)."""
    save_every: int | None = Field(default=None, gt=0)
    """Checkpoint every N optimizer steps (``null``: when validating)."""
    keep_last: int = Field(default=2, gt=0)
    """Step checkpoints kept besides the best."""
    best_metric: str = "exact_match"
    """The validation metric that picks the best checkpoint (higher is better)."""
    log_every: int = Field(default=10, gt=0)
    """Steps between training-log rows."""
    report_to: list[Literal["tensorboard", "mlflow", "wandb", "trackio"]] = Field(
        default_factory=lambda: ["tensorboard"]
    )
    """Trackers (through accelerate): the config, per-step training and validation metrics, and the test
    metrics of ``pathvqa eval`` on the run. MLflow: ``MLFLOW_TRACKING_URI``, else
    ``sqlite:///<run>/mlflow.db``; W&B: ``WANDB_MODE=offline`` works without a network."""
    experiment: str = "pathvqa"
    """The tracker's experiment (MLflow) / project (W&B, trackio); a sweep's trials share the sweep's."""
    mlflow_uri: str | None = None
    """MLflow's tracking store (``null``: ``MLFLOW_TRACKING_URI``, else ``sqlite:///<run>/mlflow.db``)."""
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    """Image augmentation while training (``train.augment.*``)."""
    num_workers: int = Field(default=0, ge=0)
    """Data-loader worker processes (0: batches are built in the training process)."""
    threads: int | None = Field(default=None, gt=0)
    """CPU threads for torch (``null``: torch's default)."""

    @field_validator("best_metric")
    @classmethod
    def _is_a_metric(cls, v: str) -> str:
        if v not in BEST_METRICS:
            raise ValueError(f"not a metric (one of {', '.join(BEST_METRICS)})")
        return v


class EvalConfig(Section):
    batch_size: int = Field(default=32, gt=0)
    """Questions per generation batch."""
    image_once: bool = True
    """Batches hold whole images' questions and each distinct image goes through the vision tower once
    (families that cannot share image features encode it per question, as with ``false``)."""
    max_new_tokens: int = Field(default=12, gt=0)
    """Longest answer generated, in tokens."""
    min_new_tokens: int = Field(default=0, ge=0)
    """Generate at least this many tokens (a random-weight model would otherwise stop at once)."""
    num_beams: int = Field(default=1, gt=0)
    """Beam search width (1: greedy)."""
    do_sample: bool = False
    """Sample answers instead of greedy/beam search (GRPO sets it for its groups)."""
    temperature: float = Field(default=1.0, gt=0)
    """Sampling temperature (with ``do_sample``)."""
    top_p: float = Field(default=1.0, gt=0, le=1)
    """Nucleus sampling (with ``do_sample``)."""


class StageConfig(Section):
    """One training stage: a name plus overrides of ``task``, ``model``, ``train`` and ``eval`` keys."""

    name: str
    """The stage's name: its folder inside the run (``RUN/<name>/``) and its key for ``--set stages.<name>.…``."""
    task: Literal["vqa", "caption"] | None = None
    """This stage's task (default: the config's)."""
    method: Literal["sft", "grpo"] | None = None
    """Shorthand for ``train.method`` in this stage."""
    model: dict[str, Any] = Field(default_factory=dict)
    """``model.*`` keys that differ in this stage."""
    train: dict[str, Any] = Field(default_factory=dict)
    """``train.*`` keys that differ in this stage."""
    eval: dict[str, Any] = Field(default_factory=dict)
    """``eval.*`` keys that differ in this stage."""


class ExperimentConfig(Section):
    name: str = "experiment"
    """The experiment's name: the run's label in logs, trackers and reports."""
    task: Literal["vqa", "caption"] = "vqa"
    """``vqa`` (question → answer) or ``caption`` (image → description; a VLM's alignment stage)."""
    data: DataConfig = Field(default_factory=DataConfig)
    """Which dataset and splits, and how rows are read (``data.*``)."""
    model: ModelConfig = Field(default_factory=lambda: next(iter(FAMILY_CONFIGS.values()))())
    """The model family and its parts (``model.*``; the keys depend on ``model.family``)."""
    train: TrainConfig = Field(default_factory=TrainConfig)
    """The training loop (``train.*``)."""
    eval: EvalConfig = Field(default_factory=EvalConfig)
    """Generation when scoring (``eval.*``)."""
    stages: list[StageConfig] = Field(default_factory=list)
    """Named stages run in order, each a run folder of its own (LLaVA's align → instruct); each overrides ``task``, ``method``, ``model``, ``train`` and ``eval`` keys."""

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, v: str) -> str:
        if not v or "/" in v or v.startswith("."):
            raise ValueError("must be a plain folder name (no '/', not starting with '.')")
        return v

    @model_validator(mode="after")
    def _check_combinations(self) -> ExperimentConfig:
        problems = []
        if self.train.method == "grpo" and self.task != "vqa":
            problems.append("train.method: grpo rewards answers to questions, so it needs task: vqa")
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
        if stage.method:
            raw["train"]["method"] = stage.method
        for section in ("model", "train", "eval"):
            raw[section] = _deep_merge(raw[section], getattr(stage, section))
        return validate(raw, source=f"stage {stage.name}")


class _Replacing(dict):
    """A mapping given whole as one ``key=value`` (``train.grpo.rewards={closed_correct: 1}``): it replaces
    the config's mapping at that key instead of being merged into it (``key.name=value`` sets one entry)."""


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, _Replacing):
            out[key] = dict(value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
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


def format_errors(err: ValidationError) -> list[str]:
    """A pydantic validation error as one line per problem: `where: what` (every problem, not the first)."""
    problems = []
    for e in err.errors():
        loc = list(e["loc"])
        family = loc.pop(1) if len(loc) > 1 and loc[0] == "model" and loc[1] in FAMILY_CONFIGS else None
        where = ".".join(str(p) for p in loc) or "config"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden" and family and len(loc) == 2 and loc[1] in _ANY_FAMILY_KEYS:
            msg = f"not a setting of model.family {family!r} (got {e['input']!r})"
        elif e["type"] == "extra_forbidden":
            msg = "unknown key"
        elif e["type"] == "union_tag_invalid":
            where, msg = (
                "model.family",
                f"{e['ctx']['tag']!r} is not a model family (one of {', '.join(FAMILY_CONFIGS)})",
            )
        elif "input" in e and not isinstance(e["input"], dict | list):
            msg += f" (got {e['input']!r})"
        problems.extend(msg.split("; ") if not loc else [f"{where}: {msg}"])  # [] : cross-field checks
    return problems


def validate(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a raw dict; raise :class:`ConfigError` listing every problem."""
    if not isinstance(raw, dict):
        raise ConfigError(["top level must be a mapping of sections"], source)
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_errors(err), source) from None


def register_family(section: type[ModelSection]) -> None:
    """Add a family's section at run time (a family defined outside ``pathvqa.config.families``, e.g. in a
    test): ``model.family`` takes its name from then on."""
    FAMILY_CONFIGS[section.family_name()] = section
    _ANY_FAMILY_KEYS.update(section.model_fields)
    _rebuild_model_field()


def forget_family(name: str) -> None:
    """Undo :func:`register_family`."""
    FAMILY_CONFIGS.pop(name, None)
    _rebuild_model_field()


def _rebuild_model_field() -> None:
    from pydantic.fields import FieldInfo

    old = ExperimentConfig.model_fields["model"]
    fresh = Field(default_factory=old.default_factory, description=old.description)
    ExperimentConfig.__pydantic_fields__["model"] = FieldInfo.from_annotated_attribute(model_union(), fresh)
    ExperimentConfig.model_rebuild(force=True)
