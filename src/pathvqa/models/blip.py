"""BLIP VQA (``Salesforce/blip-vqa-base`` and the offline ``blip-tiny``): build, inputs, loss, generate.

BLIP answers in three parts: a ViT encodes the image (B, P, Dv); a BERT text encoder reads the
question with cross-attention to the patches (B, Tq, D); a BERT decoder writes the answer with
cross-attention to the question states. Training passes ``decoder_input_ids`` that start with the
text config's bos token (``[DEC]``) and the same ids as ``labels`` with pads set to -100.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import BlipForQuestionAnswering, BlipImageProcessor, BlipProcessor

from pathvqa.config import BlipModelConfig, EvalConfig, ExperimentConfig
from pathvqa.data.images import ImageSpec
from pathvqa.data.prepare import Sample
from pathvqa.errors import PathVQAError
from pathvqa.models import tiny
from pathvqa.models.base import (
    CLIP_MEAN,
    CLIP_STD,
    WHOLE_MODEL,
    Bundle,
    Family,
    Generated,
    ModelInputs,
    PatchSite,
    SharedImages,
    decoding,
    label_logprobs,
    load_error,
    prompt_and_target,
    scored_answers,
    square_grid,
    tokenize_padded,
    unwrap_to,
)
from pathvqa.models.tuning import base_state_dict
from pathvqa.offline import offline_unless_reachable

MAX_TEXT_TOKENS = 64


@dataclass(kw_only=True)
class BlipBundle(Bundle):
    image_spec: ImageSpec
    shared: SharedImages
    """Repeats the vision tower's output per question: each distinct image is encoded once."""
    processor: Any = None
    """The hub processor of a real id (saved on export); None for ``blip-tiny``."""


