"""Model family by name, and building a ready-to-train model from a config."""

from __future__ import annotations

from pathvqa.config import ExperimentConfig
from pathvqa.errors import PathVQAError
from pathvqa.models.base import Bundle, Family
from pathvqa.models.tuning import apply_tuning


def get_family(name: str) -> Family:
    if name == "blip":
        from pathvqa.models.blip import BlipFamily

        return BlipFamily()
    if name == "vlm":
        raise PathVQAError(
            "model.family 'vlm' (image encoder + projector + LLM) is not available in this version yet"
        )
    raise PathVQAError(f"unknown model family {name!r}")


def build(cfg: ExperimentConfig) -> tuple[Family, Bundle]:
    """Build the family's model and apply the config's tuning (LoRA / full / frozen)."""
    family = get_family(cfg.model.family)
    bundle = family.build(cfg)
    pins = getattr(family, "pinned_modules", lambda c: ((), ()))(cfg.model)
    bundle.model = apply_tuning(bundle.model, cfg.model, *pins)
    return family, bundle
