"""Tiny offline sizes of the Hugging Face VLM architectures (``model.family: hf``): each is the real
architecture class and the real processor class, built from a small config with random weights and a
byte-level BPE tokenizer trained here in a fraction of a second. Nothing is downloaded.

=================  ============================================  ==============================================
name               model class                                   image tokens per image
=================  ============================================  ==============================================
``tiny-blip2``     ``Blip2ForConditionalGeneration`` (OPT)       ``num_query_tokens`` = 8
``tiny-llava``     ``LlavaForConditionalGeneration`` (Llama)     (size / p)², CLS dropped; p = max(8, size / 8)
``tiny-qwen25vl``  ``Qwen2_5_VLForConditionalGeneration``        (size / 8 / 2)² merged patches
``tiny-paligemma`` ``PaliGemmaForConditionalGeneration`` (Gemma) (size / 8)²
``tiny-smolvlm``   ``SmolVLMForConditionalGeneration`` (Llama)   (size / 8)² / 2², no image splitting
=================  ============================================  ==============================================

Processor first, model second: BLIP-2's processor adds ``<image>``, PaliGemma's 1,152 location and
segmentation tokens, so the text config's vocabulary is ``len(tokenizer)`` after the processor exists.
"""

from __future__ import annotations

import functools

import torch
import transformers as hf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from pathvqa.models.tiny import PATCH, patch_for, vit_init
from pathvqa.models.tokenizers import tiny_vocab


def tokenizer(specials: list[str], bos: str, eos: str, pad: str = "<pad>") -> hf.PreTrainedTokenizerFast:
    """A byte-level BPE trained on the synthetic set's words (each one token, at a text's start or after a space), with the architecture's
    special tokens; any text can be encoded (bytes are the base alphabet)."""
    return _trained(tuple(specials), bos, eos, pad)


@functools.cache
def _trained(specials: tuple[str, ...], bos: str, eos: str, pad: str) -> hf.PreTrainedTokenizerFast:
    named = list(dict.fromkeys([pad, "<unk>", bos, eos, *specials]))
    bpe = Tokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=2048,
        special_tokens=named,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    words = [w for w in tiny_vocab() if len(w) > 1 and w.replace("&", "").isalnum()]
    words += [
        "Question:",
        "Answer:",
        "USER:",
        "ASSISTANT:",
        "User:",
        "Assistant:",
        "system",
        "user",
        "assistant",
    ]
    corpus = [form for word in words for form in (word, f" {word}")]  # a word opens a text or follows a space
    bpe.train_from_iterator(corpus * 4, trainer)
    extra = [t for t in specials if t not in (bos, eos, pad)]
    fast = hf.PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=bos, eos_token=eos, pad_token=pad, unk_token="<unk>",
        extra_special_tokens=extra,
    )  # fmt: skip
    return fast


def _copy(tok: hf.PreTrainedTokenizerFast) -> hf.PreTrainedTokenizerFast:
    """A fresh tokenizer object (processors add tokens to theirs)."""
    return hf.PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(tok.backend_tokenizer.to_str()),
        bos_token=tok.bos_token, eos_token=tok.eos_token, pad_token=tok.pad_token, unk_token=tok.unk_token,
        extra_special_tokens=list(tok.extra_special_tokens) if hasattr(tok, "extra_special_tokens") else [],
    )  # fmt: skip