class BlipFamily(Family):
    name = "blip"

    def build(self, m: BlipModelConfig, seed: int) -> BlipBundle:
        if m.name in tiny.BLIP_SIZES:
            size = m.image_size or 64
            model, tokenizer = tiny.blip(
                m.hidden_size, m.num_layers, size, seed, m.attention_heads, m.tie_embeddings
            )
            mask_cross_attention(model)
            spec = ImageSpec(size, CLIP_MEAN, CLIP_STD)
            return BlipBundle(
                model=model,
                tokenizer=tokenizer,
                image_size=size,
                image_spec=spec,
                shared=SharedImages(model.vision_model),
                image_encoder=model.vision_model,
                random_parts=(WHOLE_MODEL,),
            )
        offline_unless_reachable()
        try:
            processor = BlipProcessor.from_pretrained(m.name, trust_remote_code=m.trust_remote_code)
            model = BlipForQuestionAnswering.from_pretrained(m.name, trust_remote_code=m.trust_remote_code)
        except (OSError, ValueError) as err:
            raise load_error("BLIP model", m.name, err) from None
        mask_cross_attention(model)
        ip = processor.image_processor
        size = m.image_size or ip.size["height"]
        spec = ImageSpec(size, tuple(ip.image_mean), tuple(ip.image_std))
        return BlipBundle(
            model=model,
            tokenizer=processor.tokenizer,
            image_size=size,
            image_spec=spec,
            shared=SharedImages(model.vision_model),
            image_encoder=model.vision_model,
            processor=processor,
        )

    def patch_site(self, bundle: BlipBundle) -> PatchSite:
        """The vision encoder's last block's output (what the text encoder cross-attends to, once its final
        norm is applied: the norm itself also runs on the pooled class token), less the class token."""
        return PatchSite(
            _unwrap(bundle.model).vision_model.encoder.layers[-1], lambda out, _: square_grid(out)
        )

    def parts(self, bundle: BlipBundle) -> list[tuple[str, tuple[str, ...]]]:
        return [("connector", ()), ("vision", ("vision_model.",))]

    def is_tiny(self, m: BlipModelConfig) -> bool:
        return m.name in tiny.BLIP_SIZES

    def dry_run(self, m: BlipModelConfig) -> BlipModelConfig:
        """Only the tiny size builds without weights: a real BLIP id has no random-init path here."""
        if m.name not in tiny.BLIP_SIZES:
            raise PathVQAError(
                "pathvqa plan builds BLIP at its tiny size only (a real id has no random-init path)"
            )
        return m

    def inputs(
        self,
        bundle: BlipBundle,
        samples: list[Sample],
        images: torch.Tensor,
        task: str,
        train: bool,
        image_index: torch.Tensor | None = None,
    ) -> ModelInputs:
        questions, targets = zip(*(prompt_and_target(s, task) for s in samples), strict=True)
        tok = bundle.tokenizer
        q = tokenize_padded(tok, list(questions), MAX_TEXT_TOKENS)
        batch = {  # no token_type_ids: they must not reach generate()
            "input_ids": q["input_ids"],
            "attention_mask": q["attention_mask"],
            "pixel_values": bundle.image_spec.normalize(images),  # (U, 3, S, S): distinct images
        }
        if image_index is not None:
            batch["image_index"] = image_index  # (B,) row → its image
        if not train:
            return ModelInputs(batch)
        a = tokenize_padded(tok, list(targets), MAX_TEXT_TOKENS)
        decoder_ids = a["input_ids"].clone()
        decoder_ids[:, 0] = _unwrap(bundle.model).config.text_config.bos_token_id  # [CLS] → [DEC]
        batch["decoder_input_ids"] = decoder_ids
        batch["decoder_attention_mask"] = a["attention_mask"]
        batch["labels"] = decoder_ids.masked_fill(a["attention_mask"] == 0, -100)  # (B, Ta)
        return ModelInputs.with_labels(batch)

    def loss(self, bundle: BlipBundle, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        mean = self._forward(bundle, batch).loss  # mean over target tokens (label-smoothed)
        tokens = (batch["labels"][:, 1:] != -100).sum()  # the decoder predicts token t at t-1
        return mean * tokens, tokens

    def token_logprobs(
        self, bundle: BlipBundle, batch: dict[str, torch.Tensor], temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The decoder's log-probabilities of the answer tokens (no label smoothing, unlike ``loss``). BLIP's
        output keeps no decoder logits: a hook takes them from the decoder during the model's own forward
        (one call through the module, so DistributedDataParallel sees it)."""
        captured: list[torch.Tensor] = []
        decoder = _unwrap(bundle.model).text_decoder
        handle = decoder.register_forward_hook(lambda _module, _args, out: captured.append(out.logits))
        try:
            self._forward(bundle, batch)
        finally:
            handle.remove()
        return label_logprobs(captured[0], batch["labels"], temperature)  # logits (B, Ta, V)

    def _forward(self, bundle: BlipBundle, batch: dict[str, torch.Tensor]):
        with bundle.shared.rows(batch.get("image_index")):  # the tower sees each distinct image once
            return bundle.model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                pixel_values=batch["pixel_values"],
                decoder_input_ids=batch["decoder_input_ids"],
                decoder_attention_mask=batch["decoder_attention_mask"],
                labels=batch["labels"],
            )  # BLIP's output keeps no decoder logits

    @torch.no_grad()
    def generate(
        self, bundle: BlipBundle, batch: dict[str, torch.Tensor], cfg: EvalConfig
    ) -> list[Generated]:
        model = _unwrap(bundle.model)
        text_config = model.config.text_config
        # Same path as BlipForQuestionAnswering.generate, but the decoder's cross-attention uses
        # the question's padding mask (as in training) instead of attending to pad positions.
        question = _question_states(bundle, batch)
        bos = torch.full((question.shape[0], 1), text_config.bos_token_id, device=question.device)
        out = model.text_decoder.generate(
            input_ids=bos,
            eos_token_id=text_config.sep_token_id,
            pad_token_id=text_config.pad_token_id,
            encoder_hidden_states=question,
            encoder_attention_mask=batch["attention_mask"],
            max_new_tokens=cfg.max_new_tokens,
            **decoding(cfg),
        )  # (B, 1 + new tokens): the start token, then the answer
        eos = {text_config.sep_token_id}
        return scored_answers(model.text_decoder, out, bundle.tokenizer, 1, eos, decode_from=0)

    def export(self, bundle: BlipBundle, cfg: ExperimentConfig, out: str, merge: bool) -> None:
        """``save_pretrained`` folder plus a processor (tokenizer + image processor), so
        ``AutoProcessor`` / ``BlipForQuestionAnswering.from_pretrained`` load it as they are."""
        model = bundle.model
        if merge and hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        model.save_pretrained(out)
        if bundle.random_parts and hasattr(bundle.model, "peft_config"):
            base = BlipForQuestionAnswering(
                _unwrap(bundle.model).config
            )  # the random base exists nowhere else
            base.load_state_dict(base_state_dict(bundle.model))
            base.save_pretrained(Path(out) / "base_model")
        processor = bundle.processor or BlipProcessor(
            image_processor=_image_processor(bundle.image_spec), tokenizer=bundle.tokenizer
        )
        processor.save_pretrained(out)


def mask_cross_attention(model: BlipForQuestionAnswering) -> int:
    """Make BLIP's text cross-attention honour its key mask. In transformers 5.24 ``BlipTextAttention``
    hands the encoder mask to its inner attention as ``attention_mask``, which the inner module ignores
    for cross-attention (it reads ``encoder_attention_mask``): the answer decoder then attends to the
    question's pad tokens, so an answer depends on how long the other questions of its batch are.
    A forward pre-hook passes the mask where it is read. Returns the number of modules hooked."""

    def pass_mask(module, args, kwargs):
        if kwargs.get("encoder_hidden_states") is not None and kwargs.get("encoder_attention_mask") is None:
            kwargs["encoder_attention_mask"] = kwargs.get("attention_mask")
        return args, kwargs

    hooked = 0
    for name, module in model.named_modules():
        if name.endswith("crossattention.self"):
            module.register_forward_pre_hook(pass_mask, with_kwargs=True)
            hooked += 1
    return hooked


def _image_processor(spec: ImageSpec) -> BlipImageProcessor:
    return BlipImageProcessor(
        size={"height": spec.size, "width": spec.size}, image_mean=list(spec.mean), image_std=list(spec.std)
    )


def _unwrap(model: torch.nn.Module) -> BlipForQuestionAnswering:
    return unwrap_to(model, BlipForQuestionAnswering)


def _question_states(bundle: BlipBundle, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The text encoder's question states (B, Tq, D), cross-attending to the image (encoded once per
    distinct image, see ``SharedImages``)."""
    model = _unwrap(bundle.model)
    with bundle.shared.rows(batch.get("image_index")):  # (U, P, Dv) encoded → (B, P, Dv)
        image_embeds = model.vision_model(pixel_values=batch["pixel_values"])[0]
    image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
    return model.text_encoder(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        encoder_hidden_states=image_embeds,
        encoder_attention_mask=image_mask,
        return_dict=False,
    )[0]
