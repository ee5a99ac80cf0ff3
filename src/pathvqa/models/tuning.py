"""Which weights train: full fine-tuning, frozen, or peft LoRA (with optional fully-trained modules)."""

from __future__ import annotations

import torch

from pathvqa.config import ModelConfig
from pathvqa.models.base import WHOLE_MODEL, Bundle, undistributed


def _ties_embeddings(model: torch.nn.Module) -> bool:
    """Whether the model's output embedding is its input embedding (tiny LLaVA, PaliGemma, Qwen2.5-VL-3B)."""
    if not hasattr(model, "get_output_embeddings"):
        return False
    head, embed = model.get_output_embeddings(), model.get_input_embeddings()
    return head is not None and embed is not None and head.weight is embed.weight


def apply_tuning(
    model: torch.nn.Module,
    cfg: ModelConfig,
    always_trainable: tuple[str, ...] = (),
    never_trainable: tuple[str, ...] = (),
    targets: str | list[str] | None = None,
) -> torch.nn.Module:
    """Set ``requires_grad`` by ``cfg.tuning``; LoRA wraps the model with peft (no ``task_type``:
    the families call their models with explicit keyword arguments).

    ``always_trainable`` / ``never_trainable`` are module-name prefixes a family pins either way
    (the VLM projector; a frozen vision tower); ``targets``: the LoRA targets (default: the config's).
    """
    if cfg.tuning == "lora":
        from peft import LoraConfig, get_peft_model  # imported when used: 1-2 s a process otherwise

        lora = cfg.lora
        model = get_peft_model(
            model,
            LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=targets or lora.target_modules,
                modules_to_save=lora.modules_to_save or None,
                # a head trained whole stays the embedding it is tied to (peft warns when nothing is)
                ensure_weight_tying=bool(lora.modules_to_save) and _ties_embeddings(model),
            ),
        )
    else:
        for param in model.parameters():
            param.requires_grad = cfg.tuning == "full"
    for name, param in model.named_parameters():
        bare = _bare_name(name)
        if any(bare.startswith(p) for p in always_trainable):  # the narrower pin wins (Qwen's merger
            param.requires_grad = True  # sits inside its frozen vision tower)
        elif any(bare.startswith(p) for p in never_trainable):
            param.requires_grad = False
    return model


def _bare_name(name: str) -> str:
    """Parameter name without peft's ``base_model.model.`` prefix."""
    return name.removeprefix("base_model.model.")


def plain_name(name: str) -> str:
    """The plain model's name for a (peft) parameter: a LoRA or saved-module tensor names the
    base weight it changes once merged (``x.q_proj.lora_A.default.weight`` → ``x.q_proj.weight``)."""
    name = _bare_name(name).replace(".base_layer.", ".").replace(".original_module.", ".")
    for marker in (".lora_A.", ".lora_B.", ".lora_embedding_A.", ".lora_embedding_B.", ".modules_to_save."):
        if marker in name:
            head, _, tail = name.partition(marker)
            return f"{head}.{tail.split('.', 1)[1]}" if "lora" not in marker else f"{head}.weight"
    return name


def trainable_summary(model: torch.nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"parameters": total, "trainable": trainable}


def base_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The frozen base weights of a peft model, under the plain model's parameter names."""
    state = {}
    for name, tensor in model.state_dict().items():
        if "lora_" in name or ".modules_to_save." in name:
            continue
        state[plain_name(name)] = tensor
    return state


def stored_names(bundle: Bundle, tuning: str) -> set[str] | None:
    """The parameters a checkpoint of this model holds (``None``: all of them).

    Everything that trains, the named tiny parts (their random weights exist nowhere else) and base
    weights an earlier stage changed; never a real part's frozen weights, which are on the hub."""
    if tuning == "full" or WHOLE_MODEL in bundle.random_parts:
        return None
    model = undistributed(bundle.model)
    return {
        name
        for name, param in model.named_parameters()
        if param.requires_grad or plain_name(name) in bundle.modified or bundle.is_random(plain_name(name))
    }