def _text(tok, hidden: int, layers: int, mlp: int = 2, heads: int = 0, **extra) -> dict:
    """A decoder config: ``heads`` of full key/value heads, else max(2, hidden / 32) sharing half as many."""
    return dict(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=hidden * mlp,
        num_hidden_layers=layers,
        num_attention_heads=heads or max(2, hidden // 32),
        num_key_value_heads=heads or max(1, hidden // 64),
        max_position_embeddings=512,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        **extra,
    )


def _vision(
    hidden: int, layers: int, size: int, mlp: int = 2, patch: int = PATCH, heads: int = 0, **extra
) -> dict:
    return dict(
        hidden_size=hidden,
        intermediate_size=hidden * mlp,
        num_hidden_layers=layers,
        num_attention_heads=heads or max(2, hidden // 32),
        image_size=size,
        patch_size=patch,
        **extra,
    )


def blip2(hidden: int, layers: int, size: int):
    tok = _copy(tokenizer(["<image>"], bos="</s>", eos="</s>"))
    image_processor = hf.BlipImageProcessor(size={"height": size, "width": size})
    processor = hf.Blip2Processor(image_processor=image_processor, tokenizer=tok, num_query_tokens=8)
    qformer = dict(
        hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(2, hidden // 32),
        intermediate_size=hidden * 2, encoder_hidden_size=hidden, vocab_size=len(processor.tokenizer),
    )  # fmt: skip
    text = _text(processor.tokenizer, hidden, layers, model_type="opt", ffn_dim=hidden * 2)
    text.update(word_embed_proj_dim=hidden, intermediate_size=None, num_key_value_heads=None)
    config = hf.Blip2Config(
        vision_config=_vision(hidden, layers, size),
        qformer_config=qformer,
        text_config={k: v for k, v in text.items() if v is not None},
        num_query_tokens=8,
        image_token_index=processor.tokenizer.convert_tokens_to_ids("<image>"),
    )
    return processor, hf.Blip2ForConditionalGeneration(config)


def llava(hidden: int, layers: int, size: int):
    tok = _copy(tokenizer(["<image>"], bos="<s>", eos="</s>"))
    image_processor = hf.CLIPImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size}
    )
    patch = patch_for(size)  # from 64 px up, 64 image tokens: a larger image gives each patch more pixels
    processor = hf.LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=patch,
        vision_feature_select_strategy="default", num_additional_image_tokens=1,
    )  # fmt: skip
    # LLaVA reads the penultimate vision layer by default; a tower this small needs all of its layers.
    # MLPs 4× the width (as vlm-tiny's) and GELU, as a timm ViT has; heads of 16 dimensions, each with its
    # own keys and values. The LM's input and output embeddings are one matrix, as small LMs have them
    # (SmolLM2, Qwen2.5-0.5B): a yes/no question names an organ with the vector the model says it with.
    heads = max(2, hidden // 16)
    vision = _vision(
        hidden, layers + 1, size, mlp=4, patch=patch, heads=heads, model_type="clip_vision_model",
        hidden_act="gelu",
    )  # fmt: skip
    config = hf.LlavaConfig(
        vision_config=vision,
        text_config=_text(
            tok, hidden, layers, mlp=4, heads=heads, model_type="llama", tie_word_embeddings=True
        ),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=(size // patch) ** 2,
        vision_feature_layer=-1,
    )  # the text config's tie_word_embeddings is the model's
    model = hf.LlavaForConditionalGeneration(config)
    vit_init(model.model.vision_tower)
    return processor, model


def qwen25vl(hidden: int, layers: int, size: int):
    specials = ["<|im_start|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = _copy(tokenizer(specials, bos="<|endoftext|>", eos="<|im_end|>"))
    sizes = dict(patch_size=PATCH, merge_size=2, temporal_patch_size=2)
    image_processor = hf.Qwen2VLImageProcessor(min_pixels=size * size, max_pixels=size * size, **sizes)
    processor = hf.Qwen2_5_VLProcessor(
        image_processor=image_processor, tokenizer=tok, video_processor=hf.Qwen2VLVideoProcessor(**sizes)
    )
    heads = max(2, hidden // 32)
    half = hidden // heads // 2  # mrope sections (temporal, height, width) sum to head_dim / 2
    vision = dict(
        depth=layers, hidden_size=hidden, intermediate_size=hidden * 2, num_heads=heads, out_hidden_size=hidden,
        patch_size=PATCH, spatial_merge_size=2, temporal_patch_size=2, window_size=2 * PATCH * 2,
        fullatt_block_indexes=[layers - 1],
    )  # fmt: skip
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    text = _text(tok, hidden, layers, rope_scaling={"type": "mrope", "mrope_section": mrope})
    ids = {name: tok.convert_tokens_to_ids(token) for name, token in (
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>"),
    )}  # fmt: skip
    config = hf.Qwen2_5_VLConfig(vision_config=vision, text_config=text, **ids)
    return processor, hf.Qwen2_5_VLForConditionalGeneration(config)


def paligemma(hidden: int, layers: int, size: int):
    tok = _copy(tokenizer(["<image>"], bos="<bos>", eos="<eos>"))
    seq = (size // PATCH) ** 2
    image_processor = hf.SiglipImageProcessor(size={"height": size, "width": size}, image_seq_length=seq)
    processor = hf.PaliGemmaProcessor(image_processor=image_processor, tokenizer=tok)
    text = _text(
        processor.tokenizer, hidden, layers, model_type="gemma", head_dim=hidden // max(2, hidden // 32)
    )
    vision = _vision(hidden, layers, size, model_type="siglip_vision_model", projection_dim=hidden)
    config = hf.PaliGemmaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        projection_dim=hidden,
        hidden_size=hidden,
    )
    config.text_config.vocab_size = len(processor.tokenizer)
    return processor, hf.PaliGemmaForConditionalGeneration(config)


def smolvlm(hidden: int, layers: int, size: int):
    specials = ["<image>", "<fake_token_around_image>", "<global-img>"]
    tok = _copy(tokenizer(specials, bos="<|im_start|>", eos="<end_of_utterance>"))
    image_processor = hf.SmolVLMImageProcessor(
        do_image_splitting=False, size={"longest_edge": size}, max_image_size={"longest_edge": size}
    )
    processor = hf.SmolVLMProcessor(
        image_processor=image_processor,
        tokenizer=tok,
        video_processor=hf.SmolVLMVideoProcessor(),
        image_seq_len=(size // PATCH) ** 2 // 4,
    )
    config = hf.SmolVLMConfig(
        vision_config=_vision(hidden, layers, size),
        text_config=_text(tok, hidden, layers, model_type="llama"),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        scale_factor=2,
    )
    return processor, hf.SmolVLMForConditionalGeneration(config)


BUILDERS = {
    "tiny-blip2": blip2,
    "tiny-llava": llava,
    "tiny-qwen25vl": qwen25vl,
    "tiny-paligemma": paligemma,
    "tiny-smolvlm": smolvlm,
}


def build(name: str, hidden: int, layers: int, size: int, seed: int):
    """(processor, model) of a tiny size; the same arguments build the same weights."""
    torch.manual_seed(seed)
    return BUILDERS[name](hidden, layers, size)
