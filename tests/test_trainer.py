"""The training recipe's contracts: accumulation windows, clipping the prepared model, the config as the
one source of truth for accumulation, image caching with workers, fp32 master weights, sharded refusal."""

import logging

import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import DeepSpeedPlugin
from safetensors.torch import load_file

from pathvqa.config import load_config
from pathvqa.errors import PathVQAError
from pathvqa.models.base import ModelInputs
from pathvqa.models.registry import build
from pathvqa.runtime import checkpoint
from pathvqa.runtime.processes import make_accelerator, upcast_trainable
from pathvqa.training.stages import Trainer, fit
from tests.conftest import model_inputs

QUICK = [
    "model.hidden_size=32",
    "model.num_layers=1",
    "model.image_size=32",
    "train.threads=2",
    "train.warmup_ratio=0",
    "data.eval_split=null",
]


def cfg_for(synth_dir, *extra, config="blip_tiny"):
    return load_config(f"configs/{config}.yaml", [f"data.dataset={synth_dir}", *QUICK, *extra])


def final_weights(run_dir):
    return load_file(str(checkpoint.latest_valid(run_dir) / "weights.safetensors"))


@pytest.mark.parametrize(
    "config, average", [("blip_tiny", "tokens"), ("vlm_tiny", "tokens"), ("vlm_tiny", "answers")]
)
def test_batch_16_times_accumulation_2_takes_the_steps_of_batch_32(tmp_path, synth_dir, config, average):
    # vlm_tiny in one stage, encoder frozen: Adam's first step turns float noise in the patch-embedding
    # gradient (32 images summed in one or two convolutions) into ~9e-7, too close to the bar to be a
    # test of the loop; BLIP trains its vision tower here. The two halves hold different numbers of
    # target tokens, so each average must be divided over the whole window
    stage = ["stages=[]", "model.tuning=full"] if config == "vlm_tiny" else []
    stage.append(f"train.loss_average={average}")
    runs = {}
    for name, batch, accum in (("b32", 32, 1), ("b16x2", 16, 2)):
        sets = [*stage, f"train.batch_size={batch}", f"train.grad_accum={accum}", "train.max_steps=2"]
        result = fit(cfg_for(synth_dir, *sets, config=config), tmp_path / name, progress=False)
        assert result["steps"] == 2
        runs[name] = final_weights(tmp_path / name)
    _, initial = build(cfg_for(synth_dir, *stage, config=config))
    start = initial.model.state_dict()
    worst = max((runs["b32"][k] - runs["b16x2"][k]).abs().max().item() for k in runs["b32"])
    moved = max((runs["b32"][k] - start[k]).abs().max().item() for k in runs["b32"])
    print(f"{config}: max |w(16x2) - w(32)| = {worst:.2e}, moved {moved:.2e}")
    assert worst < 1e-6 and moved > 1e-3


def test_the_last_window_of_an_epoch_may_be_short(tmp_path, synth_dir):
    # 240 rows / batch 64 = 4 micro-batches per epoch; accumulation 3 → windows of 3 and 1: 2 steps an epoch
    cfg = cfg_for(synth_dir, "train.batch_size=64", "train.grad_accum=3", "train.epochs=2")
    result = fit(cfg, tmp_path / "run", progress=False)
    assert result["steps"] == 4


def test_gradients_are_clipped_on_the_prepared_model(tmp_path, synth_dir, monkeypatch):
    """FSDP clips only when given exactly the prepared model's parameters (accelerate compares lists)."""
    seen = []
    real = Accelerator.clip_grad_norm_

    def recording(self, parameters, max_norm, norm_type=2):
        parameters = list(parameters)
        seen.append([p is q for p, q in zip(parameters, self._models[0].parameters(), strict=True)])
        return real(self, parameters, max_norm, norm_type)

    monkeypatch.setattr(Accelerator, "clip_grad_norm_", recording)
    fit(cfg_for(synth_dir, "train.max_steps=2", "train.batch_size=16"), tmp_path / "run", progress=False)
    assert len(seen) == 2 and all(all(same) for same in seen)


