"""Model families by name, and building a ready-to-train model from a config."""

from __future__ import annotations

import importlib
import logging

from pathvqa.config import FAMILY_CONFIGS, ExperimentConfig
from pathvqa.errors import PathVQAError
from pathvqa.models.base import Bundle, Family, require_cuda_for_4bit
from pathvqa.models.tuning import apply_tuning

log = logging.getLogger(__name__)


def get_family(name: str) -> Family:
    """The family ``model.family: NAME`` names: its config section's ``implementation``, imported on first
    use (a family's heavy imports, open_clip for one, are paid only by the runs that use it)."""
    if name not in FAMILY_CONFIGS:
        raise PathVQAError(f"unknown model family {name!r} (have {', '.join(FAMILY_CONFIGS)})")
    module, _, cls = FAMILY_CONFIGS[name].implementation.partition(":")
    return getattr(importlib.import_module(module), cls)()


def check_model(model_cfg) -> None:
    """The model section's problems that need its family (a CUDA GPU for 4-bit, values its hub config
    rejects), said in one line before any data is read or anything built."""
    require_cuda_for_4bit(model_cfg)
    get_family(model_cfg.family).check(model_cfg)


def build(cfg: ExperimentConfig, tuned: bool = True) -> tuple[Family, Bundle]:
    """Build the family's model; with ``tuned``, apply the config's tuning (LoRA / full / frozen)."""
    require_cuda_for_4bit(cfg.model)  # one line before anything loads
    family = get_family(cfg.model.family)
    if cfg.model.trust_remote_code:
        log.warning(
            "model.trust_remote_code is ON: loading %s may run Python code from its repository",
            ", ".join(cfg.model.parts),
        )
    bundle = family.build(cfg.model, cfg.train.seed)
    if tuned:
        tune(family, bundle, cfg)
    return family, bundle


def tune(family: Family, bundle: Bundle, cfg: ExperimentConfig) -> None:
    """Set what trains by ``cfg.model.tuning`` and the family's pinned modules (in place)."""
    always, never = family.pinned_modules(bundle, cfg.model)
    targets = family.lora_targets(bundle, cfg.model)
    bundle.model = apply_tuning(bundle.model, cfg.model, always, never, targets)
