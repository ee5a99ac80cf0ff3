"""What pathvqa knows per Hugging Face VLM architecture (``config.model_type``): the training chat
template, the LoRA targets that wrap the language model only, and the vision tower's module prefix.

Training templates mark the assistant's answer with ``{% generation %}``, so
``return_assistant_tokens_mask`` gives the tokens the loss covers. Each one renders the prompt its
checkpoints were trained with (LLaVA-1.5's ``USER: <image>\\n… ASSISTANT:``, Qwen's ChatML with its
default system message, SmolVLM's ``User:<image>…<end_of_utterance>``, BLIP-2's ``Question: … Answer:``).
These templates are used even where a checkpoint's own marks generation: LLaVA-1.5-hf's own marks
the answer and a trailing space and never ``</s>``, so the loss would never teach the model to stop
(``tests/test_hub_models.py`` checks the generation prompt against the hub's own template and that the
loss covers the answer and the end-of-turn token only). PaliGemma has no chat: its
processor takes the answer as ``suffix=`` and builds the labels itself. Templates write newlines as
``{{ '\\n' }}`` because Hugging Face renders with ``trim_blocks``.
"""

from __future__ import annotations

from dataclasses import dataclass

LLAVA = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>{{ '\\n' }}{% else %}{{ c['text'] }}{% endif %}{% endfor %} ASSISTANT:"
    "{% else %}{% generation %} {% for c in m['content'] %}{{ c['text'] }}{% endfor %}{{ eos_token }}"
    "{% endgeneration %}{% endif %}{% endfor %}"
)
QWEN = (
    "{% for m in messages %}{% if loop.first and m['role'] != 'system' %}<|im_start|>system{{ '\\n' }}"
    "You are a helpful assistant.<|im_end|>{{ '\\n' }}{% endif %}<|im_start|>{{ m['role'] }}{{ '\\n' }}"
    "{% if m['role'] == 'assistant' %}{% generation %}{% for c in m['content'] %}{{ c['text'] }}{% endfor %}"
    "<|im_end|>{% endgeneration %}{{ '\\n' }}{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}"
    "<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>"
    "{{ '\\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant{{ '\\n' }}{% endif %}"
)
SMOLVLM = (
    "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:{% if m['role'] == 'assistant' %}"
    "{% generation %} {% for c in m['content'] %}{{ c['text'] }}{% endfor %}<end_of_utterance>{% endgeneration %}"
    "{{ '\\n' }}{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}"
    "{% endif %}{% endfor %}<end_of_utterance>{{ '\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
BLIP2 = (
    "{% for m in messages %}{% if m['role'] == 'user' %}Question: {% for c in m['content'] %}"
    "{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %} Answer:{% else %}{% generation %} "
    "{% for c in m['content'] %}{{ c['text'] }}{% endfor %}{{ eos_token }}{% endgeneration %}{% endif %}{% endfor %}"
)
LM_PROJECTIONS = r"\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"


@dataclass(frozen=True)
class Architecture:
    template: str | None
    """Training chat template; None: the processor takes the answer as ``suffix`` (PaliGemma)."""
    language_targets: str
    """LoRA regex over module names that matches the language model's projections only."""
    vision: str
    """Module-name prefix of the vision tower (``model.train_vision`` trains it in full)."""
    connector: tuple[str, ...]
    """Module-name prefixes of what joins vision to language (``model.train_connector`` trains it)."""
    default_size: int | None = None
    """Square input size when the processor has none of its own (Qwen's dynamic resolution)."""
    per_image: str | None = None
    """The module whose output rows are one per image (U, tokens, D) right before they join the text:
    run once per distinct image and repeated per question. None: the architecture's pixels are not one
    row per image (Qwen's flattened patches, Idefics3's sub-images), so each question encodes its own."""
    patches: str | None = None
    """The module whose output holds the image's patch features as the language side reads them
    (``pathvqa explain`` maps an answer onto them): a square grid of tokens per image (of a list of blocks,
    the last), or Qwen's merger (merged patches in its attention windows' order)."""


LANGUAGE = r".*language_model.*" + LM_PROJECTIONS
PROJECTOR = ("model.multi_modal_projector.",)
SHARED_PROJECTOR = "model.multi_modal_projector"
QWEN_MERGER = "model.visual.merger"
IDEFICS_PATCHES = "model.vision_model.post_layernorm"
ARCHITECTURES = {
    "llava": Architecture(
        LLAVA,
        LANGUAGE,
        "model.vision_tower.",
        PROJECTOR,
        per_image=SHARED_PROJECTOR,
        patches=SHARED_PROJECTOR,
    ),
    "qwen2_5_vl": Architecture(
        QWEN, LANGUAGE, "model.visual.", ("model.visual.merger.",), 448, patches=QWEN_MERGER
    ),
    "qwen2_vl": Architecture(
        QWEN, LANGUAGE, "model.visual.", ("model.visual.merger.",), 448, patches=QWEN_MERGER
    ),
    "paligemma": Architecture(
        None, LANGUAGE, "model.vision_tower.", PROJECTOR, per_image=SHARED_PROJECTOR, patches=SHARED_PROJECTOR
    ),
    "smolvlm": Architecture(
        SMOLVLM,
        r".*text_model.*" + LM_PROJECTIONS,
        "model.vision_model.",
        ("model.connector.",),
        patches=IDEFICS_PATCHES,
    ),
    "idefics3": Architecture(
        SMOLVLM,
        r".*text_model.*" + LM_PROJECTIONS,
        "model.vision_model.",
        ("model.connector.",),
        patches=IDEFICS_PATCHES,
    ),
    "blip-2": Architecture(
        BLIP2,
        r".*language_model.*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)",
        "vision_model.",
        ("qformer.", "query_tokens", "language_projection."),
        per_image="language_projection",
        patches="vision_model.encoder.layers",
    ),
}
LANGUAGE_MODEL_PRESET = "language-model"
"""``model.lora.target_modules: language-model``: the architecture's language-model-only regex."""
