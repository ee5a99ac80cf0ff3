"""Bad arguments to every command: exit status 2 and one line on stderr, never a traceback, nothing lost."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from pathvqa.apps.cli import app
from tests.conftest import QUICK, noise_image, run_cli

COMMANDS = {c.name or c.callback.__name__ for c in app.registered_commands}


def jsonl(path, rows) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


@pytest.fixture(scope="module")
def paths(tmp_path_factory, synth_dir):
    root = tmp_path_factory.mktemp("bad")
    (root / "a_file.txt").write_text("not a folder\n")
    (root / "a_folder").mkdir()
    (root / "garbage.jsonl").write_bytes(b"\xff\xfe\x00binary\x80")
    rows = [{"id": "1", "answer": "yes", "prediction": "yes"}]
    for name, answer in (("null_answer", None), ("number_answer", 3)):
        jsonl(root / f"{name}.jsonl", [*rows, {"id": "2", "answer": answer, "prediction": "no"}])
    jsonl(root / "repeated_ids.jsonl", [*rows, {"id": "1", "answer": "yes", "prediction": "no"}])
    jsonl(root / "good.jsonl", [*rows, {"id": "2", "answer": "no", "prediction": "no"}])
    noise_image(0).save(root / "tile.png")
    (root / "empty.jsonl").write_text("")
    (root / "empty.yaml").write_text("")
    # a trained run, another evaluation, an export folder in use, a run with a damaged metrics.json
    sets = [f"data.dataset={synth_dir}", *QUICK, "train.max_steps=2", "train.eval_every=2"]
    run_cli(
        "train", "configs/blip_tiny.yaml", "--out", root / "run", *[a for s in sets for a in ("--set", s)]
    )
    run_cli("eval", "--baseline", "question-prior", "--dataset", synth_dir, "--out", root / "prior")
    (root / "export").mkdir()
    (root / "export" / "adapter_config.json").write_text("{}")
    (root / "bad_column.yaml").write_text(f"dataset: {synth_dir}\ncolumns: {{image: img_nam}}\n")
    (root / "all_bad").mkdir()
    for split in ("train", "test"):  # every image missing
        jsonl(root / "all_bad" / f"{split}.jsonl", [{"image": "gone.png", "question": "q?", "answer": "yes"}])
    (root / "train_only").mkdir()
    noise_image(1).save(root / "train_only" / "a.png")
    jsonl(root / "train_only" / "train.jsonl", [{"image": "a.png", "question": "q?", "answer": "yes"}] * 3)
    (root / "damaged" / "eval").mkdir(parents=True)
    (root / "damaged" / "eval" / "metrics.json").write_text('{"exact_match": 0.5,')
    return root


def snapshot(root) -> dict[str, bytes]:
    """Every file under ``root``, by path: what a refused command must leave as it was."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


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
        "explain --checkpoint missing": ["explain", "--checkpoint", missing, "--score", "--out", root / "explained"],
        "explain --score with --image": ["explain", "--checkpoint", d, "--score", "--image", f, "--out", d],
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
        # destinations are checked first, results are never replaced unasked
        "train --resume with another config": [
            "train", "configs/vlm_tiny.yaml", "--out", root / "run", "--resume", "--set", f"data.dataset={synth_dir}",
        ],
        "train --resume at another width": [
            "train", "configs/blip_tiny.yaml", "--out", root / "run", "--resume",
            *[a for s in [f"data.dataset={synth_dir}", *QUICK, "model.hidden_size=64"] for a in ("--set", s)],
        ],
        "eval --out holding another evaluation": ["eval", "--checkpoint", root / "run", "--out", root / "prior"],
        "eval --out unwritable": ["eval", "--checkpoint", root / "run", "--out", "/proc/pathvqa-eval"],
        "eval --out under a file": ["eval", "--checkpoint", root / "run", "--out", f / "eval"],
        "train --out under a file": ["train", "configs/blip_tiny.yaml", "--out", f / "run"],
        "synth --out under a file": ["synth", "--out", f / "data"],
        "synth --out holding a dataset": ["synth", "--out", synth_dir, "--train", "8"],
        "export --out not empty": ["export", "--checkpoint", root / "run", "--out", root / "export"],
        "compare repeated ids": ["compare", root / "repeated_ids.jsonl", root / "good.jsonl"],
        "score repeated ids": ["score", root / "repeated_ids.jsonl"],
        "score empty": ["score", root / "empty.jsonl"],
        "train empty config": ["train", root / "empty.yaml", "--out", root / "from_empty"],
        "predict --question before --image": [
            "predict", "--checkpoint", root / "run", "--question", "q1?", "--image", root / "tile.png",
        ],
        "report damaged metrics.json": ["report", root / "damaged", "--out", root / "r"],
        "report =FOLDER": ["report", f"={root / 'run'}", "--out", root / "r"],
        "train 4-bit on a CPU machine": [
            "train", "configs/llava_tiny.yaml", "--out", root / "q4", "--set", "model.quantization=4bit",
            "--set", "model.tuning=lora", "--set", "stages=[]",
        ],
        "data-stats with a column that is not there": ["data-stats", "--dataset", root / "bad_column.yaml"],
        "eval a set whose every row is bad": [
            "eval", "--baseline", "question-prior", "--dataset", root / "all_bad", "--out", root / "e",
        ],
        "train with no validation split and none to carve": [
            "train", "configs/blip_tiny.yaml", "--out", root / "run_nv", "--set", f"data.dataset={root / 'train_only'}",
        ],
        "plan a config with an unknown key": ["plan", "configs/llava_tiny.yaml", "--set", "model.widht=3"],
    }  # fmt: skip


