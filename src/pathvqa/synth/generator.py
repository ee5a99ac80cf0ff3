"""A synthetic pathology VQA set in the ``flaviagiammarino/path-vqa`` layout (the offline default).

Two styles share this writer and the hub layout:

- ``pathvqa`` (the default): PathVQA's shape. Tiles rendered from organ, lesion, pattern, secondary
  change, stain and mitoses (``data.tiles``), 6–9 questions each written as PathVQA asks them
  (``data.questions``): a long tail of open answers, open test answers never seen in training, and
  a question-only prior near PathVQA's on yes/no questions. ``pathvqa data-stats --reference pathvqa``
  puts its figures beside the real dataset's.
- ``simple``: six tissue patterns, four stains, mitoses and 0–3 vessels; four questions per image,
  each yes/no question balanced; 13 open answers. The answers are only in the pixels: the question
  alone scores about 0.5 on yes/no and 0.25 on open questions. Small and fast: smoke tests.
"""

from __future__ import annotations

import io
import json
import multiprocessing
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from scipy import ndimage
from skimage.draw import disk
from tqdm.auto import tqdm

from pathvqa.data.prepare import RESTAINED
from pathvqa.destinations import replace_folder, write_text_atomic
from pathvqa.synth import questions, tiles
from pathvqa.synth.drawing import background, ellipse, paint, scatter
from pathvqa.synth.drawing import nucleus as draw_nucleus
from pathvqa.synth.tiles import LUMEN, MITOSIS, NUMBERS, PALETTES

TISSUES = ("normal glands", "carcinoma", "inflammation", "necrosis", "fibrosis", "hemorrhage")
TISSUE_QUESTIONS = {
    "normal glands": "are these normal glands?",
    "carcinoma": "is this carcinoma?",
    "inflammation": "is there inflammation?",
    "necrosis": "is there necrosis?",
    "fibrosis": "is there fibrosis?",
    "hemorrhage": "is there hemorrhage?",
}
STAINS = ("hematoxylin and eosin", "immunohistochemistry", "periodic acid schiff", "masson trichrome")
SPLITS = ("train", "validation", "test")


@dataclass
class Tile:
    tissue: str
    stain: str
    mitoses: bool
    vessels: int


def _draw_tissue(canvas, rng, tissue, palette):
    size = canvas.shape[0]
    stroma, nucleus, accent, red = (np.asarray(c) for c in palette)
    if tissue == "normal glands":
        for cy, cx in scatter(rng, size, rng.integers(2, 5), 0.18):
            radius = size * rng.uniform(0.10, 0.15)
            paint(canvas, disk((cy, cx), radius * 1.35, shape=canvas.shape[:2]), accent, 0.35)
            paint(canvas, disk((cy, cx), radius, shape=canvas.shape[:2]), LUMEN, 0.95)
            ring = rng.integers(10, 15)
            for k in range(ring):  # evenly spaced basal nuclei around the lumen
                angle = 2 * np.pi * k / ring
                pos = (cy + np.sin(angle) * radius * 1.18, cx + np.cos(angle) * radius * 1.18)
                draw_nucleus(canvas, rng, pos, size * 0.022, nucleus, jitter=0.05)
    elif tissue == "carcinoma":
        for _ in range(rng.integers(3, 6)):  # crowded sheets of large pleomorphic nuclei
            cy, cx = scatter(rng, size, 1)[0]
            for dy, dx in rng.normal(0, size * 0.12, size=(rng.integers(10, 18), 2)):
                draw_nucleus(
                    canvas,
                    rng,
                    (cy + dy, cx + dx),
                    size * rng.uniform(0.028, 0.05),
                    nucleus,
                    elong=rng.uniform(0.6, 1.5),
                    jitter=0.3,
                )
    elif tissue == "inflammation":
        for pos in scatter(rng, size, rng.integers(140, 220)):
            draw_nucleus(canvas, rng, pos, size * 0.016, nucleus * 0.75, jitter=0.1)
    elif tissue == "necrosis":
        canvas[:] = canvas * 0.55 + np.asarray((0.98, 0.85, 0.90)) * 0.45
        for pos in scatter(rng, size, rng.integers(90, 150)):  # karyorrhectic debris
            draw_nucleus(canvas, rng, pos, size * 0.009, nucleus, jitter=0.4)
        for pos in scatter(rng, size, rng.integers(6, 12)):  # ghost cells
            draw_nucleus(canvas, rng, pos, size * 0.03, stroma * 0.97, jitter=0.2)
    elif tissue == "fibrosis":
        yy, xx = np.mgrid[0:size, 0:size] / size
        theta = rng.uniform(0, np.pi)
        u = xx * np.cos(theta) + yy * np.sin(theta)
        v = -xx * np.sin(theta) + yy * np.cos(theta)
        wave = np.sin(
            2 * np.pi * (u * rng.uniform(5, 8) + 0.12 * np.sin(2 * np.pi * v * rng.uniform(1.5, 3)))
        )
        band = (wave > 0.2)[..., None]
        canvas[:] = np.where(band, canvas * 0.55 + accent * 0.45, canvas)
        for pos in scatter(rng, size, rng.integers(14, 24)):  # spindle cells along the fibres
            rr, cc = ellipse(
                pos[0],
                pos[1],
                size * 0.012,
                size * 0.045,
                shape=canvas.shape[:2],
                rotation=-theta + np.pi / 2,
            )
            paint((canvas), (rr, cc), nucleus, 0.9)
    elif tissue == "hemorrhage":
        for pos in scatter(rng, size, rng.integers(160, 260)):
            r = size * rng.uniform(0.018, 0.026)
            paint(canvas, disk(tuple(pos), r, shape=canvas.shape[:2]), red * rng.uniform(0.9, 1.1), 0.9)
            paint(canvas, disk(tuple(pos), r * 0.4, shape=canvas.shape[:2]), red * 1.15, 0.5)


