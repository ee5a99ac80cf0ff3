"""Real hub models, proven offline: the real configs, processors, tokenizers and chat templates of
Qwen2.5-VL, LLaVA-1.5, Mistral and BiomedCLIP (``make hub-files`` fetches every non-weight file into ``.hub-cache/``; ``../shared/hub-cache`` is read when that is absent) through
``train → eval → export --merge → load → predict`` with ``model.init: random``; ``pathvqa plan``'s
parameter counts against each architecture's own; the training prompt against the model's own chat
template. Widths are narrowed here (``model.config_overrides``) to keep the suite fast; the processor,
tokenizer, template and depth-cut are the real ones."""

import json
import os
from pathlib import Path

import pytest
import torch

from tests.conftest import run_cli

ROOT = Path(__file__).resolve().parent.parent
CACHES = (ROOT / ".hub-cache" / "hub", ROOT.parent / "shared" / "hub-cache" / "hub")
"""Where the real models' non-weight files are: ``make hub-files`` fills the first (it needs the hub)."""
HUB = next((cache for cache in CACHES if cache.is_dir()), CACHES[0])
pytestmark = pytest.mark.skipif(
    not HUB.is_dir(),
    reason="no hub cache: run `make hub-files` (the real models' non-weight files, no weights)",
)
QWEN_3B, QWEN_7B = "Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen2.5-VL-7B-Instruct"
LLAVA, MISTRAL = "llava-hf/llava-1.5-7b-hf", "mistralai/Mistral-7B-Instruct-v0.3"
NARROW = {
    "qwen25vl_lora": "{text_config.hidden_size: 256, text_config.intermediate_size: 256, "
    "text_config.num_attention_heads: 2, text_config.num_key_value_heads: 1, vision_config.hidden_size: 64, "
    "vision_config.intermediate_size: 128, vision_config.num_heads: 4, vision_config.out_hidden_size: 256}",
    "llava15_qlora": "{text_config.hidden_size: 64, text_config.intermediate_size: 128, "
    "text_config.num_attention_heads: 4, text_config.num_key_value_heads: 4, vision_config.hidden_size: 64, "
    "vision_config.intermediate_size: 128, vision_config.num_attention_heads: 4}",
    "biomedclip_mistral_vqa": "{hidden_size: 64, intermediate_size: 128, num_attention_heads: 4, "
    "num_key_value_heads: 2, head_dim: 16}",
}
"""Narrow twins (the real architecture at 2 blocks a tower, these widths) that train in seconds."""


