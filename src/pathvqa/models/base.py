"""What every model family provides to the one training loop and the one evaluator."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from pathvqa.config import EvalConfig, ExperimentConfig
from pathvqa.data.images import ImageSpec
from pathvqa.data.prepare import Sample
from pathvqa.errors import ModelLoadError

CAPTION_PROMPT = "describe the image in detail."
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class Bundle:
    """A built model with what it needs to read inputs and write answers."""

    model: torch.nn.Module
    tokenizer: Any
    image_spec: ImageSpec
    random_base: bool
    """True for the named tiny sizes: their base weights exist only in checkpoints."""
    extras: dict[str, Any] = field(default_factory=dict)


class Family(Protocol):
    """One per model family (``blip``, ``vlm``); stateless, so one instance serves every run."""

    name: str

    def build(self, cfg: ExperimentConfig) -> Bundle: ...

    def collate(
        self, bundle: Bundle, samples: list[Sample], task: str, train: bool
    ) -> dict[str, torch.Tensor]:
        """Text tensors for a batch (images are added by the data pipeline as ``images``)."""

    def loss(self, bundle: Bundle, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed token loss, number of target tokens): the loop divides by the count over all
        processes, so N processes compute the same mean as one."""

    def generate(self, bundle: Bundle, batch: dict[str, torch.Tensor], cfg: EvalConfig) -> list[str]: ...

    def export(self, bundle: Bundle, out: str, merge: bool) -> None: ...


def unwrap_to(model: torch.nn.Module, kind: type) -> Any:
    """The ``kind`` module under peft (``get_base_model``) and accelerate / DDP (``module``) wrappers."""
    while not isinstance(model, kind):
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif hasattr(model, "module"):
            model = model.module
        else:
            raise TypeError(f"not a {kind.__name__}: {type(model).__name__}")
    return model


def token_loss(
    logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy summed over target tokens: logits (B, T, V), labels (B, T), -100 ignored."""
    shifted = labels[:, 1:]  # (B, T-1): token t is predicted at position t-1
    total = torch.nn.functional.cross_entropy(
        logits[:, :-1].flatten(0, 1).float(),
        shifted.flatten(),
        ignore_index=-100,
        reduction="sum",
        label_smoothing=label_smoothing,
    )
    return total, (shifted != -100).sum()


def prompt_and_target(sample: Sample, task: str) -> tuple[str, str]:
    """(prompt, target) for a task. VQA answers the question. Captioning describes the tile with a
    fixed prompt: the synthetic set has a caption column; PathVQA has none, so there the answer is
    the caption (the earlier work's setup: image in, answer text out, question unseen)."""
    if task == "caption":
        return CAPTION_PROMPT, caption_reference(sample)
    return sample.question, sample.target


def caption_reference(sample: Sample) -> str:
    return sample.caption or sample.target


def load_error(what: str, name: str, err: Exception) -> ModelLoadError:
    repo = name.removeprefix("hf-hub:")
    return ModelLoadError(
        f"could not load {what} '{name}': {err.__class__.__name__}: {str(err).splitlines()[0][:200]}. "
        f"Offline, download it where the network allows (`hf download {repo} --local-dir DIR`) "
        "and set the config to DIR, or use a named tiny size"
    )
