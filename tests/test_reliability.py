"""Faults and bad input lose nothing: kill and resume, broken checkpoints, NaN loss, fuzzed rows,
untrusted files. Each test records what it tried and what happened; ``docs/faults.md`` is that
record with tests/test_bad_input.py's (see ``tests.conftest.FAULTS``).
"""

import logging
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from safetensors.torch import load_file

from pathvqa.config import load_config
from pathvqa.data.prepare import load_split
from pathvqa.evaluation.evaluate import run
from pathvqa.models.blip import BlipFamily
from pathvqa.runs import step_of
from pathvqa.runtime import checkpoint
from pathvqa.training.stages import TrainingDiverged, fit
from tests.conftest import FAULTS, QUICK, noise_image, png_bytes, record_fault, run_cli, write_jsonl

DOC = Path(__file__).parent.parent / "docs" / "faults.md"


def record(fault: str, action: str, outcome: str) -> None:
    record_fault("faults", fault, action, outcome)


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoint.resolve(folder) / "weights.safetensors"))


def train_cmd(data, out, *extra) -> list[str]:
    sets = [
        f"data.dataset={data}",
        *QUICK,
        "train.max_steps=40",
        "train.save_every=4",
        "train.eval_every=20",
        *extra,
    ]
    return [sys.executable, "-m", "pathvqa", "train", "configs/blip_tiny.yaml", "--out", str(out)] + [
        a for s in sets for a in ("--set", s)
    ]


