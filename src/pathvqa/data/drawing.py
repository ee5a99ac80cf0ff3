"""Drawing primitives shared by the synthetic styles: paint a mask, a jittered nucleus, a stained
background, scattered positions. Every function draws into a float (H, W, 3) canvas in [0, 1]."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.draw import ellipse


def paint(canvas: np.ndarray, mask: tuple[np.ndarray, np.ndarray], color, alpha: float = 1.0) -> None:
    rr, cc = mask
    canvas[rr, cc] = canvas[rr, cc] * (1 - alpha) + np.asarray(color) * alpha


def nucleus(canvas, rng, center, radius, color, elong=1.0, jitter=0.15):
    """An ellipse with random orientation and size jitter; (H, W, 3) canvas painted in place."""
    r = radius * rng.uniform(1 - jitter, 1 + jitter)
    shade = np.clip(np.asarray(color) * rng.uniform(0.85, 1.15), 0, 1)
    paint(
        canvas,
        ellipse(center[0], center[1], r, r * elong, shape=canvas.shape[:2], rotation=rng.uniform(0, np.pi)),
        shade,
        0.92,
    )


def background(size: int, rng, stroma) -> np.ndarray:
    low = ndimage.gaussian_filter(rng.standard_normal((size, size)), size / 10)
    low /= np.abs(low).max() + 1e-8
    fine = ndimage.gaussian_filter(rng.standard_normal((size, size)), 0.8) * 0.6
    shade = 1 + 0.07 * low + 0.03 * fine
    return np.clip(np.asarray(stroma)[None, None, :] * shade[..., None], 0, 1)


def scatter(rng, size, count, margin=0.0):
    return rng.uniform(margin * size, (1 - margin) * size, size=(count, 2))
