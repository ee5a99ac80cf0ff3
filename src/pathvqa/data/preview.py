"""A labelled grid of dataset samples (each image with its questions and answers) as a PNG."""

from __future__ import annotations

import io
import textwrap
from collections import OrderedDict
from pathlib import Path

from PIL import Image


def preview(
    rows: list[dict], path: str | Path, images: int = 8, columns: int = 4, questions: int = 5
) -> Path:
    """Write a grid of the first ``images`` distinct images of ``rows`` (raw rows with image bytes), each
    with its first ``questions`` questions and answers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grouped: OrderedDict[bytes, list[dict]] = OrderedDict()
    for row in rows:
        data = row["image"]["bytes"] if isinstance(row["image"], dict) else row["image"]
        if data not in grouped and len(grouped) >= images:
            continue
        grouped.setdefault(data, []).append(row)
    rows_n = (len(grouped) + columns - 1) // columns
    fig, axes = plt.subplots(rows_n, columns, figsize=(3.4 * columns, 4.8 * rows_n), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (data, qa) in zip(axes.flat, grouped.items(), strict=False):
        ax.imshow(Image.open(io.BytesIO(data)).convert("RGB"))
        lines = [textwrap.fill(f"Q: {r['question']}  A: {r['answer']}", 44) for r in qa[:questions]]
        ax.set_title("\n".join(lines), fontsize=7.5, loc="left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
