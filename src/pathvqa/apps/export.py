"""Export a checkpoint with ``save_pretrained`` so plain transformers / peft load it, plus a model card."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from pathvqa.answers import SCORES
from pathvqa.config import RANDOM_WEIGHTS, random_weights, save_config
from pathvqa.destinations import check_destination, replace_folder
from pathvqa.errors import PathVQAError
from pathvqa.runs import metrics_file, step_state
from pathvqa.runtime.trained import EXPORT_CONFIG, TrainedRun, load, resolve_run


def model_card(trained: TrainedRun, family, merged: bool) -> str:
    """A Hub model card: what the model is, its evaluation with its n, intervals, protocol and whatever
    limited it, and the settings that apply to this model."""
    cfg, folder = trained.config, trained.step
    state = json.loads(step_state(folder).read_text()) if step_state(folder).is_file() else {}
    lines = [
        "---", "library_name: transformers", *([f"pipeline_tag: {family.pipeline_tag}"] if family.pipeline_tag else []),
        "tags: [pathology, vqa, pathvqa]", "---", "", f"# {cfg.name}", "",
        f"Exported by pathvqa from `{folder}` (step {state.get('step', '?')}); "
        f"{'LoRA merged into the base weights' if merged else 'weights as trained'}.", "",
        f"- family: `{cfg.model.family}`, model: `{cfg.model.name}`, tuning: `{cfg.model.tuning}`",
        f"- trained on: `{cfg.data.dataset}`",
    ]  # fmt: skip
    if random_weights(cfg):
        lines += ["", f"> **Warning: {RANDOM_WEIGHTS}.** Its answers mean nothing."]
    if state.get("best_step") is not None:
        lines.append(
            f"- best validation {cfg.train.best_metric}: {state['best_value']:.4f} (step {state['best_step']})"
        )
    lines += _evaluation(trained)
    settings = {
        "model": cfg.model.settings(family.is_tiny(cfg.model)),
        "train": cfg.train.model_dump(),
        "task": cfg.task,
    }
    lines += ["", "## Config", "", "```yaml", yaml.safe_dump(settings, sort_keys=False).strip(), "```", ""]
    return "\n".join(lines)


def _evaluation(trained: TrainedRun) -> list[str]:
    """The card's test metrics: the run's own evaluation (a staged run's is beside its stages), or one beside
    the checkpoint, with what it scored (dataset, split, n of rows) and what limited it."""
    found = next(
        (f for f in (metrics_file(trained.run.eval_dir()), metrics_file(trained.step)) if f.is_file()), None
    )
    if found is None:
        return [
            "",
            "## Test metrics",
            "",
            "Not evaluated: run `pathvqa eval --checkpoint RUN --out RUN/eval`.",
        ]
    metrics = json.loads(found.read_text())
    limited = metrics.get("limited") or ([f"--limit {metrics['limit']}"] if metrics.get("limit") else [])
    lines = ["", "## Test metrics", "",
             f"Scored on `{metrics.get('dataset', '?')}`, split `{metrics.get('split', '?')}`: "
             f"{metrics.get('rows') or str(metrics.get('n')) + ' rows'}; pathvqa's strict protocol, 95% bootstrap "
             "intervals over questions (`metrics.json` holds the other protocols)."]  # fmt: skip
    if limited:
        lines += ["", f"> **Limited evaluation** ({'; '.join(limited)}): not the whole split's numbers."]
    lines += ["", "| metric | value | 95% interval |", "|---|---|---|"]
    for key in (*SCORES, "n"):
        value, ci = metrics.get(key), metrics.get(f"{key}_ci")
        shown = "–" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value)
        lines.append(f"| {key} | {shown} | {f'[{ci[0]:.4f}, {ci[1]:.4f}]' if ci else ''} |")
    return lines


def check_export(
    checkpoint_dir: str | Path | TrainedRun, out: Path, merge: bool, overwrite: bool
) -> TrainedRun:
    """Everything an export could refuse, before torch loads; returns the run resolved (once). The export goes
    into an empty (or new) folder apart from the run it reads (``--overwrite`` replaces another export,
    never the run), and ``merge`` needs adapters to merge."""
    trained = resolve_run(checkpoint_dir)
    check_destination(out, reads=trained.reads())
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise PathVQAError(f"--out {out} is not empty: give a new folder, or --overwrite to replace it")
    tuning = trained.config.model.tuning
    if merge and tuning != "lora":
        raise PathVQAError(
            f"--merge: {trained.path} has no LoRA adapters to merge (model.tuning {tuning}: its weights are "
            "whole already): export without --merge"
        )
    return trained


def export(
    checkpoint_dir: str | Path | TrainedRun, out: str | Path, merge: bool = False, overwrite: bool = False
) -> Path:
    """The checkpoint as a ``save_pretrained`` folder with a model card, written whole into ``out``. A QLoRA
    run merges into its base reloaded unquantized (bf16 on a GPU): the export is the plain model that vLLM /
    TGI serve, with no ``quantization_config`` and no 4-bit rounding in its weights."""
    out = Path(out)
    trained = check_export(checkpoint_dir, out, merge, overwrite)
    if merge and trained.config.model.four_bit:
        trained = trained.with_overrides(["model.quantization=none"])
    family, bundle = load(trained)
    with replace_folder(out) as work:  # the folder appears complete, replacing an old one only then
        family.export(bundle, trained.config, str(work), merge)
        if merge or not hasattr(bundle.model, "peft_config"):  # a whole model: predict / serve can load it
            save_config(trained.config, work / EXPORT_CONFIG)
        (work / "README.md").write_text(model_card(trained, family, merge))
    return out
