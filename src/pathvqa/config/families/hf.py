"""``model.family: hf``: any Hugging Face image-text-to-text model."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from pathvqa.config.sections import LoraSettings, QuantizedSection


class HfModelConfig(QuantizedSection):
    """``model.family: hf``: any ``AutoModelForImageTextToText`` checkpoint with its ``AutoProcessor``
    (BLIP-2, LLaVA-1.5, Qwen2.5-VL, PaliGemma, SmolVLM…), or a tiny offline size of one."""

    family: Literal["hf"] = "hf"
    """``hf``: a Hugging Face image-text-to-text model (BLIP-2, LLaVA-1.5, Qwen2.5-VL, PaliGemma 2, SmolVLM)."""

    implementation: ClassVar[str] = "pathvqa.models.hf:HfFamily"
    order: ClassVar[int] = 20
    name: str = "tiny-llava"
    """Hub id or folder, or ``tiny-blip2`` / ``tiny-llava`` / ``tiny-qwen25vl`` / ``tiny-paligemma`` /
    ``tiny-smolvlm``."""
    lora: LoraSettings = Field(default_factory=lambda: LoraSettings(target_modules="language-model"))
    """``target_modules: language-model`` (default): the architecture's language-model projections only;
    a list of suffixes (``q_proj``, ``fc1``…) also wraps vision and connector layers that match."""
    train_connector: bool = False
    """Train what joins vision to language (LLaVA's projector, Qwen's merger, BLIP-2's Q-Former…) in full:
    with ``tuning: frozen`` that is LLaVA-1.5's first stage."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% slower)."""


SECTION = HfModelConfig
