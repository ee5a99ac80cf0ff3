"""Bad arguments to every command: exit status 2 and one line on stderr, never a traceback, nothing lost."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from pathvqa.cli import app
from tests.conftest import run_cli

COMMANDS = {c.name or c.callback.__name__ for c in app.registered_commands}


@pytest.fixture(scope="module")
def paths(tmp_path_factory, synth_dir):
    root = tmp_path_factory.mktemp("bad")
    (root / "a_file.txt").write_text("not a folder\n")
    (root / "a_folder").mkdir()
    (root / "garbage.jsonl").write_bytes(b"\xff\xfe\x00binary\x80")
    rows = [{"id": "1", "answer": "yes", "prediction": "yes"}]
    for name, answer in (("null_answer", None), ("number_answer", 3)):
        bad = [*rows, {"id": "2", "answer": answer, "prediction": "no"}]
        (root / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad))
    return root


def cases(root, synth_dir):
    f, d, missing = root / "a_file.txt", root / "a_folder", root / "missing"
    return {
        "synth --out FILE": ["synth", "--out", f],
        "data-stats --dataset missing": ["data-stats", "--dataset", missing],
        "data-stats --dataset FILE": ["data-stats", "--dataset", f],
        "score FOLDER": ["score", d],
        "score missing": ["score", missing],
        "score unreadable bytes": ["score", root / "garbage.jsonl"],
        "score answer null": ["score", root / "null_answer.jsonl"],
        "score answer number": ["score", root / "number_answer.jsonl"],
        "train FOLDER": ["train", d, "--out", root / "run"],
        "train --out FILE": [
            "train",
            "configs/blip_tiny.yaml",
            "--out",
            f,
            "--set",
            f"data.dataset={synth_dir}",
        ],
        "eval --checkpoint FILE": ["eval", "--checkpoint", f, "--out", root / "e"],
        "eval --checkpoint missing": ["eval", "--checkpoint", missing, "--out", root / "e"],
        "eval --config FOLDER": ["eval", "--config", d, "--out", root / "e"],
        "eval --out FILE": ["eval", "--config", "configs/blip_tiny.yaml", "--out", f, "--dataset", synth_dir],
        "export --checkpoint FOLDER without checkpoints": ["export", "--checkpoint", d, "--out", root / "x"],
        "export --out FILE": ["export", "--checkpoint", d, "--out", f],
        "report missing": ["report", missing, "--out", root / "r"],
        "report --out FILE": ["report", d, "--out", f],
        "demo --out FILE": ["demo", "--out", f],
        "predict --checkpoint missing": [
            "predict",
            "--checkpoint",
            missing,
            "--image",
            f,
            "--question",
            "q?",
        ],
        "predict --image FOLDER": ["predict", "--checkpoint", d, "--image", d, "--question", "q?"],
        "serve --checkpoint missing": ["serve", "--checkpoint", missing, "--demo-dir", missing],
        "serve without a demo": ["serve", "--demo-dir", missing],
        "compare missing": ["compare", missing, d],
        "compare answer null": ["compare", root / "null_answer.jsonl", root / "null_answer.jsonl"],
        "score --protocol unknown": ["score", root / "null_answer.jsonl", "--protocol", "vqa"],
        "sweep missing spec": ["sweep", missing, "--out", root / "sweep"],
        "sweep --out FILE": ["sweep", "configs/sweeps/blip_tiny_lr.yaml", "--out", f],
        "sweep --status not a sweep": ["sweep", d, "--status"],
        "sweep without --out": ["sweep", "configs/sweeps/blip_tiny_lr.yaml"],
    }


def test_every_command_is_swept():
    names = {case.split()[0] for case in cases(__import__("pathlib").Path("/x"), "/y")}
    assert names >= COMMANDS, f"no bad-argument case for {sorted(COMMANDS - names)}"


def test_bad_arguments_exit_2_with_one_line(paths, synth_dir):
    failures = []
    todo = cases(paths, synth_dir)
    with ThreadPoolExecutor(4) as pool:  # independent processes: run them side by side
        done = dict(
            zip(
                todo,
                pool.map(lambda args: run_cli(*args, check=False, process=True), todo.values()),
                strict=True,
            )
        )
    for name, proc in done.items():
        lines = proc.stderr.strip().splitlines()
        if proc.returncode != 2 or len(lines) != 1 or "Traceback" in proc.stderr:
            failures.append(f"{name}: exit {proc.returncode}, stderr: {proc.stderr.strip()[-300:]!r}")
    assert (paths / "a_file.txt").read_text() == "not a folder\n", "a file passed as --out was overwritten"
    assert not failures, "\n".join(failures)
