"""Stain colour: HED colour deconvolution, Tellez's HED jitter (training augmentation and the evaluation's
stress), Macenko and Reinhard normalisation, and a set of images' stain profile.

**HED.** Ruifrok and Johnston's colour deconvolution into haematoxylin, eosin and DAB, with scikit-image's
matrices (``skimage.color.hed_from_rgb`` / ``rgb_from_hed``), in optical-density units (−log of the
transmitted light, clipped at 1e-6), the units scikit-image gave before 0.19 and Tellez et al. jittered
in. Two differences from today's ``rgb2hed``, each tested:

- ``rgb2hed`` divides by −log(1e-6) ≈ 13.8, so a shift of 0.05 there is a shift of 0.69 in optical density,
  which halves the light;
- it clamps negative concentrations to zero. A colour the three stains do not span then comes back another
  colour, up to 90 grey levels off on the embedded set's tiles.

Here the concentrations are kept as they are, so the way back is exact. Wherever ``rgb2hed`` clamps
nothing, the two agree up to its scale.

**HED jitter** (Tellez et al., Medical Image Analysis 2019): each image's three concentrations scaled by
α ~ U(1 − σ, 1 + σ) and shifted by β ~ U(−σ, σ), one draw per channel, σ the strength (their "HED-light" is
0.05, "HED-strong" 0.2). Strength 0 leaves the image untouched.

**Normalisation**: torchstain's NumPy Macenko (stain vectors from the optical density's principal plane,
Macenko et al. 2009) and Reinhard (Lab mean and spread, Reinhard et al. 2001), fitted on a target tile.
torchstain needs nothing but NumPy; tiatoolbox would bring a whole slide-reading stack for the same two
methods.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image
from skimage.color import hed_from_rgb, rgb_from_hed

from pathvqa.errors import PathVQAError

AUGMENT_METHODS = ("hed",)
NORMALIZE_METHODS = ("macenko", "reinhard")
SKIMAGE_SCALE = -np.log(1e-6)
"""What scikit-image (0.19 and later) divides optical density by in ``rgb2hed``."""


def to_hed(pixels: np.ndarray) -> np.ndarray:
    """(..., 3) uint8 RGB → (..., 3) float haematoxylin, eosin, DAB concentrations in optical density (not
    clamped)."""
    rgb = np.maximum(pixels.astype(np.float64) / 255.0, 1e-6)
    return -np.log(rgb) @ hed_from_rgb


def from_hed(hed: np.ndarray) -> np.ndarray:
    """(..., 3) concentrations → (..., 3) uint8 RGB (the inverse of :func:`to_hed`, rounded)."""
    rgb = np.exp(-hed @ rgb_from_hed)
    return (np.clip(rgb, 0, 1) * 255.0).round().astype(np.uint8)


def hed_draws(strength: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(α, β), each (3,): one image's scale and shift of its three concentrations."""
    alpha = rng.uniform(1 - strength, 1 + strength, size=3)
    beta = rng.uniform(-strength, strength, size=3)
    return alpha, beta


_OPTICAL_DENSITY = -np.log(np.maximum(np.arange(256) / 255.0, 1e-6)).astype(
    np.float32
)  # (256,): per grey level


