"""model.family hf: each tiny architecture trains, evaluates, reloads and exports through the one recipe,
and the export answers through transformers' own pipeline as it answers in pathvqa."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pathvqa.apps.export import export
from pathvqa.config import load_config
from pathvqa.data.batches import ImagePipeline
from pathvqa.data.prepare import load_split
from pathvqa.errors import ModelLoadError
from pathvqa.evaluation.evaluate import predict, run
from pathvqa.models import tiny_hf
from pathvqa.models.hf import render_prompt
from pathvqa.models.registry import build
from pathvqa.runtime.trained import load_trained
from pathvqa.training.stages import fit
from tests.conftest import model_inputs, run_cli

ARCHS = ["blip2", "llava", "qwen25vl", "paligemma", "smolvlm"]
SMOKE = [
    "stages=[]",  # llava_tiny trains in two stages (align, instruct); a smoke test trains once
    "model.image_size=32",
    "model.hidden_size=64",
    "train.batch_size=16",
    "train.max_steps=30",
    "train.eval_every=30",
    "train.log_every=5",
    "data.eval_samples=16",
    "eval.max_new_tokens=4",
    "eval.min_new_tokens=2",
]


def hf_cfg(synth_dir, arch, *extra):
    return load_config(f"configs/{arch}_tiny.yaml", [f"data.dataset={synth_dir}", *SMOKE, *extra])


@pytest.fixture(scope="module")
def test_samples(synth_dir):
    return load_split(str(synth_dir), "test", progress=False).samples[:12]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_architecture_trains_reloads_exports_and_answers_in_the_pipeline(
    tmp_path, synth_dir, test_samples, arch
):
    fit(hf_cfg(synth_dir, arch), tmp_path / "run", progress=False)
    losses = [
        json.loads(x)["loss"]
        for x in (tmp_path / "run/logs/train.jsonl").read_text().splitlines()
        if '"loss"' in x
    ]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.5, f"loss did not fall: {losses}"

    cfg, family, bundle, _ = load_trained(tmp_path / "run")
    in_process = predict(family, bundle, test_samples, cfg, progress=False)
    assert all(row["prediction"] for row in in_process), "min_new_tokens gives every question an answer"
    run(out=tmp_path / "eval", checkpoint_dir=str(tmp_path / "run"), limit=12, progress=False)
    written = [json.loads(x) for x in (tmp_path / "eval" / "predictions.jsonl").read_text().splitlines()]
    assert all(("seen" in r) == (r["type"] == "open") for r in written)  # open rows: answer seen in train?
    added = ("seen", "confidence")  # what eval adds: the answer's seen flag, its calibrated confidence
    written = [{k: v for k, v in r.items() if k not in added} for r in written]
    sampled = load_split(str(synth_dir), "test", samples=12, seed=cfg.data.seed, progress=False).samples
    assert written == predict(family, bundle, sampled, cfg, progress=False), "eval --checkpoint = in-process"

    export(tmp_path / "run", tmp_path / "export")
    from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "export")
    processor = AutoProcessor.from_pretrained(tmp_path / "export")
    assert type(model) is type(bundle.model) and type(processor) is type(bundle.processor)
    card = (tmp_path / "export" / "README.md").read_text()
    assert "pipeline_tag: image-text-to-text" in card and str(synth_dir) in card
    pipe = pipeline("image-text-to-text", model=model, processor=processor)
    tiles = ImagePipeline(bundle.image_size).batch(test_samples[:4])
    for sample, tile, row in zip(test_samples[:4], tiles, in_process[:4], strict=True):
        picture = Image.fromarray(tile.permute(1, 2, 0).numpy())
        out = pipe(
            images=picture, text=render_prompt(bundle, sample.question), return_full_text=False,
            generate_kwargs={"max_new_tokens": 4, "min_new_tokens": 2, "do_sample": False},
        )  # fmt: skip
        assert out[0]["generated_text"].strip() == row["prediction"], (sample.question, out, row)


def test_the_loss_covers_the_answer_tokens_only(synth_dir, test_samples):
    for arch in ARCHS:
        family, bundle = build(hf_cfg(synth_dir, arch))
        chosen = test_samples[:4]
        batch = model_inputs(family, bundle, chosen, train=True)
        tokenizer = bundle.processor.tokenizer
        for row, sample in zip(batch["labels"], chosen, strict=True):
            answer = tokenizer.decode(row[row != -100], skip_special_tokens=True).strip()
            assert answer == sample.target, (arch, answer, sample.target)
        images = batch["input_ids"] == bundle.image_token_id
        assert images.any() and (batch["labels"][images] == -100).all(), arch
        assert (batch["labels"][batch["attention_mask"] == 0] == -100).all(), arch


def new_token_ids(bundle, batch) -> list[list[int]]:
    out = bundle.model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    return out[:, batch["input_ids"].shape[1] :].tolist()


@pytest.mark.slow
def test_batched_generation_answers_as_one_at_a_time(synth_dir, test_samples):
    """Left padding: a question gets the same tokens in a batch as alone (compared as token ids: a random
    PaliGemma emits its added <loc>/<seg> tokens, which decode to empty strings)."""
    for arch in ARCHS:
        family, bundle = build(hf_cfg(synth_dir, arch))
        bundle.model.eval()
        chosen = sorted(test_samples[:5], key=lambda s: len(s.question))
        batch = model_inputs(family, bundle, chosen, train=False)
        assert (batch["attention_mask"] == 0).any() or arch == "paligemma", f"{arch}: no padding exercised"
        together = new_token_ids(bundle, batch)
        alone = [new_token_ids(bundle, model_inputs(family, bundle, [s], train=False))[0] for s in chosen]
        assert together == alone, arch
        eval_cfg = hf_cfg(synth_dir, arch).eval
        answers = [g.text for g in family.generate(bundle, batch, eval_cfg)]
        one = [
            family.generate(bundle, model_inputs(family, bundle, [s], train=False), eval_cfg)[0].text
            for s in chosen
        ]
        assert answers == one, arch


def test_lora_preset_wraps_the_language_model_only(synth_dir):
    sets = ["model.tuning=lora", "model.train_vision=false", "model.train_connector=false"]
    _, bundle = build(hf_cfg(synth_dir, "llava", *sets))
    trainable = [n for n, p in bundle.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and ".language_model." in n for n in trainable)
    _family, bundle = build(
        hf_cfg(synth_dir, "llava", "model.tuning=lora", "model.lora.target_modules=[q_proj]")
    )
    wrapped = {
        n.split(".layers.")[0] for n, p in bundle.model.named_parameters() if p.requires_grad and "lora_" in n
    }
    assert any("language_model" in n for n in wrapped) and any("vision_tower" in n for n in wrapped), wrapped


REAL = {
    "blip2_qlora": "Salesforce/blip2-opt-2.7b",
    "llava15_qlora": "llava-hf/llava-1.5-7b-hf",
    "qwen25vl_lora": "Qwen/Qwen2.5-VL-3B-Instruct",
    "paligemma2_lora": "google/paligemma2-3b-pt-224",
    "smolvlm_full": "HuggingFaceTB/SmolVLM-256M-Instruct",
}


def test_real_hf_configs_validate_and_fail_offline_in_one_line(tmp_path):
    for name, repo in REAL.items():
        cfg = load_config(f"configs/{name}.yaml")
        assert cfg.model.name == repo
        if cfg.model.quantization == "4bit":  # on this CPU machine: said first, before any load
            with pytest.raises(ModelLoadError, match="needs a CUDA GPU"):
                build(cfg)
            cfg = load_config(f"configs/{name}.yaml", ["model.quantization=none"])
        with pytest.raises(ModelLoadError) as err:
            build(cfg)
        assert repo in str(err.value) and "\n" not in str(err.value) and "hf download" in str(err.value)
    sets = ["--set", "model.quantization=none"]
    proc = run_cli("eval", "--config", "configs/blip2_qlora.yaml", "--out", tmp_path, *sets, check=False)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and REAL["blip2_qlora"] in lines[0], proc.stderr[-500:]


def test_uint8_tiles_go_to_the_processor_as_they_are(synth_dir, test_samples):
    """The family takes the data layer's uint8 tensors as they are (no PIL round trip)."""
    family, bundle = build(hf_cfg(synth_dir, "qwen25vl"))
    images = torch.from_numpy(np.stack([np.zeros((3, 32, 32), np.uint8)] * 2))
    batch = family.inputs(bundle, test_samples[:2], images, "vqa", train=False).tensors
    assert batch["image_grid_thw"].tolist() == [[1, 4, 4], [1, 4, 4]]


