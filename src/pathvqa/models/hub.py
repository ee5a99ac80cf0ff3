"""The real architecture of a hub id, built from its hub config: what ``model.init: random``,
``model.max_layers`` and ``pathvqa plan`` share (one place, for every family).

- :func:`hub_config`: the id's ``config.json`` (offline from the Hugging Face cache), with the first
  ``max_layers`` blocks of every tower kept and ``model.config_overrides`` applied.
- :func:`random_model`: that architecture with random weights (``from_config``): a dry run of the real
  path (processor, tokenizer, chat template, widths) before paying for a download or a GPU.
- :func:`meta_model`: the same on the meta device, for counting parameters and bytes without memory.

No weights are ever read here.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from pathvqa.errors import PathVQAError
from pathvqa.offline import offline_unless_reachable

DEPTH_KEYS = ("num_hidden_layers", "depth", "num_layers", "n_layer", "encoder_layers", "decoder_layers")
"""Config attributes that count a tower's blocks (text, vision, Q-Former…)."""
PER_LAYER_KEYS = ("layer_types",)
"""Config lists with one entry per block: cut with the blocks."""


def hub_config(name: str, trust_remote_code: bool, max_layers: int | None, overrides: dict[str, Any]):
    """``AutoConfig`` of ``name`` with at most ``max_layers`` blocks per tower and ``overrides`` set."""
    config = _auto_config(name, trust_remote_code)
    if max_layers:
        cut_layers(config, max_layers)
    set_overrides(config, overrides, name)
    return config


def check_hub_config(
    name: str, trust_remote_code: bool, max_layers: int | None, overrides: dict[str, Any], cls
) -> None:
    """What :func:`hub_config` would build, checked before anything is: ``max_layers`` must cut some tower,
    and the Auto class ``cls`` must build the architecture with ``overrides`` set (on the meta device, no
    memory); a one-line :class:`PathVQAError` naming the key otherwise."""
    config = _auto_config(name, trust_remote_code)
    if max_layers and not cut_layers(config, max_layers):
        raise PathVQAError(
            f"model.max_layers {max_layers}: no tower of {name} is deeper than that, so nothing would be cut "
            "(give fewer blocks, or leave it out)"
        )
    set_overrides(config, overrides, name)
    if overrides:
        try:
            meta_model(cls, config)
        except Exception as err:  # the model classes raise ValueError, RuntimeError, TypeError…
            raise _override_error(overrides, name, err) from None


def _override_error(
    overrides: dict[str, Any], name: str, err: Exception, what: str = "model"
) -> PathVQAError:
    keys = ", ".join(f"{k}={v!r}" for k, v in overrides.items())
    which = keys if len(overrides) == 1 else f"one of {keys}"
    reason = " ".join(str(err).split())[:160]
    return PathVQAError(
        f"model.config_overrides: {name}'s {what} rejects {which} ({err.__class__.__name__}: {reason})"
    )


def _auto_config(name: str, trust_remote_code: bool):
    from transformers import AutoConfig

    from pathvqa.models.base import load_error

    try:
        offline_unless_reachable()
        return AutoConfig.from_pretrained(name, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise load_error("model config", name, err) from None


def _configs(config) -> list:
    """The config and every sub-config under it (text_config, vision_config, qformer_config…)."""
    found, todo = [], [config]
    while todo:
        node = todo.pop()
        if any(node is seen for seen in found):
            continue
        found.append(node)
        for key in getattr(node, "sub_configs", {}) or {}:
            child = getattr(node, key, None)
            if child is not None and hasattr(child, "to_dict"):
                todo.append(child)
    return found


def cut_layers(config, max_layers: int) -> bool:
    """Keep the first ``max_layers`` blocks of every tower the config describes (in place); whether any
    tower was deeper."""
    cut = False
    for node in _configs(config):
        for key in DEPTH_KEYS:
            value = getattr(node, key, None)
            if isinstance(value, int) and not isinstance(value, bool) and value > max_layers:
                setattr(node, key, max_layers)
                cut = True
        for key in PER_LAYER_KEYS:
            value = getattr(node, key, None)
            if isinstance(value, list) and len(value) > max_layers:
                setattr(node, key, value[:max_layers])
        if isinstance(getattr(node, "max_window_layers", None), int):
            node.max_window_layers = min(node.max_window_layers, max_layers)
    return cut


def set_overrides(config, overrides: dict[str, Any], name: str) -> None:
    """``{"text_config.hidden_size": 64, …}``: dotted attributes of the config (a test's narrow twin)."""
    for key, value in overrides.items():
        *path, last = key.split(".")
        node = config
        for part in path:
            node = getattr(node, part, None)
        if node is None or not hasattr(node, last):
            raise PathVQAError(f"model.config_overrides: {name}'s config has no {key!r}")
        try:
            setattr(node, last, value)
        except Exception as err:  # a strict config field of another type (huggingface_hub's dataclasses)
            raise _override_error({key: value}, name, err, "config") from None


def has_weights(name: str) -> bool:
    """A local folder that holds weights (an export, a downloaded model): it is loaded, never random."""
    folder = Path(name)
    return folder.is_dir() and any(
        folder.glob(p) for p in ("*.safetensors", "*.bin", "*.safetensors.index.json")
    )


def random_model(cls, config, dtype: torch.dtype = torch.float32):
    """``cls`` (an Auto class) built from ``config`` with random weights, seeded by the caller."""
    return cls.from_config(config, dtype=dtype)


@contextlib.contextmanager
def on_meta():
    """Build modules without memory: parameters have shapes and dtypes, no storage."""
    with torch.device("meta"):
        yield


def meta_model(cls, config, dtype: torch.dtype = torch.bfloat16):
    with on_meta():
        return cls.from_config(config, dtype=dtype)
