"""blip-tiny: collate, loss, LoRA, generation, checkpoint round trip, export, and real ids offline."""

import pytest
import torch

from pathvqa.config import load_config
from pathvqa.data.prepare import load_split
from pathvqa.evaluation.evaluate import predict
from pathvqa.models.registry import build
from pathvqa.runtime import checkpoint
from pathvqa.runtime.trained import load_trained
from pathvqa.training.stages import fit
from tests.conftest import model_inputs, run_cli

TINY = ["model.hidden_size=32", "model.num_layers=1", "model.image_size=32", "train.threads=2"]


def tiny_cfg(synth_dir, *extra):
    return load_config("configs/blip_tiny.yaml", [f"data.dataset={synth_dir}", *TINY, *extra])


@pytest.fixture(scope="module")
def samples(synth_dir):
    return load_split(str(synth_dir), "train", progress=False).samples


@pytest.mark.slow
def test_collate_builds_decoder_inputs_and_masked_labels(synth_dir, samples):
    cfg = tiny_cfg(synth_dir)
    family, bundle = build(cfg)
    chosen = [s for s in samples if len(s.target.split()) > 1][:3] + [
        s for s in samples if s.target == "yes"
    ][:2]
    batch = model_inputs(family, bundle, chosen, train=True)
    assert "token_type_ids" not in batch
    bos = bundle.model.config.text_config.bos_token_id
    assert (batch["decoder_input_ids"][:, 0] == bos).all()
    pads = batch["decoder_attention_mask"] == 0
    assert pads.any(), "multi-word and one-word answers together must exercise padding"
    assert (batch["labels"][pads] == -100).all() and (batch["labels"][~pads] >= 0).all()
    decoded = bundle.tokenizer.decode(batch["decoder_input_ids"][0], skip_special_tokens=True)
    assert decoded == chosen[0].target


def test_cached_tokenization_matches_the_tokenizers_own_padding(synth_dir, samples):
    from pathvqa.models.base import tokenize_padded

    _, bundle = build(tiny_cfg(synth_dir))
    texts = [s.question for s in samples[:40]] + ["a " * 100, samples[0].question]  # truncated; repeated
    ours = tokenize_padded(bundle.tokenizer, texts, 64)
    theirs = bundle.tokenizer(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])


def test_loss_is_finite_and_deterministic(synth_dir, samples):
    cfg = tiny_cfg(synth_dir)
    losses = []
    for _ in range(2):
        family, bundle = build(cfg)
        batch = model_inputs(family, bundle, samples[:4], train=True)
        total, tokens = family.loss(bundle, batch)
        losses.append((total / tokens).item())
    assert torch.isfinite(torch.tensor(losses)).all() and losses[0] == losses[1]
    assert tokens == (batch["labels"][:, 1:] != -100).sum() and tokens > len(samples[:4])


def test_lora_trains_only_adapters_and_saved_modules(synth_dir, samples):
    cfg = tiny_cfg(synth_dir, "model.tuning=lora", "model.lora.r=4", "model.lora.modules_to_save=[cls]")
    family, bundle = build(cfg)
    names = [n for n, p in bundle.model.named_parameters() if p.requires_grad]
    assert names and all("lora_" in n or "modules_to_save" in n for n in names)
    assert any("vision_model" in n for n in names) and any("text_decoder" in n for n in names)
    batch = model_inputs(family, bundle, samples[:4], train=True)
    family.loss(bundle, batch)[0].backward()
    grads = [n for n, p in bundle.model.named_parameters() if p.grad is not None]
    assert set(grads) <= set(names) and grads


@pytest.mark.slow
@pytest.mark.parametrize("tuning", ["full", "lora"])
def test_train_checkpoint_reload_gives_same_predictions(tmp_path, synth_dir, tuning):
    extra = ["model.lora.modules_to_save=[cls]"] if tuning == "lora" else []
    cfg = tiny_cfg(
        synth_dir,
        f"model.tuning={tuning}",
        "train.max_steps=12",
        "train.eval_every=6",
        "train.batch_size=16",
        "data.eval_samples=16",
        *extra,
    )
    result = fit(cfg, tmp_path / "run", progress=False)
    assert result["steps"] == 12
    folder = tmp_path / "run" / "checkpoints" / "step-12"
    assert checkpoint.verify(folder) is None
    assert {p.name for p in folder.iterdir()} >= {
        "config.yaml",
        "weights.safetensors",
        "tokenizer",
        "manifest.json",
        "optimizer.safetensors",
        "scheduler.json",
        "trainer_state.json",
    }
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt"))
    cfg2, family, bundle, _ = load_trained(folder)
    test = load_split(str(synth_dir), "test", progress=False).samples[:20]
    first = predict(family, bundle, test, cfg2, progress=False)
    _, family, again, _ = load_trained(folder)
    assert predict(family, again, test, cfg2, progress=False) == first
    lines = (tmp_path / "run" / "logs" / "train.jsonl").read_text().splitlines()
    assert any('"val_exact_match"' in line for line in lines) and any(
        '"samples_per_s"' in line for line in lines
    )


def test_export_merged_loads_in_plain_transformers(tmp_path, synth_dir):
    from transformers import BlipForQuestionAnswering

    cfg = tiny_cfg(
        synth_dir,
        "model.tuning=lora",
        "model.lora.modules_to_save=[cls]",
        "train.max_steps=2",
        "data.eval_samples=8",
    )
    fit(cfg, tmp_path / "run", progress=False)
    run_cli("export", "--checkpoint", tmp_path / "run", "--out", tmp_path / "merged", "--merge")
    model = BlipForQuestionAnswering.from_pretrained(tmp_path / "merged")
    assert not any("lora" in n for n, _ in model.named_parameters())
    assert "step 2" in (tmp_path / "merged" / "README.md").read_text()
    run_cli("export", "--checkpoint", tmp_path / "run", "--out", tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "adapter" / "base_model" / "config.json").is_file()


def test_real_ids_fail_offline_with_a_clear_message(tmp_path, synth_dir):
    proc = run_cli(
        "eval",
        "--config",
        "configs/blip_zeroshot.yaml",
        "--dataset",
        synth_dir,
        "--out",
        tmp_path,
        check=False,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Salesforce/blip-vqa-base" in proc.stderr and "hf download" in proc.stderr
    proc = run_cli(
        "train",
        "configs/blip_lora.yaml",
        "--out",
        tmp_path / "run",
        "--set",
        f"data.dataset={synth_dir}",
        check=False,
    )
    assert (
        proc.returncode == 2 and "Salesforce/blip-vqa-base" in proc.stderr and "Traceback" not in proc.stderr
    )


@pytest.mark.slow
def test_merged_export_carries_a_processor_that_prepares_images(tmp_path, synth_dir):
    from transformers import AutoProcessor, BlipForQuestionAnswering

    from pathvqa.apps.export import export
    from tests.conftest import noise_image

    fit(tiny_cfg(synth_dir, "train.max_steps=2", "data.eval_samples=8"), tmp_path / "run", progress=False)
    export(tmp_path / "run", tmp_path / "merged")
    processor = AutoProcessor.from_pretrained(tmp_path / "merged")
    inputs = processor(images=noise_image(3, 48), text="what stain is used?", return_tensors="pt")
    assert type(processor).__name__ == "BlipProcessor" and inputs["pixel_values"].shape == (1, 3, 32, 32)
    model = BlipForQuestionAnswering.from_pretrained(tmp_path / "merged")
    out = model.generate(input_ids=inputs["input_ids"], pixel_values=inputs["pixel_values"], max_new_tokens=3)
    assert out.shape[0] == 1
