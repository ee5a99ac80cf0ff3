"""PathVQA-style tiles rendered from attributes (the ``pathvqa`` synthetic style).

A tile is an organ's architecture (11 organs) that may carry a lesion (11 findings) spread in one of
three patterns (focal, multifocal, diffuse), a smaller secondary change (7 kinds), 0–3 mitotic figures,
in one of four stains. Every attribute is drawn so that it can be read from the pixels, and every one
is invariant to the flips and quarter turns that training augmentation applies (no left/right answers).

Each organ, finding and secondary change is a *texture* drawn over a whole canvas; a tile is the organ's
texture with the finding's texture blended in through the pattern's mask, and the secondary change's
texture through a few small spots. Combinations multiply (11 × 11 × 3 × 8 lesion descriptions), which is
what gives the set PathVQA's long tail of open answers and test answers never seen in training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.draw import disk

from pathvqa.synth.drawing import background, ellipse, nucleus, paint, scatter

LUMEN = np.array((0.97, 0.95, 0.97))
MITOSIS = np.array((0.06, 0.04, 0.10))
# RGB in [0, 1] per stain: stroma, nucleus, accent (collagen, keratin, DAB), red cells.
PALETTES = {
    "hematoxylin and eosin": ((0.93, 0.70, 0.80), (0.32, 0.18, 0.48), (0.80, 0.45, 0.62), (0.86, 0.16, 0.22)),
    "immunohistochemistry": ((0.88, 0.88, 0.91), (0.36, 0.42, 0.68), (0.48, 0.30, 0.12), (0.70, 0.36, 0.26)),
    "periodic acid schiff": ((0.90, 0.66, 0.88), (0.26, 0.26, 0.58), (0.72, 0.16, 0.58), (0.82, 0.22, 0.36)),
    "masson trichrome": ((0.52, 0.68, 0.90), (0.36, 0.22, 0.32), (0.84, 0.34, 0.40), (0.92, 0.38, 0.18)),
}
STAIN_WEIGHTS = {  # H&E dominates, as in PathVQA's textbook and PEIR figures
    "hematoxylin and eosin": 0.55,
    "immunohistochemistry": 0.2,
    "periodic acid schiff": 0.13,
    "masson trichrome": 0.12,
}
OTHER_LAB = ((+0.06, 0.55), (-0.07, 1.30), (+0.05, 0.70), (+0.04, 0.80))
"""Another lab's stain and scanner, per palette colour (stroma, nucleus, accent, red cells): a hue shift (a
share of the colour wheel) and a saturation factor, applied to every stain's palette. The eosin-like
stroma turns paler and oranger, the haematoxylin-like nuclei bluer and deeper, as a second lab's
staining time and a second scanner's colour profile move them (``pathvqa synth --other-lab``)."""
PATTERNS = ("focal", "multifocal", "diffuse")
REGION_KINDS = ("finding", "secondary", "mitoses")
"""What a question can concern, with where it is drawn: the lesion (the finding's pattern), the secondary
change's spots, the mitotic figures."""
MITOSIS_RADIUS = 0.06
"""A mitotic figure's region: a disk of this share of the tile's side round its centre (the figure's
chromosomes reach 0.05)."""
NUMBERS = ("zero", "one", "two", "three")


@dataclass
class PathTile:
    organ: str
    finding: str | None
    """None: no lesion (a normal organ)."""
    pattern: str | None
    secondary: str | None
    stain: str
    mitoses: int

    def description(self) -> str:
        """The open answer that names the whole tile: ``focal lung adenocarcinoma with necrosis``."""
        if self.finding is None:
            return f"normal {self.organ}"
        tail = f" with {self.secondary}" if self.secondary else ""
        return f"{self.pattern} {self.organ} {self.finding}{tail}"

    def findings(self) -> str | None:
        """What the organ shows: ``focal adenocarcinoma and necrosis`` (None for a normal organ)."""
        if self.finding is None:
            return None
        return f"{self.pattern} {self.finding}" + (f" and {self.secondary}" if self.secondary else "")

    def caption(self) -> str:
        mitoses = f", {NUMBERS[self.mitoses]} mitotic figures" if self.mitoses else ""
        return f"{self.stain} stained section: {self.description()}{mitoses}."


Texture = Callable[[np.ndarray, np.random.Generator, np.ndarray], None]
"""Draws over a whole (S, S, 3) canvas in place, with the stain's palette (4, 3)."""