@pytest.fixture
def hub(monkeypatch):
    """The cache for this process (huggingface_hub reads its constant at call time) and its children."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_CACHE", str(HUB))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(HUB))
    return HUB


def sets(*pairs: str) -> list[str]:
    return [a for pair in pairs for a in ("--set", pair)]


def dry_run(config: str, synth_dir: Path) -> list[str]:
    common = [
        "model.init=random", "model.max_layers=2", f"model.config_overrides={NARROW[config]}",
        f"data.dataset={synth_dir}", "data.train_samples=8", "data.eval_samples=4", "train.batch_size=2",
        "train.grad_accum=1", "train.num_workers=0", "train.threads=2", "eval.batch_size=4",
        "eval.max_new_tokens=3",
    ]  # fmt: skip
    if config == "qwen25vl_lora":
        common += ["train.max_steps=2", "model.image_size=56"]
    if config == "llava15_qlora":
        common += ["train.max_steps=2", "model.quantization=none"]
    if config == "biomedclip_mistral_vqa":
        common += [
            "model.quantization=none",
            "stages.align.train.max_steps=1",
            "stages.instruct.train.max_steps=1",
        ]
    return sets(*common)


@pytest.mark.slow
@pytest.mark.parametrize("config", ["qwen25vl_lora", "llava15_qlora", "biomedclip_mistral_vqa"])
def test_train_eval_export_load_predict_with_the_real_processor(config, hub, tmp_path, synth_dir):
    run_dir = tmp_path / "run"
    run_cli("train", f"configs/{config}.yaml", "--out", run_dir, *dry_run(config, synth_dir))
    run_cli("eval", "--checkpoint", run_dir, "--out", run_dir / "eval", "--limit", "4")
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["random_weights"] is True and metrics["n"] == 4
    merged = tmp_path / "merged"
    run_cli("export", "--checkpoint", run_dir, "--out", merged, "--merge")
    card = (merged / "README.md").read_text()
    assert "random weights" in card and "**Limited evaluation**" in card and "4 of 80 rows" in card
    assert "\n  hidden_size:" not in card and "\n  num_layers:" not in card, (
        "tiny-size keys on a hub model's card"
    )
    if config == "biomedclip_mistral_vqa":  # the LM half is a plain causal LM folder
        from transformers import AutoModelForCausalLM, AutoTokenizer

        AutoTokenizer.from_pretrained(merged / "language_model")
        model = AutoModelForCausalLM.from_pretrained(merged / "language_model")
    else:
        from transformers import AutoModelForImageTextToText, AutoProcessor

        AutoProcessor.from_pretrained(merged)
        model = AutoModelForImageTextToText.from_pretrained(merged)
    assert getattr(model.config, "quantization_config", None) is None
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 120, 160)).save(tmp_path / "tile.png")
    answer = run_cli(
        "predict", "--checkpoint", merged, "--image", tmp_path / "tile.png", "--question", "is it?"
    )
    assert "random weights" in answer.stderr
    if config == "qwen25vl_lora":  # its merger's windows: the hardest patch grid to put back in place
        where_it_looked(merged, tmp_path)


def where_it_looked(merged: Path, tmp_path: Path) -> None:
    """``explain``'s map of an answer through the real architecture, processor and patch grid: at the image's
    own size (a non-square image), non-negative, not constant."""
    import io

    import numpy as np
    from PIL import Image

    from pathvqa.data.prepare import Sample
    from pathvqa.evaluation.explain import answer_maps
    from pathvqa.runtime.trained import load_trained

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(
        buffer, "PNG"
    )
    sample = Sample("q0", buffer.getvalue(), "k", "is there necrosis?", "yes", "yes", "closed")
    _, family, bundle, _ = load_trained(merged)
    (saliency,) = answer_maps(family, bundle, [sample], ["yes"])
    assert saliency.shape == (64, 80) and (saliency >= 0).all() and np.ptp(saliency) > 0


@pytest.mark.slow
def test_plan_counts_each_architecture_as_it_counts_itself(hub):
    """Base totals (before adapters) equal the architectures' own counts; peft's trainable count."""
    from pathvqa.analysis.plan import plan
    from pathvqa.config import load_config

    expected = {QWEN_3B: 3_754_622_976, QWEN_7B: 8_292_166_656, LLAVA: 7_063_427_072}
    for name, total in expected.items():
        config = "configs/llava15_qlora.yaml" if name == LLAVA else "configs/qwen25vl_lora.yaml"
        (stage,) = plan(load_config(config, [f"model.name={name}"]))["stages"]
        assert stage["parameters"]["base_total"] == total, name
    stages = plan(load_config("configs/biomedclip_mistral_vqa.yaml"))["stages"]
    assert [s["parameters"]["language_model"] for s in stages] == [7_248_023_552] * 2
    assert stages[0]["parameters"]["adapters"] == 0 and stages[1]["parameters"]["adapters"] > 0
    shown = run_cli("plan", "configs/qwen25vl_lora.yaml", "--json").stdout
    assert json.loads(shown)["stages"][0]["parameters"]["base_total"] == 3_754_622_976


@pytest.mark.parametrize("config", ["qwen25vl_lora", "llava15_qlora"])
def test_plans_trainable_count_is_peft_own(config, hub):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForImageTextToText

    from pathvqa.analysis.plan import plan
    from pathvqa.config import load_config
    from pathvqa.models.hf_archs import ARCHITECTURES

    cfg = load_config(f"configs/{config}.yaml")
    (stage,) = plan(cfg)["stages"]
    hub_config = AutoConfig.from_pretrained(cfg.model.name)
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(hub_config)
    lora = cfg.model.lora
    targets = ARCHITECTURES[hub_config.model_type].language_targets
    model = get_peft_model(model, LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=targets))
    assert stage["parameters"]["trainable"] == model.get_nb_trainable_parameters()[0]


@pytest.mark.parametrize("name", [QWEN_3B, QWEN_7B, LLAVA])
def test_the_training_prompt_is_the_models_own_and_the_loss_covers_the_answer(name, hub):
    """pathvqa renders the generation prompt token for token as the model's own chat template does; in
    training the loss covers the answer and the end-of-turn token, nothing else."""
    from pathvqa.config import load_config
    from pathvqa.data.prepare import Sample
    from pathvqa.models.hf import render_prompt
    from pathvqa.models.registry import build

    cfg = load_config(
        "configs/qwen25vl_lora.yaml",
        ["model.init=random", "model.max_layers=1", "model.image_size=56", f"model.name={name}",
         "model.tuning=frozen", "model.gradient_checkpointing=false"],
    )  # fmt: skip
    with torch.device("meta"):
        family, bundle = build(cfg)
    processor = bundle.processor
    question = "what does the tissue show?"
    own = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    ours = render_prompt(bundle, question)
    tokenize = processor.tokenizer
    assert (
        tokenize(ours, add_special_tokens=False)["input_ids"]
        == tokenize(own, add_special_tokens=False)["input_ids"]
    )
    sample = Sample("s", b"", "k", question, "necrosis", "necrosis", "open")
    image = torch.zeros(1, 3, bundle.image_size, bundle.image_size, dtype=torch.uint8)
    with torch.device("cpu"):
        tensors = family.inputs(bundle, [sample], image, "vqa", True).tensors
    covered = tensors["labels"][0][tensors["labels"][0] != -100].tolist()
    end = "<|im_end|>" if "Qwen" in name else processor.tokenizer.eos_token
    wanted = tokenize("necrosis", add_special_tokens=False)["input_ids"]  # in context: one word, no space
    assert covered == [*wanted, tokenize.convert_tokens_to_ids(end)], tokenize.decode(covered)


def test_4bit_on_a_cpu_machine_stops_in_one_line_before_anything_loads(hub, tmp_path):
    proc = run_cli(
        "train", "configs/llava15_qlora.yaml", "--out", tmp_path / "run", check=False, process=True
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "needs a CUDA GPU" in lines[0], proc.stderr
    assert "model.quantization=none" in lines[0] and not (tmp_path / "run").exists()


def test_a_gated_id_names_the_licence_page_and_hf_auth_login():
    from pathvqa.models.base import load_error

    err = OSError("You are trying to access a gated repo.\nMake sure to have access to it.")
    text = str(load_error("language model", MISTRAL, err))
    assert "hf auth login" in text and f"https://huggingface.co/{MISTRAL}" in text


def test_the_cache_is_read_only_offline():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_the_vlm_prompt_around_mistral_is_its_own_chat_template(hub):
    """The vlm family's prompt is Mistral's own chat template around the image slot, token for token on
    each side of it, and a training row is that template's whole turn: answer then </s>, all in the loss."""
    from transformers import AutoTokenizer

    from pathvqa.models.vlm import IMAGE_TOKEN_INDEX, ChatPrompt

    tokenizer = AutoTokenizer.from_pretrained(MISTRAL)
    prompt, question = ChatPrompt(tokenizer), "what does the tissue show?"
    user = {"role": "user", "content": f"<image>\n{question}"}
    own = tokenizer.apply_chat_template([user], add_generation_prompt=True, tokenize=False)
    before, after = own.split("<image>")
    ids = prompt.ids(question)
    cut = ids.index(IMAGE_TOKEN_INDEX)
    encode = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    assert ids[:cut] == encode(before) and ids[cut + 1 :] == encode(after)
    whole = tokenizer.apply_chat_template(
        [user, {"role": "assistant", "content": "necrosis"}], tokenize=False
    )
    assert whole.endswith("necrosis</s>") and whole.startswith(own)
    assert [*encode("necrosis"), tokenizer.eos_token_id] == encode(whole.removeprefix(own)), (
        "the loss covers the answer and </s>, exactly the template's assistant turn"
    )


