"""Several processes (accelerate launch --cpu, gloo) train to the same weights as one, and evaluation
writes every question exactly once."""

import json
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from pathvqa.config import load_config
from pathvqa.evaluation.evaluate import run
from pathvqa.models.registry import build
from pathvqa.synth import generator as synthetic
from pathvqa.training.stages import fit
from tests.conftest import SMALL

TINY = [
    *SMALL,
    "train.max_steps=4",
    "train.eval_every=4",
    "train.warmup_ratio=0",
    "data.eval_samples=8",
    "eval.max_new_tokens=3",
]


def launch(processes: int, *args) -> subprocess.CompletedProcess:
    """``accelerate launch --multi_gpu --num_processes N -m pathvqa ARGS``: torchrun under the hood; on a
    machine without CUDA the processes join with gloo. The one-process references run in this process."""
    mode = ["--multi_gpu", "--main_process_port", str(29400 + processes)]
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", *mode, "--num_processes", str(processes),
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "pathvqa", *map(str, args),
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("\n") == 1, "only the main process prints the summary"
    return proc


@pytest.fixture(scope="module")
def data_101(tmp_path_factory):
    out = tmp_path_factory.mktemp("d101")
    synthetic.write(out, {"train": 64, "validation": 16, "test": 101}, size=32, seed=3, progress=False)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("config", ["blip_tiny", "vlm_tiny"])
def test_two_processes_reach_the_weights_of_one(tmp_path, data_101, config):
    sets = [f"--set=data.dataset={data_101}", *(f"--set={s}" for s in TINY)]
    if config == "vlm_tiny":  # both stages, a few steps each
        sets += [
            f"--set=stages.{stage}.train.{k}"
            for stage in ("align", "instruct")
            for k in ("max_steps=3", "eval_every=3")
        ]
    cfg = load_config(f"configs/{config}.yaml", [s.removeprefix("--set=") for s in sets])
    fit(cfg, tmp_path / "run1", progress=False)  # one process: this one (a launch would only add imports)
    launch(2, "train", f"configs/{config}.yaml", "--out", tmp_path / "run2", *sets)
    ones = sorted((tmp_path / "run1").rglob("weights.safetensors"))
    twos = sorted((tmp_path / "run2").rglob("weights.safetensors"))
    assert ones and [p.relative_to(tmp_path / "run1") for p in ones] == [
        p.relative_to(tmp_path / "run2") for p in twos
    ]
    first, second = load_file(str(ones[-1])), load_file(str(twos[-1]))
    _, initial = build(cfg.stage_config(cfg.stages[0]) if cfg.stages else cfg)
    start = initial.model.state_dict()
    assert first.keys() == second.keys()
    assert (twos[-1].parent / "rng-1.safetensors").is_file(), "two processes joined one group"
    assert not (ones[-1].parent / "rng-1.safetensors").exists()
    moved = max((first[k] - start[k]).abs().max().item() for k in first)
    worst = max((first[k] - second[k]).abs().max().item() for k in first)
    print(f"{config}: max |w2 - w1| = {worst:.2e}; max |w1 - w_initial| = {moved:.2e}")
    assert worst < 1e-4, f"2-process weights differ from 1-process by up to {worst}"
    assert moved > 100 * max(worst, 1e-7), "training moved the weights far more than the 1/2-process gap"
    log_lines = (tmp_path / "run2").rglob("train.jsonl")
    for log in log_lines:  # only the main process logs: one row per step
        steps = [json.loads(x)["step"] for x in log.read_text().splitlines() if "loss" in x]
        assert len(steps) == len(set(steps))


@pytest.mark.slow
def test_two_process_eval_writes_each_of_101_questions_once(tmp_path, data_101):
    sets = [f"--set=data.dataset={data_101}", *(f"--set={s}" for s in TINY), "--set=eval.batch_size=16"]
    run(
        out=tmp_path / "eval1",
        config="configs/blip_tiny.yaml",
        overrides=[s.removeprefix("--set=") for s in sets],
    )
    launch(2, "eval", "--config", "configs/blip_tiny.yaml", "--out", tmp_path / "eval2", "--json", *sets)
    rows = {
        n: [json.loads(x) for x in (tmp_path / f"eval{n}" / "predictions.jsonl").read_text().splitlines()]
        for n in (1, 2)
    }
    ids = [r["id"] for r in rows[2]]
    assert len(ids) == 101 and len(set(ids)) == 101
    assert rows[2] == rows[1]
    metrics = json.loads((tmp_path / "eval2" / "metrics.json").read_text())
    assert metrics["n"] == 101 and metrics["processes"] == 2
