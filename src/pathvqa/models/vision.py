"""Image encoders for the VLM: patch features of one layer, (B, 3, S, S) → (B, N, Dv).

Two sources, one interface:

* open_clip models — ``hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``, a
  ``local-dir:`` folder, or a folder holding ``open_clip_config.json``. BiomedCLIP's image tower
  is a timm ViT inside open_clip's ``TimmModel``; native open_clip ViTs work the same way
  (both expose ``forward_intermediates``).
* Hugging Face vision models — CLIP / SigLIP ids or folders (``AutoModel``; the vision half of
  a dual encoder is used).

The named tiny encoders (random weights, nothing downloaded) are built in ``models/tiny.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from pathvqa.data.images import ImageSpec
from pathvqa.errors import ModelLoadError
from pathvqa.models.base import CLIP_MEAN, CLIP_STD, load_error


class VisionTower(nn.Module):
    """One layer's patch tokens (optionally with the CLS token first) from an image encoder."""

    def __init__(self, encoder: nn.Module, source: str, layer: int, use_cls: bool):
        super().__init__()
        self.encoder, self.source, self.use_cls = encoder, source, use_cls
        # Drop what comes after the chosen layer (later blocks, final norm, pooling head): it would
        # only cost time, and parameters without gradients upset DistributedDataParallel.
        if source == "open_clip":
            if hasattr(encoder, "trunk"):  # TimmModel (BiomedCLIP): a timm ViT under a projection head
                self.layer = encoder.trunk.prune_intermediate_layers([layer], prune_norm=True)[0]
                encoder.head = nn.Identity()
            else:  # open_clip's own VisionTransformer
                self.layer = encoder.prune_intermediate_layers([layer])[0]
        else:
            self.layer = layer
            self.interpolate = False  # set when the input size differs from the pretrained one
            blocks = getattr(getattr(encoder, "encoder", None), "layers", None)
            if isinstance(blocks, nn.ModuleList):  # CLIP / SigLIP: hidden_states[k] follows k blocks
                keep = layer % (len(blocks) + 1)
                encoder.encoder.layers = blocks[:keep]
                self.layer = -1
                for name in ("post_layernorm", "head"):
                    if hasattr(encoder, name):
                        setattr(encoder, name, nn.Identity())

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.source == "open_clip":
            out = self.encoder.forward_intermediates(
                pixel_values,
                indices=[self.layer],
                stop_early=True,
                intermediates_only=True,
                output_fmt="NLC",
                output_extra_tokens=self.use_cls,
            )
            tokens = out["image_intermediates"][0]  # (B, N, Dv), patch tokens only
            if self.use_cls:
                tokens = torch.cat([out["image_intermediates_prefix"][0][:, :1], tokens], dim=1)
            return tokens
        hidden = self.encoder(
            pixel_values=pixel_values, output_hidden_states=True, interpolate_pos_encoding=self.interpolate
        ).hidden_states
        tokens = hidden[self.layer]  # hidden_states[0] is the embeddings: -2 = penultimate block
        config = self.encoder.config
        patches = (pixel_values.shape[-1] // config.patch_size) ** 2
        extra = tokens.shape[1] - patches  # CLIP: 1 (CLS), SigLIP: 0
        if extra and not self.use_cls:
            tokens = tokens[:, extra:]
        return tokens


def _open_clip_name(name: str) -> str | None:
    if name.startswith(("hf-hub:", "local-dir:")):
        return name
    if (Path(name) / "open_clip_config.json").is_file():
        return f"local-dir:{name}"
    return None


def build_vision(
    name: str,
    layer: int,
    use_cls: bool,
    image_size: int | None,
    random: bool = False,
    layers: int | None = None,
):
    """(VisionTower, ImageSpec, output width) for an open_clip or Hugging Face encoder id / folder; with
    ``random`` its architecture with random weights (no weights read), ``layers``: its first N blocks."""
    clip_name = _open_clip_name(name)
    if clip_name is not None:
        return open_clip_tower(
            clip_name, layer, use_cls, image_size, label=name, random=random, layers=layers
        )
    from transformers import AutoModel

    from pathvqa.models.hub import hub_config, random_model

    config = hub_config(name, False, layers, {})
    try:
        model = random_model(AutoModel, config) if random else AutoModel.from_pretrained(name, config=config)
    except (OSError, ValueError) as err:
        raise load_error("vision model", name, err) from None
    vision_model = getattr(model, "vision_model", model)  # CLIPModel / SiglipModel → vision half
    vision_config = getattr(model.config, "vision_config", model.config)
    del model
    mean, std = _hf_normalization(name)
    spec = ImageSpec(image_size or vision_config.image_size, mean, std)
    tower = VisionTower(vision_model, "hf", layer, use_cls)
    tower.interpolate = spec.size != vision_config.image_size
    return tower, spec, output_width(tower, spec)


def open_clip_tower(
    clip_name: str,
    layer: int,
    use_cls: bool,
    image_size: int | None,
    label: str,
    random: bool = False,
    layers: int | None = None,
):
    """(VisionTower, ImageSpec, width) of an open_clip model's image tower (``hf-hub:`` / ``local-dir:``):
    its weights must be found (never a silent random encoder) unless ``random`` asks for one."""
    import open_clip

    try:
        # on the CPU even under `pathvqa plan`'s meta device: open_clip moves the model at the end
        with _quiet("root"), torch.device("cpu"):  # (open_clip warns that a tiny config has no weights)
            model = open_clip.create_model(
                clip_name, pretrained=None, pretrained_text=False, require_pretrained=not random
            )
    except (OSError, RuntimeError, ValueError) as err:
        raise load_error("open_clip image encoder", label, err) from None
    trunk = getattr(model.visual, "trunk", model.visual)
    if layers and isinstance(getattr(trunk, "blocks", None), nn.Sequential | nn.ModuleList):
        trunk.blocks = trunk.blocks[:layers]  # model.max_layers: the first N blocks
    pre = open_clip.get_model_preprocess_cfg(model)
    size = pre["size"] if isinstance(pre["size"], int) else pre["size"][0]
    if image_size and image_size != size:
        if not hasattr(model.visual, "set_input_size"):
            raise ModelLoadError(f"{label}: this open_clip encoder cannot change its input size")
        model.visual.set_input_size(image_size)  # resamples the position embeddings
    spec = ImageSpec(image_size or size, tuple(pre["mean"]), tuple(pre["std"]))
    tower = VisionTower(model.visual, "open_clip", layer, use_cls)
    del model  # the text tower is not needed
    return tower, spec, output_width(tower, spec)


def output_width(tower: nn.Module, spec: ImageSpec) -> int:
    device = next(tower.parameters()).device
    with torch.no_grad():
        return tower(torch.zeros(1, 3, spec.size, spec.size, device=device)).shape[-1]


def _hf_normalization(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std from the model's image processor (CLIP and SigLIP differ); CLIP's when it has none."""
    from transformers import AutoImageProcessor

    try:
        processor = AutoImageProcessor.from_pretrained(name)
    except (OSError, ValueError):
        return CLIP_MEAN, CLIP_STD
    return tuple(processor.image_mean), tuple(processor.image_std)


class _quiet:
    """Raise a logger's level to ERROR inside a ``with`` block."""

    def __init__(self, name: str):
        self.logger = logging.getLogger(None if name == "root" else name)

    def __enter__(self):
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)
