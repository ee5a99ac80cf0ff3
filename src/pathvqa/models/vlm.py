"""Image encoder + projector + causal LM (the LLaVA recipe): build, collate, loss, generate, export.

The third experiment of the earlier work fed BiomedCLIP features to Mistral-7B with nothing
between the two embedding spaces and trained captioning only. Here a projector maps the
encoder's patch tokens into the LM's embedding space and they are spliced into a chat prompt
where ``<image>`` stood:

    [BOS] [INST] <image> what stain is used? [/INST] h&e [EOS]
                 └──── N projected patch tokens (B, N, D)

Training follows LLaVA-1.5: stage ``align`` trains the projector alone on captions (encoder and LM
frozen), stage ``instruct`` trains projector + LoRA on the LM on VQA. The loss covers answer tokens
only. The LM is any ``AutoModelForCausalLM`` (4-bit QLoRA on CUDA when the config asks), or
``tiny-mistral`` (``models/tiny.py``).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer

from pathvqa.config import EvalConfig, ExperimentConfig, VlmModelConfig
from pathvqa.data.images import ImageSpec
from pathvqa.data.prepare import Sample
from pathvqa.models import tiny
from pathvqa.models.base import (
    Bundle,
    Family,
    Generated,
    ModelInputs,
    PatchSite,
    decoding,
    expand_images,
    label_logprobs,
    load_error,
    prompt_and_target,
    require_cuda_for_4bit,
    scored_answers,
    square_grid,
    token_loss,
    unwrap_to,
)
from pathvqa.models.hub import check_hub_config, has_weights, hub_config, random_model
from pathvqa.models.projector import build_projector
from pathvqa.models.tokenizers import tiny_chat_tokenizer
from pathvqa.models.vision import build_vision
from pathvqa.offline import offline_unless_reachable

log = logging.getLogger(__name__)

IMAGE_PLACEHOLDER = "<image>"
IMAGE_TOKEN_INDEX = -200  # sentinel in input_ids where the N image tokens go (LLaVA's value)
MAX_TEXT_TOKENS = 64


class VisionLanguageModel(nn.Module):
    """vision tower → projector → language model, with the image spliced into the token sequence."""

    def __init__(self, vision: nn.Module, projector: nn.Module, language_model: nn.Module):
        super().__init__()
        self.vision = vision
        self.projector = projector
        self.language_model = language_model

    def image_tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) → (B, N, D) in the LM's embedding space."""
        features = self.vision(pixel_values.to(next(self.vision.parameters()).dtype))  # (B, N, Dv)
        return self.projector(features.to(next(self.projector.parameters()).dtype))

    def splice(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        image_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Replace each row's single IMAGE_TOKEN_INDEX by its N image tokens.

        input_ids/attention_mask/labels (B, T) → embeds (B, T-1+N, D), mask and labels (B, T-1+N);
        image positions get mask 1 and label -100. Padding (left or right) stays where it was.
        pixel_values (U, 3, S, S) are the distinct images, row b's is ``image_index[b]`` (None: U = B):
        each is encoded and projected once.
        """
        images = expand_images(self.image_tokens(pixel_values), image_index)  # (U, N, D) → (B, N, D)
        embed = self.language_model.get_input_embeddings()
        is_image = input_ids == IMAGE_TOKEN_INDEX  # (B, T)
        if not bool((is_image.sum(dim=1) == 1).all()):
            raise ValueError("every prompt must hold exactly one image placeholder")
        text = embed(input_ids.masked_fill(is_image, 0))  # (B, T, D)
        where = is_image.int().argmax(dim=1).tolist()

        def around(rows: torch.Tensor, middle: torch.Tensor) -> torch.Tensor:
            """(B, T, …) with row b's placeholder position replaced by middle[b] (N, …)."""
            return torch.stack(
                [torch.cat([rows[b, :p], middle[b], rows[b, p + 1 :]]) for b, p in enumerate(where)]
            )

        shape = images.shape[:2]  # (B, N)
        embeds = around(text, images.to(text.dtype))
        mask = around(attention_mask, attention_mask.new_ones(shape))
        if labels is not None:
            labels = around(labels, labels.new_full(shape, -100))
        return embeds, mask, labels

    def forward(self, input_ids, attention_mask, pixel_values, labels=None, image_index=None):
        """→ (logits (B, T-1+N, V), labels spliced to the same length). One call through the module, so
        DistributedDataParallel / FSDP wrappers see the whole forward."""
        embeds, mask, labels = self.splice(input_ids, attention_mask, pixel_values, labels, image_index)
        return self.language_model(inputs_embeds=embeds, attention_mask=mask).logits, labels


def _load_language_model(m: VlmModelConfig):
    """(tokenizer, model) for a real id or folder: 4-bit on CUDA if asked, bf16 on GPU, fp32 on CPU;
    with ``model.init: random`` the architecture of its hub config, random weights (none read)."""
    require_cuda_for_4bit(m)
    kwargs: dict = {"trust_remote_code": m.trust_remote_code}
    if torch.cuda.is_available():
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
    try:
        offline_unless_reachable()
        tokenizer = AutoTokenizer.from_pretrained(m.language, trust_remote_code=m.trust_remote_code)
    except (OSError, ValueError, ImportError) as err:
        raise load_error("tokenizer", m.language, err) from None
    config = hub_config(m.language, m.trust_remote_code, m.max_layers, m.config_overrides)
    try:
        if m.init == "random" and not has_weights(m.language):  # an export's folder holds its weights
            model = random_model(AutoModelForCausalLM, config, kwargs.get("dtype", torch.float32))
        else:
            model = AutoModelForCausalLM.from_pretrained(m.language, config=config, **kwargs)
    except (OSError, ValueError, ImportError) as err:
        raise load_error("language model", m.language, err) from None
    if tokenizer.pad_token is None:  # Mistral / Llama ship none; padding is masked anyway
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    if m.quantization == "4bit" and torch.cuda.is_available():
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    return tokenizer, model


class ChatPrompt:
    """The LM's chat template rendered once around a question slot: per question, only the text after
    the image is tokenized (no template rendering on the training hot path)."""

    SLOT = "\x00question\x00"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        content = f"{IMAGE_PLACEHOLDER}\n{self.SLOT}"
        if getattr(tokenizer, "chat_template", None):
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": content}], tokenize=False, add_generation_prompt=True
            )
        else:  # a base LM without a chat template
            text = f"{tokenizer.bos_token or ''}USER: {content}\nASSISTANT:"
        before, after = text.split(IMAGE_PLACEHOLDER, 1)
        self.before = self._encode(before)
        self.middle, self.tail = after.split(self.SLOT, 1)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def ids(self, question: str) -> list[int]:
        """Prompt ids with IMAGE_TOKEN_INDEX where ``<image>`` is, ready for the answer."""
        after = self._encode(f"{self.middle}{question}{self.tail}")[:MAX_TEXT_TOKENS]
        return [*self.before, IMAGE_TOKEN_INDEX, *after]


