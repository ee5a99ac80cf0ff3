"""What every model family provides to the one training loop and the one evaluator.

The seam: the data layer hands a family samples and their images as square uint8 tiles (after
augmentation, when training); the family turns them into model inputs (:class:`ModelInputs`).
The loop and the evaluator only move those tensors to the device and call ``loss`` / ``generate``:
nothing above this module knows ``pixel_values``, image grids or token types.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from pathvqa.config import EvalConfig, ExperimentConfig
from pathvqa.data.prepare import Sample
from pathvqa.errors import ModelLoadError, PathVQAError
from pathvqa.offline import is_offline

CAPTION_PROMPT = "describe the image in detail."
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
WHOLE_MODEL = ""
"""A ``random_parts`` prefix that matches every weight: the whole model exists only in checkpoints."""


@dataclass(kw_only=True)
class Bundle:
    """A built model with what it needs to read inputs and write answers. Families extend it with
    their own typed fields (an image normalisation, a processor, a prompt)."""

    model: torch.nn.Module
    tokenizer: Any
    """Saved with every checkpoint (anything with ``save_pretrained``: a tokenizer or a processor)."""
    image_size: int
    """The data layer hands the family square uint8 tiles of this size."""
    random_parts: tuple[str, ...] = ()
    """Module-name prefixes whose base weights exist nowhere but in checkpoints: the named tiny parts
    (``WHOLE_MODEL`` when every part is tiny). A real part is never stored: it is on the hub."""
    modified: set[str] = field(default_factory=set)
    """Plain names of base weights an earlier stage changed (its LoRA merged): stored in later checkpoints."""
    image_encoder: torch.nn.Module | None = None
    """The module that maps the distinct images (U, 3, S, S) to per-image features (U, …), when the family
    has one: what ``model.cache_image_features`` caches while it is frozen."""

    def is_random(self, plain_name: str) -> bool:
        return any(plain_name.startswith(prefix) for prefix in self.random_parts)


@dataclass
class ModelInputs:
    """A batch as the model takes it, built by the family; ``targets`` counts the target tokens and
    ``answers`` the rows that have any (0 when generating), so the loop can normalise the loss over an
    accumulation window before any forward (:meth:`with_labels`)."""

    tensors: dict[str, torch.Tensor]
    targets: int = 0
    answers: int = 0

    @classmethod
    def with_labels(cls, tensors: dict[str, torch.Tensor]) -> ModelInputs:
        """A training batch, counted from its next-token ``labels`` (B, T): position 0 is never predicted."""
        predicted = tensors["labels"][:, 1:] != -100
        return cls(tensors, int(predicted.sum()), int(predicted.any(-1).sum()))

    def to(self, device: torch.device | str) -> dict[str, torch.Tensor]:
        return {k: v.to(device, non_blocking=True) for k, v in self.tensors.items()}


@dataclass(frozen=True)
class PatchSite:
    """Where a model's image patch features are: the module whose output holds them (the features the
    language side reads), and how that output becomes a grid over the image."""

    module: torch.nn.Module
    grid: Callable[[torch.Tensor, dict[str, torch.Tensor]], torch.Tensor]
    """(the module's output or a tensor of its shape, the batch) → (B, h, w, D), row-major over the image."""


def square_grid(tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, D) tokens, a square grid of patches after any leading class or register tokens (fewer than
    the grid's side) → (B, h, w, D), h = w."""
    side = math.isqrt(tokens.shape[1])
    leading = tokens.shape[1] - side * side
    if leading >= side:
        raise PathVQAError(f"{tokens.shape[1]} image tokens do not form a square grid of patches: no map")
    patches = tokens[:, leading:]
    return patches.reshape(patches.shape[0], side, side, patches.shape[-1])


class Family(Protocol):
    """One per model family (``blip``, ``vlm``, ``hf``); stateless, so one instance serves every run."""

    name: str

    pipeline_tag: str | None = None
    """The Hub's task tag of an exported model (its card says it), when the family has one."""

    def build(self, model: Any, seed: int) -> Bundle:
        """The model of the config's ``model`` section; ``seed`` fixes whatever is initialised at random."""
        ...

    def check(self, model_cfg: Any) -> None:
        """What can be said of the model section before anything is built or any data read (a hub config
        and the values set on it): a one-line error here, not a traceback after the data has loaded."""
        return None

    def pinned_modules(self, bundle: Bundle, model_cfg: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(always trainable, never trainable) module-name prefixes, whatever ``model.tuning`` says."""
        return (), ()

    def lora_targets(self, bundle: Bundle, model_cfg: Any) -> str | list[str]:
        """What ``model.lora.target_modules`` means for this model (a family may define presets)."""
        return model_cfg.lora.target_modules

    def inputs(
        self,
        bundle: Bundle,
        samples: list[Sample],
        images: torch.Tensor,
        task: str,
        train: bool,
        image_index: torch.Tensor | None = None,
    ) -> ModelInputs:
        """Samples and their images → model inputs; with ``train`` the targets too. ``images`` (U, 3, S, S)
        uint8 are the batch's distinct images and ``image_index`` (B,) names each sample's (None: one
        image per sample, U = B). A family that can shares each image's features among its questions."""
        ...

    def loss(self, bundle: Bundle, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed token loss, number of target tokens): the loop divides by the count over the whole
        accumulation window and all processes."""
        ...

    def token_logprobs(
        self, bundle: Bundle, batch: dict[str, torch.Tensor], temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-probabilities of the target tokens (B, T), their mask (B, T)) for a training batch, without
        label smoothing, of the logits divided by ``temperature`` (the distribution the answers were
        sampled from, as TRL scores them): what GRPO's ratio and KL are made of."""
        ...

    def generate(self, bundle: Bundle, batch: dict[str, torch.Tensor], cfg: EvalConfig) -> list[Generated]:
        """Answers (greedy or beam search; sampled with ``cfg.do_sample``, see :func:`decoding`), each with
        the scores it was generated with (:func:`scored_answers`)."""
        ...

    def export(self, bundle: Bundle, cfg: ExperimentConfig, out: str, merge: bool) -> None: ...

    def load_export(self, model: Any, folder: Path, seed: int) -> Bundle:
        """A merged export (``pathvqa export --merge``) back as a model. By default the folder is a
        ``from_pretrained`` folder of the whole model: it takes the place of ``model.name``."""
        return self.build(model.model_copy(update={"name": str(folder), "tuning": "frozen"}), seed)

    def patch_site(self, bundle: Bundle) -> PatchSite:
        """Where this model's image patch features are (``pathvqa explain`` maps an answer onto them); a
        one-line :class:`~pathvqa.errors.PathVQAError` where the family cannot say."""
        raise PathVQAError(f"model family {self.name} cannot say where its image patch features are: no map")

    # ---- what ``pathvqa plan`` reads off a family ----------------------------------------------------------
    def parts(self, bundle: Bundle) -> list[tuple[str, tuple[str, ...]]]:
        """(part, module-name prefixes) of the parts that are not the language model — ``vision``,
        ``connector`` — in the order a parameter's name is matched (a part inside another first)."""
        return []

    def sequence_tokens(self, bundle: Bundle, tensors: dict[str, torch.Tensor]) -> tuple[int, int]:
        """(tokens the language model reads, image tokens among them) for one example's training inputs."""
        return len(tensors["input_ids"][0]), 0

    def dry_run(self, model: Any) -> Any:
        """The ``model`` section that builds this architecture without reading weights (on the meta device);
        a one-line :class:`~pathvqa.errors.PathVQAError` where the family has no such path."""
        return model

    def is_tiny(self, model: Any) -> bool:
        """Whether the section builds a named tiny size (random weights, built offline) of this family."""
        return False

    def checkpoints_activations(self, model: Any) -> bool:
        """Whether training recomputes activations in the backward pass (gradient checkpointing)."""
        return False


def expand_images(images: torch.Tensor, image_index: torch.Tensor | None) -> torch.Tensor:
    """(U, …) per distinct image → (B, …) per sample."""
    return images if image_index is None else images[image_index]


class SharedImages:
    """Runs a per-image module (a vision tower, a projector) once per distinct image of a batch and
    hands each question its image's output: a forward hook repeats the module's output rows by the
    batch's image index while :meth:`rows` is active. The model's own forward stays untouched, so
    DDP / FSDP / peft wrappers see the usual call; backward sums each question's gradient into its
    image's single forward (``index_select``'s backward)."""

    def __init__(self, module: torch.nn.Module):
        state: dict[str, torch.Tensor | None] = {"index": None}

        def repeat_rows(_module, _args, output):
            return None if state["index"] is None else take_rows(output, state["index"])

        module.register_forward_hook(repeat_rows)  # a closure: a deep copy of the module (peft) keeps it
        self._state = state

    @contextlib.contextmanager
    def rows(self, index: torch.Tensor | None):
        self._state["index"] = index
        try:
            yield
        finally:
            self._state["index"] = None


def take_rows(output: Any, index: torch.Tensor) -> Any:
    """Rows ``index`` of every tensor in a module output (a tensor, a tuple, a ``ModelOutput``)."""
    if torch.is_tensor(output):
        return output.index_select(0, index)
    if isinstance(output, tuple):
        return type(output)(take_rows(o, index) for o in output)
    if isinstance(output, dict):  # transformers' ModelOutput
        return type(output)(**{k: take_rows(v, index) for k, v in output.items()})
    return output


def undistributed(model: torch.nn.Module) -> torch.nn.Module:
    """The model under accelerate's / DDP's wrapper (``module``); a peft wrapper stays."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, torch.nn.Module) else model


def plain_model(model: torch.nn.Module) -> torch.nn.Module:
    """The model under peft (``get_base_model``) and accelerate / DDP (``module``) wrappers."""
    while True:
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif undistributed(model) is not model:
            model = undistributed(model)
        else:
            return model


def unwrap_to(model: torch.nn.Module, kind: type) -> Any:
    """The ``kind`` module under peft (``get_base_model``) and accelerate / DDP (``module``) wrappers."""
    while not isinstance(model, kind):
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif undistributed(model) is not model:
            model = undistributed(model)
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


def answer_means(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each answer's mean over its target tokens: per-token values (B, T) under ``mask`` (B, T) → (B,)."""
    return (per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1)


def label_logprobs(
    logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token log-probabilities of the labels under softmax(logits / ``temperature``): logits (B, T, V),
    labels (B, T) with -100 ignored → (log p (B, T-1), mask (B, T-1)); token t is predicted at position
    t-1, as in :func:`token_loss`. The label's logit less the log-sum-exp over the vocabulary (as TRL's
    ``selective_log_softmax`` computes it): no (B, T, V) log-softmax is kept for the backward."""
    shifted = labels[:, 1:]
    mask = shifted != -100
    scaled = logits[:, :-1].float()
    if temperature != 1.0:  # no copy of the (B, T, V) logits at the default
        scaled = scaled / temperature
    picked = scaled.gather(-1, shifted.clamp(min=0).unsqueeze(-1)).squeeze(-1) - torch.logsumexp(
        scaled, dim=-1
    )
    return picked * mask, mask


def decoding(cfg: EvalConfig) -> dict[str, Any]:
    """``generate`` keywords for greedy/beam search, or for sampling (GRPO's groups), asking for the scores
    every step was chosen by (what :func:`scored_answers` reads: no second forward pass)."""
    scores = {"return_dict_in_generate": True}
    if not cfg.do_sample:
        beams = cfg.num_beams > 1
        return {
            "num_beams": cfg.num_beams,
            "do_sample": False,
            **scores,
            ("output_scores" if beams else "output_logits"): True,
        }
    return {"num_beams": 1, "do_sample": True, "temperature": cfg.temperature, "top_p": cfg.top_p, "top_k": 0,
            **scores, "output_logits": True}  # fmt: skip


@dataclass(frozen=True)
class Generated:
    """One generated answer with the scores it was generated with."""

    text: str
    token_ids: tuple[int, ...]
    """The generated tokens, the end-of-answer token included when it was reached."""
    token_logprobs: tuple[float, ...]
    """Each generated token's log-probability under the model (the end-of-answer token included when it
    was reached): softmax of the raw logits for greedy search and sampling, the beam's own step scores for
    beam search (``compute_transition_scores``)."""
    yes_no_logit: float | None = None
    """log p(yes) − log p(no) at the first answer token, when the answer's first token is "yes" or "no"."""

    @property
    def logprob_mean(self) -> float | None:
        return sum(self.token_logprobs) / len(self.token_logprobs) if self.token_logprobs else None


def scored_answers(
    model, out, tokenizer, start: int, eos: set[int], decode_from: int | None = None
) -> list[Generated]:
    """``generate``'s dict output (``decoding``'s keywords) → one :class:`Generated` per row: the text as the
    tokenizer decodes the sequence from ``decode_from`` (default ``start``, where the new tokens begin),
    each new token's log-probability up to the first of ``eos``, and the yes/no logit at the first answer
    token."""
    beams = getattr(out, "beam_indices", None)
    new = out.sequences[:, start:]  # (B, T)
    if beams is not None:  # each step's scores are the beams' log-probabilities: follow each answer's beam
        transition = model.compute_transition_scores(out.sequences, out.scores, beams)
        first = out.scores[0][:: out.scores[0].shape[0] // new.shape[0]]  # (B, V): each row's first beam
    else:  # raw logits: log p = logit − logsumexp, one step at a time (no (B, T, V) copy)
        steps = [step.float() for step in out.logits]
        chosen = new[:, : len(steps)]
        transition = torch.stack(
            [s.gather(-1, chosen[:, t, None])[:, 0] - s.logsumexp(-1) for t, s in enumerate(steps)], dim=1
        )  # (B, T)
        first = steps[0]  # (B, V): a difference of two entries is the same in logits as in log-probabilities
    shown = out.sequences[:, start if decode_from is None else decode_from :]
    texts = [t.strip() for t in tokenizer.batch_decode(shown, skip_special_tokens=True)]
    answers = []
    for b, ids in enumerate(new.tolist()):
        stop = next((i + 1 for i, t in enumerate(ids) if t in eos), len(ids))
        logprobs = tuple(float(x) for x in transition[b, :stop].tolist())
        yes_no = _yes_no_logit(tokenizer, ids[0] if ids else None, first[b])
        answers.append(Generated(texts[b], tuple(ids[:stop]), logprobs, yes_no))
    return answers


def _yes_no_logit(tokenizer, first: int | None, scores: torch.Tensor) -> float | None:
    """log p(yes) − log p(no) at the first answer token when that token is "yes" or "no" (as the tokenizer
    writes it, with its word-start mark and case), from that position's logits or log-probabilities
    ``scores`` (V,); its counterpart is the same token with the other word."""
    if first is None:
        return None
    token = tokenizer.convert_ids_to_tokens(first)
    word = token.lstrip("Ġ▁ ").lower() if isinstance(token, str) else ""
    if word not in ("yes", "no"):
        return None
    swap = {"yes": "no", "Yes": "No", "YES": "NO", "no": "yes", "No": "Yes", "NO": "YES"}
    stem = token.lstrip("Ġ▁ ")
    other = tokenizer.convert_tokens_to_ids(token[: len(token) - len(stem)] + swap.get(stem, stem))
    if other is None or other == tokenizer.unk_token_id or other == first:
        return None
    yes, no = (first, other) if word == "yes" else (other, first)
    return float(scores[yes] - scores[no])


@functools.lru_cache(maxsize=200_000)
def _token_ids(tokenizer, text: str, max_length: int) -> tuple[int, ...]:
    return tuple(tokenizer(text, truncation=True, max_length=max_length)["input_ids"])


def tokenize_padded(tokenizer, texts: list[str], max_length: int) -> dict[str, torch.Tensor]:
    """``tokenizer(texts, padding=True, truncation=True, return_tensors="pt")`` for a right-padding
    tokenizer, each distinct text tokenized once per process (questions and answers repeat every epoch,
    and PathVQA asks the same questions of many images): ids and mask (B, T)."""
    if tokenizer.padding_side != "right" or tokenizer.pad_token_id is None:
        out = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        return {"input_ids": out["input_ids"], "attention_mask": out["attention_mask"]}
    rows = [_token_ids(tokenizer, text, max_length) for text in texts]
    width = max(map(len, rows))
    pad = tokenizer.pad_token_id
    ids = [list(row) + [pad] * (width - len(row)) for row in rows]
    mask = [[1] * len(row) + [0] * (width - len(row)) for row in rows]
    return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask)}


def prompt_and_target(sample: Sample, task: str) -> tuple[str, str]:
    """(prompt, target) for a task. VQA answers the question. Captioning describes the tile with a
    fixed prompt: the synthetic set has a caption column; PathVQA has none, so there the answer is
    the caption (the earlier work's setup: image in, answer text out, question unseen)."""
    if task == "caption":
        return CAPTION_PROMPT, caption_reference(sample)
    return sample.question, sample.target


def caption_reference(sample: Sample) -> str:
    return sample.caption or sample.target


def require_cuda_for_4bit(model_cfg: Any) -> None:
    """4-bit (QLoRA) weights need CUDA: said in one line before anything loads, never a silent fp32 load."""
    if model_cfg.four_bit and not torch.cuda.is_available():
        raise ModelLoadError(
            "model.quantization '4bit' needs a CUDA GPU (bitsandbytes: pip install -e '.[gpu]'); "
            "here, run without it: --set model.quantization=none (bf16 on a GPU, fp32 on the CPU)"
        )


GATED = ("gated repo", "is gated", "GatedRepoError", "401 Client Error", "403 Client Error")


def load_error(what: str, name: str, err: Exception) -> ModelLoadError:
    repo = name.removeprefix("hf-hub:")
    text = f"{err.__class__.__name__}: {err} {err.__cause__!r}"
    if any(word in text for word in GATED):
        return ModelLoadError(
            f"could not load {what} '{name}': it is gated: accept its licence at https://huggingface.co/{repo} "
            "with your account, then run `hf auth login` (or set HF_TOKEN) on this machine"
        )
    reason = " ".join(str(err).split())[:200].rstrip(",;: ")  # one line, never cut after a comma
    offline = " (the hub is off: HF_HUB_OFFLINE=1, so only what is cached here loads)" if is_offline() else ""
    return ModelLoadError(
        f"could not load {what} '{name}'{offline}: {err.__class__.__name__}: {reason.rstrip('.')}. Where the "
        f"network allows, download it (`hf download {repo} --local-dir DIR`) and set the config to DIR, or use "
        "a named tiny size"
    )
