"""Drawing primitives shared by the synthetic styles: paint a mask, a jittered nucleus, a stained
background, scattered positions. Every function draws into a float (H, W, 3) canvas in [0, 1]."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def ellipse(r, c, r_radius, c_radius, shape, rotation=0.0) -> tuple[np.ndarray, np.ndarray]:
    """``skimage.draw.ellipse(r, c, r_radius, c_radius, shape=shape, rotation=rotation)``: the same
    pixels by the same float64 arithmetic, without its per-call array set-up (a tile draws hundreds;
    ``tests/test_synthetic.py`` compares the two)."""
    rotation %= np.pi
    sin, cos = np.sin(rotation), np.cos(rotation)
    r_extent = abs(r_radius * cos) + c_radius * sin
    c_extent = r_radius * sin + abs(c_radius * cos)
    top, left = max(int(np.ceil(r - r_extent)), 0), max(int(np.ceil(c - c_extent)), 0)
    bottom = min(int(np.floor(r + r_extent)), shape[0] - 1)
    right = min(int(np.floor(c + c_extent)), shape[1] - 1)
    rows = np.arange(0, bottom - top + 1, 1, dtype=float)[:, None] - (r - top)
    cols = np.arange(0, right - left + 1, 1, dtype=float)[None, :] - (c - left)
    inside = ((rows * cos + cols * sin) / r_radius) ** 2 + ((rows * sin - cols * cos) / c_radius) ** 2 < 1
    rr, cc = np.nonzero(inside)
    return rr + top, cc + left


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