def sets_of(cmd: list[str]) -> list[str]:
    return [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "--set"]


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path, synth_dir):
    # the uninterrupted reference trains in this process (the same code and thread count as the CLI's)
    fit(
        load_config("configs/blip_tiny.yaml", sets_of(train_cmd(synth_dir, "x"))),
        tmp_path / "full",
        progress=False,
    )

    proc = subprocess.Popen(
        train_cmd(synth_dir, tmp_path / "killed"), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 300
    while not (tmp_path / "killed" / "checkpoints" / "step-12").is_dir():
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sorted(step_of(p) for p in checkpoint.checkpoints(tmp_path / "killed"))
    assert not (tmp_path / "killed" / "train_summary.json").exists() and max(done) < 40

    refused = subprocess.run(train_cmd(synth_dir, tmp_path / "killed"), capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    resumed = subprocess.run(
        [*train_cmd(synth_dir, tmp_path / "killed"), "--resume"], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a, b = (
        weights(tmp_path / "full" / "checkpoints" / "step-40"),
        weights(tmp_path / "killed" / "checkpoints" / "step-40"),
    )
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    for name in ("full", "killed"):
        run(
            out=tmp_path / name / "eval",
            checkpoint_dir=str(tmp_path / name / "checkpoints" / "step-40"),
            progress=False,
        )
    rows = {
        n: (tmp_path / n / "eval" / "predictions.jsonl").read_text().splitlines() for n in ("full", "killed")
    }
    assert len(rows["full"]) == 80 and rows["full"] == rows["killed"], "predictions differ row by row"
    record(
        "SIGKILL during training",
        f"kill -9 after checkpoint step-12 of 40 (checkpoints on disk: {done}); rerun without, then with `--resume`",
        "without `--resume`: refused, exit 2; with it: continued from the last complete checkpoint; final "
        "weights bit-identical to an uninterrupted run, 80/80 test predictions identical",
    )


@pytest.mark.slow
def test_sigkill_in_the_second_stage_then_resume_matches(tmp_path, synth_dir):
    stages = [f"stages.align.train.{k}" for k in ("max_steps=4", "save_every=2", "eval_every=4")] + [
        f"stages.instruct.train.{k}" for k in ("max_steps=24", "save_every=4", "eval_every=12")
    ]

    def cmd(out):
        sets = [f"data.dataset={synth_dir}", *QUICK, *stages]
        return [sys.executable, "-m", "pathvqa", "train", "configs/vlm_tiny.yaml", "--out", str(out)] + [
            a for s in sets for a in ("--set", s)
        ]

    fit(load_config("configs/vlm_tiny.yaml", sets_of(cmd("x"))), tmp_path / "full", progress=False)
    proc = subprocess.Popen(cmd(tmp_path / "killed"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 300
    while not (tmp_path / "killed" / "instruct" / "checkpoints" / "step-8").is_dir():
        assert proc.poll() is None and time.time() < deadline, "training ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "killed" / "instruct" / "train_summary.json").exists()
    resumed = subprocess.run([*cmd(tmp_path / "killed"), "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    final = Path("instruct") / "checkpoints" / "step-24"
    a, b = weights(tmp_path / "full" / final), weights(tmp_path / "killed" / final)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ"
    for name in ("full", "killed"):
        run(out=tmp_path / name / "eval", checkpoint_dir=str(tmp_path / name / final), progress=False)
    rows = {
        n: (tmp_path / n / "eval" / "predictions.jsonl").read_text().splitlines() for n in ("full", "killed")
    }
    assert len(rows["full"]) == 80 and rows["full"] == rows["killed"]
    record(
        "SIGKILL in a later stage",
        "vlm-tiny: kill -9 after checkpoint step-8 of 24 of stage `instruct` (stage `align` finished), then `--resume`",
        "the finished stage is skipped, `instruct` continues from step-8; final weights bit-identical and "
        "80/80 test predictions identical to an uninterrupted run",
    )


def test_half_written_and_corrupted_checkpoints_are_never_used(tmp_path, synth_dir, caplog):
    cfg = load_config(
        "configs/blip_tiny.yaml",
        [
            f"data.dataset={synth_dir}",
            *QUICK,
            "train.max_steps=8",
            "train.save_every=2",
            "train.eval_every=8",
            "train.keep_last=3",
        ],
    )
    fit(cfg, tmp_path / "run", progress=False)
    steps = [step_of(p) for p in checkpoint.checkpoints(tmp_path / "run")]
    assert steps == [4, 6, 8], "keep_last=3 bounds the number of checkpoints"

    half = tmp_path / "run" / "checkpoints" / ".tmp-step-10-12345"  # a save interrupted before its rename
    half.mkdir()
    (half / "weights.safetensors").write_bytes(b"partial")
    assert checkpoint.latest_valid(tmp_path / "run").name == "step-8"

    weights_file = tmp_path / "run" / "checkpoints" / "step-8" / "weights.safetensors"
    data = bytearray(weights_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    weights_file.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        assert checkpoint.latest_valid(tmp_path / "run").name == "step-6"
    assert "skipping corrupted checkpoint" in caplog.text and "does not match its checksum" in caplog.text
    proc = run_cli(
        "eval",
        "--checkpoint",
        tmp_path / "run" / "checkpoints" / "step-8",
        "--out",
        tmp_path / "e",
        check=False,
    )
    assert proc.returncode == 2 and "corrupted" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    record(
        "half-written checkpoint",
        "a `.tmp-step-N-PID` folder (a save killed before its atomic rename) beside valid ones",
        "ignored: checkpoints are written to a temp folder and renamed in one step",
    )
    record(
        "corrupted checkpoint",
        "flip one byte of the newest checkpoint's weights",
        "sha256 manifest mismatch: `--resume` / `eval RUN` fall back to the previous checkpoint with a warning; "
        "`eval --checkpoint` on that folder: one-line error, exit 2",
    )
    record(
        "disk use",
        "train with `train.keep_last: 3`, 4 saves",
        f"kept steps {steps} (plus the best, if older)",
    )


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path, synth_dir, monkeypatch):
    calls = {"n": 0}
    real_loss = BlipFamily.loss

    def loss_turning_nan(self, bundle, batch):
        calls["n"] += 1
        total, tokens = real_loss(self, bundle, batch)
        return (total * float("nan") if calls["n"] > 5 else total), tokens

    monkeypatch.setattr(BlipFamily, "loss", loss_turning_nan)
    cfg = load_config(
        "configs/blip_tiny.yaml",
        [
            f"data.dataset={synth_dir}",
            *QUICK,
            "train.max_steps=20",
            "train.save_every=2",
            "train.eval_every=20",
            "train.loss_average=tokens",  # the step sums the family's loss (the patched one)
        ],
    )
    with pytest.raises(TrainingDiverged, match=r"loss is nan at step 6: stopped; the last good checkpoint"):
        fit(cfg, tmp_path / "run", progress=False)
    last = checkpoint.latest_valid(tmp_path / "run")
    assert last.name == "step-4" and all(torch.isfinite(t).all() for t in weights(last).values())
    record(
        "loss becomes NaN",
        "the loss turns NaN at step 6 (save every 2 steps)",
        "stopped at once with `loss is nan at step 6: stopped; the last good checkpoint is in …` (a user-facing "
        "error: one line, exit 2 from the CLI); "
        "step-4 intact and finite",
    )


KINDS = [
    "good",
    "corrupt",
    "truncated",
    "huge",
    "odd_mode",
    "empty_question",
    "missing_answer",
    "missing_image",
]


def _row(kind: str, i: int) -> tuple[dict, bytes | None, str | None]:
    """(JSONL row, image bytes, expected skip reason)."""
    image = png_bytes(noise_image(100 + i, size=24))
    question, answer, reason = f"is there finding {i}?", ["yes", "no"][i % 2], None
    if kind == "corrupt":
        image, reason = b"\x89PNG but not really" + bytes(i), "undecodable_image"
    elif kind == "truncated":
        image, reason = image[: len(image) // 3], "undecodable_image"
    elif kind == "huge":
        image, reason = png_bytes(Image.new("1", (3000, 3000 + i))), "image_too_large"
    elif kind == "odd_mode":
        image = png_bytes(noise_image(100 + i, size=24, mode=["L", "P", "RGBA", "LA", "I"][i % 5]))
    elif kind == "empty_question":
        question, reason = " \t ", "empty_question"
    elif kind == "missing_answer":
        answer, reason = None, "missing_answer"
    elif kind == "missing_image":
        image, reason = None, "missing_image"
    return {"question": question, "answer": answer}, image, reason


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.sampled_from(KINDS), min_size=6, max_size=14).filter(
        lambda k: k.count("good") + k.count("odd_mode") >= 2
    )
)
def test_fuzzed_rows_in_training_and_evaluation(tmp_path_factory, kinds):
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "images").mkdir()
    expected: dict[str, int] = {}
    rows = []
    for i, kind in enumerate(kinds):
        row, image, reason = _row(kind, i)
        if image is not None:
            (folder / "images" / f"{i}.png").write_bytes(image)
        rows.append({"image": f"images/{i}.png", **row})
        if reason:
            expected[reason] = expected.get(reason, 0) + 1
    for split in ("train", "validation", "test"):
        write_jsonl(folder, split, rows)
    data = load_split(str(folder), "train", max_pixels=4_000_000, progress=False)
    assert dict(data.skipped) == expected and len(data.samples) == len(kinds) - sum(expected.values())
    cfg = load_config(
        "configs/blip_tiny.yaml",
        [
            f"data.dataset={folder}",
            *QUICK,
            "data.max_pixels=4000000",
            "train.max_steps=2",
            "train.eval_every=2",
        ],
    )
    outside = tmp_path_factory.mktemp("fuzz-run")  # never inside the dataset it reads
    fit(cfg, outside / "run", progress=False)
    metrics = run(out=outside / "eval", checkpoint_dir=str(outside / "run"), progress=False)
    assert metrics["n"] == len(data.samples) and metrics["skipped_rows"] == sum(expected.values())
    assert (
        metrics["skipped_reasons"] == expected
        and metrics["rows"] == f"{len(data.samples)} of {len(kinds)} rows"
    )
    if not any(f == "bad rows (fuzzed)" for _, f, _, _ in FAULTS):
        record(
            "bad rows (fuzzed)",
            "hypothesis mixes corrupt, truncated, 9 MP, odd-mode (L/P/RGBA/LA/I), empty-question, missing-answer "
            "and missing-image rows into train/validation/test (4 random mixes of 6–14 rows)",
            "training and evaluation finish; every bad row skipped and counted under its reason, counts exact",
        )


def test_loading_never_unpickles(tmp_path, synth_dir):
    source = "\n".join(p.read_text() for p in Path("src/pathvqa").rglob("*.py"))
    loads = re.findall(r"torch\.load\((.*)\)", source)
    assert all("weights_only=True" in call for call in loads)
    assert "import pickle" not in source and "pickle.load" not in source
    cfg = load_config("configs/blip_tiny.yaml", [f"data.dataset={synth_dir}", *QUICK, "train.max_steps=2"])
    fit(cfg, tmp_path / "run", progress=False)
    files = [p.name for p in (tmp_path / "run" / "checkpoints").rglob("*") if p.is_file()]
    assert files and all(
        Path(f).suffix in {".safetensors", ".json", ".yaml", ".jinja", ".txt"} for f in files
    ), files
    last = checkpoint.latest_valid(tmp_path / "run")
    (last / "weights.safetensors").write_bytes(b"\x80\x04pickled?")
    checkpoint.write_manifest(last)  # even with a matching manifest
    proc = run_cli("eval", "--checkpoint", tmp_path / "run", "--out", tmp_path / "e", check=False)
    assert proc.returncode == 2 and "not a readable safetensors file" in proc.stderr, proc.stderr[-1500:]
    record(
        "untrusted checkpoint",
        "scan the source for torch.load / pickle; list checkpoint files; replace weights with pickle bytes",
        f"no unpickling anywhere (torch.load calls: {len(loads)}, all weights_only=True); checkpoints hold only "
        "safetensors / JSON / YAML; a non-safetensors weights file fails to load, nothing runs",
    )


def test_trust_remote_code_is_off_unless_set_and_is_logged(tmp_path, synth_dir):
    assert load_config("configs/blip_tiny.yaml").model.trust_remote_code is False
    for path in Path("configs").glob("*.yaml"):
        assert load_config(path).model.trust_remote_code is False, path
    proc = run_cli(
        "train",
        "configs/blip_tiny.yaml",
        "--out",
        tmp_path / "run",
        "--set",
        f"data.dataset={synth_dir}",
        *[a for s in [*QUICK, "train.max_steps=1", "model.trust_remote_code=true"] for a in ("--set", s)],
    )
    assert "trust_remote_code is ON" in proc.stderr, proc.stderr[-2000:]
    record(
        "remote code",
        "every shipped config; a run with `model.trust_remote_code=true`",
        "off in every config; when a config turns it on the run log says `trust_remote_code is ON`",
    )


@pytest.mark.slow
def test_a_run_writes_only_inside_its_folder(tmp_path, synth_dir):
    work = tmp_path / "work"
    work.mkdir()
    data = work / "data"
    (data).symlink_to(synth_dir)
    before = set(p for p in work.rglob("*") if "run" not in p.parts)
    cmd = [
        sys.executable,
        "-m",
        "pathvqa",
        "train",
        str(Path.cwd() / "configs/blip_tiny.yaml"),
        "--out",
        "run",
        *[a for s in [f"data.dataset={data}", *QUICK, "train.max_steps=2"] for a in ("--set", s)],
    ]
    proc = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    after = set(p for p in work.rglob("*") if "run" not in p.relative_to(work).parts[:1])
    assert after == before, after - before
    bad = run_cli(
        "train", "configs/blip_tiny.yaml", "--out", tmp_path / "x", "--set", "name=../../escape", check=False
    )
    assert bad.returncode == 2 and "plain folder name" in bad.stderr
    record(
        "writes outside the run folder",
        "train from an empty working directory; a config whose name is `../../escape`",
        "only `--out` is written; names that are paths are refused before anything loads",
    )


def test_reliability_doc_lists_every_fault():
    text = DOC.read_text()
    for fault in (
        "SIGKILL",
        "half-written",
        "corrupted checkpoint",
        "NaN",
        "bad rows",
        "untrusted",
        "remote code",
        "outside the run folder",
        "disk use",
    ):
        assert fault in text, fault
