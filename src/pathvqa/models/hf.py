"""Hugging Face's own VLM classes (``model.family: hf``): ``AutoModelForImageTextToText`` with its
``AutoProcessor`` — BLIP-2, LLaVA-1.5, Qwen2.5-VL, PaliGemma 2, SmolVLM — through the one recipe.

The processor builds pixels and token ids together (image tokens expanded, Qwen's image grid,
BLIP-2's query tokens). Training renders (question, answer) with the architecture's chat template
(``models/hf_archs.py``) and keeps the loss on the assistant's tokens only (the template's
``{% generation %}`` span; image and pad tokens never count). Generation renders the question with
the generation prompt and pads on the left, so a batch answers as each question would alone.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, PreTrainedModel

from pathvqa.config import EvalConfig, ExperimentConfig, HfModelConfig
from pathvqa.data.prepare import Sample
from pathvqa.errors import ModelLoadError, PathVQAError
from pathvqa.models import tiny_hf
from pathvqa.models.base import (
    WHOLE_MODEL,
    Bundle,
    Family,
    Generated,
    ModelInputs,
    PatchSite,
    SharedImages,
    decoding,
    expand_images,
    label_logprobs,
    load_error,
    plain_model,
    prompt_and_target,
    require_cuda_for_4bit,
    scored_answers,
    square_grid,
    token_loss,
    unwrap_to,
)
from pathvqa.models.hf_archs import ARCHITECTURES, LANGUAGE_MODEL_PRESET, Architecture
from pathvqa.models.hub import check_hub_config, has_weights, hub_config, random_model
from pathvqa.models.tuning import base_state_dict
from pathvqa.offline import offline_unless_reachable

log = logging.getLogger(__name__)
PALIGEMMA_PREFIX = "answer en "  # PaliGemma's task prefix for visual question answering


@dataclass(kw_only=True)
class HfBundle(Bundle):
    processor: Any
    arch: Architecture
    template: str | None
    """The chat template in use (None: PaliGemma's ``suffix``)."""
    image_token_id: int | None
    shared: SharedImages | None
    """Repeats the architecture's per-image output for each question (None: it cannot be shared)."""


class HfFamily(Family):
    name = "hf"

    def check(self, m: HfModelConfig) -> None:
        """A hub config cut to ``max_layers`` and given ``config_overrides`` builds (on the meta device)."""
        if m.name not in tiny_hf.BUILDERS and (m.max_layers or m.config_overrides):
            check_hub_config(
                m.name, m.trust_remote_code, m.max_layers, m.config_overrides, AutoModelForImageTextToText
            )

    def build(self, m: HfModelConfig, seed: int) -> HfBundle:
        tiny = m.name in tiny_hf.BUILDERS
        if tiny:
            size = m.image_size or 32
            processor, model = tiny_hf.build(m.name, m.hidden_size, m.num_layers, size, seed)
        else:
            torch.manual_seed(seed)  # model.init random: the same config builds the same weights
            processor, model = _load(m)
        arch = _architecture(model.config.model_type, m.name)
        if not tiny:
            size = m.image_size or _processor_size(processor, arch)
        # pathvqa's own training template, always: it renders the model's generation prompt token for token
        # (tested against the hub's), and its generation span ends with the end-of-turn token. A hub
        # template's span need not (LLaVA-1.5's marks the answer and a space, no </s>: never learns to stop)
        template = arch.template
        if m.gradient_checkpointing:
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            model.config.use_cache = False
        config = model.config
        image_token_id = getattr(config, "image_token_id", None) or getattr(config, "image_token_index", None)
        return HfBundle(
            model=model,
            tokenizer=processor,
            image_size=size,
            random_parts=(WHOLE_MODEL,) if tiny or m.init == "random" else (),
            processor=processor,
            arch=arch,
            template=template,
            image_token_id=image_token_id,
            shared=SharedImages(model.get_submodule(arch.per_image)) if arch.per_image else None,
        )

    def patch_site(self, bundle: HfBundle) -> PatchSite:
        """The architecture's ``patches`` module (``hf_archs``): the projector's output where it keeps the
        patch grid, the vision tower's final states where a resampler follows (BLIP-2's Q-Former), Qwen's
        merger (its rows put back in raster order)."""
        if bundle.arch.patches is None:
            raise PathVQAError(
                f"{type(bundle.model).__name__}: no patch features known for this architecture: no map"
            )
        model = plain_model(bundle.model)
        module = model.get_submodule(bundle.arch.patches)
        if isinstance(module, torch.nn.ModuleList):
            module = module[-1]
        if bundle.arch.patches.endswith(".merger"):
            visual = model.get_submodule(bundle.arch.patches.removesuffix(".merger"))
            return PatchSite(module, lambda out, batch: _merged_grid(visual, out, batch["image_grid_thw"]))
        return PatchSite(module, lambda out, _: square_grid(out))

    # ---- what pathvqa plan reads --------------------------------------------------------------------------
    pipeline_tag = "image-text-to-text"

    def parts(self, bundle: HfBundle) -> list[tuple[str, tuple[str, ...]]]:
        """The connector first: Qwen's merger sits inside its vision tower."""
        return [("connector", bundle.arch.connector), ("vision", (bundle.arch.vision,))]

    def sequence_tokens(self, bundle: HfBundle, tensors: dict[str, torch.Tensor]) -> tuple[int, int]:
        ids = tensors["input_ids"][0]
        images = int((ids == bundle.image_token_id).sum()) if bundle.image_token_id is not None else 0
        return len(ids), images

    def is_tiny(self, m: HfModelConfig) -> bool:
        return m.name in tiny_hf.BUILDERS

    def dry_run(self, m: HfModelConfig) -> HfModelConfig:
        return (
            m
            if m.name in tiny_hf.BUILDERS
            else m.model_copy(update={"quantization": "none", "init": "random"})
        )

    def checkpoints_activations(self, m: HfModelConfig) -> bool:
        return m.gradient_checkpointing

    def pinned_modules(self, bundle: HfBundle, m: HfModelConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """The vision tower trains in full with ``model.train_vision`` (else it stays frozen), the
        connector with ``model.train_connector``."""
        arch = bundle.arch
        always = (*((arch.vision,) if m.train_vision else ()), *(arch.connector if m.train_connector else ()))
        never = (
            ()
            if m.train_vision
            else tuple(p for p in (arch.vision,) if not any(c.startswith(p) for c in always))
        )
        return always, never

    def lora_targets(self, bundle: HfBundle, m: HfModelConfig) -> str | list[str]:
        """``language-model``: the architecture's language-model projections, nothing else."""
        targets = m.lora.target_modules
        return bundle.arch.language_targets if targets == LANGUAGE_MODEL_PRESET else targets

    def inputs(
        self,
        bundle: HfBundle,
        samples: list[Sample],
        images: torch.Tensor,
        task: str,
        train: bool,
        image_index: torch.Tensor | None = None,
    ) -> ModelInputs:
        pairs = [prompt_and_target(s, task) for s in samples]
        pictures = [[image] for image in expand_images(images, image_index)]  # one (3, S, S) per question
        side = "right" if train else "left"  # left: every row's answer starts at the same column
        if bundle.template is None:
            batch, labels = _suffix_inputs(bundle.processor, pairs, pictures, train, side)
        else:
            batch, labels = _chat_inputs(bundle, pairs, pictures, train, side)
        tensors = {k: v for k, v in batch.items() if torch.is_tensor(v)}
        if image_index is not None and bundle.shared is not None:  # keep one row of pixels per image
            rows = image_index.tolist()
            first = [rows.index(u) for u in range(len(images))]
            tensors["pixel_values"] = tensors["pixel_values"][first]  # (U, 3, S, S)
            tensors["image_index"] = image_index
        if not train:
            return ModelInputs(tensors)
        labels = labels.masked_fill(tensors["attention_mask"] == 0, -100)
        if bundle.image_token_id is not None:
            labels = labels.masked_fill(tensors["input_ids"] == bundle.image_token_id, -100)
        tensors["labels"] = labels
        return ModelInputs.with_labels(tensors)

    def loss(self, bundle: HfBundle, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return token_loss(self._logits(bundle, batch), batch["labels"])

    def token_logprobs(
        self, bundle: HfBundle, batch: dict[str, torch.Tensor], temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return label_logprobs(self._logits(bundle, batch), batch["labels"], temperature)

    def _logits(self, bundle: HfBundle, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "image_index")}
        with _sharing(bundle, batch.get("image_index")):
            return bundle.model(**inputs).logits  # (B, T, V)

    @torch.no_grad()
    def generate(self, bundle: HfBundle, batch: dict[str, torch.Tensor], cfg: EvalConfig) -> list[Generated]:
        model = unwrap_to(bundle.model, PreTrainedModel)
        tokenizer = bundle.processor.tokenizer
        batch = dict(batch)
        index = batch.pop("image_index", None)
        if index is not None and cfg.num_beams > 1:  # generate repeats pixel rows per beam: no sharing
            batch["pixel_values"], index = batch["pixel_values"][index], None
        with _sharing(bundle, index):
            out = model.generate(
                **batch,
                max_new_tokens=cfg.max_new_tokens,
                min_new_tokens=cfg.min_new_tokens or None,
                **decoding(cfg),
                pad_token_id=tokenizer.pad_token_id,
            )
        ends = model.generation_config.eos_token_id
        eos = {*(ends if isinstance(ends, list) else [ends]), tokenizer.eos_token_id} - {None}
        return scored_answers(model, out, tokenizer, batch["input_ids"].shape[1], eos)  # new tokens: (B, T)

    def export(self, bundle: HfBundle, cfg: ExperimentConfig, out: str, merge: bool) -> None:
        """A folder ``AutoModelForImageTextToText`` / ``AutoProcessor`` load as they are (merged), or the
        LoRA adapter (not merged; plus ``base_model/`` when the base is a tiny random one)."""
        model = bundle.model
        if merge and hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        model.save_pretrained(out)
        if hasattr(model, "peft_config") and bundle.random_parts:  # the random base exists nowhere else
            plain = unwrap_to(bundle.model, PreTrainedModel)
            base = type(plain)(plain.config)
            base.load_state_dict(base_state_dict(bundle.model))
            base.save_pretrained(Path(out) / "base_model")
        if bundle.template is not None:
            bundle.processor.chat_template = bundle.template
        bundle.processor.save_pretrained(out)


def _sharing(bundle: HfBundle, image_index: torch.Tensor | None):
    """While active, the per-image module's output is repeated for each question of its image."""
    return bundle.shared.rows(image_index) if bundle.shared is not None else contextlib.nullcontext()


def render_prompt(bundle: HfBundle, question: str) -> str:
    """The text pathvqa feeds the processor for ``question`` (before image tokens are expanded)."""
    if bundle.template is None:
        return f"<image>{PALIGEMMA_PREFIX}{question}"
    return bundle.processor.apply_chat_template(
        [_user(question)], chat_template=bundle.template, add_generation_prompt=True, tokenize=False
    )


def _user(question: str) -> dict:
    return {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}


def _chat_inputs(bundle: HfBundle, pairs, pictures, train: bool, side: str):
    conversations = [
        [_user(q), {"role": "assistant", "content": [{"type": "text", "text": a}]}] if train else [_user(q)]
        for q, a in pairs
    ]
    batch = bundle.processor.apply_chat_template(
        conversations,
        chat_template=bundle.template,
        tokenize=True,
        return_dict=True,
        return_assistant_tokens_mask=train,
        add_generation_prompt=not train,
        return_tensors="pt",
        processor_kwargs={"images": pictures, "padding": True, "padding_side": side},
    )
    if not train:
        return batch, None
    mask = batch.pop("assistant_masks")
    return batch, batch["input_ids"].masked_fill(mask == 0, -100)


def _suffix_inputs(processor, pairs, pictures, train: bool, side: str):
    """PaliGemma: prefix ``answer en <question>``, the answer as ``suffix`` (the processor labels it)."""
    text = [f"<image>{PALIGEMMA_PREFIX}{q}" for q, _ in pairs]
    suffix = [a for _, a in pairs] if train else None
    batch = processor(
        text=text, images=pictures, suffix=suffix, padding=True, padding_side=side, return_tensors="pt"
    )
    return batch, batch.pop("labels", None)


def _architecture(model_type: str, name: str) -> Architecture:
    if model_type not in ARCHITECTURES:
        raise ModelLoadError(
            f"{name}: model type '{model_type}' has no training template in pathvqa yet "
            f"(supported: {', '.join(sorted(ARCHITECTURES))})"
        )
    return ARCHITECTURES[model_type]


def _processor_size(processor, arch: Architecture) -> int:
    """The square tile size the checkpoint's image processor expects."""
    ip = processor.image_processor
    if getattr(ip, "do_image_splitting", False):  # Idefics3 / SmolVLM: one tile per image fits 16 GB
        ip.do_image_splitting = False
    crop = getattr(ip, "crop_size", None) or {}
    size = getattr(ip, "max_image_size", None) or getattr(ip, "size", None) or {}
    for value in (
        crop.get("height"),
        size.get("height"),
        size.get("longest_edge"),
        size.get("shortest_edge"),
    ):
        if value and value <= 2048:
            return int(value)
    if arch.default_size:
        return arch.default_size
    raise ModelLoadError("cannot tell the input size of this processor: set model.image_size")


def _load(m: HfModelConfig):
    """(processor, model) of a hub id or folder: bf16 on GPU (4-bit NF4 if asked), fp32 on CPU; with
    ``model.init: random`` the architecture of its hub config with random weights (no weights read)."""
    offline_unless_reachable()
    try:
        processor = AutoProcessor.from_pretrained(m.name, trust_remote_code=m.trust_remote_code)
    except (OSError, ValueError, ImportError) as err:
        raise load_error("processor", m.name, err) from None
    config = hub_config(m.name, m.trust_remote_code, m.max_layers, m.config_overrides)
    if m.init == "random" and not has_weights(m.name):  # an exported folder of a dry run holds its weights
        kwargs = _load_kwargs(m)
        if "quantization_config" in kwargs:  # 4-bit of random weights: quantize what from_config built
            return processor, _quantized(config, kwargs)
        return processor, random_model(AutoModelForImageTextToText, config, kwargs["dtype"])
    try:
        model = AutoModelForImageTextToText.from_pretrained(m.name, config=config, **_load_kwargs(m))
    except (OSError, ValueError, ImportError) as err:
        raise load_error("vision-language model", m.name, err) from None
    if m.quantization == "4bit" and torch.cuda.is_available():
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=m.gradient_checkpointing)
    return processor, model


def _quantized(config, kwargs: dict):
    """A random-weight model quantized as ``from_pretrained`` would (4-bit dry runs on a GPU)."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        random_model(AutoModelForImageTextToText, config, kwargs["dtype"]).save_pretrained(folder)
        return AutoModelForImageTextToText.from_pretrained(folder, **kwargs)


def _load_kwargs(m: HfModelConfig) -> dict:
    kwargs: dict = {"trust_remote_code": m.trust_remote_code, "dtype": torch.float32}
    if not torch.cuda.is_available():
        require_cuda_for_4bit(m)
        return kwargs
    kwargs["dtype"] = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if m.quantization == "4bit":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=kwargs["dtype"],
        )
        kwargs["device_map"] = {"": torch.cuda.current_device()}
    return kwargs


def _merged_grid(visual: torch.nn.Module, merged: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
    """Qwen's merger output (every image's merged patches in one sequence, in its attention windows' order
    where it has windows) → (B, h, w, D) in raster order, one still image per row of the batch."""
    if getattr(visual, "window_size", None):
        from transformers.vision_utils import get_vision_window_index

        window_index, _ = get_vision_window_index(
            grid_thw, spatial_merge_size=visual.spatial_merge_size, window_size=visual.window_size,
            patch_size=visual.patch_size,
        )  # fmt: skip
        merged = merged[torch.argsort(window_index)]
    m = visual.spatial_merge_size
    rows = [int(t) * (int(h) // m) * (int(w) // m) for t, h, w in grid_thw.tolist()]
    grids = [
        part.reshape(int(t), int(h) // m, int(w) // m, -1)[0]
        for part, (t, h, w) in zip(merged.split(rows), grid_thw.tolist(), strict=True)
    ]
    return torch.stack(grids)
