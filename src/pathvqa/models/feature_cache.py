"""A frozen image encoder's features, computed once per image and reused for the rest of the run.

When a stage trains everything but the image encoder and draws no augmentation (LLaVA's stage 2, the
QLoRA configs), every epoch runs the same encoder on the same pixels. :class:`FeatureCache` replaces the
encoder module's ``forward`` on that one instance (its weights, names, hooks and wrappers stay as they
are): each image of a batch is looked up by a hash of its pixel values; only the images not seen yet run
through the encoder, and their rows are kept, in memory up to a cap and then as safetensors files in a
folder named by a hash of the encoder's weights, so changed weights never read stale features.
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from dataclasses import fields, is_dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def why_not_cached(encoder: torch.nn.Module | None, stain_jitter: float) -> str | None:
    """None when caching gives the uncached forward, else the reason it would not. Flips and rotations
    are fine: an image has 8 of them, each cached under its own pixels; stain jitter draws new pixels."""
    if encoder is None:
        return "this model family has no separable image encoder"
    if any(p.requires_grad for p in encoder.parameters()):
        return "the image encoder trains"
    if stain_jitter > 0:
        return "stain jitter draws new pixels every epoch"
    for module in encoder.modules():
        if isinstance(module, torch.nn.Dropout) and module.p > 0:
            return "the image encoder applies dropout"
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            return "the image encoder has batch norm (its output depends on the batch)"
    return None


def weights_digest(module: torch.nn.Module) -> str:
    """A hash of every parameter and buffer (names, shapes, dtypes, values)."""
    digest = hashlib.blake2b(digest_size=12)
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """Caches ``encoder(pixel_values)`` per image (leading dimension: one row per image). The output is a
    tensor or a model-output dataclass of tensors (BLIP's vision model); None fields stay None."""

    def __init__(self, encoder: torch.nn.Module, folder: Path | None, cap_mb: float):
        """``folder`` None: memory only, the least recently used image dropped beyond the cap (serving)."""
        self.encoder = encoder
        self.folder = Path(folder) / weights_digest(encoder) if folder is not None else None
        self.cap = int(cap_mb * 2**20)
        self.memory: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self.held = 0
        self.on_disk: set[str] = set()
        self.hits = self.misses = 0
        self.kind: type | None = None  # the output's type, learnt from the first forward
        self.original = encoder.forward
        encoder.forward = self.forward  # this instance only: state_dict, hooks and wrappers unchanged

    def close(self) -> None:
        """Give the encoder its own forward back (the files on disk stay for a rerun of the same weights)."""
        self.encoder.forward = self.original

    def forward(self, pixel_values: torch.Tensor, *args, **kwargs):
        if args or kwargs:  # a call shape this cache does not know: compute it
            return self.original(pixel_values, *args, **kwargs)
        keys = [_image_key(row) for row in pixel_values.detach().cpu()]
        found = {key: self._get(key, pixel_values.device) for key in dict.fromkeys(keys)}
        todo = [key for key, row in found.items() if row is None]  # each new image once, however often asked
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            first = [keys.index(key) for key in todo]
            with torch.no_grad():
                computed = self.original(pixel_values if len(first) == len(keys) else pixel_values[first])
            self.kind = type(computed)
            for j, key in enumerate(todo):
                found[key] = {name: value[j].detach().clone() for name, value in _tensors(computed).items()}
                self._put(key, found[key])
        rows = [found[key] for key in keys]
        return self._assemble(rows)

    def summary(self) -> dict:
        return {
            "images": len(self.memory) + len(self.on_disk),
            "in_memory_mb": round(self.held / 2**20, 1),
            "on_disk": len(self.on_disk),
            "hits": self.hits,
            "misses": self.misses,
        }

    def _assemble(self, rows: list[dict[str, torch.Tensor]]):
        stacked = {name: torch.stack([row[name] for row in rows]) for name in rows[0]}
        if issubclass(self.kind, torch.Tensor):
            return stacked[""]
        return self.kind(**stacked)  # the model-output class, its other fields None

    def _get(self, key: str, device: torch.device) -> dict[str, torch.Tensor] | None:
        if key in self.memory:
            self.memory.move_to_end(key)
            return self.memory[key]
        if key in self.on_disk:
            return {
                name: value.to(device)
                for name, value in load_file(str(self.folder / f"{key}.safetensors")).items()
            }
        return None

    def _put(self, key: str, row: dict[str, torch.Tensor]) -> None:
        size = _nbytes(row)
        if self.folder is None:  # memory only: make room by dropping the least recently used
            while self.memory and self.held + size > self.cap:
                _, dropped = self.memory.popitem(last=False)
                self.held -= _nbytes(dropped)
        if self.held + size <= self.cap:
            self.memory[key] = row
            self.held += size
            return
        if self.folder is None:
            return  # larger than the whole cap: not kept
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / f".{key}.{os.getpid()}.tmp"
        save_file({name: t.contiguous().cpu() for name, t in row.items()}, str(tmp))
        tmp.replace(self.folder / f"{key}.safetensors")  # whole files only, as checkpoints
        self.on_disk.add(key)


def _nbytes(row: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in row.values())


def _image_key(pixels: torch.Tensor) -> str:
    raw = pixels.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def _tensors(output) -> dict[str, torch.Tensor]:
    """A tensor as {"": it}; a model-output dataclass as its tensor fields."""
    if isinstance(output, torch.Tensor):
        return {"": output}
    if is_dataclass(output):
        found = {f.name: getattr(output, f.name) for f in fields(output)}
        return {name: value for name, value in found.items() if isinstance(value, torch.Tensor)}
    raise TypeError(f"cannot cache an image encoder output of type {type(output).__name__}")
