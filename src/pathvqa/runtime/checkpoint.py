"""Checkpoints: self-describing folders of safetensors + JSON, written atomically, verified on load.

``RUN_DIR/checkpoints/step-N/``::

    config.yaml             resolved config (eval and serve need nothing else)
    weights.safetensors     trainable weights (LoRA adapters, projector, heads) and the weights of
                            named tiny parts (they exist nowhere else); the whole model for full tuning
    tokenizer/              tokenizer files
    optimizer.safetensors   optimizer tensors  + optimizer.json (the rest of its state)
    scheduler.json          LR scheduler state
    rng-R.safetensors/json  torch / python / numpy RNG of process R
    trainer_state.json      step, epoch, batch position in the epoch, best metric so far
    manifest.json           sha256 of every file (a corrupted checkpoint is detected and skipped)

Nothing is pickled: loading never runs code from a checkpoint. Pure I/O: which weights a model
stores is decided by the caller (``models.tuning.stored_names``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model

from pathvqa.config import ExperimentConfig, save_config
from pathvqa.errors import PathVQAError, require_checkpoint_folder
from pathvqa.models.base import undistributed
from pathvqa.runs import RunDir, StepDir, step_config, step_of, step_state

log = logging.getLogger(__name__)


def save_weights(
    model: torch.nn.Module, folder: Path, names: set[str] | None, full_state: dict | None = None
) -> None:
    """The parameters in ``names`` (``None``: the whole model) as ``weights.safetensors``.

    ``full_state``: the model's state dict gathered from sharded processes (DeepSpeed / FSDP)."""
    model = undistributed(model)
    if names is None and full_state is None:
        save_model(model, str(StepDir(folder).weights))  # handles tied (shared) tensors
        return
    tensors = full_state if full_state is not None else dict(model.named_parameters())
    if names is not None:
        tensors = {n: t for n, t in tensors.items() if n in names}
    save_file(
        {n: t.detach().contiguous().cpu().clone() for n, t in tensors.items()}, str(StepDir(folder).weights)
    )


def load_weights(model: torch.nn.Module, folder: Path, names: set[str] | None) -> set[str]:
    """Load ``weights.safetensors`` into ``model``; it must hold exactly ``names`` (``None``: the whole
    model). Returns the names loaded. Never anything but safetensors: no pickle, no code."""
    try:
        return _load_weights(undistributed(model), folder, names)
    except (SafetensorError, OSError) as err:
        raise PathVQAError(f"{StepDir(folder).weights} is not a readable safetensors file ({err})") from None


def _load_weights(model: torch.nn.Module, folder: Path, names: set[str] | None) -> set[str]:
    if names is None:
        missing, unexpected = load_model(model, str(StepDir(folder).weights), strict=False)
        if missing or unexpected:
            raise PathVQAError(
                f"{folder}: weights do not fit the model ({len(missing)} missing, "
                f"{len(unexpected)} unexpected, e.g. {(missing or unexpected)[:2]})"
            )
        return set(model.state_dict())
    state = load_file(str(StepDir(folder).weights))
    result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys or names - set(state):
        raise PathVQAError(
            f"{folder}: adapter weights do not fit the model "
            f"({len(names - set(state))} missing, {len(result.unexpected_keys)} unexpected)"
        )
    return set(state)


