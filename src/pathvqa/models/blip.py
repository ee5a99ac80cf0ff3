"""BLIP VQA (``Salesforce/blip-vqa-base`` and the offline ``blip-tiny``): build, collate, loss, generate.

BLIP answers in three parts: a ViT encodes the image (B, P, Dv); a BERT text encoder reads the
question with cross-attention to the patches (B, Tq, D); a BERT decoder writes the answer with
cross-attention to the question states. Training passes ``decoder_input_ids`` that start with the
text config's bos token (``[DEC]``) and the same ids as ``labels`` with pads set to -100.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BlipConfig, BlipForQuestionAnswering, BlipProcessor

from pathvqa.config import EvalConfig, ExperimentConfig
from pathvqa.data.images import ImageSpec
from pathvqa.data.prepare import Sample
from pathvqa.models.base import CLIP_MEAN, CLIP_STD, Bundle, load_error, prompt_and_target, unwrap_to
from pathvqa.models.tokenizers import tiny_bert_tokenizer
from pathvqa.models.tuning import base_state_dict

TINY_SIZES = {"blip-tiny"}


def tiny_config(vocab_size: int, tokenizer, hidden: int, layers: int, image_size: int) -> BlipConfig:
    heads = max(1, hidden // 32)
    text = dict(
        vocab_size=vocab_size,
        hidden_size=hidden,
        encoder_hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 4,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        sep_token_id=tokenizer.sep_token_id,
        eos_token_id=tokenizer.sep_token_id,
    )
    vision = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=hidden * 4,
        image_size=image_size,
        patch_size=8,
    )
    return BlipConfig(text_config=text, vision_config=vision, projection_dim=hidden)


class BlipFamily:
    name = "blip"

    def build(self, cfg: ExperimentConfig) -> Bundle:
        m = cfg.model
        if m.name in TINY_SIZES:
            tokenizer = tiny_bert_tokenizer()
            size = m.image_size or 64
            config = tiny_config(len(tokenizer), tokenizer, m.hidden_size, m.num_layers, size)
            torch.manual_seed(cfg.train.seed)  # fixed init: the same config builds the same weights
            model = BlipForQuestionAnswering(config)
            return Bundle(model, tokenizer, ImageSpec(size, CLIP_MEAN, CLIP_STD), random_base=True)
        try:
            processor = BlipProcessor.from_pretrained(m.name, trust_remote_code=m.trust_remote_code)
            model = BlipForQuestionAnswering.from_pretrained(m.name, trust_remote_code=m.trust_remote_code)
        except (OSError, ValueError) as err:
            raise load_error("BLIP model", m.name, err) from None
        ip = processor.image_processor
        size = m.image_size or ip.size["height"]
        spec = ImageSpec(size, tuple(ip.image_mean), tuple(ip.image_std))
        return Bundle(model, processor.tokenizer, spec, random_base=False, extras={"processor": processor})

    def collate(
        self, bundle: Bundle, samples: list[Sample], task: str, train: bool
    ) -> dict[str, torch.Tensor]:
        questions, targets = zip(*(prompt_and_target(s, task) for s in samples), strict=True)
        tok = bundle.tokenizer
        q = tok(list(questions), padding=True, truncation=True, max_length=64, return_tensors="pt")
        batch = {"input_ids": q["input_ids"], "attention_mask": q["attention_mask"]}  # no token_type_ids
        if train:
            a = tok(list(targets), padding=True, truncation=True, max_length=64, return_tensors="pt")
            decoder_ids = a["input_ids"].clone()
            decoder_ids[:, 0] = _unwrap(bundle.model).config.text_config.bos_token_id  # [CLS] → [DEC]
            batch["decoder_input_ids"] = decoder_ids
            batch["decoder_attention_mask"] = a["attention_mask"]
            batch["labels"] = decoder_ids.masked_fill(a["attention_mask"] == 0, -100)  # (B, Ta)
        return batch

    def loss(self, bundle: Bundle, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        mean = bundle.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"],
            decoder_input_ids=batch["decoder_input_ids"],
            decoder_attention_mask=batch["decoder_attention_mask"],
            labels=batch["labels"],
        ).loss  # mean over target tokens (label-smoothed); BLIP's output keeps no decoder logits
        tokens = (batch["labels"][:, 1:] != -100).sum()  # the decoder predicts token t at t-1
        return mean * tokens, tokens

    @torch.no_grad()
    def generate(self, bundle: Bundle, batch: dict[str, torch.Tensor], cfg: EvalConfig) -> list[str]:
        model = _unwrap(bundle.model)
        text_config = model.config.text_config
        # Same path as BlipForQuestionAnswering.generate, but the decoder's cross-attention uses
        # the question's padding mask (as in training) instead of attending to pad positions.
        image_embeds = model.vision_model(pixel_values=batch["pixel_values"])[0]  # (B, P, Dv)
        image_mask = torch.ones(image_embeds.shape[:-1], dtype=torch.long, device=image_embeds.device)
        question = model.text_encoder(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            encoder_hidden_states=image_embeds,
            encoder_attention_mask=image_mask,
            return_dict=False,
        )[0]  # (B, Tq, D)
        bos = torch.full((question.shape[0], 1), text_config.bos_token_id, device=question.device)
        out = model.text_decoder.generate(
            input_ids=bos,
            eos_token_id=text_config.sep_token_id,
            pad_token_id=text_config.pad_token_id,
            encoder_hidden_states=question,
            encoder_attention_mask=batch["attention_mask"],
            max_new_tokens=cfg.max_new_tokens,
            num_beams=cfg.num_beams,
            do_sample=False,
        )
        return [t.strip() for t in bundle.tokenizer.batch_decode(out, skip_special_tokens=True)]

    def export(self, bundle: Bundle, out: str, merge: bool) -> None:
        model = bundle.model
        if merge and hasattr(model, "merge_and_unload"):
            model = model.merge_and_unload()
        model.save_pretrained(out)
        if bundle.random_base and hasattr(bundle.model, "peft_config"):
            base = BlipForQuestionAnswering(
                _unwrap(bundle.model).config
            )  # the random base exists nowhere else
            base.load_state_dict(base_state_dict(bundle.model))
            base.save_pretrained(Path(out) / "base_model")
        processor = bundle.extras.get("processor")
        (processor.tokenizer if processor is not None else bundle.tokenizer).save_pretrained(out)
        if processor is not None:
            processor.save_pretrained(out)


def _unwrap(model: torch.nn.Module) -> BlipForQuestionAnswering:
    return unwrap_to(model, BlipForQuestionAnswering)
