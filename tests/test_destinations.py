"""Nothing a user does loses a result: a copied run is its own (evaluating and resuming the copy leave the
original byte-identical), an evaluation or export is replaced only when asked, compare says what it left
out, and Ctrl-C says where training stopped. (The one-line refusals are in tests/test_cli_errors.py.)"""

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import QUICK, run_cli


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def sets(*extra: str) -> list[str]:
    return [a for s in extra for a in ("--set", s)]


@pytest.fixture(scope="module")
def run(tmp_path_factory, synth_dir) -> Path:
    """A blip-tiny run of 4 steps with a checkpoint every 2, TensorBoard and MLflow on."""
    folder = tmp_path_factory.mktemp("dest") / "run"
    config = [
        f"data.dataset={synth_dir}", *QUICK, "train.max_steps=4", "train.eval_every=2",
        "train.report_to=[tensorboard, mlflow]",
    ]  # fmt: skip
    run_cli("train", "configs/blip_tiny.yaml", "--out", folder, *sets(*config))
    return folder


@pytest.mark.slow
def test_a_copied_run_is_evaluated_and_resumed_without_touching_the_original(run, tmp_path, synth_dir):
    original = tmp_path / "original"
    shutil.copytree(run, original)
    before = files(original)
    record = (original / "logs" / "trackers.json").read_text()
    assert str(tmp_path) not in record and "/" not in json.loads(record)["mlflow"]["store"], record
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    run_cli("eval", "--checkpoint", copy, "--out", copy / "eval")
    config = [
        f"data.dataset={synth_dir}", *QUICK, "train.max_steps=6", "train.eval_every=2",
        "train.report_to=[tensorboard, mlflow]",
    ]  # fmt: skip
    run_cli("train", "configs/blip_tiny.yaml", "--out", copy, "--resume", *sets(*config))
    assert files(original) == before, "evaluating or resuming the copy changed the original"
    assert (copy / "checkpoints" / "step-6").is_dir()
    events = [p for p in (copy / "logs").rglob("events.out.tfevents.*")]
    assert len(events) > len([p for p in (original / "logs").rglob("events.out.tfevents.*")])


def test_an_evaluation_is_replaced_only_when_asked(run, tmp_path, synth_dir):
    out = tmp_path / "eval"
    run_cli("eval", "--checkpoint", run, "--out", out, "--limit", "8")
    first = (out / "metrics.json").read_bytes()
    run_cli("eval", "--checkpoint", run, "--out", out, "--limit", "8")  # the same evaluation: rerun
    refused = run_cli("eval", "--checkpoint", run, "--out", out, "--blind", "--limit", "8", check=False)
    assert (
        refused.returncode == 2 and "holds another evaluation" in refused.stderr and "blind" in refused.stderr
    )
    assert json.loads((out / "metrics.json").read_bytes()) == json.loads(first)
    run_cli("eval", "--checkpoint", run, "--out", out, "--blind", "--limit", "8", "--overwrite")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["blind"] is True and metrics["rows"] == "8 of 80 rows"
    assert metrics["limited"] == ["a seeded sample of 8 of 80 rows"]


def test_an_export_replaces_a_folder_whole_only_with_overwrite(run, tmp_path):
    out = tmp_path / "export"
    out.mkdir()
    (out / "adapter_config.json").write_text("{}")  # left by another export
    refused = run_cli("export", "--checkpoint", run, "--out", out, check=False)
    assert refused.returncode == 2 and "not empty" in refused.stderr
    assert (out / "adapter_config.json").read_text() == "{}"
    run_cli("export", "--checkpoint", run, "--out", out, "--overwrite")
    assert not (out / "adapter_config.json").exists(), "a stale file of the other export was kept"
    assert (out / "README.md").is_file() and (out / "pathvqa.yaml").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary folder was left"


def test_compare_says_how_many_rows_of_each_side_it_left_out(tmp_path):
    rows = [{"id": str(i), "answer": "yes", "prediction": "yes"} for i in range(20)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:5]))
    shown = run_cli("compare", tmp_path / "a.jsonl", tmp_path / "b.jsonl").stdout
    assert "5 questions in common" in shown and "left out: 15 rows of A and 0 rows of B" in shown


@pytest.mark.slow
def test_ctrl_c_says_where_training_stopped_and_how_to_resume(tmp_path, synth_dir):
    config = [f"data.dataset={synth_dir}", *QUICK, "train.max_steps=4000", "train.save_every=2"]
    command = [
        sys.executable,
        "-m",
        "pathvqa",
        "train",
        "configs/blip_tiny.yaml",
        "--out",
        str(tmp_path / "run"),
    ]
    # SIGINT back to its default in the child: a suite started in the background (nohup, CI) ignores it,
    # and Python then installs no Ctrl-C handler at all
    restore = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen([*command, *sets(*config)], stderr=subprocess.PIPE, text=True, preexec_fn=restore)
    deadline = time.time() + 120
    while not list((tmp_path / "run" / "checkpoints").glob("step-*")) and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    last = next((line for line in err.splitlines() if line.startswith("interrupted")), err[-1500:])
    assert proc.returncode == 130, err[-2000:]
    assert last.startswith("interrupted at step ") and "of 4000" in last and "--resume" in last, last
    assert "its last checkpoint is step-" in last and "Traceback" not in err


@pytest.mark.slow
def test_the_model_card_of_a_two_stage_run_carries_its_test_metrics(tmp_path, synth_dir):
    config = [
        f"data.dataset={synth_dir}", *QUICK, "stages.align.train.max_steps=1", "stages.instruct.train.max_steps=1",
        "data.eval_samples=8",
    ]  # fmt: skip
    run_cli("train", "configs/vlm_tiny.yaml", "--out", tmp_path / "run", *sets(*config))
    run_cli("eval", "--checkpoint", tmp_path / "run", "--out", tmp_path / "run" / "eval", "--limit", "8")
    run_cli("export", "--checkpoint", tmp_path / "run", "--out", tmp_path / "export")
    card = (tmp_path / "export" / "README.md").read_text()
    assert "## Test metrics" in card and "| exact_match |" in card, card[:800]
    assert "**Limited evaluation** (a seeded sample of 8 of 80 rows)" in card and "8 of 80 rows" in card
    assert "\n  hidden_size:" in card, "a tiny size's own settings apply to it"


def test_every_name_a_run_holds_is_one_runs_py_knows(run, tmp_path):
    """What a run writes (checkpoints, logs, trackers, MLflow's store, an evaluation) is named in runs.py:
    the structure test keeps those names out of every other module."""
    from pathvqa import runs

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    run_cli("eval", "--checkpoint", copy, "--out", runs.RunDir(copy).eval_dir(), "--limit", "4")
    unknown = []
    for path in copy.rglob("*"):
        parts = path.relative_to(copy).parts
        if parts[0] == runs.LOGS and len(parts) > 1 and parts[1] not in (runs.TRAIN_LOG, runs.TRACKERS):
            continue  # TensorBoard's own files, in the folder it names after the experiment
        if runs.TOKENIZER in parts[:-1]:
            continue  # the tokenizer's own files
        if not runs.is_run_name(path.name):
            unknown.append(str(path.relative_to(copy)))
    assert not unknown, unknown
    assert {p.name for p in copy.iterdir()} >= {
        runs.CONFIG,
        runs.SUMMARY,
        runs.MLFLOW_DB,
        runs.EVAL,
        runs.LOGS,
    }
