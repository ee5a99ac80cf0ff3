"""The tiny sizes' shape settings: heads with their own keys and values, tied word embeddings, 64 patches above
64 px, and towers that start as timm starts a ViT (what the yes/no study changed, one at a time)."""

import pytest
import torch

from pathvqa.config import load_config
from pathvqa.errors import ConfigError
from pathvqa.models import tiny
from pathvqa.models.registry import build
from pathvqa.models.tokenizers import tiny_chat_tokenizer
from pathvqa.runtime import checkpoint


def test_blip_tiny_heads_and_tied_words_survive_a_checkpoint(tmp_path):
    model, _ = tiny.blip(32, 1, 32, seed=0, heads=4, tied=True)
    words = model.text_encoder.embeddings.word_embeddings.weight
    assert model.text_decoder.bert.embeddings.word_embeddings.weight is words
    assert model.text_decoder.cls.predictions.decoder.weight is words
    assert model.config.text_config.num_attention_heads == 4
    checkpoint.save_weights(model, tmp_path, None)
    again, _ = tiny.blip(32, 1, 32, seed=1, heads=4, tied=True)
    checkpoint.load_weights(again, tmp_path, None)
    assert torch.equal(again.text_decoder.cls.predictions.decoder.weight, words)
    assert (
        again.text_decoder.cls.predictions.decoder.weight
        is again.text_encoder.embeddings.word_embeddings.weight
    )


def test_tiny_mistral_heads_each_have_their_own_keys_and_values():
    lm = tiny.language_model(tiny_chat_tokenizer(), 64, 1, heads=4, tied=True)
    assert lm.config.num_attention_heads == lm.config.num_key_value_heads == 4
    assert lm.lm_head.weight is lm.model.embed_tokens.weight
    default = tiny.language_model(tiny_chat_tokenizer(), 64, 1)
    assert (default.config.num_attention_heads, default.config.num_key_value_heads) == (2, 1)
    assert default.lm_head.weight is not default.model.embed_tokens.weight


def test_heads_must_divide_the_width():
    with pytest.raises(ConfigError, match="attention_heads"):
        load_config("configs/blip_tiny.yaml", ["model.attention_heads=5"])


def test_blip_tiny_vision_starts_as_a_timm_vit():
    """BLIP's vision config starts every weight at std 1e-10: the tiny tower is re-initialised."""
    model, _ = tiny.blip(64, 1, 64, seed=0)
    embeddings = model.vision_model.embeddings
    qkv = model.vision_model.encoder.layers[0].self_attn.qkv.weight
    assert 0.015 < qkv.std() < 0.025 and 0.015 < embeddings.position_embedding.std() < 0.025
    assert embeddings.patch_embedding.weight.std() > 0.01


@pytest.mark.parametrize("config", ["blip_tiny", "vlm_tiny"])
def test_tiny_towers_keep_64_patches_above_64_px(config, synth_dir):
    cfg = load_config(
        f"configs/{config}.yaml", [f"data.dataset={synth_dir}", "model.image_size=96", "stages=[]"]
    )
    _, bundle = build(cfg)
    tower = bundle.image_encoder if config == "blip_tiny" else bundle.model.vision
    out = tower(torch.zeros(1, 3, 96, 96))
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out
    assert hidden.shape[1] in (64, 65)  # 8 × 8 patches of 12 px (BLIP adds its class token)
