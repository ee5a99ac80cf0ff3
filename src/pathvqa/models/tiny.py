"""The named tiny sizes: real architectures built from small configs with random weights and a
tokenizer made locally, so tests, the demo and CI run offline. Kept apart from the real builders
(as torchtune keeps named sizes apart from components): a family asks here only for a tiny name.

=================  ========================================================================
``blip-tiny``      ``BlipForQuestionAnswering``, width ``model.hidden_size``, patch 8
``tiny-openclip``  open_clip ``TimmModel`` over a timm ViT (64 px, patch 8, width 64, 3 blocks)
``tiny-clip``      Hugging Face ``CLIPVisionModel`` (patch 8, width 64, 3 blocks)
``tiny-mistral``   ``MistralForCausalLM``, width ``model.hidden_size``, ``model.num_layers`` blocks
=================  ========================================================================
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BlipConfig, BlipForQuestionAnswering, MistralConfig, MistralForCausalLM

from pathvqa.data.images import ImageSpec
from pathvqa.models.base import CLIP_MEAN, CLIP_STD
from pathvqa.models.tokenizers import tiny_bert_tokenizer
from pathvqa.models.vision import VisionTower, open_clip_tower, output_width

BLIP_SIZES = {"blip-tiny"}
VISION_SIZES = {"tiny-openclip", "tiny-clip"}
LANGUAGE_SIZES = {"tiny-mistral"}
TINY_OPEN_CLIP = Path(__file__).parent / "open_clip_tiny"
PATCH = 8
"""The tiny towers' patch side up to 64 px (``patch_for``)."""


def patch_for(image_size: int) -> int:
    """The patch side of a tiny tower: 8 px up to 64 px, ``image_size / 8`` above, so 64 image tokens at any
    larger size, each patch seeing more pixels (``blip-tiny``, ``tiny-openclip``, ``tiny-llava``)."""
    return max(PATCH, image_size // 8)


def blip_config(
    vocab_size: int, tokenizer, hidden: int, layers: int, image_size: int, heads: int | None = None
) -> BlipConfig:
    heads = heads or max(1, hidden // 32)
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
        patch_size=patch_for(image_size),
    )
    return BlipConfig(text_config=text, vision_config=vision, projection_dim=hidden)


def blip(hidden: int, layers: int, image_size: int, seed: int, heads: int | None = None, tied: bool = False):
    """(model, tokenizer) of ``blip-tiny``: the same arguments build the same weights. ``tied``: the answer
    decoder reads and says words with the question encoder's word embeddings."""
    tokenizer = tiny_bert_tokenizer()
    config = blip_config(len(tokenizer), tokenizer, hidden, layers, image_size, heads)
    torch.manual_seed(seed)
    model = BlipForQuestionAnswering(config)
    # BLIP's vision config starts every weight at std 1e-10 and its embeddings at zero (a pretrained checkpoint
    # overwrites them): from there the tiny tower barely learns to see. Start it as timm starts a ViT.
    vit_init(model.vision_model)
    embeddings = model.vision_model.embeddings
    torch.nn.init.trunc_normal_(embeddings.position_embedding, std=0.02)
    torch.nn.init.trunc_normal_(embeddings.class_embedding, std=1e-6)
    if tied:
        words = model.text_encoder.embeddings.word_embeddings
        model.text_decoder.bert.embeddings.word_embeddings = words
        model.text_decoder.cls.predictions.decoder.weight = words.weight
    return model, tokenizer


def vit_init(tower: torch.nn.Module) -> None:
    """Re-initialise a random ViT as timm does: linear layers truncated-normal with std 0.02 and zero biases,
    the patch embedding PyTorch's default. Hugging Face's CLIP initialisation is scaled for the real widths
    (at width 64 the attention output starts at std 0.125 and the MLP input at 0.089); trained from there
    on the embedded set, the tiny tower hardly learns the image (docs/study/demo.md, LLaVA at tiny size)."""
    for module in tower.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.trunc_normal_(module.weight, std=0.02)
            torch.nn.init.zeros_(module.bias)
        elif isinstance(module, torch.nn.Conv2d):
            module.reset_parameters()


def language_model(
    tokenizer, hidden: int, layers: int, heads: int | None = None, tied: bool = False
) -> MistralForCausalLM:
    """``tiny-mistral`` over ``tokenizer`` (the caller seeds): ``heads`` each with its own keys and values,
    else one per 32 dimensions sharing half as many; ``tied`` input and output embeddings."""
    config = MistralConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads or max(1, hidden // 32),
        num_key_value_heads=heads or max(1, hidden // 64),
        max_position_embeddings=256,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=tied,
        sliding_window=None,
    )
    return MistralForCausalLM(config)


def vision(name: str, layer: int, use_cls: bool, image_size: int | None, seed: int):
    """(VisionTower, ImageSpec, width) of a tiny encoder; the same seed builds the same weights."""
    torch.manual_seed(seed)
    if name == "tiny-openclip":
        _register_tiny_timm_vit()
        resized = image_size and patch_for(image_size) != PATCH
        tower, spec, width = open_clip_tower(
            f"local-dir:{TINY_OPEN_CLIP}",
            layer,
            use_cls,
            None if resized else image_size,
            label=name,
            random=True,
        )  # a tiny size: random weights by definition
        if resized:  # 64 patches of image_size / 8 pixels, initialised as a fresh timm ViT's
            side, trunk = patch_for(image_size), tower.encoder.trunk
            trunk.set_input_size(img_size=(image_size, image_size), patch_size=(side, side))
            trunk.patch_embed.proj.reset_parameters()
            torch.nn.init.trunc_normal_(trunk.pos_embed, std=0.02)
            spec = ImageSpec(image_size, spec.mean, spec.std)
        return tower, spec, width
    from transformers import CLIPVisionConfig, CLIPVisionModel

    size = image_size or 64
    config = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=3,
        num_attention_heads=2,
        image_size=size,
        patch_size=8,
    )
    tower = VisionTower(CLIPVisionModel(config), "hf", layer, use_cls)
    spec = ImageSpec(size, CLIP_MEAN, CLIP_STD)
    return tower, spec, output_width(tower, spec)


def _register_tiny_timm_vit() -> None:
    """``vit_pathvqa_tiny_patch8_64`` in timm's registry, so open_clip's TimmModel can build it by name."""
    import timm
    from timm.models import register_model
    from timm.models.vision_transformer import VisionTransformer

    if "vit_pathvqa_tiny_patch8_64" in timm.list_models("vit_pathvqa_*"):
        return

    @register_model
    def vit_pathvqa_tiny_patch8_64(pretrained: bool = False, **kwargs) -> VisionTransformer:
        if pretrained:
            raise ValueError("vit_pathvqa_tiny_patch8_64 has no pretrained weights")
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):  # timm factory extras
            kwargs.pop(key, None)
        args = dict(img_size=64, patch_size=8, embed_dim=64, depth=3, num_heads=2, mlp_ratio=4.0)
        model = VisionTransformer(**{**args, **kwargs})
        model.pretrained_cfg = model.default_cfg = {"input_size": (3, 64, 64), "num_classes": 0}
        return model