BAD_OVERRIDES = {
    "{text_config.hidden_size: -5}": "text_config.hidden_size=-5",
    "{vision_config: 3}": "vision_config=3",
    "{text_config.num_attention_heads: 7}": "text_config.num_attention_heads=7",
}


@pytest.mark.parametrize("command", ["plan", "train"])
def test_a_value_the_architecture_rejects_is_one_line_naming_the_key(hub, tmp_path, synth_dir, command):
    out = ["--out", tmp_path / "run"] if command == "train" else []
    for value, key in BAD_OVERRIDES.items():
        args = [
            command,
            "configs/qwen25vl_lora.yaml",
            *out,
            *sets("model.init=random", f"data.dataset={synth_dir}"),
        ]
        proc = run_cli(*args, "--set", f"model.config_overrides={value}", check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and key in lines[0], proc.stderr[-600:]
        assert lines[0].startswith("error: model.config_overrides: ") and not (tmp_path / "run").exists()


def test_max_layers_that_cuts_nothing_is_refused(hub):
    proc = run_cli(
        "plan", "configs/qwen25vl_lora.yaml", *sets("model.init=random", "model.max_layers=500"), check=False
    )
    assert proc.returncode == 2 and "nothing would be cut" in proc.stderr, proc.stderr[-600:]


def test_a_successful_plan_prints_no_library_deprecation_notices(hub):
    proc = run_cli("plan", "configs/qwen25vl_lora.yaml", *sets("model.init=random", "model.max_layers=2"))
    assert "FutureWarning" not in proc.stderr and "deprecated" not in proc.stderr, proc.stderr[-1500:]


def test_plan_names_the_load_dtype_and_says_it_is_an_estimate(hub):
    shown = json.loads(run_cli("plan", "configs/llava15_qlora.yaml", "--json").stdout)
    assert shown["estimate"] is True and shown["stages"][0]["load_dtype"].startswith("NF4")
    text = run_cli("plan", "configs/qwen25vl_lora.yaml").stdout
    assert "not a measurement" in text and "weights load as bf16" in text and "(bf16; measured" not in text
