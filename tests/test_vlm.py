"""vlm-tiny (image encoder → projector → causal LM): encoders, projector, splice, stages, checkpoints."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, CLIPVisionConfig, CLIPVisionModel

from pathvqa.config import EvalConfig, load_config
from pathvqa.data.prepare import load_split
from pathvqa.evaluation.evaluate import predict
from pathvqa.models import tiny
from pathvqa.models.projector import build_projector
from pathvqa.models.registry import build
from pathvqa.models.tokenizers import tiny_chat_tokenizer
from pathvqa.models.vision import build_vision
from pathvqa.models.vlm import IMAGE_TOKEN_INDEX, unwrap
from pathvqa.runtime import checkpoint
from pathvqa.runtime.trained import load_trained, start_from
from pathvqa.training.stages import fit
from tests.conftest import model_inputs, run_cli

TINY = ["model.hidden_size=32", "model.num_layers=1", "train.threads=2", "eval.max_new_tokens=4"]


def vlm_cfg(synth_dir, *extra, path="configs/vlm_tiny.yaml"):
    return load_config(path, [f"data.dataset={synth_dir}", *TINY, *extra])


@pytest.fixture(scope="module")
def samples(synth_dir):
    return load_split(str(synth_dir), "train", progress=False).samples


def tiny_clip_config(layers: int) -> CLIPVisionConfig:
    return CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=2,
        image_size=32,
        patch_size=8,
    )


@pytest.mark.parametrize(("kind", "layers"), [("linear", 1), ("mlp2x_gelu", 2), ("mlp3x_gelu", 3)])
def test_projector_from_string(kind, layers):
    projector = build_projector(kind, 48, 32)
    assert projector(torch.zeros(2, 5, 48)).shape == (2, 5, 32)
    assert sum(isinstance(m, torch.nn.Linear) for m in projector.modules()) == layers
    with pytest.raises(ValueError, match="unknown projector"):
        build_projector("mlp2x_relu", 48, 32)


def test_open_clip_tower_is_a_timm_vit_without_weights():
    tower, spec, width = tiny.vision("tiny-openclip", -2, False, None, seed=0)
    assert type(tower.encoder).__name__ == "TimmModel" and width == 64
    assert len(tower.encoder.trunk.blocks) == 2  # 3 blocks, pruned after the penultimate
    x = torch.randn(2, 3, spec.size, spec.size)
    tokens = tower(x)
    assert tokens.shape == (2, (64 // 8) ** 2, 64)
    with_cls, *_ = tiny.vision("tiny-openclip", -2, True, None, seed=0)
    both = with_cls(x)
    assert both.shape == (2, 65, 64) and torch.allclose(both[:, 1:], tokens)
    last, *_ = tiny.vision("tiny-openclip", -1, False, None, seed=0)
    assert not torch.allclose(last(x), tokens)


def test_hf_vision_tower_loads_a_folder_and_takes_the_chosen_layer(tmp_path):
    config = tiny_clip_config(layers=3)
    torch.manual_seed(0)
    reference = CLIPVisionModel(config).eval()
    reference.save_pretrained(tmp_path / "clip")
    tower, spec, width = build_vision(str(tmp_path / "clip"), -2, False, None)
    assert width == 32 and spec.size == 32
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = reference(pixel_values=x, output_hidden_states=True).hidden_states[-2][:, 1:]  # no CLS
        assert torch.allclose(tower.eval()(x), expected, atol=1e-5)
    assert len(tower.encoder.encoder.layers) == 2  # the unused last block is dropped


def test_splice_puts_image_tokens_at_the_placeholder_and_masks_labels(synth_dir, samples):
    family, bundle = build(vlm_cfg(synth_dir))
    model = unwrap(bundle.model).eval()
    chosen = [s for s in samples if s.type == "open"][:2] + [s for s in samples if s.type == "closed"][:2]
    batch = model_inputs(family, bundle, chosen, train=True)
    ids, labels, px = batch["input_ids"], batch["labels"], batch["pixel_values"]
    assert ((ids == IMAGE_TOKEN_INDEX).sum(dim=1) == 1).all()
    assert (batch["attention_mask"] == 0).any(), "questions of different lengths must exercise padding"
    tok = bundle.tokenizer
    for row, sample in zip(labels, chosen, strict=True):  # labels: the answer and EOS, nothing else
        kept = row[row != -100].tolist()
        assert kept[-1] == tok.eos_token_id and tok.decode(kept[:-1]) == sample.target
    with torch.no_grad():
        embeds, mask, spliced = model.splice(ids, batch["attention_mask"], px, labels)
        images = model.image_tokens(px)  # (B, N, D)
        text = model.language_model.get_input_embeddings()(ids.clamp(min=0))
        total, tokens = family.loss(bundle, batch)
        hf = model.language_model(inputs_embeds=embeds, attention_mask=mask, labels=spliced).loss
    assert abs((total / tokens).item() - hf.item()) < 1e-5  # the summed loss / tokens = transformers' mean
    assert tokens == (labels != -100).sum()  # answer tokens + EOS per row
    n = images.shape[1]
    assert embeds.shape == (len(chosen), ids.shape[1] - 1 + n, images.shape[2])
    for b in range(len(chosen)):
        p = int((ids[b] == IMAGE_TOKEN_INDEX).nonzero())
        assert torch.equal(embeds[b, p : p + n], images[b])
        assert torch.equal(embeds[b, :p], text[b, :p]) and torch.equal(embeds[b, p + n :], text[b, p + 1 :])
        assert (mask[b, p : p + n] == 1).all() and (spliced[b, p : p + n] == -100).all()
        assert torch.equal(spliced[b, p + n :], labels[b, p + 1 :])


def test_generation_does_not_depend_on_batch_padding(synth_dir, samples):
    family, bundle = build(vlm_cfg(synth_dir, "eval.max_new_tokens=6"))
    bundle.model.eval()
    chosen = sorted(samples[:6], key=lambda s: len(s.question))
    batch = model_inputs(family, bundle, chosen, train=False)
    together = [g.text for g in family.generate(bundle, batch, EvalConfig(max_new_tokens=6))]
    alone = []
    for s in chosen:
        one = model_inputs(family, bundle, [s], train=False)
        alone += [g.text for g in family.generate(bundle, one, EvalConfig(max_new_tokens=6))]
    assert together == alone and all(together)


def write_staged_config(tmp_path, synth_dir, *, vision, language, instruct_tuning, lora_r=4):
    raw = yaml.safe_load(Path("configs/vlm_tiny.yaml").read_text())
    raw["data"].update(dataset=str(synth_dir), eval_samples=16)
    raw["model"].update(vision=vision, language=language, hidden_size=32, num_layers=1)
    if not vision.startswith("tiny"):
        raw["model"]["image_size"] = None  # the encoder's own size
    raw["model"]["lora"] = {"r": lora_r, "target_modules": r"language_model\..*\.(q_proj|v_proj)"}
    raw["eval"]["max_new_tokens"] = 4
    # stage 1 as LLaVA-1.5 has it (and the real configs): the projector alone (vlm-tiny trains everything)
    raw["stages"][0]["model"] = {"tuning": "frozen", "train_projector": True, "train_vision": False}
    raw["stages"][0]["train"] = {"max_steps": 3, "eval_every": 3, "lr": 1e-2}
    raw["stages"][0]["eval"] = {"max_new_tokens": 4}
    raw["stages"][1]["model"]["tuning"] = instruct_tuning
    raw["stages"][1]["train"] = {"max_steps": 4, "eval_every": 4, "lr": 1e-2}
    path = tmp_path / "staged.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_two_stages_align_then_instruct_and_reload(tmp_path, synth_dir):
    path = write_staged_config(
        tmp_path, synth_dir, vision="tiny-openclip", language="tiny-mistral", instruct_tuning="full"
    )
    cfg = load_config(path)
    _, initial = build(cfg.stage_config(cfg.stages[0]))
    before = {k: v.clone() for k, v in unwrap(initial.model).state_dict().items()}
    result = fit(cfg, tmp_path / "run", progress=False)
    assert [s["stage"] for s in result["stages"]] == ["align", "instruct"]
    assert json.loads((tmp_path / "run" / "train_summary.json").read_text())["steps"] == 4

    align = checkpoint.latest_valid(tmp_path / "run" / "align")
    aligned = load_file(str(align / "weights.safetensors"))  # tiny: the whole model (random base)
    changed = {k for k, v in aligned.items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("projector.") for k in changed), "stage 1 trains the projector only"

    instruct_cfg = cfg.stage_config(cfg.stages[1])
    _, started = start_from(instruct_cfg, align)
    started_state = unwrap(started.model).state_dict()
    assert all(torch.equal(started_state[k], aligned[k]) for k in aligned), "stage 2 starts from stage 1"

    instruct_checkpoint = checkpoint.resolve(tmp_path / "run")
    proc = run_cli("eval", "--checkpoint", tmp_path / "run", "--out", tmp_path / "eval")
    rows = (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()
    assert (
        len(rows) == 80
        and "instruct" in json.loads((tmp_path / "eval" / "metrics.json").read_text())["source"]
    )
    assert proc.returncode == 0

    run_cli("export", "--checkpoint", tmp_path / "run", "--out", tmp_path / "export")
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "export" / "language_model")
    assert torch.equal(
        lm.lm_head.weight,
        load_file(str(instruct_checkpoint / "weights.safetensors"))["language_model.lm_head.weight"],
    )
    assert set(load_file(str(tmp_path / "export" / "projector.safetensors"))) == {
        "0.weight",
        "0.bias",
        "2.weight",
        "2.bias",
    }


@pytest.fixture(scope="module")
def hub_like_parts(tmp_path_factory):
    """A CLIP vision folder and a causal-LM folder (tokenizer with chat template), as downloaded ids."""
    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    config = tiny_clip_config(layers=2)
    CLIPVisionModel(config).save_pretrained(root / "vision")
    tokenizer = tiny_chat_tokenizer()
    tiny.language_model(tokenizer, 32, 1).save_pretrained(root / "language")
    tokenizer.save_pretrained(root / "language")
    return root


@pytest.mark.parametrize("align_tuning", ["frozen", "lora"])
def test_lora_checkpoints_hold_projector_and_adapters_and_reload(
    tmp_path, synth_dir, samples, hub_like_parts, align_tuning
):
    path = write_staged_config(
        tmp_path,
        synth_dir,
        vision=str(hub_like_parts / "vision"),
        language=str(hub_like_parts / "language"),
        instruct_tuning="lora",
    )
    raw = yaml.safe_load(path.read_text())
    raw["stages"][0]["model"]["tuning"] = align_tuning
    path.write_text(yaml.safe_dump(raw))
    fit(load_config(path), tmp_path / "run", progress=False)
    align = load_file(str(checkpoint.latest_valid(tmp_path / "run" / "align") / "weights.safetensors"))
    assert align and all("projector." in k or "lora_" in k for k in align)
    folder = checkpoint.latest_valid(tmp_path / "run" / "instruct")
    weights = load_file(str(folder / "weights.safetensors"))
    assert any("projector." in k for k in weights) and any("lora_B" in k for k in weights)
    merged = {k for k in weights if "base_layer" in k}  # stage-1 LoRA merged into the LM: saved too
    assert bool(merged) == (align_tuning == "lora")
    assert all("projector." in k or "lora_" in k or k in merged for k in weights), "no frozen hub weights"
    assert any(v.abs().sum() > 0 for k, v in weights.items() if "lora_B" in k), "adapters trained"
    saved = yaml.safe_load((folder / "config.yaml").read_text())["model"]
    assert saved["vision"] == str(hub_like_parts / "vision") and saved["language"].endswith("language")

    cfg, family, bundle, _ = load_trained(tmp_path / "run")
    hub_state = load_file(str(hub_like_parts / "language" / "model.safetensors"))
    q_proj = "model.layers.0.self_attn.q_proj.weight"
    loaded = dict(bundle.model.named_parameters())[
        f"base_model.model.language_model.{q_proj}".replace(".weight", ".base_layer.weight")
    ]
    assert torch.equal(loaded, hub_state[q_proj]) == (align_tuning == "frozen")
    test = load_split(str(synth_dir), "test", progress=False).samples
    rows = predict(family, bundle, test, cfg, progress=False)
    run_cli("eval", "--checkpoint", tmp_path / "run", "--out", tmp_path / "eval")
    written = [
        json.loads(line) for line in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()
    ]
    added = ("seen", "confidence")  # what eval adds: the answer's seen flag, its calibrated confidence
    assert [{k: v for k, v in r.items() if k not in added} for r in written] == rows


def test_real_vlm_ids_fail_offline_with_one_line(tmp_path):
    sets = ["--set", "model.quantization=none"]  # 4-bit on this CPU would be refused first
    proc = run_cli(
        "eval", "--config", "configs/biomedclip_mistral_vqa.yaml", "--out", tmp_path, *sets, check=False
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "microsoft/BiomedCLIP" in lines[0] and "local" in lines[0], proc.stderr


def test_a_tiny_encoder_with_a_real_language_model_stores_the_encoder_only(
    tmp_path, synth_dir, hub_like_parts
):
    """'Random base' is per part: the tiny encoder's weights exist nowhere else, the LM's are on the hub."""
    path = write_staged_config(
        tmp_path,
        synth_dir,
        vision="tiny-openclip",
        language=str(hub_like_parts / "language"),
        instruct_tuning="lora",
    )
    fit(load_config(path), tmp_path / "run", progress=False)
    folder = checkpoint.latest_valid(tmp_path / "run" / "instruct")
    stored = load_file(str(folder / "weights.safetensors"))
    encoder = [k for k in stored if ".vision." in f".{k}"]
    assert encoder and any("lora_B" in k for k in stored) and any("projector." in k for k in stored)
    frozen_lm = [k for k in stored if "language_model" in k and "lora_" not in k]
    assert not frozen_lm, f"hub weights stored: {frozen_lm[:3]}"
    cfg, family, bundle, _ = load_trained(tmp_path / "run")
    test = load_split(str(synth_dir), "test", progress=False).samples[:24]
    first = predict(family, bundle, test, cfg, progress=False)
    assert first == predict(*load_trained(tmp_path / "run")[1:3], test, cfg, progress=False)