def test_train_connector_trains_what_joins_vision_to_language_only(synth_dir):
    expected = {
        "llava": "model.multi_modal_projector.",
        "qwen25vl": "model.visual.merger.",
        "smolvlm": "model.connector.",
    }
    for arch, prefix in expected.items():
        sets = ["model.tuning=frozen", "model.train_connector=true", "model.train_vision=false"]
        _, bundle = build(hf_cfg(synth_dir, arch, *sets))
        trainable = [n for n, p in bundle.model.named_parameters() if p.requires_grad]
        assert trainable and all(n.startswith(prefix) for n in trainable), (arch, trainable[:3])


def test_tiny_llava_starts_from_a_timm_like_vision_tower():
    """From Hugging Face's CLIP initialisation (scaled for the real widths) a width-64 tower hardly learns the
    image on the embedded set (docs/study/demo.md): the tiny LLaVA's tower starts as timm initialises a ViT,
    and at 96 px its patches are 12 px, so the language model still gets 64 image tokens."""
    processor, model = tiny_hf.llava(64, 3, 96)
    tower = model.model.vision_tower
    linears = [m for m in tower.modules() if isinstance(m, torch.nn.Linear)]
    assert linears and all(m.bias.abs().max() == 0 for m in linears)
    assert max(abs(m.weight.std().item() - 0.02) for m in linears) < 0.004
    assert tower.config.patch_size == processor.patch_size == 12
    assert model.config.image_seq_length == 64