def _jittered_grid(rng, size: int, step: float) -> np.ndarray:
    """(N, 2) points on a grid of ``step`` pixels, each moved by up to a third of a step."""
    ticks = np.arange(step / 2, size, step)
    points = np.stack(np.meshgrid(ticks, ticks), -1).reshape(-1, 2)
    return points + rng.uniform(-step / 3, step / 3, points.shape)


def _bands(size: int, rng, frequency: tuple[float, float], wobble: float) -> tuple[np.ndarray, float]:
    """A wavy stripe field in [-1, 1] at a random angle, and that angle."""
    yy, xx = np.mgrid[0:size, 0:size] / size
    theta = rng.uniform(0, np.pi)
    u = xx * np.cos(theta) + yy * np.sin(theta)
    v = -xx * np.sin(theta) + yy * np.cos(theta)
    wave = np.sin(2 * np.pi * (u * rng.uniform(*frequency) + wobble * np.sin(2 * np.pi * v * 2)))
    return wave, theta


def _along(canvas, rng, pal, theta: float, count: int, radii: tuple[float, float]) -> None:
    """``count`` elongated nuclei lying along bands at angle ``theta`` (muscle fibres, collagen)."""
    s = canvas.shape[0]
    for pos in scatter(rng, s, count):
        rr = ellipse(
            pos[0], pos[1], s * radii[0], s * radii[1], shape=canvas.shape[:2], rotation=-theta + np.pi / 2
        )
        paint(canvas, rr, pal[1], 0.9)


def _smooth_field(size: int, rng, sigma: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma)
    return (field - field.mean()) / (field.std() + 1e-8)


# --- organs: the architecture that fills the tile -------------------------------------------------


def _lung(canvas, rng, pal):  # alveoli: thin pink walls around round air spaces
    s = canvas.shape[0]
    for cy, cx in _jittered_grid(rng, s, s * 0.25):
        paint(canvas, disk((cy, cx), s * rng.uniform(0.095, 0.11), shape=canvas.shape[:2]), LUMEN, 0.95)
    for pos in scatter(rng, s, 10):
        nucleus(canvas, rng, pos, s * 0.015, pal[1])


def _colon(canvas, rng, pal):  # crypts: parallel test-tube glands lined by dark nuclei
    s = canvas.shape[0]
    theta = rng.uniform(0, np.pi)
    for cy, cx in _jittered_grid(rng, s, s * 0.3):
        paint(
            canvas, ellipse(cy, cx, s * 0.075, s * 0.14, shape=canvas.shape[:2], rotation=theta), pal[1], 0.85
        )
        paint(
            canvas, ellipse(cy, cx, s * 0.04, s * 0.11, shape=canvas.shape[:2], rotation=theta), LUMEN, 0.95
        )


def _liver(canvas, rng, pal):  # plates of polygonal hepatocytes round a central vein
    s = canvas.shape[0]
    canvas[:] = canvas * 0.7 + pal[2] * 0.3  # densely eosinophilic
    for cy, cx in _jittered_grid(rng, s, s * 0.125):
        paint(canvas, disk((cy, cx), s * 0.05, shape=canvas.shape[:2]), pal[2] * 0.6 + pal[0] * 0.4, 0.8)
        nucleus(canvas, rng, (cy, cx), s * 0.02, pal[1], jitter=0.05)
    cy, cx = rng.uniform(0.3, 0.7, 2) * s
    paint(canvas, disk((cy, cx), s * 0.11, shape=canvas.shape[:2]), LUMEN, 0.95)


def _kidney(canvas, rng, pal):  # glomeruli (nucleus tufts in a clear space) among tubules
    s = canvas.shape[0]
    for cy, cx in scatter(rng, s, 8, 0.05):
        paint(canvas, disk((cy, cx), s * 0.075, shape=canvas.shape[:2]), pal[2], 0.6)
        paint(canvas, disk((cy, cx), s * 0.035, shape=canvas.shape[:2]), LUMEN, 0.9)
    for cy, cx in scatter(rng, s, 2, 0.22):
        paint(canvas, disk((cy, cx), s * 0.16, shape=canvas.shape[:2]), LUMEN, 0.95)
        paint(canvas, disk((cy, cx), s * 0.115, shape=canvas.shape[:2]), pal[2], 0.8)  # the capillary tuft
        for dy, dx in rng.normal(0, s * 0.04, size=(18, 2)):
            nucleus(canvas, rng, (cy + dy, cx + dx), s * 0.014, pal[1])


