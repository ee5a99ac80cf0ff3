"""Image decoding (any mode → RGB, bombs and truncation caught), resizing and tile augmentation."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageFile

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must fail validation, not load half grey


class BadImage(Exception):
    """An image that cannot be used; ``reason`` is the skip-count key."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        super().__init__(f"{reason}: {detail}" if detail else reason)


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode (L, P, RGBA, CMYK, I;16, I, F, …) → 8-bit RGB."""
    if image.mode == "RGB":
        return image
    if image.mode.startswith("I;16"):
        arr = np.asarray(image, dtype=np.float64) / 257.0  # 16-bit → 8-bit
        return Image.fromarray(arr.clip(0, 255).astype(np.uint8), "L").convert("RGB")
    if image.mode in ("I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode(data: bytes | None, max_pixels: int) -> Image.Image:
    """Decode and fully load an encoded image as RGB, or raise :class:`BadImage`."""
    if not data:
        raise BadImage("missing_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise BadImage(
                    "image_too_large",
                    f"{width}x{height} is {width * height:,} pixels, over the pixel limit of {max_pixels:,} (data.max_pixels)",
                )
            image.load()
    except BadImage:
        raise
    except Image.DecompressionBombError as err:
        raise BadImage("image_too_large", f"{err} (Pillow's own limit)") from None
    except Image.UnidentifiedImageError:
        raise BadImage("undecodable_image", "not in a picture format Pillow reads") from None
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError… for broken files
        raise BadImage("undecodable_image", f"{err.__class__.__name__}: {err}") from None
    if width == 0 or height == 0:
        raise BadImage("undecodable_image", "zero size")
    return to_rgb(image)


def resize_uint8(image: Image.Image, size: int) -> np.ndarray:
    """RGB image → (3, size, size) uint8 array, bicubic (as the BLIP and CLIP processors do)."""
    resized = image.resize((size, size), Image.Resampling.BICUBIC)
    return np.ascontiguousarray(np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1))


@dataclass(frozen=True)
class ImageSpec:
    """What a vision encoder expects: square size and normalisation."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) uint8 or float in [0, 1] → normalized float32."""
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        mean = torch.tensor(self.mean, dtype=images.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=images.dtype).view(1, 3, 1, 1)
        return (images - mean) / std


def augment_seeds(seed: int, epoch: int, indices: list[int]) -> list[int]:
    """One seed per sample from (run seed, epoch, sample index): the same draw on one process or many,
    in any batch, and after a resume."""
    return [(seed * 1_000_003 + epoch) * 10_000_019 + int(i) for i in indices]


def augment(images: torch.Tensor, cfg, seeds: list[int]) -> torch.Tensor:
    """Label-preserving tile augmentation: flips, 90° rotations, mild stain jitter, HED stain jitter.

    images: (B, 3, S, S) uint8 → (B, 3, S, S) uint8, before any model processor sees them. Image i
    draws only from a generator seeded with ``seeds[i]`` (see :func:`augment_seeds`).
    """
    tiles, scales, shifts, hed = [], [], [], []
    stain = getattr(cfg, "stain", None)
    for tile, seed in zip(images, seeds, strict=True):
        generator = torch.Generator().manual_seed(seed)
        draws = torch.rand(2, generator=generator)
        rotation = int(torch.randint(0, 4, (1,), generator=generator))
        if cfg.hflip and draws[0] < 0.5:
            tile = tile.flip(-1)
        if cfg.vflip and draws[1] < 0.5:
            tile = tile.flip(-2)
        if cfg.rot90 and rotation > 0:
            tile = torch.rot90(tile, rotation, dims=(-2, -1))
        if cfg.stain_jitter > 0:
            scales.append(1 + (torch.rand(3, generator=generator) * 2 - 1) * cfg.stain_jitter)
            shifts.append((torch.rand(3, generator=generator) * 2 - 1) * cfg.stain_jitter * 0.2)
        if stain is not None and stain.strength > 0:  # after every earlier draw: their streams are unchanged
            hed.append((torch.rand(6, generator=generator) * 2 - 1) * stain.strength)
        tiles.append(tile)
    out = torch.stack(tiles)
    if scales:
        out = _stain_jitter(out, torch.stack(scales), torch.stack(shifts))
    if hed:
        out = _hed_jitter(out, torch.stack(hed).double().numpy())
    return out


def _hed_jitter(images: torch.Tensor, draws: np.ndarray) -> torch.Tensor:
    """Tellez's HED jitter (``data.stain``): images (B, 3, S, S) uint8; draws (B, 6): each image's α − 1 and
    β for its haematoxylin, eosin and DAB concentrations → (B, 3, S, S) uint8."""
    from pathvqa.data.stain import hed_jitter

    pixels = images.permute(0, 2, 3, 1).numpy()
    jittered = hed_jitter(pixels, 1 + draws[:, :3], draws[:, 3:])
    return torch.from_numpy(np.ascontiguousarray(jittered.transpose(0, 3, 1, 2)))


_OPTICAL_DENSITY = -torch.log((torch.arange(256) / 255.0).clamp(min=1 / 255))  # (256,)


def _stain_jitter(images: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Optical density (Beer–Lambert): stain amount is linear in OD, so scaling/shifting OD per channel
    mimics lab-to-lab stain variation without inventing structures. A uint8 pixel has 256 values, so
    each (image, channel) gets a 256-entry table and the pixels are looked up in it.

    images (B, 3, S, S) uint8; scale, shift (B, 3) → (B, 3, S, S) uint8.
    """
    od = _OPTICAL_DENSITY * scale[..., None] + shift[..., None]  # (B, 3, 256)
    table = (torch.exp(-od.clamp(min=0)) * 255.0).round().clamp(0, 255).to(torch.uint8)
    b, c, h, w = images.shape
    flat = images.reshape(b * c, h * w).long()
    return torch.gather(table.reshape(b * c, 256), 1, flat).reshape(b, c, h, w)
