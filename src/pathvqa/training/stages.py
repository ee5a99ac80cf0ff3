"""One training recipe for every model family: ``fit`` runs a config's stages in order, each a
:class:`~pathvqa.training.loop.Trainer` (supervised fine-tuning) or a :class:`~pathvqa.training.grpo.GrpoTrainer`
(``train.method: grpo``), each stage starting from the previous stage's last checkpoint.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pathvqa.config import ExperimentConfig, load_config, resume_differences, save_config, with_overrides
from pathvqa.data.batches import normalizer_for
from pathvqa.data.prepare import check_splits, spec_of
from pathvqa.destinations import check_destination
from pathvqa.errors import PathVQAError
from pathvqa.models.registry import check_model
from pathvqa.runs import RunDir
from pathvqa.runtime import checkpoint
from pathvqa.runtime.processes import is_main_process
from pathvqa.training.grpo import GrpoTrainer
from pathvqa.training.loop import Position, Trainer, TrainingDiverged, epoch_order, run_exists

__all__ = ["Position", "Trainer", "TrainingDiverged", "epoch_order", "fit", "fit_seeds"]


def fit(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    resume: bool = False,
    progress: bool = True,
    on_validate: Callable[[str, int, dict], None] | None = None,
) -> dict:
    """Train ``cfg`` into ``run_dir``; returns a summary (steps, best step, last checkpoint).

    A config with ``stages`` trains them in order, each in ``run_dir/<stage>/`` (a run folder of its
    own) starting from the previous stage's last checkpoint. ``resume`` skips finished stages and
    continues the unfinished one from its last valid checkpoint. ``on_validate(label, step, metrics)``
    runs after each validation (a sweep's pruner; it may raise to stop the run).
    """
    run_dir = check_destination(run_dir, reads=reads_of(cfg))
    if resume:
        check_same_run(cfg, run_dir)  # before anything in the run folder is touched
    for stage in cfg.stages or [None]:  # what can be said before any data is read or model built
        check_model((cfg.stage_config(stage) if stage else cfg).model)
    check_splits(cfg.data)
    normalizer_for(
        cfg.data
    )  # a target that is not an image, a greyscale set: said before anything is written
    if not cfg.stages:
        return _trainer(cfg)(cfg, run_dir, resume, progress, init=_start(cfg), on_validate=on_validate).run()
    if not resume and any(checkpoint.checkpoints(run_dir / s.name) for s in cfg.stages):
        raise run_exists(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, RunDir(run_dir).config)
    init, results = _start(cfg), []
    for stage in cfg.stages:
        stage_dir = run_dir / stage.name
        done = RunDir(stage_dir).summary
        if done.is_file():  # finished before an interruption
            result = json.loads(done.read_text())
        else:
            started = resume and bool(checkpoint.checkpoints(stage_dir))  # else it starts from `init`
            stage_cfg = cfg.stage_config(stage)
            label = f"{cfg.name}/{stage.name}"
            result = _trainer(stage_cfg)(
                stage_cfg, stage_dir, started, progress, init=init, label=label, on_validate=on_validate
            ).run()
        init = checkpoint.latest_valid(stage_dir)  # the stage's last checkpoint
        results.append({"stage": stage.name, **result})
    summary = {**results[-1], "stages": results}
    if is_main_process():
        RunDir(run_dir).summary.write_text(json.dumps(summary, indent=1))
    return summary


def fit_seeds(
    cfg: ExperimentConfig,
    group_dir: str | Path,
    seeds: list[int],
    resume: bool = False,
    progress: bool = True,
) -> dict:
    """Train ``cfg`` once per seed (``train.seed``) into ``group_dir/seed-K/``: a run group, which ``eval``,
    ``report`` and ``compare`` read as one model over seeds. A finished seed is skipped with ``resume``."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise PathVQAError(f"--seeds {seeds}: give distinct seeds (e.g. --seeds 0,1,2)")
    group = RunDir(check_destination(group_dir, reads=reads_of(cfg)))
    summaries = {}
    for seed in seeds:
        run = group.seed(seed)
        if resume and run.summary.is_file():
            summaries[seed] = json.loads(run.summary.read_text())
            continue
        summaries[seed] = fit(
            with_overrides(cfg, [f"train.seed={seed}"]), run.path, resume=resume, progress=progress
        )
    return {"seeds": summaries}


def reads_of(cfg: ExperimentConfig) -> list[Path | str | None]:
    """What a training reads besides its config: the dataset's folders and the run it starts from."""
    return [*spec_of(cfg.data).local_paths(), cfg.train.init_from]


def check_same_run(cfg: ExperimentConfig, run_dir: Path) -> None:
    """``--resume`` continues the run in ``run_dir``: a config that would compute something else is
    refused in one line naming the keys (only length, logging, validation and saving may change)."""
    saved = RunDir(run_dir).config
    if not saved.is_file():
        return
    try:
        own = load_config(saved)
    except PathVQAError as err:
        raise PathVQAError(f"--resume: the run's own config cannot be read ({err})") from None
    differ = resume_differences(own, cfg)
    if differ:
        shown = ", ".join(differ[:8]) + (f" and {len(differ) - 8} more" if len(differ) > 8 else "")
        raise PathVQAError(
            f"--resume: this config differs from the run's own ({saved}) in {shown}; a resume may change "
            "only how long it trains and how it logs, validates and saves: use a new --out for another run"
        )


def _start(cfg: ExperimentConfig) -> Path | None:
    """The checkpoint ``train.init_from`` names (a run folder: its best checkpoint)."""
    return checkpoint.resolve(cfg.train.init_from) if cfg.train.init_from else None


def _trainer(cfg: ExperimentConfig) -> type[Trainer]:
    return GrpoTrainer if cfg.train.method == "grpo" else Trainer
