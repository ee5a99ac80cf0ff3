"""A trained model on disk, resolved once: :func:`resolve_run` turns what a user names (a run folder, a stage,
a checkpoint, a merged export) into a :class:`TrainedRun` — the checkpoint chosen, its config, its family —
that ``eval``, ``export``, ``predict``, ``serve`` and the Python API pass along; :func:`load` builds its
model. Also: a checkpoint's weights back into a model, and a stage started from an earlier stage's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from pathvqa.config import ExperimentConfig, load_config, with_overrides
from pathvqa.errors import PathVQAError
from pathvqa.models.base import Bundle, Family
from pathvqa.models.registry import build, get_family, tune
from pathvqa.models.tuning import plain_name, stored_names
from pathvqa.runs import RunDir, step_config
from pathvqa.runtime import checkpoint

EXPORT_CONFIG = "pathvqa.yaml"
"""Written by ``pathvqa export`` beside a whole model's weights: what the folder holds, for ``predict``/``serve``."""


@dataclass(frozen=True)
class TrainedRun:
    """A trained model on disk: where the user pointed, the checkpoint chosen there, and its config."""

    path: Path
    """What was named: a run folder, a stage folder, a ``checkpoints/step-N`` folder or a merged export."""
    step: Path
    """The checkpoint folder chosen (a run: its best, else its latest valid; a staged run: its last stage's),
    or the export folder."""
    config: ExperimentConfig
    """The config the checkpoint was saved under (with any overrides applied)."""
    exported: bool = False
    """A merged export (``pathvqa export``), not a checkpoint."""

    @property
    def family(self) -> str:
        return self.config.model.family

    @property
    def run(self) -> RunDir:
        """The whole run the checkpoint belongs to (a staged run's top folder); an export: its own folder."""
        return RunDir(self.step) if self.exported else RunDir.of_checkpoint(self.step).top()

    @property
    def stage(self) -> RunDir:
        """The run or stage folder that holds the checkpoint."""
        return RunDir(self.step) if self.exported else RunDir.of_checkpoint(self.step)

    def reads(self) -> list[Path]:
        """What a command that loads it reads: its destination must stay apart from all of it."""
        return [self.path, self.step, self.run.path]

    def with_overrides(self, overrides: list[str]) -> TrainedRun:
        return replace(self, config=with_overrides(self.config, overrides)) if overrides else self


def resolve_run(path: str | Path | TrainedRun, overrides: list[str] | None = None) -> TrainedRun:
    """``path`` resolved once: its checkpoint (manifest verified) and its config read, ``overrides`` applied."""
    if isinstance(path, TrainedRun):
        return path.with_overrides(list(overrides or []))
    path = Path(path)
    if (path / EXPORT_CONFIG).is_file():
        return TrainedRun(path, path, load_config(path / EXPORT_CONFIG, overrides), exported=True)
    if (path / "adapter_config.json").is_file() or (path / "adapter").is_dir():
        raise PathVQAError(f"{path} is a LoRA adapter export: pass its run folder, or export with --merge")
    step = checkpoint.resolve(path)
    return TrainedRun(path, step, load_config(step_config(step), overrides))


def load(trained: TrainedRun) -> tuple[Family, Bundle]:
    """Its model, weights restored, in eval mode."""
    cfg = trained.config
    if trained.exported:
        family = get_family(cfg.model.family)
        bundle = family.load_export(cfg.model, trained.step, cfg.train.seed)
        bundle.model.eval().requires_grad_(False)
        return family, bundle
    family, bundle = build(cfg)
    restore(bundle, cfg, trained.step)
    bundle.model.eval()
    return family, bundle


def load_trained(path: str | Path | TrainedRun, overrides: list[str] | None = None):
    """(cfg, family, bundle, checkpoint folder) from a run, checkpoint or export folder, model in eval mode."""
    trained = resolve_run(path, overrides)
    family, bundle = load(trained)
    return trained.config, family, bundle, trained.step


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