def test_the_experiment_config_sets_accumulation_whatever_the_launch_config_says(
    tmp_path, synth_dir, monkeypatch, caplog
):
    # what `accelerate launch --config_file deepspeed_zero2.yaml` exports when the file says 1
    monkeypatch.setenv("ACCELERATE_GRADIENT_ACCUMULATION_STEPS", "1")
    monkeypatch.setenv("ACCELERATE_GRADIENT_CLIPPING", "1.0")
    cfg = cfg_for(synth_dir, "train.grad_accum=2", "train.max_grad_norm=0.5")
    with caplog.at_level(logging.WARNING):
        accelerator = make_accelerator(cfg, tmp_path)
    assert accelerator.gradient_accumulation_steps == 2
    assert "train.grad_accum" in caplog.text
    plugin = DeepSpeedPlugin()  # as accelerate builds it from the launch environment
    assert plugin.deepspeed_config["gradient_accumulation_steps"] == 2
    assert plugin.deepspeed_config["gradient_clipping"] == 0.5
    sets = ["train.grad_accum=2", "train.batch_size=40", "train.epochs=3"]
    trainer = Trainer(cfg_for(synth_dir, *sets), tmp_path / "run", progress=False)
    try:
        trainer.setup()
        assert (
            trainer.accum == 2 and trainer.total_steps == 3 * 3
        )  # 240 rows / 40 = 6 micro → 3 steps × 3 epochs
    finally:
        trainer.close()


def test_cached_images_with_workers_train_like_without(tmp_path, synth_dir):
    weights = {}
    for workers in (0, 2):
        sets = ["train.max_steps=3", "train.batch_size=16", f"train.num_workers={workers}"]
        trainer = Trainer(cfg_for(synth_dir, *sets), tmp_path / f"w{workers}", progress=False)
        trainer.run()
        if workers:  # decoded in the main process before the workers forked
            cache = trainer.collate.pipeline.cache
            assert len(cache) == len({s.image_key for s in trainer.samples})
        weights[workers] = final_weights(tmp_path / f"w{workers}")
    assert all(torch.equal(weights[0][k], weights[2][k]) for k in weights[0])


def test_trainable_weights_become_fp32_masters_and_frozen_ones_keep_their_dtype():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2)).to(torch.bfloat16)
    model[0].requires_grad_(False)
    assert upcast_trainable(model) == 2
    assert model[0].weight.dtype == torch.bfloat16 and model[1].weight.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(3, 4, dtype=torch.bfloat16)).float().sum().backward()
    assert model[1].weight.grad.dtype == torch.float32


def test_validation_under_sharded_weights_is_refused_with_a_clear_message(tmp_path, synth_dir, monkeypatch):
    import pathvqa.training.loop as loop

    monkeypatch.setattr(loop, "sharded", lambda accelerator: True)
    cfg = load_config("configs/blip_tiny.yaml", [f"data.dataset={synth_dir}", *QUICK[:-1]])
    with pytest.raises(PathVQAError, match=r"data\.eval_split=null"):
        Trainer(cfg, tmp_path / "run", progress=False).run()


def test_averaged_over_answers_each_answer_weighs_the_same_whatever_its_length(tmp_path, synth_dir):
    """``train.loss_average: answers`` against torch's own per-answer cross-entropy means."""
    cfg = cfg_for(synth_dir, "train.loss_average=answers", "stages=[]", config="llava_tiny")
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    trainer.setup()
    try:
        inputs = ModelInputs.with_labels(
            model_inputs(trainer.family, trainer.bundle, trainer.samples[:8], True)
        )
        with torch.no_grad():
            summed = trainer._summed_loss(inputs)
            tensors = {k: v for k, v in inputs.tensors.items() if k != "labels"}
            logits = trainer.bundle.model(**tensors).logits
        trainer.cfg = cfg.model_copy(
            update={"train": cfg.train.model_copy(update={"loss_average": "tokens"})}
        )
        with torch.no_grad():
            tokens = trainer._summed_loss(inputs)
    finally:
        trainer.close()
    labels = inputs.tensors["labels"]
    lengths = (labels != -100).sum(-1)
    assert inputs.answers == 8 and len(set(lengths.tolist())) > 1  # short and long answers
    per_answer = [torch.nn.functional.cross_entropy(logits[i, :-1], labels[i, 1:]) for i in range(8)]
    assert summed.item() == pytest.approx(sum(per_answer).item(), rel=1e-5)
    every_token = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten())
    assert tokens.item() == pytest.approx(every_token.item() * inputs.targets, rel=1e-5)
