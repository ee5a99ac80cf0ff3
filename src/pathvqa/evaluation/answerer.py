"""A trained model loaded to answer questions (``predict``, ``serve``): from a run folder, a checkpoint or a
merged export."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pathvqa.answers import answer_type
from pathvqa.data.batches import ImagePipeline
from pathvqa.data.images import BadImage, decode
from pathvqa.data.prepare import Sample, clean_answer
from pathvqa.errors import PathVQAError
from pathvqa.evaluation.calibrate import saved_temperature
from pathvqa.evaluation.explain import given_answer_maps
from pathvqa.models.base import Generated
from pathvqa.models.feature_cache import FeatureCache
from pathvqa.runtime.trained import TrainedRun, load, resolve_run
from pathvqa.scoring.confidence import abstains, check_threshold, kept, readable, row_confidence

SERVE_FEATURE_CACHE_MB = 256
"""Image features an :class:`Answerer` keeps (least recently used dropped first)."""


@dataclass
class Answer:
    model: str
    question: str
    answer: str
    latency_ms: float
    """Wall time of the batch that answered it (questions about one image are answered together)."""
    confidence: float | None = None
    """How sure the model is (``scoring.confidence``: a yes/no answer's renormalised probability, else the
    geometric mean of its tokens' probabilities), under the run's fitted temperature when it has one."""
    abstained: bool = False
    """Less sure than the answerer's ``abstain_below``: shown as "not sure"."""

    @property
    def shown(self) -> str:
        """The answer as a person reads it: ``yes (p = 0.93)``, or ``not sure (p = 0.41)``."""
        return readable(self.answer, self.confidence, self.abstained)


@dataclass
class Explanation:
    answer: Answer
    image: bytes
    """The encoded image asked about."""
    saliency: np.ndarray | None
    """(H, W) at the image's size, non-negative: where the model looked (``evaluation.explain``); None for
    an empty answer (nothing to map)."""


def image_problem(err: BadImage, name: str = "this image") -> str:
    """One sentence for a user: what is wrong with the image they gave (``name``: its file)."""
    detail = str(err).removeprefix(f"{err.reason}: ")
    if err.reason == "image_too_large":
        return f"cannot use {name}: {detail}"
    if err.reason == "missing_image":
        return f"cannot use {name}: the file is empty"
    if "truncated" in detail.lower() or "broken data stream" in detail.lower():
        return f"cannot use {name}: the file is truncated or damaged ({detail})"
    return f"cannot use {name}: it is not an image ({detail})"


ImageInput = bytes | str | Path | Image.Image
"""What :meth:`Answerer.answer` takes as an image: encoded bytes, a file's path, or a PIL image."""


def read_image(image: ImageInput) -> tuple[bytes, str]:
    """(encoded bytes, a name for messages) of an image given as bytes, a path or a PIL image."""
    if isinstance(image, bytes | bytearray):
        return bytes(image), "this image"
    if isinstance(image, str | Path):
        path = Path(image)
        if not path.is_file():
            raise PathVQAError(f"image not found: {path}" if not path.exists() else f"{path} is not a file")
        return path.read_bytes(), str(path)
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue(), "this image"
    raise PathVQAError(f"the image must be bytes, a file path or a PIL image (got {type(image).__name__})")


def check_image(image: ImageInput, max_pixels: int) -> None:
    """A one-line :class:`PathVQAError` for an image that cannot be read, before any model loads."""
    data, name = read_image(image)
    try:
        decode(data, max_pixels)
    except BadImage as err:
        raise PathVQAError(image_problem(err, name)) from None


def read_questions(questions: str | list[str] | tuple[str, ...]) -> list[str]:
    """One question or a list of them, each with its whitespace collapsed; an empty one is refused."""
    if isinstance(questions, str):
        questions = [questions]
    if not isinstance(questions, list | tuple) or not all(isinstance(q, str) for q in questions):
        raise PathVQAError(
            f"questions must be a string or a list of strings (got {type(questions).__name__})"
        )
    questions = [" ".join(q.split()) for q in questions]
    if not questions or not all(questions):
        raise PathVQAError("the question is empty: ask something about the image")
    return questions


class Answerer:
    """A trained model that answers questions about an image, one batch per image; thread-safe (one
    generation at a time per model). ``abstain_below``: answers less sure than this are marked abstained."""

    def __init__(
        self, path: str | Path | TrainedRun, label: str | None = None, abstain_below: float | None = None
    ):
        check_threshold(abstain_below)
        self.abstain_below = abstain_below
        self.trained = resolve_run(path)
        self.cfg, self.source = self.trained.config, self.trained.step
        self.family, self.bundle = load(self.trained)
        self.temperature = saved_temperature(self.trained)
        """The run's fitted temperatures (``pathvqa eval`` fits them on the validation split)."""
        self.label = label or self.cfg.name
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if not getattr(self.bundle.model, "hf_device_map", None):  # quantized models are already placed
            self.bundle.model.to(self.device)
        self.pipeline = ImagePipeline.for_data(self.cfg.data, self.bundle.image_size, cache=False)
        self.lock = threading.Lock()
        # the image being discussed is encoded once, however many requests ask about it (exact: the
        # weights never change here); the last few images' features stay in memory
        encoder = self.bundle.image_encoder
        self.features = FeatureCache(encoder, None, SERVE_FEATURE_CACHE_MB) if encoder is not None else None

    def answer(self, image: ImageInput, questions: str | list[str]) -> list[Answer]:
        """Answers to ``questions`` (one or a list) about ``image`` (encoded bytes, a file's path or a PIL
        image); a bad image or question → PathVQAError."""
        questions = read_questions(questions)
        image, name = read_image(image)
        key = hashlib.sha1(image).hexdigest()
        samples = [Sample(f"q{i}", image, key, q, "", "", "open") for i, q in enumerate(questions)]
        try:
            tile = self.pipeline.batch(samples[:1])  # (1, 3, S, S): encoded once for every question
        except BadImage as err:
            raise PathVQAError(image_problem(err, name)) from None
        one_image = torch.zeros(len(samples), dtype=torch.long)
        inputs = self.family.inputs(
            self.bundle, samples, tile, self.cfg.task, train=False, image_index=one_image
        )
        with self.lock, torch.inference_mode():
            started = time.perf_counter()
            answers = self.family.generate(self.bundle, inputs.to(self.device), self.cfg.eval)
            ms = (time.perf_counter() - started) * 1000
        out = []
        for q, a in zip(questions, answers, strict=True):
            p = kept(self._confidence(a))
            out.append(Answer(self.label, q, a.text, round(ms, 1), p, abstains(p, self.abstain_below)))
        return out

    def explain(self, image: ImageInput, questions: str | list[str]) -> list[Explanation]:
        """The answers to ``questions`` about ``image`` (as :meth:`answer` gives them) and where the model
        looked for each (``explain``'s map: gradient × activation at the patch features, at the image's size;
        one forward and one backward for all of them). An empty answer has nothing to map: its saliency is
        None."""
        self.family.patch_site(self.bundle)  # a family that cannot map says so before any work
        answers = self.answer(image, questions)
        data, _ = read_image(image)
        key = hashlib.sha1(data).hexdigest()
        samples = [
            Sample(f"q{i}", data, key, a.question, a.answer, a.answer, "open") for i, a in enumerate(answers)
        ]
        with self.lock:
            maps = given_answer_maps(
                self.family, self.bundle, samples, [a.answer for a in answers], self.pipeline
            )
        return [Explanation(a, data, m) for a, m in zip(answers, maps, strict=True)]

    def _confidence(self, answer: Generated) -> float | None:
        """A yes/no answer is a closed question's (its question type is unknown here: its answer tells)."""
        closed = answer_type(clean_answer(answer.text)) == "closed"
        row = {"prediction": answer.text, "logprob_mean": answer.logprob_mean,
               "yes_no_logit": answer.yes_no_logit if closed else None}  # fmt: skip
        return row_confidence(row, self.temperature)
