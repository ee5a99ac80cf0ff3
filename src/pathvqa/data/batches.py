"""Samples → model inputs: resized image tensors (cached) plus the family's text tensors."""

from __future__ import annotations

import numpy as np
import torch

from pathvqa.data.images import ImageSpec, decode, resize_uint8
from pathvqa.data.prepare import Sample

BLIND_GREY = 128


class ImagePipeline:
    """Decodes and resizes images to the encoder's square size; keeps them in memory if asked."""

    def __init__(self, spec: ImageSpec, cache: bool = True, max_pixels: int = 40_000_000):
        self.spec = spec
        self.cache: dict[str, np.ndarray] | None = {} if cache else None
        self.max_pixels = max_pixels

    def tile(self, sample: Sample) -> np.ndarray:
        if self.cache is not None and sample.image_key in self.cache:
            return self.cache[sample.image_key]
        array = resize_uint8(decode(sample.image, self.max_pixels), self.spec.size)  # (3, S, S)
        if self.cache is not None:
            self.cache[sample.image_key] = array
        return array

    def batch(self, samples: list[Sample], blind: bool = False) -> torch.Tensor:
        """(B, 3, S, S) uint8; ``blind`` swaps every image for a constant grey one."""
        if blind:
            return torch.full(
                (len(samples), 3, self.spec.size, self.spec.size), BLIND_GREY, dtype=torch.uint8
            )
        return torch.from_numpy(np.stack([self.tile(s) for s in samples]))


class Collator:
    """DataLoader ``collate_fn``: sample indices → {text tensors…, images (uint8), indices}."""

    def __init__(
        self,
        samples: list[Sample],
        family,
        bundle,
        pipeline: ImagePipeline,
        task: str,
        train: bool,
        blind: bool = False,
    ):
        self.samples, self.family, self.bundle = samples, family, bundle
        self.pipeline, self.task, self.train, self.blind = pipeline, task, train, blind

    def __call__(self, indices: list[int]) -> dict:
        chosen = [self.samples[i] for i in indices]
        batch = self.family.collate(self.bundle, chosen, self.task, self.train)
        batch["images"] = self.pipeline.batch(chosen, self.blind)
        batch["indices"] = torch.tensor(indices)  # (B,) positions in ``samples``: seeds augmentation
        return batch
