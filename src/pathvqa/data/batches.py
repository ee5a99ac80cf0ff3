"""Samples → batches: decoded, resized uint8 tiles (cached), augmentation, then the family's inputs.

Everything here runs in DataLoader workers when ``train.num_workers`` > 0. Augmentation stays on
uint8 tiles, before any model processor; what a model takes (normalised pixels, image grids, token
ids) is the family's business (``family.inputs``), called last.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from pathvqa.config import MAX_PIXELS
from pathvqa.data import stain
from pathvqa.data.images import augment, augment_seeds, decode, resize_uint8
from pathvqa.data.prepare import Sample, load_split, spec_of
from pathvqa.errors import PathVQAError

BLIND_GREY = 128


class ImagePipeline:
    """Decodes and resizes images to the family's square size; keeps them in memory if asked."""

    def __init__(self, size: int, cache: bool = True, max_pixels: int = MAX_PIXELS, normalizer=None):
        self.size = size
        self.cache: dict[str, np.ndarray] | None = {} if cache else None
        self.max_pixels = max_pixels
        self.normalizer = normalizer
        """A fitted stain normaliser (``data.stain_normalize``) applied to every resized tile, or None."""

    @classmethod
    def for_data(cls, data_cfg, size: int, cache: bool | None = None) -> ImagePipeline:
        """The pipeline ``data_cfg`` asks for: its pixel limit, its stain normalisation (``cache``: default
        ``data.cache_images``)."""
        cache = data_cfg.cache_images if cache is None else cache
        return cls(size, cache, data_cfg.max_pixels, normalizer_for(data_cfg))

    def tile(self, sample: Sample) -> np.ndarray:
        if self.cache is not None and sample.image_key in self.cache:
            return self.cache[sample.image_key]
        array = resize_uint8(decode(sample.image, self.max_pixels), self.size)  # (3, S, S)
        if self.normalizer is not None:
            array = np.ascontiguousarray(
                self.normalizer.normalize(array.transpose(1, 2, 0)).transpose(2, 0, 1)
            )
        if self.cache is not None:
            self.cache[sample.image_key] = array
        return array

    def warm(self, samples: list[Sample], progress: bool = False) -> None:
        """Fill the cache in this process, before DataLoader workers fork: they then share it (copy on
        write) instead of each decoding every image again, every epoch."""
        if self.cache is None:
            return
        todo = {s.image_key: s for s in samples if s.image_key not in self.cache}
        for sample in tqdm(
            todo.values(), desc="decode images", unit="img", disable=not progress, leave=False
        ):
            self.tile(sample)

    def batch(self, samples: list[Sample], blind: bool = False) -> torch.Tensor:
        """(B, 3, S, S) uint8; ``blind`` swaps every image for a constant grey one."""
        if blind:
            return torch.full((len(samples), 3, self.size, self.size), BLIND_GREY, dtype=torch.uint8)
        return torch.from_numpy(np.stack([self.tile(s) for s in samples]))


class Collator:
    """DataLoader ``collate_fn``: sample indices → the family's model inputs.

    With ``share_images`` each distinct image of a batch is decoded, augmented and handed to the family
    once, with the index of each sample's image (evaluation: always exact; training: with
    ``data.group_by_image``, augmentation is then drawn per image). Augmentation draws from (seed, epoch,
    sample index) — or (seed, epoch, image number) when shared — so a sample looks the same whatever
    batch or process it lands in; set ``epoch`` before each epoch's loader.
    """

    def __init__(
        self,
        samples: list[Sample],
        family,
        bundle,
        pipeline: ImagePipeline,
        task: str,
        *,
        train: bool,
        augment=None,
        seed: int = 0,
        blind: bool = False,
        share_images: bool = False,
    ):
        self.samples, self.family, self.bundle, self.pipeline = samples, family, bundle, pipeline
        self.task, self.train, self.augment, self.seed, self.blind = task, train, augment, seed, blind
        self.share_images = share_images
        self.image_number = {key: i for i, key in enumerate(sorted({s.image_key for s in samples}))}
        self.epoch = 0

    def __call__(self, indices: list[int]):
        chosen = [self.samples[i] for i in indices]
        if not self.share_images:
            images = self.pipeline.batch(chosen, self.blind)  # (B, 3, S, S) uint8
            if self.augment is not None:
                images = augment(images, self.augment, augment_seeds(self.seed, self.epoch, indices))
            return self.family.inputs(self.bundle, chosen, images, self.task, self.train)
        keys = ["blind" if self.blind else s.image_key for s in chosen]  # blind: one grey image for all
        slot: dict[str, int] = {}  # image key → its row among the distinct images
        distinct: list[Sample] = []  # each image's first sample
        for key, sample in zip(keys, chosen, strict=True):
            if key not in slot:
                slot[key] = len(distinct)
                distinct.append(sample)
        image_index = torch.tensor([slot[key] for key in keys])  # (B,)
        images = self.pipeline.batch(distinct, self.blind)  # (U, 3, S, S) uint8
        if self.augment is not None:
            numbers = [self.image_number[s.image_key] for s in distinct]
            images = augment(images, self.augment, augment_seeds(self.seed, self.epoch, numbers))
        return self.family.inputs(self.bundle, chosen, images, self.task, self.train, image_index)