def _draw_vessels(canvas, rng, count, palette):
    size = canvas.shape[0]
    red, nucleus = np.asarray(palette[3]), np.asarray(palette[1])
    placed: list[tuple[float, float, float]] = []
    for _ in range(200):
        if len(placed) == count:
            break
        r = size * rng.uniform(0.11, 0.14)
        cy, cx = rng.uniform(r + 2, size - r - 2, size=2)
        if any(np.hypot(cy - y, cx - x) < r + pr + 3 for y, x, pr in placed):
            continue  # vessels never overlap, so they can be counted
        placed.append((cy, cx, r))
        # A thick dark wall around a lumen packed with red cells: unlike glands (white lumens)
        # and hemorrhage (scattered small red cells), a vessel is one large red body with a rim.
        rotation = rng.uniform(0, np.pi)
        wall = ellipse(cy, cx, r, r * 0.8, shape=canvas.shape[:2], rotation=rotation)
        paint(canvas, wall, nucleus * 0.7, 1.0)
        paint(
            canvas, ellipse(cy, cx, r * 0.72, r * 0.55, shape=canvas.shape[:2], rotation=rotation), red, 1.0
        )
        for dy, dx in rng.uniform(-0.35, 0.35, size=(4, 2)) * r:
            paint(canvas, disk((cy + dy, cx + dx), r * 0.12, shape=canvas.shape[:2]), LUMEN, 0.35)
    return len(placed)


def _draw_mitoses(canvas, rng):
    size = canvas.shape[0]
    for cy, cx in scatter(rng, size, rng.integers(3, 6), 0.08):
        for _ in range(5):  # condensed chromosomes: dark spiky clumps
            paint(
                canvas,
                ellipse(
                    cy, cx, size * 0.012, size * 0.05, shape=canvas.shape[:2], rotation=rng.uniform(0, np.pi)
                ),
                MITOSIS,
                1.0,
            )


