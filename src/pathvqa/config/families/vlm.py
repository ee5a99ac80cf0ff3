"""``model.family: vlm``: an image encoder, a projector and a causal language model (LLaVA's recipe)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from pathvqa.config.sections import QuantizedSection, TinyTextShape


class VlmModelConfig(TinyTextShape, QuantizedSection):
    """``model.family: vlm``: image encoder → projector → causal LM (the LLaVA recipe)."""

    family: Literal["vlm"] = "vlm"
    """``vlm``: an image encoder → projector → causal language model (the LLaVA recipe)."""

    implementation: ClassVar[str] = "pathvqa.models.vlm:VlmFamily"
    order: ClassVar[int] = 10
    name: str = "vlm"
    """A label; the parts are ``vision`` and ``language``."""
    vision: str | None = None
    """Image encoder: ``hf-hub:`` open_clip id, HF vision model id, local folder, or a tiny size."""
    language: str | None = None
    """Decoder: any causal LM id or folder, or ``tiny-mistral``."""
    projector: str = Field(default="mlp2x_gelu", pattern=r"^(linear|mlp\d+x_gelu)$")
    """``linear`` or ``mlp<N>x_gelu`` (LLaVA-1.5 uses ``mlp2x_gelu``)."""
    vision_layer: int = -2
    """The encoder layer whose patch tokens are used (LLaVA: the penultimate, -2)."""
    use_cls: bool = False
    """Keep the CLS token in front of the patch tokens."""
    train_projector: bool = True
    """Train the projector (always, for a fresh projector)."""

    @model_validator(mode="after")
    def _needs_both_parts(self):
        if not (self.vision and self.language):
            raise ValueError("model.vision and model.language are required when model.family is 'vlm'")
        return self

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(p for p in (self.vision, self.language) if p)


SECTION = VlmModelConfig
