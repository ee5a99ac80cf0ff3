"""Checks that need CUDA (``make gpu-check`` on a GPU machine; ``make test`` deselects them).

bf16 mixed precision with fp32 master weights; a 4-bit (NF4) language model under LoRA: load, step,
save, reload; two-GPU DDP when there are two GPUs. Tiny sizes and folders built here: no network.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from pathvqa.config import load_config
from pathvqa.data.prepare import load_split
from pathvqa.evaluation.evaluate import predict
from pathvqa.models import tiny
from pathvqa.models.tokenizers import tiny_chat_tokenizer
from pathvqa.runtime.trained import load_trained
from pathvqa.training.stages import Trainer

pytestmark = pytest.mark.gpu
# No validation during training: scoring needs nltk + WordNet, which the GPU machine lacks (and this
# checks CUDA paths, not metrics).
QUICK = ["model.hidden_size=64", "model.num_layers=2", "data.eval_split=null", "eval.max_new_tokens=4"]


@pytest.fixture(autouse=True)
def needs_cuda():
    if not torch.cuda.is_available():
        pytest.fail("no CUDA device: run `make gpu-check` on a GPU machine (make test deselects these)")


def test_bf16_full_fine_tuning_keeps_fp32_master_weights(tmp_path, synth_dir):
    cfg = load_config(
        "configs/blip_tiny.yaml",
        [
            f"data.dataset={synth_dir}",
            *QUICK,
            "train.max_steps=6",
            "train.eval_every=6",
            "train.precision=bf16",
        ],
    )
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    result = trainer.run()
    model = trainer.bundle.model
    assert trainer.accelerator.mixed_precision == "bf16" and next(model.parameters()).is_cuda
    dtypes = {p.dtype for p in model.parameters() if p.requires_grad}
    assert dtypes == {torch.float32}, f"trainable weights must stay fp32 masters, got {dtypes}"
    rows = [json.loads(x) for x in (tmp_path / "run" / "logs" / "train.jsonl").read_text().splitlines()]
    assert result["steps"] == 6 and all(r["loss"] == r["loss"] for r in rows if "loss" in r)
    print("bf16 blip-tiny:", {k: rows[-2].get(k) for k in ("loss", "samples_per_s")})


@pytest.fixture(scope="module")
def language_folder(tmp_path_factory):
    """A Mistral-architecture causal LM saved as a folder (what a downloaded hub id looks like)."""
    root = tmp_path_factory.mktemp("lm")
    tokenizer = tiny_chat_tokenizer()
    torch.manual_seed(0)
    tiny.language_model(tokenizer, 128, 2).save_pretrained(root)
    tokenizer.save_pretrained(root)
    return root


def test_4bit_language_model_lora_step_save_and_reload(tmp_path, synth_dir, language_folder):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        pytest.fail("QLoRA needs bitsandbytes: run `make gpu-wheels` here and carry .whl")
    raw = yaml.safe_load(Path("configs/vlm_tiny.yaml").read_text())
    raw["data"].update(dataset=str(synth_dir), eval_split=None)
    raw["model"].update(vision="tiny-clip", language=str(language_folder), quantization="4bit", tuning="lora")
    raw["model"]["lora"] = {"r": 8, "target_modules": r"language_model\..*\.(q_proj|v_proj)"}
    raw.pop("stages")
    raw["train"].update(max_steps=4, eval_every=4, threads=None)
    raw["eval"]["max_new_tokens"] = 4
    path = tmp_path / "qlora.yaml"
    path.write_text(yaml.safe_dump(raw))
    trainer = Trainer(load_config(path), tmp_path / "run", progress=False)
    trainer.run()
    layers = {type(m).__name__ for m in trainer.bundle.model.modules()}
    assert "Linear4bit" in layers, f"no 4-bit layers in {sorted(layers)[:20]}"
    cfg, family, bundle, _folder = load_trained(tmp_path / "run")
    test = load_split(str(synth_dir), "test", progress=False).samples[:32]
    first = predict(family, bundle, test, cfg, progress=False)
    again = predict(*load_trained(tmp_path / "run")[1:3], test, cfg, progress=False)
    assert first == again and len(first) == 32
    print("4-bit tiny-mistral LoRA: peak GPU memory", round(torch.cuda.max_memory_allocated() / 2**20), "MiB")


def test_two_gpu_ddp_matches_one(tmp_path, synth_dir):
    if torch.cuda.device_count() < 2:
        pytest.skip(f"{torch.cuda.device_count()} GPU: DDP over two GPUs needs two")
    sets = [f"--set=data.dataset={synth_dir}", *(f"--set={s}" for s in QUICK), "--set=train.max_steps=4"]
    for n in (1, 2):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(n)]
        cmd += (["--multi_gpu"] if n > 1 else []) + ["-m", "pathvqa", "train", "configs/blip_tiny.yaml"]
        cmd += ["--out", str(tmp_path / f"run{n}"), *sets]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
