"""``model.family: blip``: BLIP for VQA."""

from __future__ import annotations

from typing import ClassVar, Literal

from pathvqa.config.sections import ModelSection, TinyTextShape


class BlipModelConfig(TinyTextShape, ModelSection):
    """``model.family: blip``: ``Salesforce/blip-vqa-base`` (or a folder), or the named size ``blip-tiny``."""

    family: Literal["blip"] = "blip"
    """``blip``: BLIP for VQA (``BlipForQuestionAnswering``)."""
    name: str = "blip-tiny"
    """A hub id or folder of a BLIP VQA checkpoint, or ``blip-tiny`` (random weights, offline)."""

    implementation: ClassVar[str] = "pathvqa.models.blip:BlipFamily"
    order: ClassVar[int] = 0


SECTION = BlipModelConfig
