"""Real-size architectures on one GPU, built from their configs with random weights (no download, no
network): training samples/s and peak memory at batch 4 and 8, model FLOPs utilisation, and generation
answers/s. Run it whenever a session has a GPU (about 5 minutes on an H200); record the output in
benchmarks/README.md with the GPU's name.

    python benchmarks/gpu_real_size.py [--only blip,vlm7b_qlora,...]

MFU is an estimate, stated: training FLOPs per step = 6 × (parameters on the forward path) × (tokens
through them), the usual dense-transformer count (forward 2, backward 4; LoRA still back-propagates
through the frozen weights), over the GPU's dense bf16 peak (989 TFLOP/s for H100/H200 SXM).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}
LM_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def quantize_linears(module: nn.Module, skip: tuple[str, ...] = ("lm_head",)) -> int:
    """Every nn.Linear under ``module`` → bitsandbytes NF4 Linear4bit holding the same (random) weights."""
    import bitsandbytes as bnb

    count = 0
    for name, child in list(module.named_modules()):
        for attr, layer in list(child.named_children()):
            if isinstance(layer, nn.Linear) and not any(s in f"{name}.{attr}" for s in skip):
                q = bnb.nn.Linear4bit(
                    layer.in_features, layer.out_features, bias=layer.bias is not None,
                    compute_dtype=torch.bfloat16, quant_type="nf4", device="cuda",
                )  # fmt: skip
                q.weight = bnb.nn.Params4bit(layer.weight.data, requires_grad=False, quant_type="nf4").to(
                    "cuda"
                )
                if layer.bias is not None:
                    q.bias = nn.Parameter(layer.bias.data, requires_grad=False)
                setattr(child, attr, q)
                count += 1
    return count


def lora(model: nn.Module, targets, modules_to_save=None) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=targets))


def mistral_7b():
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=32768, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=4096, sliding_window=None,
    )  # fmt: skip
    return MistralForCausalLM(config)


def build_blip():
    from transformers import BlipConfig, BlipForQuestionAnswering

    model = BlipForQuestionAnswering(BlipConfig()).to(torch.bfloat16)  # blip-vqa-base shapes, 384 px
    targets = ["qkv", "projection", "query", "key", "value", "dense", "fc1", "fc2"]
    return lora(model, targets), "blip", 384


def build_vlm(quantized: bool):
    def build():
        from transformers import CLIPVisionConfig, CLIPVisionModel

        from pathvqa.models.projector import build_projector
        from pathvqa.models.vision import VisionTower
        from pathvqa.models.vlm import VisionLanguageModel

        vision = VisionTower(
            CLIPVisionModel(CLIPVisionConfig(image_size=224, patch_size=16)), "hf", -2, False
        )
        lm = mistral_7b().to(torch.bfloat16)
        if quantized:
            quantize_linears(lm)
            lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = VisionLanguageModel(vision.to(torch.bfloat16), build_projector("mlp2x_gelu", 768, 4096), lm)
        model.requires_grad_(False)
        model = lora(model, r"language_model\..*\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)")
        for p in model.base_model.model.projector.parameters():
            p.requires_grad = True
        return model, "vlm", 224

    return build


def build_hf(kind: str):
    def build():
        from transformers import (
            Blip2Config,
            Blip2ForConditionalGeneration,
            CLIPVisionConfig,
            LlamaConfig,
            LlavaConfig,
            LlavaForConditionalGeneration,
            OPTConfig,
        )  # fmt: skip

        if kind == "blip2":
            text = OPTConfig(
                hidden_size=2560,
                ffn_dim=10240,
                num_hidden_layers=32,
                num_attention_heads=32,
                vocab_size=50304,
                word_embed_proj_dim=2560,
            )
            config = Blip2Config(
                vision_config={
                    "hidden_size": 1408,
                    "intermediate_size": 6144,
                    "num_hidden_layers": 39,
                    "num_attention_heads": 16,
                    "image_size": 224,
                    "patch_size": 14,
                },
                text_config=text.to_dict(),
                num_query_tokens=32,
                image_token_index=50265,
            )
            model, size = Blip2ForConditionalGeneration(config).to(torch.bfloat16), 224
            targets = r".*language_model.*\.(q_proj|k_proj|v_proj|out_proj|fc1|fc2)"
        else:
            vision = CLIPVisionConfig(
                hidden_size=1024,
                intermediate_size=4096,
                num_hidden_layers=24,
                num_attention_heads=16,
                image_size=336,
                patch_size=14,
            )
            text = LlamaConfig(
                hidden_size=4096,
                intermediate_size=11008,
                num_hidden_layers=32,
                num_attention_heads=32,
                vocab_size=32064,
            )
            config = LlavaConfig(
                vision_config=vision.to_dict(), text_config=text.to_dict(), image_token_index=32000
            )
            model, size = LlavaForConditionalGeneration(config).to(torch.bfloat16), 336
            targets = r".*language_model.*" + r"\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)"
        quantize_linears(
            model.language_model if hasattr(model, "language_model") else model.model.language_model
        )
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.requires_grad_(False)
        return lora(model, targets), kind, size

    return build


def batch_for(kind: str, model, size: int, batch: int, text_len: int = 24) -> dict:
    device = "cuda"
    pixels = torch.randn(batch, 3, size, size, device=device, dtype=torch.bfloat16)
    ids = torch.randint(5, 30000, (batch, text_len), device=device)
    mask = torch.ones_like(ids)
    if kind == "blip":
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "pixel_values": pixels,
            "decoder_input_ids": ids[:, :8],
            "labels": ids[:, :8],
        }
    if kind == "vlm":
        ids[:, 2] = -200  # the image placeholder
        return {"input_ids": ids, "attention_mask": mask, "pixel_values": pixels, "labels": ids.clamp(min=0)}
    image_tokens = 32 if kind == "blip2" else (size // 14) ** 2
    token = model.config.image_token_index
    ids = torch.cat([torch.full((batch, image_tokens), token, device=device), ids], dim=1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixels, "labels": ids}


def loss_of(kind: str, model, batch: dict) -> torch.Tensor:
    if kind == "vlm":
        logits, labels = model(
            batch["input_ids"], batch["attention_mask"], batch["pixel_values"], batch["labels"]
        )
        return nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten())
    return model(**batch).loss


def forward_params(model: nn.Module) -> int:
    """Parameters on the forward path (a packed 4-bit tensor holds two weights per byte element)."""
    return sum(p.numel() * (2 if getattr(p, "quant_type", None) else 1) for p in model.parameters())


@torch.no_grad()
def generation(kind: str, model, batch: dict, new_tokens: int = 8) -> float:
    """Answers/s of greedy generation, ``new_tokens`` each, for the batch."""
    model.eval()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        if kind == "vlm":
            plain = model.base_model.model
            embeds, mask, _ = plain.splice(batch["input_ids"], batch["attention_mask"], batch["pixel_values"])
            plain.language_model.generate(
                inputs_embeds=embeds,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
            )
        else:
            inputs = {k: v for k, v in batch.items() if k not in ("labels", "decoder_input_ids")}
            model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
    torch.cuda.synchronize()
    model.train()
    return round(batch["input_ids"].shape[0] / (time.perf_counter() - t0), 2)


def measure(name: str, build, peak: float, steps: int = 5) -> dict:
    from pathvqa.runtime.processes import upcast_trainable

    started = time.perf_counter()
    torch.set_default_dtype(torch.bfloat16)  # random init straight on the GPU, in bf16
    try:
        with torch.device("cuda"):
            model, kind, size = build()
    finally:
        torch.set_default_dtype(torch.float32)
    model.cuda().train()
    upcast_trainable(model)  # fp32 master weights for what trains, as pathvqa's trainer does
    built = time.perf_counter() - started
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    result = {"case": name, "build_s": round(built, 1), "trainable_params": sum(p.numel() for p in params)}
    for batch_size in (4, 8):
        batch = batch_for(kind, model, size, batch_size)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        for step in range(steps + 2):
            if step == 2:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = loss_of(kind, model, batch)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        seconds = (time.perf_counter() - t0) / steps
        result[f"b{batch_size}_samples_per_s"] = round(batch_size / seconds, 2)
        result[f"b{batch_size}_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        result[f"b{batch_size}_step_s"] = round(seconds, 3)
    flops = 6 * forward_params(model) * TOKENS[name] * result["b8_samples_per_s"]
    result["mfu_b8_estimate"] = round(flops / peak, 3)
    result["generate_b8_answers_per_s"] = generation(kind, model, batch)
    del model, optimizer
    return result


CASES = {
    "blip": build_blip,
    "vlm7b_qlora": build_vlm(quantized=True),
    "vlm7b_bf16_lora": build_vlm(quantized=False),
    "blip2_opt2.7b_qlora": build_hf("blip2"),
    "llava15_7b_qlora": build_hf("llava"),
}
TOKENS = {
    "blip": 577 + 24 + 8,
    "vlm7b_qlora": 196 + 23,
    "vlm7b_bf16_lora": 196 + 23,
    "blip2_opt2.7b_qlora": 257 + 56,
    "llava15_7b_qlora": 577 + 600,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", default=",".join(CASES))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_real_size: no CUDA device (this benchmark needs a GPU)")
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in PEAK_BF16.items() if k in name), 989e12)
    print(f"GPU: {name}; torch {torch.__version__}; MFU against {peak / 1e12:.0f} TFLOP/s bf16 dense")
    for case in args.only.split(","):
        try:
            print(json.dumps(measure(case, CASES[case], peak)), flush=True)
        except Exception as err:  # one case failing must not hide the others' figures
            print(json.dumps({"case": case, "error": f"{type(err).__name__}: {str(err)[:300]}"}), flush=True)
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