def _optimizer_split(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, rest = {}, {"param_groups": state["param_groups"], "state": {}}
    for index, values in state["state"].items():
        rest["state"][str(index)] = {}
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().contiguous().cpu()
            else:
                rest["state"][str(index)][key] = value
    return tensors, rest


def _optimizer_join(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    state: dict[int, dict] = {int(i): dict(v) for i, v in rest["state"].items()}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    np_state = np.random.get_state()
    meta = {
        "python": _jsonable(random.getstate()),
        "numpy": [np_state[0], np_state[1].tolist(), *[_jsonable(x) for x in np_state[2:]]],
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(folder: Path) -> None:
    files = {
        p.relative_to(folder).as_posix(): _sha256(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p != StepDir(folder).manifest
    }
    StepDir(folder).manifest.write_text(json.dumps(files, indent=1))


def verify(folder: Path) -> str | None:
    """None if every file matches the manifest, else what is wrong."""
    manifest = StepDir(folder).manifest
    if not manifest.is_file():
        return f"no {manifest.name}"
    try:
        files = json.loads(manifest.read_text())
    except json.JSONDecodeError:
        return f"{manifest.name} is not valid JSON"
    for name, digest in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if _sha256(path) != digest:
            return f"{name} does not match its checksum"
    return None


def save(
    run_dir: Path,
    step: int,
    bundle,
    cfg: ExperimentConfig,
    names: set[str] | None,
    optimizer,
    scheduler,
    trainer_state: dict,
    rng_files: dict[int, tuple[dict, dict]],
    full_state: dict | None = None,
) -> Path:
    """Write ``checkpoints/step-N`` atomically: everything goes to a temp folder, then one rename."""
    run = RunDir(run_dir)
    run.checkpoints.mkdir(parents=True, exist_ok=True)
    final, tmp = run.step(step), run.unfinished_step(step, os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    files = StepDir(tmp)
    save_config(cfg, files.config)
    save_weights(bundle.model, tmp, names, full_state)
    bundle.tokenizer.save_pretrained(files.tokenizer)
    if optimizer is not None:
        tensors, rest = _optimizer_split(optimizer.state_dict())
        save_file(tensors, str(files.optimizer))
        files.optimizer_rest.write_text(json.dumps(rest))
    if scheduler is not None:
        files.scheduler.write_text(json.dumps(_jsonable(scheduler.state_dict())))
    for rank, (tensors, meta) in rng_files.items():
        save_file(tensors, str(files.rng(rank)[0]))
        files.rng(rank)[1].write_text(json.dumps(meta))
    files.state.write_text(json.dumps(trainer_state, indent=1))
    write_manifest(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's step folders, by step."""
    return RunDir(run_dir).steps()


def latest_valid(run_dir: Path) -> Path | None:
    """The newest checkpoint whose files match their manifest; corrupted ones are skipped with a warning."""
    for folder in reversed(checkpoints(run_dir)):
        problem = verify(folder)
        if problem is None:
            return folder
        log.warning("skipping corrupted checkpoint %s: %s", folder, problem)
    return None


def prune(run_dir: Path, keep_last: int, keep: set[int]) -> None:
    """Delete all but the newest ``keep_last`` checkpoints (and the steps in ``keep``, e.g. the best)."""
    folders = checkpoints(run_dir)
    for folder in folders[: max(0, len(folders) - keep_last)]:
        if step_of(folder) not in keep:
            shutil.rmtree(folder, ignore_errors=True)


def load_training_state(folder: Path, optimizer, scheduler, rank: int) -> dict:
    files = StepDir(folder)
    if optimizer is not None and files.optimizer.is_file():
        state = _optimizer_join(load_file(str(files.optimizer)), json.loads(files.optimizer_rest.read_text()))
        optimizer.load_state_dict(state)
    if scheduler is not None and files.scheduler.is_file():
        scheduler.load_state_dict(json.loads(files.scheduler.read_text()))
    tensors, meta = files.rng(rank)
    if tensors.is_file():
        set_rng_state(load_file(str(tensors)), json.loads(meta.read_text()))
    return json.loads(step_state(folder).read_text())


def resolve(path: str | Path) -> Path:
    """A checkpoint folder, or a run folder (→ its best checkpoint, else its latest valid one; for a
    run with stages, the last stage's)."""
    path = Path(path)
    if step_config(path).is_file() and StepDir(path).weights.is_file():
        problem = verify(path)
        if problem:
            raise PathVQAError(f"checkpoint {path} is corrupted: {problem}")
        return path
    require_checkpoint_folder(path)
    if not RunDir(path).checkpoints.is_dir() and RunDir(path).config.is_file():
        stages = (yaml.safe_load(RunDir(path).config.read_text()) or {}).get("stages") or []
        if stages:
            return resolve(path / stages[-1]["name"])
    best = RunDir(path).best
    if best.is_file():
        candidate = RunDir(path).step(json.loads(best.read_text())["step"])
        if candidate.is_dir() and verify(candidate) is None:
            return candidate
    latest = latest_valid(path)
    if latest is None:
        raise PathVQAError(
            f"no checkpoint in {path} (looked for checkpoints/step-N with config.yaml and weights)"
        )
    return latest
