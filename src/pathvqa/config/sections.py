"""What every model family's config section shares (``ModelSection``; ``QuantizedSection`` for the
families that load hub models in 4 bits or with random weights), and the small sections they hold. Each
family's own section is one module of ``pathvqa.config.families``.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Section(BaseModel):
    """A config section: unknown keys are errors, assignments validated, field docstrings kept."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=True)


class LoraSettings(Section):
    r: int = Field(default=16, gt=0)
    """LoRA rank."""
    alpha: int = Field(default=32, gt=0)
    """LoRA scaling numerator (the update is scaled by alpha / r)."""
    dropout: float = Field(default=0.05, ge=0, lt=1)
    """Dropout on the LoRA path."""
    target_modules: list[str] | str = Field(default_factory=lambda: ["qkv", "query", "value"])
    """Module-name suffixes, or one regex matched against the full module name."""
    modules_to_save: list[str] = Field(default_factory=list)
    """Modules trained in full beside the adapters (a random-weight model needs its heads here). On a model
    whose head is its input embedding (PaliGemma, Qwen2.5-VL-3B, the tiny LLaVA) the two train as one."""


class ModelSection(Section):
    """What every family reads; each family's class adds its own keys (a key another family would
    read is an error here, not silently ignored)."""

    name: str
    tuning: Literal["frozen", "lora", "full"] = "lora"
    """``lora`` (adapters on the base), ``full`` (every weight trains) or ``frozen`` (only the parts named trainable train)."""
    lora: LoraSettings = Field(default_factory=LoraSettings)
    """LoRA settings (``model.lora.*``), used when ``tuning: lora``."""
    trust_remote_code: bool = False
    """Allow a hub model's own Python code to run (only for ids you trust)."""
    image_size: int | None = Field(default=None, gt=0)
    """Override the processor's input size (tiny models)."""
    hidden_size: int = Field(default=64, gt=0)
    """Width of the named tiny sizes (ignored for real ids)."""
    num_layers: int = Field(default=2, gt=0)
    """Depth of the named tiny sizes (ignored for real ids)."""
    cache_image_features: bool = True
    """While a stage keeps the image encoder frozen and draws no stain jitter (LLaVA's stage 2, the QLoRA
    configs), encode each image once per run and reuse its features in later epochs (blip, vlm)."""
    feature_cache_mb: float = Field(default=2048, ge=0)
    """Cached features kept in memory; beyond it they go to ``<run>/feature_cache/<weights hash>/``."""

    implementation: ClassVar[str]
    """``module:Class`` of the family that builds this section's model (``models.registry`` imports it)."""
    order: ClassVar[int] = 50
    """Where the family stands among the families (messages, the config reference)."""

    @property
    def parts(self) -> tuple[str, ...]:
        """The model ids or folders this config loads (for messages)."""
        return (self.name,)

    @property
    def four_bit(self) -> bool:
        """Whether its weights load in 4 bits (QLoRA)."""
        return False

    @property
    def random_init(self) -> bool:
        """Whether it builds its architecture with random weights on purpose (a dry run, never a result)."""
        return False

    @classmethod
    def family_name(cls) -> str:
        return cls.model_fields["family"].default

    TINY_KEYS: ClassVar[tuple[str, ...]] = ("hidden_size", "num_layers")
    """Settings only the named tiny sizes read (a hub model ignores them)."""

    def settings(self, tiny: bool) -> dict[str, Any]:
        """The settings that apply to this model (a model card's config): the tiny sizes' keys only for a
        tiny size, and no dry-run key left empty."""
        dropped = set() if tiny else set(self.TINY_KEYS)
        return {k: v for k, v in self.model_dump().items() if k not in dropped and v not in (None, {}, [])}


class TinyTextShape(Section):
    """The attention and embeddings of ``blip-tiny`` and ``tiny-mistral`` (a hub model ignores them)."""

    attention_heads: int | None = Field(default=None, gt=0)
    """Attention heads of the tiny sizes, each with its own keys and values (default: one per 32 dimensions,
    ``tiny-mistral``'s sharing half as many key/value heads)."""
    tie_embeddings: bool = False
    """Tie the tiny sizes' word embeddings: the vector a word is read with is the one it is said with
    (``tiny-mistral``: input and output embeddings; ``blip-tiny``: the question encoder's and the answer
    decoder's)."""

    TINY_KEYS: ClassVar[tuple[str, ...]] = ("hidden_size", "num_layers", "attention_heads", "tie_embeddings")

    @model_validator(mode="after")
    def _heads_divide_width(self):
        heads, width = self.attention_heads, getattr(self, "hidden_size", None)
        if heads and width and width % heads:
            raise ValueError(f"model.attention_heads ({heads}) must divide model.hidden_size ({width})")
        return self


RANDOM_WEIGHTS = "random weights (model.init: random): a dry run of the architecture, not a result"


def random_weights(cfg) -> bool:
    """Whether an experiment config builds its model with random weights on purpose (never a result)."""
    return cfg.model.random_init


class QuantizedSection(ModelSection):
    quantization: Literal["none", "4bit"] = "none"
    """``4bit``: NF4 weights for QLoRA (bitsandbytes, CUDA only)."""
    train_vision: bool = False
    """Train the image encoder too (the random-weight tiny sizes need it; LLaVA keeps it frozen)."""
    init: Literal["pretrained", "random"] = "pretrained"
    """``random``: build the real architecture from the id's hub config with random weights, with its real
    processor, tokenizer and chat template (a dry run before a download or a GPU; never a result)."""
    max_layers: int | None = Field(default=None, gt=0)
    """Keep the first N blocks of every tower (vision, Q-Former, language): a real-width model that fits
    a CPU, for dry runs with ``init: random``."""
    config_overrides: dict[str, Any] = Field(default_factory=dict)
    """With ``init: random``: dotted attributes set on the hub config before building (``hf``: the model's
    config, e.g. ``text_config.hidden_size``; ``vlm``: the language model's), for a narrow twin in tests."""

    @model_validator(mode="after")
    def _qlora_needs_adapters(self):
        if self.quantization == "4bit" and self.tuning == "full":
            raise ValueError("model.quantization '4bit' needs model.tuning 'lora' or 'frozen' (QLoRA)")
        if self.config_overrides and self.init != "random":
            raise ValueError("model.config_overrides changes the architecture: it needs model.init 'random'")
        if self.max_layers and self.init != "random":
            raise ValueError("model.max_layers cuts the architecture's towers: it needs model.init 'random'")
        return self

    @property
    def four_bit(self) -> bool:
        return self.quantization == "4bit"

    @property
    def random_init(self) -> bool:
        return self.init == "random"