def render(tile: Tile, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one tile as (size, size, 3) uint8."""
    palette = np.clip(np.asarray(PALETTES[tile.stain]) * rng.uniform(0.92, 1.08, size=(4, 3)), 0, 1)
    canvas = background(size, rng, palette[0])
    _draw_tissue(canvas, rng, tile.tissue, palette)
    if tile.stain == "immunohistochemistry":  # DAB-positive membranes: brown speckle
        for pos in scatter(rng, size, rng.integers(20, 40)):
            draw_nucleus(canvas, rng, pos, size * 0.02, palette[2], jitter=0.3)
    tile.vessels = _draw_vessels(canvas, rng, tile.vessels, palette)
    if tile.mitoses:
        _draw_mitoses(canvas, rng)
    canvas = ndimage.gaussian_filter(canvas, sigma=(0.5, 0.5, 0))
    canvas *= rng.uniform(0.9, 1.05)  # exposure jitter
    canvas += rng.normal(0, 0.02, canvas.shape)
    return (np.clip(canvas, 0, 1) * 255).round().astype(np.uint8)


MITOSES_Q = "are there mitotic figures?"
VESSELS_Q = "are blood vessels present?"
IHC_Q = "is this an immunohistochemical stain?"


def _needs(balance: Counter, question: str) -> str:
    """The answer that keeps ``question`` balanced: 'yes' unless it already has more yeses."""
    return "yes" if balance[question, "yes"] <= balance[question, "no"] else "no"


def plan_tile(rng: np.random.Generator, balance: Counter) -> tuple[Tile, list[tuple[str, str]]]:
    """Draw a tile and its two yes/no questions so that every yes/no question string stays balanced.

    ``balance`` counts (question, answer) over the split so far. Tissue and stain are drawn
    freely; the attributes a chosen question asks about (mitoses, vessels) are set to the answer
    that question needs, and the tissue / IHC questions pick their subject the same way.
    """
    tile = Tile(
        TISSUES[int(rng.integers(len(TISSUES)))],
        STAINS[int(rng.integers(len(STAINS)))],
        bool(rng.random() < 0.5),
        int(rng.integers(1, 4)) if rng.random() < 0.5 else 0,
    )
    pool, weights = ["tissue", "mitoses", "vessels"], [1.0, 1.6, 1.4]
    is_ihc = tile.stain == STAINS[1]
    if is_ihc or _needs(balance, IHC_Q) == "no":  # a non-IHC tile answers "no" when one is needed
        pool.append("ihc")
        weights.append(0.7)
    p = np.asarray(weights) / sum(weights)
    closed = []
    for kind in sorted(rng.choice(len(pool), size=2, replace=False, p=p)):
        kind = pool[kind]
        if kind == "tissue":
            own = TISSUE_QUESTIONS[tile.tissue]
            if _needs(balance, own) == "yes":
                closed.append((own, "yes"))
            else:  # ask about the other tissue whose question most needs a "no"
                others = [t for t in TISSUES if t != tile.tissue]
                need = [
                    balance[TISSUE_QUESTIONS[t], "yes"] - balance[TISSUE_QUESTIONS[t], "no"] for t in others
                ]
                best = [t for t, n in zip(others, need, strict=True) if n == max(need)]
                closed.append((TISSUE_QUESTIONS[best[int(rng.integers(len(best)))]], "no"))
        elif kind == "mitoses":
            tile.mitoses = _needs(balance, MITOSES_Q) == "yes"
            closed.append((MITOSES_Q, "yes" if tile.mitoses else "no"))
        elif kind == "vessels":
            wanted = _needs(balance, VESSELS_Q) == "yes"
            tile.vessels = (tile.vessels or int(rng.integers(1, 4))) if wanted else 0
            closed.append((VESSELS_Q, "yes" if wanted else "no"))
        else:
            closed.append((IHC_Q, "yes" if is_ihc else "no"))
    for question, answer in closed:
        balance[question, answer] += 1
    return tile, closed


def open_questions(tile: Tile, rng: np.random.Generator) -> list[tuple[str, str]]:
    """Two open questions about a rendered tile (the vessel count is the one actually drawn)."""
    pool = [("what does this image show?", tile.tissue), ("what stain is used?", tile.stain)]
    if tile.vessels:
        pool.append(("how many blood vessels are visible?", NUMBERS[tile.vessels]))
    return [pool[i] for i in sorted(rng.choice(len(pool), size=2, replace=False))]


def caption(tile: Tile) -> str:
    extras = []
    if tile.mitoses:
        extras.append("mitotic figures")
    if tile.vessels:
        extras.append(f"{NUMBERS[tile.vessels]} blood vessel{'s' if tile.vessels > 1 else ''}")
    tail = f" with {' and '.join(extras)}" if extras else ""
    return f"{tile.stain} stained section showing {tile.tissue}{tail}."


def _features():
    from datasets import Features, Image, Value

    return Features(
        {
            "image": Image(),
            "question": Value("string"),
            "answer": Value("string"),
            "caption": Value("string"),
            "region_kind": Value("string"),
            "region": Value("binary"),
        }
    )


Drawn = tuple[np.ndarray, list[questions.Asked], str, dict[str, np.ndarray]]
"""An image's pixels, its questions (each with the region it concerns), its caption, its regions' masks."""


def _simple_image(rng: np.random.Generator, size: int, balance: Counter, lab: bool = False) -> Drawn:
    if lab:
        raise ValueError("another lab's stain is drawn in the pathvqa style only")
    tile, closed = plan_tile(rng, balance)
    image = render(tile, size, rng)  # first: the vessel count asked about is the one drawn
    return image, [(q, a, None) for q, a in open_questions(tile, rng) + closed], caption(tile), {}


def _pathvqa_image(rng: np.random.Generator, size: int, _: Counter, lab: bool = False) -> Drawn:
    tile = questions.draw_tile(rng)
    pixels, regions = tiles.render(tile, size, rng, lab)
    return pixels, questions.ask(tile, rng), tile.caption(), regions


def mask_png(mask: np.ndarray) -> bytes:
    """A region as the dataset keeps it: a 1-bit PNG of the image's size (white: inside)."""
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).convert("1").save(buffer, format="PNG")
    return buffer.getvalue()


STYLES = {"pathvqa": _pathvqa_image, "simple": _simple_image}
"""``pathvqa``: PathVQA's shape (long tail, unseen test answers, language prior; the default);
``simple``: 6 tissues, 13 open answers, balanced yes/no per question (fast smoke tests)."""