def _pad(rows: list[list[int]], value: int, left: bool) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor(
        [[value] * (width - len(r)) + r if left else r + [value] * (width - len(r)) for r in rows]
    )


@dataclass(kw_only=True)
class VlmBundle(Bundle):
    image_spec: ImageSpec
    prompt: ChatPrompt


class VlmFamily(Family):
    name = "vlm"

    def check(self, m: VlmModelConfig) -> None:
        """The language model's hub config cut to ``max_layers`` and given ``config_overrides`` builds."""
        if m.language not in tiny.LANGUAGE_SIZES and (m.max_layers or m.config_overrides):
            check_hub_config(
                m.language, m.trust_remote_code, m.max_layers, m.config_overrides, AutoModelForCausalLM
            )

    def build(self, m: VlmModelConfig, seed: int) -> VlmBundle:
        torch.manual_seed(seed)  # fixed init: the same config builds the same weights
        if m.vision in tiny.VISION_SIZES:
            vision, spec, vision_width = tiny.vision(m.vision, m.vision_layer, m.use_cls, m.image_size, seed)
        else:
            vision, spec, vision_width = build_vision(
                m.vision,
                m.vision_layer,
                m.use_cls,
                m.image_size,
                random=m.init == "random",
                layers=m.max_layers,
            )
        if m.language in tiny.LANGUAGE_SIZES:
            tokenizer = tiny_chat_tokenizer()
            language_model = tiny.language_model(
                tokenizer, m.hidden_size, m.num_layers, m.attention_heads, m.tie_embeddings
            )
        else:
            tokenizer, language_model = _load_language_model(m)
        text_width = language_model.get_input_embeddings().embedding_dim
        projector = build_projector(m.projector, vision_width, text_width)
        random_parts = tuple(
            prefix
            for prefix, name, sizes in (
                ("vision.", m.vision, tiny.VISION_SIZES),
                ("language_model.", m.language, tiny.LANGUAGE_SIZES),
            )
            if name in sizes or m.init == "random"
        )  # a tiny or random part's weights are stored with every checkpoint; a real part's never
        return VlmBundle(
            model=VisionLanguageModel(vision, projector, language_model),
            tokenizer=tokenizer,
            image_size=spec.size,
            image_spec=spec,
            prompt=ChatPrompt(tokenizer),
            random_parts=random_parts,
            image_encoder=vision,
        )

    # ---- what pathvqa plan reads --------------------------------------------------------------------------
    def patch_site(self, bundle: VlmBundle) -> PatchSite:
        """The vision tower's output (the chosen layer's patch tokens the projector reads; its class token,
        when ``model.use_cls`` keeps one, left out)."""
        return PatchSite(unwrap(bundle.model).vision, lambda out, _: square_grid(out))

    def parts(self, bundle: VlmBundle) -> list[tuple[str, tuple[str, ...]]]:
        return [("connector", ("projector.",)), ("vision", ("vision.",))]

    def sequence_tokens(self, bundle: VlmBundle, tensors: dict[str, torch.Tensor]) -> tuple[int, int]:
        """One placeholder id stands for the encoder's patch tokens, spliced in at the forward."""
        device = next(bundle.image_encoder.parameters()).device
        size = bundle.image_size
        with torch.no_grad():
            patches = int(bundle.image_encoder(torch.zeros(1, 3, size, size, device=device)).shape[1])
        return len(tensors["input_ids"][0]) - 1 + patches, patches

    def is_tiny(self, m: VlmModelConfig) -> bool:
        return m.vision in tiny.VISION_SIZES or m.language in tiny.LANGUAGE_SIZES

    def dry_run(self, m: VlmModelConfig) -> VlmModelConfig:
        return m.model_copy(update={"quantization": "none", "init": "random"})

    def checkpoints_activations(self, m: VlmModelConfig) -> bool:
        """Its QLoRA loading (peft's ``prepare_model_for_kbit_training``) turns gradient checkpointing on."""
        return m.four_bit

    def pinned_modules(self, bundle: VlmBundle, m: VlmModelConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
        """(always trainable, never trainable) module prefixes: the projector, a frozen encoder."""
        always = ("projector.",) if m.train_projector else ()
        never = (() if m.train_vision else ("vision.",)) + (() if m.train_projector else ("projector.",))
        return always, never

    def inputs(
        self,
        bundle: VlmBundle,
        samples: list[Sample],
        images: torch.Tensor,
        task: str,
        train: bool,
        image_index: torch.Tensor | None = None,
    ) -> ModelInputs:
        tok, prompt = bundle.tokenizer, bundle.prompt
        prompts, targets = [], []
        for sample in samples:
            question, target = prompt_and_target(sample, task)
            prompts.append(prompt.ids(question))
            targets.append(tok(target, add_special_tokens=False)["input_ids"][:MAX_TEXT_TOKENS])
        shared = {"pixel_values": bundle.image_spec.normalize(images)}  # (U, 3, S, S): distinct images
        if image_index is not None:
            shared["image_index"] = image_index  # (B,) row → its image
        if not train:  # left padding: every row's answer starts right after its prompt
            ids = _pad(prompts, tok.pad_token_id, left=True)
            mask = _pad([[1] * len(p) for p in prompts], 0, left=True)
            return ModelInputs({"input_ids": ids, "attention_mask": mask, **shared})
        rows = [p + t + [tok.eos_token_id] for p, t in zip(prompts, targets, strict=True)]
        labels = [[-100] * len(p) + t + [tok.eos_token_id] for p, t in zip(prompts, targets, strict=True)]
        batch = {
            "input_ids": _pad(rows, tok.pad_token_id, left=False),
            "attention_mask": _pad([[1] * len(r) for r in rows], 0, left=False),
            "labels": _pad(labels, -100, left=False),
            **shared,
        }
        return ModelInputs.with_labels(batch)

    def loss(self, bundle: Bundle, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return token_loss(*self._logits(bundle, batch))

    def token_logprobs(
        self, bundle: Bundle, batch: dict[str, torch.Tensor], temperature: float = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return label_logprobs(*self._logits(bundle, batch), temperature)

    def _logits(self, bundle: Bundle, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return bundle.model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            pixel_values=batch["pixel_values"],
            labels=batch["labels"],
            image_index=batch.get("image_index"),
        )  # (logits, labels spliced to the same length)

    @torch.no_grad()
    def generate(self, bundle: Bundle, batch: dict[str, torch.Tensor], cfg: EvalConfig) -> list[Generated]:
        model = unwrap(bundle.model)
        embeds, mask, _ = model.splice(
            batch["input_ids"],
            batch["attention_mask"],
            batch["pixel_values"],
            image_index=batch.get("image_index"),
        )
        tok = bundle.tokenizer
        out = model.language_model.generate(
            inputs_embeds=embeds,
            attention_mask=mask,
            max_new_tokens=cfg.max_new_tokens,
            **decoding(cfg),
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )  # (B, new tokens): with inputs_embeds only the continuation comes back
        return scored_answers(model.language_model, out, tok, 0, {tok.eos_token_id})

    def export(self, bundle: VlmBundle, cfg: ExperimentConfig, out: str, merge: bool) -> None:
        """``language_model/`` (merged LM, or ``adapter/`` with ``merge=False``), ``projector.safetensors``,
        the encoder's weights when they are not on the hub, the tokenizer, and ``vlm.json``."""
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        model = bundle.model
        if hasattr(model, "merge_and_unload") and merge:
            model = model.merge_and_unload()
        plain = unwrap(model)
        if hasattr(model, "peft_config"):
            model.save_pretrained(out_dir / "adapter")
        else:
            plain.language_model.save_pretrained(out_dir / "language_model")
        _save_module(plain.projector, out_dir / "projector.safetensors")
        if bundle.is_random("vision."):
            _save_module(plain.vision, out_dir / "vision.safetensors")
        bundle.tokenizer.save_pretrained(
            out_dir / ("language_model" if not hasattr(model, "peft_config") else "adapter")
        )
        (out_dir / "vlm.json").write_text(json.dumps(cfg.model.model_dump(), indent=1))

    def load_export(self, m: VlmModelConfig, folder: Path, seed: int) -> VlmBundle:
        """``language_model/`` is a causal-LM folder; the projector (and a tiny encoder) load from their files."""
        model = m.model_copy(update={"language": str(folder / "language_model"), "tuning": "frozen"})
        bundle = self.build(model, seed)
        plain = unwrap(bundle.model)
        plain.projector.load_state_dict(load_file(str(folder / "projector.safetensors")))
        if (folder / "vision.safetensors").is_file():
            plain.vision.load_state_dict(load_file(str(folder / "vision.safetensors")))
        return bundle


def _save_module(module: nn.Module, path: Path) -> None:
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))


def unwrap(model: nn.Module) -> VisionLanguageModel:
    return unwrap_to(model, VisionLanguageModel)
