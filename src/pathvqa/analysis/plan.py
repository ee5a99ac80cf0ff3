"""``pathvqa plan CONFIG``: what a config's model is and whether each stage fits a GPU, read off the
architecture built on the meta device from the id's hub config (no weights are downloaded or held).

Parameters are counted on the model the training loop would build (the family's own code, with the
config's tuning applied; trainable counts are peft's own ``get_nb_trainable_parameters`` under LoRA).
Memory is an estimate until a GPU measures it (``make gpu-check`` records peak memory beside it):

- weights at the load dtype (bf16; NF4 4-bit for ``model.quantization: 4bit``: half a byte per weight of
  the quantized linear layers plus their block scales), trainable weights as fp32 masters;
- gradients (fp32) and AdamW's two moments (fp32) for the trainable weights;
- activations of the language model for one micro-batch (``train.batch_size`` sequences of the
  config's length, image tokens counted with the real processor): ~2·(8·h + 4·i) bytes per token and
  block saved for backward (h the width, i the MLP width; attention by fused kernels), the logits in
  fp32; with gradient checkpointing only each block's input plus one block's working set;
- a fixed 1 GB for the CUDA context and the allocator's slack.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from pathvqa.config import ExperimentConfig
from pathvqa.data.prepare import Sample

log = logging.getLogger(__name__)
GB = 1024**3
CONTEXT_GB = 1.0
NF4_BYTES = 0.5 + 4 / 64 / 4  # 4 bits a weight + a scale per block of 64 (double-quantized)
QUESTION, ANSWER = "what does the tissue in this image show?", "yes"


@dataclass
class Part:
    name: str
    prefixes: tuple[str, ...]


def parts_of(family, bundle) -> list[Part]:
    """The family's parts other than the language model (vision, connector), with their module prefixes."""
    return [Part(name, prefixes) for name, prefixes in family.parts(bundle)]


def _plain(name: str) -> str:
    """A parameter name without peft's wrapping (``base_model.model.``, ``.base_layer``)."""
    return name.removeprefix("base_model.model.").replace(".base_layer.", ".")