def generate_split(
    split: str,
    pairs: int,
    size: int,
    seed: int,
    progress: bool = True,
    style: str = "pathvqa",
    bar_line: int = 0,
    lab: bool = False,
) -> list[dict]:
    """Rows for one split, ``pairs`` questions in all; splits use independent seed streams. ``lab``: the
    split's own rows, its images drawn in another lab's colours (``tiles.OTHER_LAB``)."""
    if style not in STYLES:
        raise ValueError(f"unknown synthetic style {style!r}: use one of {', '.join(STYLES)}")
    rng = np.random.default_rng([seed, SPLITS.index(split) if split in SPLITS else len(split)])
    rows: list[dict] = []
    bar = tqdm(
        total=pairs,
        desc=f"synth {split}{RESTAINED if lab else ''}",
        unit="pair",
        disable=not progress,
        leave=False,
        position=bar_line,
    )
    index = 0
    state: Counter = Counter()  # the simple style's yes/no balance per question
    while len(rows) < pairs:
        pixels, qa, text, regions = STYLES[style](rng, size, state, lab)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG", optimize=False)
        image = {
            "bytes": buffer.getvalue(),
            "path": f"{split}{RESTAINED if lab else ''}_{index:06d}.png",
        }
        masks = {kind: mask_png(mask) for kind, mask in regions.items()}
        for question, answer, kind in qa[: pairs - len(rows)]:
            rows.append(
                {"image": image, "question": question, "answer": answer, "caption": text,
                 "region_kind": kind, "region": masks.get(kind)}
            )  # fmt: skip
            bar.update(1)
        index += 1
    bar.close()
    return rows


PARALLEL_FROM = 4000
"""Sets of at least this many pairs draw their splits in parallel processes (one per split, up to one
per CPU core): the splits use independent seed streams, so the rows are the same either way."""


def write(
    out: str | Path,
    counts: dict[str, int],
    size: int = 96,
    seed: int = 0,
    progress: bool = True,
    style: str = "pathvqa",
    other_lab: bool = False,
) -> dict:
    """Write ``out/data/{split}-00000-of-00001.parquet`` for each split; return a summary. ``other_lab``: also
    ``test_other_lab``, the test split's rows with their images in another lab's colours."""
    out = Path(out)
    splits = [(split, pairs, False) for split, pairs in counts.items() if pairs > 0]
    if other_lab and counts.get("test"):
        splits.append(("test", counts["test"], True))
    jobs = [
        (split, pairs, size, seed, progress, style, line, lab)
        for line, (split, pairs, lab) in enumerate(splits)
    ]
    workers = min(len(jobs), os.cpu_count() or 1) if sum(counts.values()) >= PARALLEL_FROM else 1
    # forked children only draw (numpy, PIL); the parquet files are written here
    pool = (
        ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork")) if workers > 1 else None
    )
    # the data folder appears whole, replacing an older one only once every split is written
    with pool or nullcontext(), replace_folder(out / "data") as data:
        drawn = (pool.map if pool else map)(generate_split, *zip(*jobs, strict=True))
        names = [split + (RESTAINED if lab else "") for split, _, lab in splits]
        summary = {name: _write_split(data, name, rows) for name, rows in zip(names, drawn, strict=True)}
    result = {"out": str(out), "style": style, "image_size": size, "seed": seed, "splits": summary}
    if other_lab:
        result["other_lab"] = {"of": "test", "palette_shifts": [list(x) for x in tiles.OTHER_LAB]}
    write_text_atomic(out / "synth.json", json.dumps(result, indent=2))
    return result


def holds_dataset(out: Path) -> bool:
    """Whether ``out`` already holds a dataset (a synthetic one, or any split files in the hub layout)."""
    return (out / "synth.json").is_file() or any((out / "data").glob("*.parquet"))


def _write_split(data: Path, split: str, rows: list[dict]) -> dict:
    table = pa.Table.from_pylist(rows, schema=_features().arrow_schema)
    pq.write_table(table, data / f"{split}-00000-of-00001.parquet")
    closed = sum(r["answer"] in ("yes", "no") for r in rows)
    return {
        "pairs": len(rows),
        "images": len({r["image"]["path"] for r in rows}),
        "closed_share": round(closed / len(rows), 3),
    }


def answer_balance(rows: list[dict]) -> dict[str, float]:
    """Share of 'yes' per yes/no question string (a balance check)."""
    counts: dict[str, Counter] = {}
    for r in rows:
        if r["answer"] in ("yes", "no"):
            counts.setdefault(r["question"], Counter())[r["answer"]] += 1
    return {q: c["yes"] / (c["yes"] + c["no"]) for q, c in counts.items()}