def hed_jitter(pixels: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8 images, each with its (B, 3) α and β → (B, H, W, 3) uint8: :func:`to_hed`, each
    concentration scaled and shifted, :func:`from_hed`, in one linear map of the optical density per image
    (OD · hed_from_rgb · diag(α) · rgb_from_hed + β · rgb_from_hed), in float32."""
    od = _OPTICAL_DENSITY[pixels]  # (B, H, W, 3): a uint8 pixel has 256 values
    mix = np.einsum("ij,bj,jk->bik", hed_from_rgb, alpha, rgb_from_hed).astype(np.float32)  # (B, 3, 3)
    offset = (beta @ rgb_from_hed).astype(np.float32)  # (B, 3)
    b, h, w, _ = od.shape
    moved = np.matmul(od.reshape(b, h * w, 3), mix) + offset[:, None, :]
    light = np.exp(-moved, out=moved)
    return (np.clip(light, 0, 1) * 255.0).round().astype(np.uint8).reshape(b, h, w, 3)


def image_seed(encoded: bytes, seed: int) -> int:
    """The stress's draw for one image: from its bytes and the evaluation's seed (any order, any process)."""
    return int.from_bytes(
        hashlib.sha1(encoded + seed.to_bytes(8, "little", signed=True)).digest()[:8], "little"
    )


def stressed(encoded: bytes, strength: float, seed: int) -> bytes:
    """An encoded image under HED jitter of ``strength``, drawn from :func:`image_seed` (PNG); strength 0:
    the same bytes."""
    if strength == 0:
        return encoded
    with Image.open(io.BytesIO(encoded)) as image:
        pixels = np.asarray(image.convert("RGB"))
    alpha, beta = hed_draws(strength, np.random.default_rng(image_seed(encoded, seed)))
    buffer = io.BytesIO()
    Image.fromarray(hed_jitter(pixels[None], alpha[None], beta[None])[0]).save(buffer, format="PNG")
    return buffer.getvalue()


def check_strengths(strengths: list[float], what: str) -> list[float]:
    """Strengths as given, each a number ≥ 0; a one-line error otherwise."""
    bad = [s for s in strengths if not np.isfinite(s) or s < 0]
    if bad or not strengths:
        raise PathVQAError(f"{what}: give strengths of 0 or more (e.g. 0.05,0.1); got {bad or 'none'}")
    return strengths


@dataclass
class Normalizer:
    """A fitted stain normaliser (torchstain's NumPy backend): ``normalize`` maps (H, W, 3) uint8 → same."""

    method: str
    fitted: object

    def normalize(self, pixels: np.ndarray) -> np.ndarray:
        if self.method == "macenko":
            out, _, _ = self.fitted.normalize(pixels, stains=False)
            return out
        return self.fitted.normalize(pixels)


def fit_normalizer(method: str, target: np.ndarray, name: str = "the target") -> Normalizer:
    """``method`` (:data:`NORMALIZE_METHODS`) fitted on ``target``, an (H, W, 3) uint8 tile; a greyscale
    target (no stain to take on) is a one-line error."""
    import torchstain

    if method not in NORMALIZE_METHODS:
        raise PathVQAError(f"stain normalisation {method!r}: use {' or '.join(NORMALIZE_METHODS)}")
    if greyscale(target):
        raise PathVQAError(
            f"data.stain_normalize: {name} is greyscale: stain normalisation needs colour (stained) images"
        )
    make = (
        torchstain.normalizers.MacenkoNormalizer
        if method == "macenko"
        else torchstain.normalizers.ReinhardNormalizer
    )
    fitted = make(backend="numpy")
    fitted.fit(target)
    return Normalizer(method, fitted)


def greyscale(pixels: np.ndarray) -> bool:
    """Whether an (H, W, 3) image has no colour (its three channels equal everywhere)."""
    return bool((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all())


def read_target(path: str) -> tuple[np.ndarray, str]:
    """(pixels, name) of a target tile's file; a one-line error for one that is not an image."""
    from pathlib import Path

    try:
        with Image.open(Path(path)) as image:
            return np.asarray(image.convert("RGB")), f"target {path}"
    except (OSError, ValueError) as err:
        raise PathVQAError(
            f"data.stain_normalize.target {path}: not an image file ({err.__class__.__name__})"
        ) from None


def profile(images: list[bytes]) -> dict[str, float]:
    """Mean haematoxylin, eosin and DAB concentration and mean R, G, B over ``images`` (encoded)."""
    hed, rgb = [], []
    for encoded in images:
        with Image.open(io.BytesIO(encoded)) as image:
            pixels = np.asarray(image.convert("RGB"))
        hed.append(to_hed(pixels).reshape(-1, 3).mean(0))
        rgb.append(pixels.reshape(-1, 3).mean(0))
    h, e, d = np.mean(hed, axis=0)
    r, g, b = np.mean(rgb, axis=0)
    return {"haematoxylin": round(float(h), 4), "eosin": round(float(e), 4), "dab": round(float(d), 4),
            "red": round(float(r), 1), "green": round(float(g), 1), "blue": round(float(b), 1)}  # fmt: skip