def _by_image(samples: list[Sample], order: list[int]) -> list[list[int]]:
    """``order`` split into each image's questions, images in the order of their first question."""
    groups: dict[str, list[int]] = {}
    for i in order:
        groups.setdefault(samples[i].image_key, []).append(i)
    return list(groups.values())


def image_groups(samples: list[Sample], order: list[int]) -> list[int]:
    """Sample indices with each image's questions together, images in the order their first question
    has in ``order``: consecutive rows share an image, so a batch cut from it encodes few images."""
    return [i for group in _by_image(samples, order) for i in group]


def image_batches(samples: list[Sample], order: list[int], size: int) -> list[list[int]]:
    """Batches of at most ``size`` that keep each image's questions together (an image with more than
    ``size`` questions spans several); images in the order their first question has in ``order``."""
    batches: list[list[int]] = []
    current: list[int] = []
    for group in _by_image(samples, order):
        if current and len(current) + len(group) > size:
            batches.append(current)
            current = []
        for i in group:
            current.append(i)
            if len(current) == size:
                batches.append(current)
                current = []
    return batches + ([current] if current else [])


MOSAIC = 16
"""The default stain target: a seeded mosaic of this many training images (4 × 4, each at 64 px)."""
_FITTED: dict[tuple, stain.Normalizer] = {}


def normalizer_for(data_cfg) -> stain.Normalizer | None:
    """The normaliser ``data.stain_normalize`` asks for, fitted once per process on its target (a file, or
    the training images' mosaic: the same in training and evaluation); None when it asks for none."""
    wanted = data_cfg.stain_normalize
    if wanted is None:
        return None
    key = (str(data_cfg.dataset), data_cfg.train_split, data_cfg.seed, wanted.method, wanted.target)
    if key not in _FITTED:
        mosaic = training_mosaic(data_cfg)
        if stain.greyscale(mosaic):
            raise PathVQAError(
                f"data.stain_normalize: the images of {data_cfg.dataset} are greyscale: stain normalisation "
                "needs colour (stained) images"
            )
        target, name = (
            stain.read_target(wanted.target) if wanted.target else (mosaic, "the training images' mosaic")
        )
        _FITTED[key] = stain.fit_normalizer(wanted.method, target, name)
    return _FITTED[key]


def training_mosaic(data_cfg, side: int = 64) -> np.ndarray:
    """A 4 × 4 mosaic of :data:`MOSAIC` training images drawn with ``data.seed`` (each resized to ``side``)."""
    split = load_split(
        spec_of(data_cfg), data_cfg.train_split, samples=MOSAIC, seed=data_cfg.seed, progress=False
    )
    tiles = []
    for sample in split.samples:
        with Image.open(io.BytesIO(sample.image)) as image:
            tiles.append(np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BICUBIC)))
    tiles += [tiles[-1]] * (MOSAIC - len(tiles))
    return np.concatenate([np.concatenate(tiles[r * 4 : r * 4 + 4], axis=1) for r in range(4)], axis=0)
