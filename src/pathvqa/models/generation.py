"""Batched generation over samples → prediction rows (used by validation during training and by
``pathvqa eval``).

Questions are sorted by length and generated in batches (no per-sample loop), the model in eval
mode without gradients. With ``eval.image_once`` (default) each distinct image goes through the vision
tower once (PathVQA asks 7.6 questions per image): where the family names its image encoder (blip, vlm),
its features are kept for the whole evaluation (:class:`FeatureCache`, in memory) and batches stay sorted
by question length, so short yes/no answers are not generated beside long open ones; the Hugging Face
families instead get batches of whole images' questions, each image encoded once per batch. With an
accelerator of several processes each takes a share of the batches and every process gets all rows
back: every question appears exactly once.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from tqdm.auto import tqdm

from pathvqa.config import ExperimentConfig
from pathvqa.data.batches import Collator, ImagePipeline, image_batches
from pathvqa.data.prepare import Sample
from pathvqa.models.base import Generated, caption_reference
from pathvqa.models.feature_cache import FeatureCache


def predict(
    family,
    bundle,
    samples: list[Sample],
    cfg: ExperimentConfig,
    *,
    accelerator=None,
    blind: bool = False,
    progress: bool = True,
    pipeline: ImagePipeline | None = None,
) -> list[dict]:
    """Predictions rows (``id, question, answer, prediction, type``) for ``samples``, sorted by id."""
    pipeline = pipeline or ImagePipeline.for_data(cfg.data, bundle.image_size)
    once = cfg.eval.image_once
    collate = Collator(
        samples, family, bundle, pipeline, cfg.task, train=False, blind=blind, share_images=once
    )
    encoder = bundle.image_encoder if once else None
    batches = _batches(samples, cfg.eval.batch_size, whole_images=once and encoder is None)
    device = accelerator.device if accelerator is not None else next(bundle.model.parameters()).device
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    model_was_training = bundle.model.training
    bundle.model.eval()
    rows = []
    with torch.inference_mode(), _features_kept(encoder, cfg.model.feature_cache_mb):
        for indices in tqdm(
            batches[rank::world],  # round-robin shares; gathered below
            desc="generate",
            unit="batch",
            disable=not (progress and rank == 0),
            leave=False,
        ):
            batch = collate(indices).to(device)
            if accelerator is not None:
                with accelerator.autocast():
                    answers = family.generate(bundle, batch, cfg.eval)
            else:
                answers = family.generate(bundle, batch, cfg.eval)
            rows += [_row(samples[i], answer, cfg.task) for i, answer in zip(indices, answers, strict=True)]
    if model_was_training:
        bundle.model.train()
    if world > 1:
        from accelerate.utils import gather_object

        rows = gather_object(rows)
    unique = {row["id"]: row for row in rows}
    return [unique[k] for k in sorted(unique)]


def _batches(samples: list[Sample], size: int, whole_images: bool) -> list[list[int]]:
    """Sample indices in batches of ``size``, sorted by question length (then id); ``whole_images``: each
    image's questions kept in one batch, images in the order of their shortest question."""
    order = sorted(range(len(samples)), key=lambda i: (len(samples[i].question), samples[i].id))
    if whole_images:
        return image_batches(samples, order, size)
    return [order[i : i + size] for i in range(0, len(order), size)]


@contextmanager
def _features_kept(encoder: torch.nn.Module | None, cap_mb: float):
    """The image encoder's features kept in memory while predicting (weights do not change meanwhile; the
    model is in eval mode, so dropout is off), the least recently used dropped beyond ``cap_mb``."""
    cache = FeatureCache(encoder, None, cap_mb) if encoder is not None else None
    try:
        yield
    finally:
        if cache is not None:
            cache.close()


def _row(sample: Sample, answer: Generated, task: str) -> dict:
    """The prediction row, with what its confidence is made of: the mean token log-probability, and for a
    closed question the yes/no logit at the first answer token (``scoring.confidence``)."""
    reference = caption_reference(sample) if task == "caption" else sample.answer
    row = sample.prediction_row(answer.text, reference)
    if answer.logprob_mean is not None:
        row["logprob_mean"] = round(answer.logprob_mean, 6)
    if sample.type == "closed" and answer.yes_no_logit is not None:
        row["yes_no_logit"] = round(answer.yes_no_logit, 6)
    return row