SAYS = {
    "train --resume with another config": "differs from the run's own",
    "train --resume at another width": "model.hidden_size",
    "eval --out holding another evaluation": "holds another evaluation",
    "eval --out unwritable": "cannot write",
    "eval --out under a file": "is a file",
    "train --out under a file": "is a file",
    "synth --out under a file": "is a file",
    "synth --out holding a dataset": "already holds a dataset",
    "export --out not empty": "not empty",
    "compare repeated ids": "repeated question ids",
    "score repeated ids": "repeated question ids",
    "score empty": "no predictions",
    "train empty config": "empty",
    "predict --question before --image": "after the --image",
    "report damaged metrics.json": "damaged",
    "report =FOLDER": "LABEL=FOLDER",
    "train 4-bit on a CPU machine": "needs a CUDA GPU",
    "data-stats with a column that is not there": "it has: image, question, answer",
    "eval a set whose every row is bad": "every row was skipped",
    "train with no validation split and none to carve": "split 'validation' not found",
}
"""What the line must say, where another refusal could stand in for the right one."""


def test_every_command_is_swept():
    names = {case.split()[0] for case in cases(__import__("pathlib").Path("/x"), "/y")}
    assert names >= COMMANDS, f"no bad-argument case for {sorted(COMMANDS - names)}"


@pytest.mark.slow
def test_bad_arguments_exit_2_with_one_line(paths, synth_dir):
    failures = []
    todo = cases(paths, synth_dir)
    before, data_before = snapshot(paths), snapshot(synth_dir)
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
        wrong = name in SAYS and SAYS[name] not in proc.stderr
        if proc.returncode != 2 or len(lines) != 1 or "Traceback" in proc.stderr or wrong:
            failures.append(f"{name}: exit {proc.returncode}, stderr: {proc.stderr.strip()[-300:]!r}")
    assert (paths / "a_file.txt").read_text() == "not a folder\n", "a file passed as --out was overwritten"
    assert not failures, "\n".join(failures)
    assert snapshot(paths) == before and snapshot(synth_dir) == data_before, "a refused command wrote"
    for left in ("from_empty", "r", "e", "x", "sweep", "q4", "run_nv"):
        assert not (paths / left).exists(), f"a refused command made {left}"
