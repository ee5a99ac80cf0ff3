"""Model family by name, and building a ready-to-train model from a config."""

from __future__ import annotations

import logging
from pathlib import Path

from pathvqa.config import ExperimentConfig, load_config
from pathvqa.errors import PathVQAError
from pathvqa.models.base import Bundle, Family
from pathvqa.models.tuning import apply_tuning

log = logging.getLogger(__name__)


def get_family(name: str) -> Family:
    if name == "blip":
        from pathvqa.models.blip import BlipFamily

        return BlipFamily()
    if name == "vlm":
        from pathvqa.models.vlm import VlmFamily

        return VlmFamily()
    raise PathVQAError(f"unknown model family {name!r}")


def _pins(family: Family, cfg: ExperimentConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return getattr(family, "pinned_modules", lambda m: ((), ()))(cfg.model)


def build(cfg: ExperimentConfig, init: Path | None = None) -> tuple[Family, Bundle]:
    """Build the family's model and apply the config's tuning (LoRA / full / frozen).

    ``init``: a checkpoint of an earlier stage to start from. It is loaded under that stage's own
    tuning, LoRA is merged into the base, and the names of the weights it changed are kept in
    ``bundle.extras["modified"]`` so later checkpoints store them too (they are not on the hub).
    """
    from pathvqa import checkpoint

    family = get_family(cfg.model.family)
    if cfg.model.trust_remote_code:
        log.warning(
            "model.trust_remote_code is ON: loading %s may run Python code from its repository",
            ", ".join(n for n in (cfg.model.name, cfg.model.vision, cfg.model.language) if n),
        )
    bundle = family.build(cfg)
    if init is not None:
        init_cfg = load_config(init / "config.yaml")
        bundle.model = apply_tuning(bundle.model, init_cfg.model, *_pins(family, init_cfg))
        checkpoint.load_weights(bundle, init_cfg, init)
        if hasattr(bundle.model, "merge_and_unload"):
            bundle.model = bundle.model.merge_and_unload()
    bundle.model = apply_tuning(bundle.model, cfg.model, *_pins(family, cfg))
    return family, bundle
