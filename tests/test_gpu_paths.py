"""GPU-only paths checked on the CPU: the evaluator builds the process state before the model (a 4-bit
model lands on its own rank's GPU), and ``export --merge`` of a QLoRA run merges into its base reloaded
unquantized."""

import shutil
from pathlib import Path

import yaml
from safetensors.torch import load_file

from pathvqa.config import load_config
from pathvqa.evaluation import evaluate
from pathvqa.runtime import checkpoint
from pathvqa.training.stages import fit
from tests.conftest import run_cli

TINY_LORA = [
    "stages=[]", "model.image_size=32", "model.hidden_size=32", "model.tuning=lora",
    "model.lora.modules_to_save=[lm_head]", "model.lora.target_modules=[q_proj, v_proj]", "train.batch_size=8", "train.max_steps=2", "train.eval_every=2",
    "data.eval_samples=8", "eval.max_new_tokens=3", "train.threads=1",
]  # fmt: skip


def test_eval_builds_the_process_state_before_the_model(tmp_path, synth_dir, monkeypatch):
    fit(load_config("configs/llava_tiny.yaml", [f"data.dataset={synth_dir}", *TINY_LORA]), tmp_path / "run")
    order: list[str] = []
    real_accelerator, real_load = evaluate.Accelerator, evaluate.load

    def accelerator(*args, **kwargs):
        order.append("accelerator")
        return real_accelerator(*args, **kwargs)

    def load(*args, **kwargs):
        order.append("model")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(evaluate, "Accelerator", accelerator)
    monkeypatch.setattr(evaluate, "load", load)
    evaluate.run(out=tmp_path / "eval", checkpoint_dir=str(tmp_path / "run"), limit=4, progress=False)
    assert order == ["accelerator", "model"], order


def _as_qlora(run_dir: Path) -> None:
    """What a QLoRA run's config says (its adapter and trained modules are the same files)."""
    for config in [run_dir / "config.yaml", *run_dir.glob("checkpoints/step-*/config.yaml")]:
        raw = yaml.safe_load(config.read_text())
        raw["model"]["quantization"] = "4bit"
        config.write_text(yaml.safe_dump(raw, sort_keys=False))
        if config.parent.name.startswith("step-"):
            checkpoint.write_manifest(config.parent)  # as the run wrote it


def test_export_merge_of_a_qlora_run_merges_into_the_unquantized_base(tmp_path, synth_dir):
    fit(load_config("configs/llava_tiny.yaml", [f"data.dataset={synth_dir}", *TINY_LORA]), tmp_path / "run")
    shutil.copytree(tmp_path / "run", tmp_path / "qlora")
    _as_qlora(tmp_path / "qlora")
    run_cli("export", "--checkpoint", tmp_path / "run", "--out", tmp_path / "plain", "--merge")
    # on this CPU a 4-bit base cannot even load: the export goes through only by reloading it unquantized
    run_cli("export", "--checkpoint", tmp_path / "qlora", "--out", tmp_path / "merged", "--merge")
    config = (tmp_path / "merged" / "config.json").read_text()
    assert "quantization_config" not in config
    plain, merged = (load_file(tmp_path / name / "model.safetensors") for name in ("plain", "merged"))
    assert plain.keys() == merged.keys() and all((plain[k] == merged[k]).all() for k in plain)
    assert not [k for k in merged if "lora_" in k or "base_layer" in k], "the adapter was not merged"