def _skin(canvas, rng, pal):  # epidermis: a dark stratified band with keratin along one edge
    s = canvas.shape[0]
    depth = int(s * rng.uniform(0.3, 0.36))
    band = np.zeros((s, s), bool)
    band[:depth] = True
    keratin = np.zeros((s, s), bool)
    keratin[: max(2, depth // 4)] = True
    turns = int(rng.integers(4))
    band, keratin = np.rot90(band, turns), np.rot90(keratin, turns)
    canvas[band] = canvas[band] * 0.5 + pal[1] * 0.5
    canvas[keratin] = canvas[keratin] * 0.3 + pal[2] * 0.7
    rows, cols = np.nonzero(band & ~keratin)
    for i in rng.choice(len(rows), size=min(len(rows), 60), replace=False):
        nucleus(canvas, rng, (rows[i], cols[i]), s * 0.012, pal[1] * 0.7)


def _brain(canvas, rng, pal):  # pale fibrillary neuropil with sparse glial nuclei in halos
    s = canvas.shape[0]
    canvas[:] = canvas * 0.55 + LUMEN * 0.45 + _smooth_field(s, rng, 0.7)[..., None] * 0.04
    for pos in scatter(rng, s, 26):
        nucleus(canvas, rng, pos, s * 0.013, pal[1])


def _heart(canvas, rng, pal):  # parallel myocyte fibres with elongated central nuclei
    s = canvas.shape[0]
    wave, theta = _bands(s, rng, (3, 4), 0.05)
    canvas[:] = np.where((wave > 0.6)[..., None], canvas * 0.3 + LUMEN * 0.7, canvas * 0.75 + pal[3] * 0.25)
    _along(canvas, rng, pal, theta, 22, (0.01, 0.03))


def _lymph_node(canvas, rng, pal):  # sheets of small lymphocytes with pale follicle centres
    s = canvas.shape[0]
    follicles = scatter(rng, s, int(rng.integers(1, 3)), 0.25)
    canvas[:] = canvas * 0.75 + pal[1] * 0.25
    for pos in scatter(rng, s, 300):
        if all(np.hypot(*(pos - f)) > s * 0.2 for f in follicles) or rng.random() < 0.15:
            nucleus(canvas, rng, pos, s * 0.014, pal[1] * 0.7, jitter=0.1)


def _bone(canvas, rng, pal):  # thick pink trabeculae with marrow fat between
    s = canvas.shape[0]
    trabecula = _smooth_field(s, rng, s / 10) > 0.2
    canvas[:] = np.where(trabecula[..., None], canvas * 0.35 + pal[2] * 0.65, canvas)
    for cy, cx in scatter(rng, s, 12):
        if not trabecula[int(cy), int(cx)]:
            paint(canvas, disk((cy, cx), s * 0.06, shape=canvas.shape[:2]), LUMEN, 0.9)


def _thyroid(canvas, rng, pal):  # round follicles filled with pink colloid, lined by flat cells
    s = canvas.shape[0]
    for cy, cx in _jittered_grid(rng, s, s * 0.28):
        r = s * rng.uniform(0.09, 0.115)
        paint(canvas, disk((cy, cx), r * 1.2, shape=canvas.shape[:2]), pal[1], 0.55)
        paint(canvas, disk((cy, cx), r, shape=canvas.shape[:2]), pal[2] * 0.6 + pal[0] * 0.4, 0.95)


def _breast(canvas, rng, pal):  # lobules of small two-layered ducts in dense, streaky fibrous stroma
    s = canvas.shape[0]
    wave, _ = _bands(s, rng, (9, 11), 0.2)
    canvas[:] = np.where((wave > 0.5)[..., None], canvas * 0.6 + LUMEN * 0.4, canvas * 0.8 + pal[2] * 0.2)
    for cy, cx in scatter(rng, s, int(rng.integers(2, 4)), 0.2):
        for dy, dx in rng.normal(0, s * 0.08, size=(6, 2)):
            paint(canvas, disk((cy + dy, cx + dx), s * 0.045, shape=canvas.shape[:2]), pal[1], 0.85)
            paint(canvas, disk((cy + dy, cx + dx), s * 0.02, shape=canvas.shape[:2]), LUMEN, 0.95)


ORGANS: dict[str, Texture] = {
    "lung": _lung,
    "colon": _colon,
    "liver": _liver,
    "kidney": _kidney,
    "skin": _skin,
    "brain": _brain,
    "heart": _heart,
    "lymph node": _lymph_node,
    "bone": _bone,
    "thyroid": _thyroid,
    "breast": _breast,
}


# --- findings and secondary changes: textures blended in through a mask ----------------------------


def _adenocarcinoma(canvas, rng, pal):  # crowded irregular glands, large dark nuclei
    s = canvas.shape[0]
    canvas[:] = canvas * 0.55 + pal[1] * 0.45
    for cy, cx in _jittered_grid(rng, s, s * 0.17):
        paint(canvas, disk((cy, cx), s * 0.045, shape=canvas.shape[:2]), LUMEN, 0.95)
        for a in np.linspace(0, 2 * np.pi, 6, endpoint=False) + rng.uniform(0, 1):
            pos = (cy + np.sin(a) * s * 0.06, cx + np.cos(a) * s * 0.06)
            nucleus(canvas, rng, pos, s * 0.024, pal[1] * 0.6, elong=rng.uniform(0.7, 1.4), jitter=0.3)


def _squamous(canvas, rng, pal):  # keratin pearls: concentric pink whorls among large cells
    s = canvas.shape[0]
    canvas[:] = canvas * 0.45 + (pal[2] * 0.5 + np.array((1.0, 0.72, 0.5)) * 0.5) * 0.55
    for pos in scatter(rng, s, 40):
        nucleus(canvas, rng, pos, s * 0.02, pal[1], jitter=0.3)
    for cy, cx in scatter(rng, s, 3, 0.15):
        for k, r in enumerate((0.15, 0.11, 0.07, 0.03)):
            color = pal[2] * 0.6 + np.array((1.0, 0.75, 0.55)) * 0.4 if k % 2 == 0 else LUMEN
            paint(canvas, disk((cy, cx), s * r, shape=canvas.shape[:2]), color, 0.9)


def _lymphoma(canvas, rng, pal):  # a monotonous sheet of medium round nuclei
    s = canvas.shape[0]
    canvas[:] = canvas * 0.35 + pal[1] * 0.65
    for cy, cx in _jittered_grid(rng, s, s * 0.06):
        nucleus(canvas, rng, (cy, cx), s * 0.022, pal[1] * 0.45, jitter=0.05)


def _granuloma(canvas, rng, pal):  # pale epithelioid nodules rimmed by lymphocytes, a giant cell
    s = canvas.shape[0]
    canvas[:] = canvas * 0.6 + LUMEN * 0.4
    for pos in scatter(rng, s, 70):
        nucleus(canvas, rng, pos, s * 0.012, pal[1] * 0.7, jitter=0.1)
    for cy, cx in scatter(rng, s, 2, 0.2):
        paint(canvas, disk((cy, cx), s * 0.22, shape=canvas.shape[:2]), pal[1] * 0.6, 0.9)
        paint(canvas, disk((cy, cx), s * 0.17, shape=canvas.shape[:2]), pal[0] * 0.5 + LUMEN * 0.5, 0.95)
        paint(canvas, disk((cy, cx), s * 0.07, shape=canvas.shape[:2]), pal[2], 0.9)
        for a in np.linspace(0, 2 * np.pi, 8, endpoint=False):
            nucleus(canvas, rng, (cy + np.sin(a) * s * 0.055, cx + np.cos(a) * s * 0.055), s * 0.013, pal[1])


def _necrosis(canvas, rng, pal):  # washed-out eosinophilic debris, nuclear dust
    s = canvas.shape[0]
    canvas[:] = canvas * 0.3 + np.asarray((0.99, 0.90, 0.93)) * 0.7
    for pos in scatter(rng, s, 60):
        nucleus(canvas, rng, pos, s * 0.01, pal[1], jitter=0.4)


def _hemorrhage(canvas, rng, pal):  # sheets of red cells
    s = canvas.shape[0]
    canvas[:] = canvas * 0.3 + pal[3] * 0.7
    for pos in scatter(rng, s, 160):
        paint(canvas, disk(tuple(pos), s * rng.uniform(0.016, 0.022), shape=canvas.shape[:2]), pal[3], 0.9)


def _fibrosis(canvas, rng, pal):  # wavy collagen bands with spindle cells
    s = canvas.shape[0]
    wave, theta = _bands(s, rng, (4, 5), 0.12)
    canvas[:] = np.where((wave > 0.0)[..., None], canvas * 0.2 + pal[2] * 0.8, canvas * 0.8 + LUMEN * 0.2)
    _along(canvas, rng, pal, theta, 16, (0.008, 0.04))


def _amyloid(canvas, rng, pal):  # glassy, homogeneous, almost acellular deposits
    canvas[:] = canvas * 0.15 + (pal[2] * 0.4 + np.array((1.0, 0.78, 0.6)) * 0.6) * 0.85


def _abscess(canvas, rng, pal):  # a cavity packed with neutrophils (small lobed nuclei)
    s = canvas.shape[0]
    canvas[:] = canvas * 0.4 + LUMEN * 0.6
    for cy, cx in scatter(rng, s, 180):
        for dy, dx in rng.normal(0, s * 0.008, size=(2, 2)):
            paint(canvas, disk((cy + dy, cx + dx), s * 0.009, shape=canvas.shape[:2]), pal[1] * 0.5, 0.95)


def _calcification(canvas, rng, pal):  # dark purple granular clumps
    s = canvas.shape[0]
    clumps = _smooth_field(s, rng, s / 20) > 0.5
    canvas[:] = np.where(clumps[..., None], pal[1] * 0.55 + MITOSIS * 0.45, canvas)


def _inflammation(canvas, rng, pal):  # a dense scatter of small dark inflammatory cells
    for pos in scatter(rng, canvas.shape[0], 220):
        nucleus(canvas, rng, pos, canvas.shape[0] * 0.013, pal[1] * 0.5, jitter=0.1)


def _mucin(canvas, rng, pal):  # pale blue-grey lakes
    canvas[:] = canvas * 0.35 + np.array((0.72, 0.80, 0.92)) * 0.65


def _fat(canvas, rng, pal):  # empty round adipocytes
    s = canvas.shape[0]
    for cy, cx in _jittered_grid(rng, s, s * 0.14):
        paint(canvas, disk((cy, cx), s * 0.065, shape=canvas.shape[:2]), LUMEN, 1.0)


def _melanoma(canvas, rng, pal):  # large atypical cells stuffed with dark brown pigment
    s = canvas.shape[0]
    for pos in scatter(rng, s, 40):
        nucleus(
            canvas, rng, pos, s * 0.04, np.array((0.30, 0.18, 0.08)), elong=rng.uniform(0.7, 1.3), jitter=0.3
        )
        nucleus(canvas, rng, pos, s * 0.01, pal[1] * 0.6, jitter=0.1)


FINDINGS: dict[str, Texture] = {
    "adenocarcinoma": _adenocarcinoma,
    "squamous cell carcinoma": _squamous,
    "lymphoma": _lymphoma,
    "granuloma": _granuloma,
    "necrosis": _necrosis,
    "hemorrhage": _hemorrhage,
    "fibrosis": _fibrosis,
    "amyloidosis": _amyloid,
    "abscess": _abscess,
    "calcification": _calcification,
    "melanoma": _melanoma,
}
SECONDARY: dict[str, Texture] = {
    "hemorrhage": _hemorrhage,
    "necrosis": _necrosis,
    "calcification": _calcification,
    "fibrosis": _fibrosis,
    "inflammation": _inflammation,
    "mucin": _mucin,
    "fat": _fat,
}


def pattern_mask(pattern: str, size: int, rng) -> np.ndarray:
    """(S, S) float in [0, 1]: where the lesion is (one blob, several, or most of the tile)."""
    if pattern == "diffuse":
        field = _smooth_field(size, rng, size / 8)
        mask = field > np.quantile(field, 0.45)
    else:
        count, radius = (1, (0.3, 0.35)) if pattern == "focal" else (int(rng.integers(3, 5)), (0.13, 0.16))
        mask = np.zeros((size, size), bool)
        for cy, cx in scatter(rng, size, count, 0.2):
            mask[disk((cy, cx), size * rng.uniform(*radius), shape=mask.shape)] = True
    return ndimage.gaussian_filter(mask.astype(float), 1.0)


def _spots(size: int, rng) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    for cy, cx in scatter(rng, size, 2, 0.15):
        mask[disk((cy, cx), size * rng.uniform(0.12, 0.14), shape=mask.shape)] = True
    return ndimage.gaussian_filter(mask.astype(float), 0.8)


def _blend(canvas, texture: Texture, mask: np.ndarray, rng, palette, stroma) -> None:
    layer = background(canvas.shape[0], rng, stroma)
    texture(layer, rng, palette)
    canvas[:] = canvas * (1 - mask[..., None]) + layer * mask[..., None]


def _draw_mitoses(canvas, rng, count: int) -> np.ndarray:
    """Draw ``count`` mitotic figures; returns where they are ((S, S) bool: a disk round each figure)."""
    s = canvas.shape[0]
    placed: list[np.ndarray] = []
    while len(placed) < count:  # well apart, so they can be counted
        pos = rng.uniform(0.1 * s, 0.9 * s, 2)
        if all(np.hypot(*(pos - p)) > s * 0.2 for p in placed):
            placed.append(pos)
    for cy, cx in placed:
        for _ in range(5):  # condensed chromosomes: a dark spiky clump
            rr = ellipse(cy, cx, s * 0.012, s * 0.05, shape=canvas.shape[:2], rotation=rng.uniform(0, np.pi))
            paint(canvas, rr, MITOSIS, 1.0)
    where = np.zeros(canvas.shape[:2], bool)
    for cy, cx in placed:
        where[disk((cy, cx), s * MITOSIS_RADIUS, shape=where.shape)] = True
    return where


def other_lab(palette: np.ndarray) -> np.ndarray:
    """A (4, 3) RGB palette as :data:`OTHER_LAB`'s lab stains and scans it (hue and saturation in HSV)."""
    from skimage.color import hsv2rgb, rgb2hsv

    hsv = rgb2hsv(palette[None])[0]
    shifts = np.asarray(OTHER_LAB)
    hsv[:, 0] = (hsv[:, 0] + shifts[:, 0]) % 1.0
    hsv[:, 1] = np.clip(hsv[:, 1] * shifts[:, 1], 0, 1)
    return hsv2rgb(hsv[None])[0]


def render(
    tile: PathTile, size: int, rng: np.random.Generator, lab: bool = False
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Render one tile: (size, size, 3) uint8, and where each drawn change is (:data:`REGION_KINDS`, each
    (size, size) bool, present only when the tile has that change): the finding where its pattern's mask is
    at least half blended in (less the secondary change's spots, drawn over it), the secondary change's
    spots likewise, a disk round each mitotic figure. ``lab``: in :data:`OTHER_LAB`'s colours (the same
    draws of ``rng``: the same tissue, another lab's stain)."""
    palette = np.clip(np.asarray(PALETTES[tile.stain]) * rng.uniform(0.94, 1.06, size=(4, 3)), 0, 1)
    palette = other_lab(palette) if lab else palette
    canvas = background(size, rng, palette[0])
    ORGANS[tile.organ](canvas, rng, palette)
    regions: dict[str, np.ndarray] = {}
    if tile.finding is not None:
        mask = pattern_mask(tile.pattern, size, rng)
        _blend(canvas, FINDINGS[tile.finding], mask, rng, palette, palette[0])
        regions["finding"] = mask >= 0.5
    if tile.secondary is not None:
        spots = _spots(size, rng)
        _blend(canvas, SECONDARY[tile.secondary], spots, rng, palette, palette[0])
        regions["secondary"] = spots >= 0.5
        if "finding" in regions:
            regions["finding"] &= ~regions["secondary"]
    if tile.stain == "immunohistochemistry":  # DAB-positive cells: brown speckle
        for pos in scatter(rng, size, 30):
            nucleus(canvas, rng, pos, size * 0.018, palette[2], jitter=0.3)
    mitoses = _draw_mitoses(canvas, rng, tile.mitoses)
    if tile.mitoses:
        regions["mitoses"] = mitoses
    canvas = ndimage.gaussian_filter(canvas, sigma=(0.5, 0.5, 0))
    canvas *= rng.uniform(0.93, 1.04)  # exposure jitter
    canvas += rng.normal(0, 0.02, canvas.shape)
    return (np.clip(canvas, 0, 1) * 255).round().astype(np.uint8), regions
