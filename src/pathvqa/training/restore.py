"""A trained model back from disk: a run's or checkpoint's weights into the model its config builds, and a
stage started from an earlier stage's checkpoint."""

from __future__ import annotations

from pathlib import Path

from pathvqa.config import ExperimentConfig, load_config
from pathvqa.models.base import Bundle, Family
from pathvqa.models.registry import build, tune
from pathvqa.models.tuning import plain_name, stored_names
from pathvqa.runs import step_config
from pathvqa.training import checkpoint


def load_trained(path: str | Path, overrides: list[str] | None = None):
    """(cfg, family, bundle, checkpoint folder) from a checkpoint or run folder, model in eval mode."""
    folder = checkpoint.resolve(path)
    cfg = load_config(step_config(folder), overrides)
    family, bundle = build(cfg)
    restore(bundle, cfg, folder)
    bundle.model.eval()
    return cfg, family, bundle, folder


def restore(bundle: Bundle, cfg: ExperimentConfig, folder: Path) -> None:
    """Load a checkpoint written under ``cfg`` into ``bundle`` (tuned as ``cfg`` says)."""
    loaded = checkpoint.load_weights(bundle.model, folder, stored_names(bundle, cfg.model.tuning))
    bundle.modified |= {plain_name(name) for name in loaded}


def start_from(cfg: ExperimentConfig, init: Path) -> tuple[Family, Bundle]:
    """The model of ``cfg`` starting from an earlier stage's checkpoint ``init``: loaded under that
    stage's own tuning, its LoRA merged into the base (the names of the base weights it changed are
    kept, so later checkpoints store them: they are not on the hub), then tuned as ``cfg`` says."""
    init_cfg = load_config(step_config(init))
    family, bundle = build(cfg, tuned=False)
    tune(family, bundle, init_cfg)
    restore(bundle, init_cfg, init)
    if hasattr(bundle.model, "merge_and_unload"):
        bundle.model = bundle.model.merge_and_unload()
    tune(family, bundle, cfg)
    return family, bundle