def count_parameters(model: torch.nn.Module, parts: list[Part]) -> dict[str, int]:
    """Parameters per part (each shared tensor once), adapters apart, the base total, trainable."""
    counts = {p.name: 0 for p in parts} | {"language_model": 0, "adapters": 0}
    for name, param in model.named_parameters():  # named_parameters yields a tied tensor once
        plain = _plain(name)
        if "lora_" in plain or "modules_to_save" in plain:
            counts["adapters"] += param.numel()
            continue
        part = next((p.name for p in parts if any(plain.startswith(x) for x in p.prefixes if x)), None)
        counts[part or "language_model"] += param.numel()
    counts["base_total"] = sum(v for k, v in counts.items() if k != "adapters")
    counts["total"] = counts["base_total"] + counts["adapters"]
    if hasattr(model, "get_nb_trainable_parameters"):  # peft's own definition
        counts["trainable"] = int(model.get_nb_trainable_parameters()[0])
    else:
        counts["trainable"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts


def _quantized_weights(model: torch.nn.Module) -> int:
    """Weights NF4 would hold in 4 bits: every linear layer's but the output head's."""
    out = getattr(model, "get_output_embeddings", lambda: None)()
    return sum(
        m.weight.numel()
        for m in model.modules()
        if isinstance(m, torch.nn.Linear) and m is not out and "lora_" not in type(m).__name__.lower()
    )


def _language_config(model: torch.nn.Module):
    config = getattr(model, "config", None)
    config = getattr(config, "text_config", None) or config
    if config is None or not hasattr(config, "hidden_size"):
        lm = getattr(model, "language_model", None)
        config = getattr(lm, "config", None)
    return config


def sequence_tokens(family, bundle, cfg: ExperimentConfig) -> dict[str, int]:
    """Tokens of one training sequence (a typical question and a yes/no answer) and its image tokens,
    from the family's own inputs (the real processor, template and image size)."""
    image = torch.zeros(1, 3, bundle.image_size, bundle.image_size, dtype=torch.uint8, device="cpu")
    sample = Sample("plan", b"", "plan", QUESTION, ANSWER, ANSWER, "closed")
    with torch.device("cpu"):
        tensors = family.inputs(bundle, [sample], image, cfg.task, True).tensors
    sequence, images = family.sequence_tokens(bundle, tensors)
    return {"sequence": sequence, "image": images}


def memory(model, counts: dict[str, int], cfg: ExperimentConfig, tokens: dict[str, int]) -> dict[str, float]:
    """GB per kind (an estimate; see the module's docstring)."""
    m, batch = cfg.model, cfg.train.batch_size
    base, trainable = counts["base_total"], counts["trainable"]
    if m.four_bit:
        quantized = _quantized_weights(model)
        weights = quantized * NF4_BYTES + (base - quantized) * 2
    else:
        weights = base * 2
    weights += trainable * 2  # trainable weights as fp32 masters: 2 bytes more each than bf16
    text = _language_config(model)
    h = getattr(text, "hidden_size", 0)
    inter = getattr(text, "intermediate_size", 4 * h)
    blocks = getattr(text, "num_hidden_layers", 0)
    vocab = getattr(text, "vocab_size", 0)
    per_block = tokens["sequence"] * batch * 2 * (8 * h + 4 * inter)
    logits = tokens["sequence"] * batch * vocab * 4 * 2  # fp32 logits and their gradient
    full = blocks * per_block + logits
    checkpointed = blocks * tokens["sequence"] * batch * h * 2 + per_block + logits
    return {
        "weights": weights / GB,
        "gradients": trainable * 4 / GB,
        "optimizer": trainable * 8 / GB,
        "activations": full / GB,
        "activations_checkpointed": checkpointed / GB,
        "cuda_context": CONTEXT_GB,
    }


def verdict(
    gb: dict[str, float], cfg: ExperimentConfig, gpu_gb: float, checkpointing: bool
) -> tuple[float, bool, list[str]]:
    """(total GB with the config's own settings, whether it fits, what to change if not); ``checkpointing``:
    the family recomputes activations in the backward pass with these settings."""
    fixed = gb["weights"] + gb["gradients"] + gb["optimizer"] + gb["cuda_context"]
    acts = gb["activations_checkpointed"] if checkpointing else gb["activations"]
    total = fixed + acts
    advice: list[str] = []
    if total > gpu_gb:
        if not checkpointing and fixed + gb["activations_checkpointed"] <= gpu_gb:
            advice.append("--set model.gradient_checkpointing=true")
        elif acts > 0 and cfg.train.batch_size > 1 and fixed < gpu_gb:
            fit = max(1, int(cfg.train.batch_size * (gpu_gb - fixed) / acts))
            accum = cfg.train.grad_accum * -(-cfg.train.batch_size // fit)
            advice.append(
                f"--set train.batch_size={fit} --set train.grad_accum={accum} (same effective batch)"
            )
        if not cfg.model.four_bit and gb["weights"] > gpu_gb / 2:
            advice.append("--set model.quantization=4bit (QLoRA)")
        if not advice:
            advice.append("a larger GPU (or several: train.batch_size is split across them)")
    return total, total <= gpu_gb, advice


def plan_stage(cfg: ExperimentConfig, gpu_gb: float, name: str | None) -> dict[str, Any]:
    """Build the stage's model on the meta device (no weights) and read off its counts and memory."""
    from pathvqa.models.registry import build, check_model, get_family

    family = get_family(cfg.model.family)
    built = cfg.model_copy(update={"model": family.dry_run(cfg.model)})  # the real architecture, no weights
    check_model(built.model)  # a value the architecture rejects: one line naming it
    with torch.device("meta"):
        family, bundle = build(built)
    counts = count_parameters(bundle.model, parts_of(family, bundle))
    tokens = sequence_tokens(family, bundle, built)
    gb = memory(bundle.model, counts, cfg, tokens)
    total, fits, advice = verdict(gb, cfg, gpu_gb, family.checkpoints_activations(cfg.model))
    dtype = "NF4 4-bit weights, bf16 compute" if cfg.model.four_bit else "bf16"
    return {"stage": name, "load_dtype": dtype, "parameters": counts, "tokens": tokens, "memory_gb": gb,
            "total_gb": total, "fits": fits, "advice": advice}  # fmt: skip


def plan(cfg: ExperimentConfig, gpu_gb: float = 16.0) -> dict[str, Any]:
    """Every stage of ``cfg`` (the config itself when it has none)."""
    stages = [(s.name, cfg.stage_config(s)) for s in cfg.stages] or [(None, cfg)]
    return {"config": cfg.name, "gpu_gb": gpu_gb, "estimate": True,
            "stages": [plan_stage(stage_cfg, gpu_gb, name) for name, stage_cfg in stages]}  # fmt: skip


def plan_table(result: dict[str, Any]) -> list[str]:
    """The plan as lines of text."""
    lines = [
        f"{result['config']}: an estimate for a {result['gpu_gb']:g} GB GPU (not a measurement: make gpu-check "
        "measures peak memory on a GPU)"
    ]
    for stage in result["stages"]:
        p, gb, t = stage["parameters"], stage["memory_gb"], stage["tokens"]
        lines.append(f"stage {stage['stage'] or '(single)'}: weights load as {stage['load_dtype']}")
        lines.append(
            f"  parameters  vision {p['vision']:,}  connector {p['connector']:,}  language model "
            f"{p['language_model']:,}  adapters {p['adapters']:,}"
        )
        lines.append(
            f"              base {p['base_total']:,}  total {p['total']:,}  trainable {p['trainable']:,}"
        )
        lines.append(f"  tokens      {t['sequence']} a sequence, {t['image']} of them image tokens")
        lines.append(
            f"  memory GB   weights {gb['weights']:.2f}  gradients {gb['gradients']:.2f}  optimizer "
            f"{gb['optimizer']:.2f}  activations {gb['activations']:.2f} "
            f"({gb['activations_checkpointed']:.2f} with gradient checkpointing)  context {gb['cuda_context']:.1f}"
        )
        verdict_text = "fits" if stage["fits"] else "does NOT fit"
        lines.append(f"  total       {stage['total_gb']:.1f} GB: {verdict_text} {result['gpu_gb']:g} GB")
        lines += [f"  change      {a}" for a in stage["advice"]]
    return lines