def test_tiny_llava_says_a_word_with_the_vector_it_reads_it_with():
    """Tied embeddings and heads of 16 dimensions with their own keys and values: without them the tiny
    LLaVA answers organ yes/no questions as the question-only prior does (docs/study/demo.md)."""
    _, model = tiny_hf.llava(64, 3, 96)
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    text = model.config.text_config
    assert text.num_attention_heads == text.num_key_value_heads == 4
    assert model.config.vision_config.num_attention_heads == 4


def test_a_lora_head_of_a_tied_model_stays_its_embedding(synth_dir):
    """``modules_to_save=[lm_head]`` on a model with tied embeddings: without peft's ``ensure_weight_tying``
    the trained head is a copy that leaves the embedding behind (and a tied export keeps only one)."""
    lora = ["model.tuning=lora", "model.lora.modules_to_save=[lm_head]", "model.lora.target_modules=[q_proj]"]
    _, bundle = build(hf_cfg(synth_dir, "llava", *lora))
    model = bundle.model.get_base_model()
    trained = [p for p in bundle.model.parameters() if p.requires_grad]
    hidden = model.model.language_model(input_ids=torch.randint(5, 50, (2, 6))).last_hidden_state
    model.lm_head(hidden).logsumexp(-1).mean().backward()
    torch.optim.SGD(trained, lr=1.0).step()

    def active(module):  # a module peft trains whole is wrapped; the wrapper's copy is the one used
        return (
            module.modules_to_save["default"].weight if hasattr(module, "modules_to_save") else module.weight
        )

    head, embed = active(model.lm_head), active(model.model.language_model.embed_tokens)
    assert head is embed or torch.equal(head, embed)
