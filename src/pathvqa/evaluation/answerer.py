"""A trained model loaded to answer questions (``predict``, ``serve``): from a run folder, a checkpoint or a
merged export."""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from pathvqa.config import load_config
from pathvqa.data.batches import ImagePipeline
from pathvqa.data.images import BadImage
from pathvqa.data.prepare import Sample
from pathvqa.errors import PathVQAError
from pathvqa.models.feature_cache import FeatureCache
from pathvqa.models.registry import get_family
from pathvqa.training.restore import load_trained

EXPORT_CONFIG = "pathvqa.yaml"
"""Written by ``pathvqa export --merge`` beside the weights: what the folder holds, for ``predict``/``serve``."""
SERVE_FEATURE_CACHE_MB = 256
"""Image features an :class:`Answerer` keeps (least recently used dropped first)."""


def load_model(path: str | Path, overrides: list[str] | None = None):
    """(cfg, family, bundle, source) from a run folder, a checkpoint folder or a merged export."""
    path = Path(path)
    if (path / EXPORT_CONFIG).is_file():
        cfg = load_config(path / EXPORT_CONFIG, overrides)
        family = get_family(cfg.model.family)
        bundle = family.load_export(cfg, path)
        bundle.model.eval().requires_grad_(False)
        return cfg, family, bundle, path
    if (path / "adapter_config.json").is_file() or (path / "adapter").is_dir():
        raise PathVQAError(f"{path} is a LoRA adapter export: pass its run folder, or export with --merge")
    return load_trained(path, overrides)


@dataclass
class Answer:
    model: str
    question: str
    answer: str
    latency_ms: float
    """Wall time of the batch that answered it (questions about one image are answered together)."""


def image_problem(err: BadImage) -> str:
    """One sentence for a user: what is wrong with the image they gave."""
    if err.reason == "image_too_large":
        return f"cannot use this image: it is larger than the pixel limit ({err})"
    if err.reason == "missing_image":
        return "cannot use this image: the file is empty"
    if "truncated" in str(err).lower() or "broken data stream" in str(err).lower():
        return f"cannot use this image: the file is truncated or damaged ({err})"
    return f"cannot use this image: it is not an image ({err})"


class Answerer:
    """A trained model that answers questions about an image, one batch per image; thread-safe (one
    generation at a time per model)."""

    def __init__(self, path: str | Path, label: str | None = None):
        self.cfg, self.family, self.bundle, self.source = load_model(path)
        self.label = label or self.cfg.name
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if not getattr(self.bundle.model, "hf_device_map", None):  # quantized models are already placed
            self.bundle.model.to(self.device)
        self.pipeline = ImagePipeline(
            self.bundle.image_size, cache=False, max_pixels=self.cfg.data.max_pixels
        )
        self.lock = threading.Lock()
        # the image being discussed is encoded once, however many requests ask about it (exact: the
        # weights never change here); the last few images' features stay in memory
        encoder = self.bundle.image_encoder
        self.features = FeatureCache(encoder, None, SERVE_FEATURE_CACHE_MB) if encoder is not None else None

    def answer(self, image: bytes, questions: list[str]) -> list[Answer]:
        """Answers to ``questions`` about the encoded ``image``; a bad image or question → PathVQAError."""
        questions = [" ".join(q.split()) for q in questions]
        if not questions or not all(questions):
            raise PathVQAError("the question is empty: ask something about the image")
        key = hashlib.sha1(image).hexdigest()
        samples = [Sample(f"q{i}", image, key, q, "", "", "open") for i, q in enumerate(questions)]
        try:
            tile = self.pipeline.batch(samples[:1])  # (1, 3, S, S): encoded once for every question
        except BadImage as err:
            raise PathVQAError(image_problem(err)) from None
        one_image = torch.zeros(len(samples), dtype=torch.long)
        inputs = self.family.inputs(
            self.bundle, samples, tile, self.cfg.task, train=False, image_index=one_image
        )
        with self.lock, torch.inference_mode():
            started = time.perf_counter()
            answers = self.family.generate(self.bundle, inputs.to(self.device), self.cfg.eval)
            ms = (time.perf_counter() - started) * 1000
        return [Answer(self.label, q, a, round(ms, 1)) for q, a in zip(questions, answers, strict=True)]
