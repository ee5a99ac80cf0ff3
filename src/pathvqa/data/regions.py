"""Where each question's subject is, for a dataset that knows: the embedded set (``pathvqa synth``) writes,
beside each question, the kind of region it concerns (``region_kind``: ``finding``, ``secondary`` or
``mitoses``) and the region itself (``region``: a 1-bit PNG mask of the image's size, white inside). Rows
about no region (an organ, a stain, a "no") leave both empty; datasets without the columns have no regions.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import dataclass

import numpy as np
from PIL import Image

from pathvqa.data.prepare import sample_id, spec_of
from pathvqa.data.spec import DatasetSpec, open_split

KIND, MASK = "region_kind", "region"


@dataclass(frozen=True)
class Region:
    kind: str
    png: bytes

    def mask(self, shape: tuple[int, int] | None = None) -> np.ndarray:
        """(H, W) bool, resized (nearest) to ``shape`` (height, width) when given."""
        with Image.open(io.BytesIO(self.png)) as image:
            image = image.convert("L")
            if shape is not None and image.size != (shape[1], shape[0]):
                image = image.resize((shape[1], shape[0]), Image.Resampling.NEAREST)
            return np.asarray(image) > 127


def split_regions(source, split: str) -> dict[str, Region]:
    """{question id: its region} for the rows of ``split`` that have one ({} for a dataset without regions).
    ``source``: a config's ``data`` section, a dataset spec or a dataset path."""
    spec = source if isinstance(source, DatasetSpec | str) else spec_of(source)
    table = open_split(spec, split)
    if KIND not in table.columns:
        return {}
    kinds, masks = table.column(KIND), table.column(MASK)
    return {
        sample_id(split, i): Region(kind, bytes(mask))
        for i, (kind, mask) in enumerate(zip(kinds, masks, strict=True))
        if kind and mask
    }


def region_counts(source, split: str) -> dict[str, int]:
    """How many questions of ``split`` concern a region, by kind (``data-stats``)."""
    return dict(Counter(r.kind for r in split_regions(source, split).values()).most_common())
