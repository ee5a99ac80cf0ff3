"""The second bad-input sweep: destinations never overlap what a command reads (``--overwrite`` included),
rows are never dropped in silence, messages say what is true, config values are checked before anything
is built, and the Python API takes what its docs say. Each refusal: exit 2, one line, nothing written;
``docs/faults.md`` lists every case with the line it printed."""

import gc
import json
import logging
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from PIL import Image

from pathvqa.config import DataConfig, load_config
from pathvqa.data.prepare import load_data_split, load_split
from pathvqa.errors import ConfigError, PathVQAError
from pathvqa.training.stages import fit
from tests.conftest import QUICK, noise_image, record_fault, run_cli, write_jsonl

DOC = Path(__file__).parent.parent / "docs" / "faults.md"
LORA = ["model.tuning=lora", "model.lora.modules_to_save=[cls]", "train.max_steps=2", "train.eval_every=2"]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def rows(n: int, image: str = "a.png", answer=lambda i: "yes") -> list[dict]:
    return [{"image": image, "question": f"is there finding {i}?", "answer": answer(i)} for i in range(n)]


def folder(root: Path, name: str, files: dict[str, str | bytes]) -> Path:
    """A dataset folder holding ``files`` (name → text or bytes) and the image ``a.png``."""
    out = root / name
    out.mkdir()
    noise_image(7).save(out / "a.png")
    for file, content in files.items():
        (out / file).write_bytes(content if isinstance(content, bytes) else content.encode())
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory, synth_dir) -> Path:
    """A LoRA run (pixel limit 5,000), a full fine-tune, a copy of the synthetic set, two baselines on two
    datasets, images, and one folder per malformed dataset."""
    root = tmp_path_factory.mktemp("bad-input")
    shutil.copytree(synth_dir, root / "data")
    cfg = load_config(
        "configs/blip_tiny.yaml", [f"data.dataset={root / 'data'}", *QUICK, *LORA, "data.max_pixels=5000"]
    )
    fit(cfg, root / "run", progress=False)
    for split in ("train", "test"):
        write_jsonl(root / "other", split, rows(4))
    noise_image(3).save(root / "other" / "a.png")
    for name, data in (("prior_a", root / "data"), ("prior_b", root / "other")):
        run_cli("eval", "--baseline", "question-prior", "--dataset", data, "--out", root / name)
    noise_image(1).save(root / "tile.png")
    (root / "notimg.png").write_text("hello\n")
    noise_image(2, size=100).save(root / "big.png")  # 10,000 pixels: over the run's limit
    (root / "not_demo").mkdir()
    (root / "not_demo" / "notes.txt").write_text("mine\n")
    header = "image,question,answer\n"
    folder(root, "empty_csv", {"train.csv": "", "test.csv": ""})
    folder(root, "header_csv", {"train.csv": header, "test.csv": header})
    folder(root, "semicolon_csv", {"train.csv": "image;question;answer\na.png;q?;yes\n"})
    plain = json.dumps(rows(2))
    folder(root, "plain", {"train.json": plain, "test.json": plain})
    folder(root, "test_only", {"test.json": plain})
    folder(root, "two_formats", {"train.json": plain, "train.csv": header + "a.png,q?,yes\n"})
    folder(root, "own_columns", {"train.csv": "image_name,q,answer\na.png,q?,yes\n"})
    for name, text in {
        "llava": "format: llava", "clash": "columns: {image: question, question: question}",
        "where": "where: {answer: maybe}",
    }.items():  # fmt: skip
        (root / f"{name}.yaml").write_text(f"dataset: {root / 'plain'}\n{text}\n")
    (root / "own_columns.yaml").write_text(
        f"dataset: {root / 'own_columns'}\ncolumns: {{image: image_name}}\n"
    )
    (root / "spec.yaml").write_text(
        f"base: configs/blip_tiny.yaml\noverrides: [data.dataset={root / 'data'}]\n"
        "space: {train.lr: {log_uniform: [1.0e-4, 1.0e-3]}}\ntrials: 1\n"
    )
    same = [{"id": "1", "question": "is it benign?", "answer": "yes", "prediction": "yes"}]
    (root / "a.jsonl").write_text(json.dumps(same[0]) + "\n")
    (root / "b.jsonl").write_text(json.dumps({**same[0], "question": "is it malignant?"}) + "\n")
    return root


def cases(w: Path) -> dict[str, tuple[list, str]]:
    """Name → (arguments, what the one line must say)."""
    run, data, step = w / "run", w / "data", w / "run" / "checkpoints" / "step-2"
    reads = "this command reads"
    export = ["export", "--checkpoint", run, "--overwrite", "--out"]
    return {
        "export --out the run it reads": ([*export, run], reads),
        "export --merge --out the run it reads": ([*export, run, "--merge"], reads),
        "export --out the run's checkpoints": ([*export, run / "checkpoints"], reads),
        "export --merge --out the run's checkpoints": ([*export, run / "checkpoints", "--merge"], reads),
        "export --out a step folder": ([*export, step], reads),
        "export --merge --out a step folder": ([*export, step, "--merge"], reads),
        "eval --out the run": (["eval", "--checkpoint", run, "--out", run, "--overwrite"], reads),
        "eval --out the checkpoints": (["eval", "--checkpoint", run, "--out", run / "checkpoints"], reads),
        "eval --out the dataset": (["eval", "--checkpoint", run, "--dataset", data, "--out", data, "--overwrite"], reads),
        "eval --baseline --out inside the dataset": (
            ["eval", "--baseline", "question-prior", "--dataset", data, "--out", data / "data", "--overwrite"], reads,
        ),
        "train --out inside the dataset": (
            ["train", "configs/blip_tiny.yaml", "--out", data / "run", "--set", f"data.dataset={data}"], reads,
        ),
        "train --out inside the run it starts from": (
            ["train", "configs/blip_tiny.yaml", "--out", run / "next", "--set", f"data.dataset={data}",
             "--set", f"train.init_from={run}"], reads,
        ),
        "report --out a run it reads": (["report", w / "prior_a", "--out", w / "prior_a"], reads),
        "report --out inside a run it reads": (["report", w / "prior_a", "--out", w / "prior_a" / "r"], reads),
        "sweep --out inside the dataset": (["sweep", w / "spec.yaml", "--out", data / "sweep"], reads),
        "predict --out the image": (
            ["predict", "--checkpoint", run, "--image", w / "tile.png", "--question", "q?", "--out", w / "tile.png"], reads,
        ),
        "predict --out inside the run": (
            ["predict", "--checkpoint", run, "--image", w / "tile.png", "--question", "q?", "--out", run / "a.jsonl"], reads,
        ),
        "demo --fresh on a folder that is not a demo's": (["demo", "--out", w / "not_demo", "--fresh"], "not a demo folder"),
        "report of two datasets": (["report", w / "prior_a", w / "prior_b", "--out", w / "r"], "--allow-mixed"),
        "an empty CSV": (["data-stats", "--dataset", w / "empty_csv"], "is empty"),
        "a CSV with a header and no rows": (["data-stats", "--dataset", w / "header_csv"], "is empty: a header line"),
        "a ';'-separated CSV": (["data-stats", "--dataset", w / "semicolon_csv"], "separated by ';'"),
        "data.format llava on plain rows": (["data-stats", "--dataset", w / "llava.yaml"], "no entry has any"),
        "two fields mapped to one column": (["data-stats", "--dataset", w / "clash.yaml"], "both to 'question'"),
        "two fields mapped to one column (--set)": (
            ["train", "configs/blip_tiny.yaml", "--out", w / "x", "--set", f"data.dataset={w / 'plain'}",
             "--set", "data.columns={image: question, question: question}"], "both to 'question'",
        ),
        "a split that is not there": (["data-stats", "--dataset", w / "plain", "--split", "val"], "it has: test, train;"),
        "no train split": (
            ["eval", "--baseline", "question-prior", "--dataset", w / "test_only", "--out", w / "e"], "it has: test;",
        ),
        "data.where keeping no row": (["data-stats", "--dataset", w / "where.yaml"], "keeps none of the 2 rows"),
        "a missing column, named as the file names its columns": (
            ["data-stats", "--dataset", w / "own_columns.yaml"], "its columns: image_name, q, answer",
        ),
        "an unknown PRESET: prefix": (["data-stats", "--dataset", f"vqarad:{w / 'plain'}"], "unknown dataset preset"),
        "two formats for one split": (["data-stats", "--dataset", w / "two_formats"], "train.json and train.csv"),
        "predict a file that is not an image": (
            ["predict", "--checkpoint", run, "--image", w / "notimg.png", "--question", "q?"], "notimg.png: it is not an image",
        ),
        "predict an image over the pixel limit": (
            ["predict", "--checkpoint", run, "--image", w / "big.png", "--question", "q?"],
            "big.png: 100x100 is 10,000 pixels, over the pixel limit of 5,000 (data.max_pixels)",
        ),
        "data-stats --max-pixels 0": (["data-stats", "--dataset", w / "plain", "--max-pixels", "0"], "--max-pixels"),
        "export --merge of a full fine-tune": (
            ["export", "--checkpoint", w / "full", "--out", w / "x", "--merge"], "no LoRA adapters to merge",
        ),
        "model.max_layers with pretrained weights": (
            ["plan", "configs/qwen25vl_lora.yaml", "--set", "model.max_layers=2"], "needs model.init 'random'",
        ),
        "compare rows whose questions differ": (["compare", w / "a.jsonl", w / "b.jsonl"], "different questions"),
        "eval --abstain-below outside (0, 1)": (
            ["eval", "--checkpoint", run, "--out", w / "e", "--abstain-below", "1.5"], "--abstain-below 1.5: give a confidence between 0 and 1",
        ),
        "predict --abstain-below 0": (
            ["predict", "--checkpoint", run, "--image", w / "tile.png", "--question", "q?", "--abstain-below", "0"], "--abstain-below 0.0",
        ),
        "serve --abstain-below -0.2": (["serve", "--checkpoint", run, "--abstain-below", "-0.2"], "--abstain-below -0.2"),
        "eval --calibrate of a run without a validation split": (
            ["eval", "--checkpoint", run, "--out", w / "e", "--calibrate", "--set", "data.eval_split=null"],
            "has no validation split (data.eval_split: null) to fit a temperature on",
        ),
        "eval --calibrate of a zero-shot model": (
            ["eval", "--config", "configs/blip_tiny.yaml", "--dataset", data, "--out", w / "e", "--calibrate"], "zero-shot",
        ),
        "compare --coverage of predictions without confidences": (
            ["compare", w / "a.jsonl", w / "a.jsonl", "--coverage", "0.5"], "carry no confidences",
        ),
    }  # fmt: skip


NOT_SAID = {"no train split": "carved", "predict a file that is not an image": "BytesIO"}
"""What the line must not say (a hint that does not apply, an object's repr)."""


@pytest.mark.slow
def test_every_bad_input_is_one_line_exit_2_and_nothing_is_written(world, synth_dir):
    fit(
        load_config("configs/blip_tiny.yaml", [f"data.dataset={synth_dir}", *QUICK, "train.max_steps=1"]),
        world / "full",
        progress=False,
    )
    with warnings.catch_warnings():  # what earlier tests left for the collector (an unclosed event loop) is
        warnings.simplefilter("ignore")  # theirs: collected now, not in the middle of a case's stderr
        gc.collect()
    todo = cases(world)
    before, data_before = snapshot(world), snapshot(synth_dir)
    failures = []
    for name, (args, says) in todo.items():
        proc = run_cli(*args, check=False)  # in this process: seconds for the whole sweep, not minutes
        lines = proc.stderr.strip().splitlines()
        line = lines[-1] if lines else ""
        wrong = says not in line or (name in NOT_SAID and NOT_SAID[name] in line)
        if proc.returncode != 2 or len(lines) != 1 or not line.startswith("error: ") or wrong:
            failures.append(f"{name}: exit {proc.returncode}, stderr: {proc.stderr.strip()[-400:]!r}")
            continue
        shown = " ".join(str(a).replace(str(world), "W") for a in args)
        record_fault("bad input", name, f"`pathvqa {shown}`", f"exit 2: `{line.replace(str(world), 'W')}`")
    assert not failures, "\n".join(failures)
    assert snapshot(world) == before, "a refused command changed something"
    assert snapshot(synth_dir) == data_before
    assert not (world / "run" / "calibration.json").exists(), "a refused eval fitted a temperature"
    for made in ("x", "e", "r", "data/run", "data/sweep", "run/next", "prior_a/r"):
        assert not (world / made).exists(), f"a refused command made {made}"


def test_an_excel_csv_loads(tmp_path):
    folder(tmp_path, "excel", {})
    text = 'image,question,answer\r\na.png,"is it benign, or not?",yes\r\na.png,what stain?,h&e\r\n'
    (tmp_path / "excel" / "train.csv").write_bytes(b"\xef\xbb\xbf" + text.encode())  # Excel's "CSV UTF-8"
    data = load_split(str(tmp_path / "excel"), "train", progress=False)
    assert [(s.question, s.answer) for s in data.samples] == [
        ("is it benign, or not?", "yes"),
        ("what stain?", "h&e"),
    ]


def test_rows_left_out_are_said_and_counted(world, tmp_path, caplog):
    empty = write_jsonl(tmp_path / "half", "test", rows(60, answer=lambda i: "" if i % 2 else "yes")).parent
    write_jsonl(empty, "train", rows(4))
    noise_image(4).save(empty / "a.png")
    proc = run_cli("eval", "--baseline", "question-prior", "--dataset", empty, "--out", tmp_path / "e")
    assert "test: 30 of 60 rows kept; left out: 30 missing answer" in proc.stderr
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["skipped_reasons"] == {"missing_answer": 30} and metrics["n"] == 30
    twice = write_jsonl(tmp_path / "twice", "train", rows(60) * 2).parent
    noise_image(5).save(twice / "a.png")
    with caplog.at_level(logging.INFO):
        data = load_data_split(DataConfig(dataset=str(twice), eval_split=None), "train", None, False)
    assert len(data.samples) == 60 and "train: 60 of 120 rows kept; left out: 60 duplicate" in caplog.text
    summary = json.loads((world / "run" / "train_summary.json").read_text())
    assert summary["data"]["train"]["rows_kept"] == 240 and summary["data"]["validation"]["sampled"] is True
    record_fault(
        "bad input", "rows dropped", "60 test rows of which 30 have empty answers; 120 training rows of which 60 repeat",
        "one line per split (`test: 30 of 60 rows kept; left out: 30 missing answer`, `train: 60 of 120 rows "
        "kept; left out: 60 duplicate`), the same counts in metrics.json and train_summary.json",
    )  # fmt: skip


def test_the_python_api_takes_what_its_docs_say(world, tmp_path):
    from pathvqa.apps import api

    assert api.load_config("configs/blip_tiny.yaml", "train.max_steps=2").train.max_steps == 2
    with pytest.raises(ConfigError, match="list of 'key=value'"):
        api.load_config("configs/blip_tiny.yaml", 3)
    with pytest.raises(PathVQAError, match="must be a path"):
        api.train(3, tmp_path / "run")
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {{name: blip-tiny}}\ndata: {{dataset: {tmp_path / 'nowhere'}}}\n")
    with pytest.raises(PathVQAError, match="dataset not found"):  # the path was read as a config
        api.train(str(config), tmp_path / "run")
    (tmp_path / "notes.txt").write_text("mine\n")
    with pytest.raises(PathVQAError, match="is a file"):
        api.evaluate(world / "run", out=tmp_path / "notes.txt")
    model = api.Answerer(world / "run")
    tile = world / "tile.png"
    assert len(model.answer(str(tile), "what stain is used?")) == 1  # a path, one question
    assert len(model.answer(Image.open(tile), ["is it benign?", "what stain?"])) == 2  # a PIL image
    assert model.answer(tile.read_bytes(), ["q?"])[0].answer == model.answer(tile, "q?")[0].answer
    with pytest.raises(PathVQAError, match="bytes, a file path or a PIL image"):
        model.answer(3, "q?")
    with pytest.raises(PathVQAError, match="questions must be"):
        model.answer(tile, 5)


def test_an_error_after_a_progress_bar_starts_a_line_of_its_own(world):
    bad = write_jsonl(world / "all_bad", "train", rows(3, "gone.png")).parent
    proc = run_cli("train", "configs/blip_tiny.yaml", "--out", world / "x_bar", "--set", f"data.dataset={bad}",
                   "--set", "data.eval_split=null", check=False)  # fmt: skip
    assert "validate train" in proc.stderr, "the bar this test is about was not drawn"
    assert proc.returncode == 2 and proc.stderr.splitlines()[-1].startswith("error: "), proc.stderr[-300:]
    shutil.rmtree(bad)


def test_output_that_cannot_be_written_is_one_line_and_status_74(world):
    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "pathvqa", "score", world / "a.jsonl", "--json"],
                              stdout=full, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.returncode == 74 and proc.stderr.strip().splitlines() == [
        "error: cannot write the output: No space left on device"
    ]
    record_fault("bad input", "a full disk", "`pathvqa score P.jsonl --json > /dev/full`",
                 "exit 74 (EX_IOERR): `error: cannot write the output: No space left on device`")  # fmt: skip


def test_faults_doc_lists_every_case():
    text = DOC.read_text()
    missing = [name for name in cases(Path("/W")) if f"| {name} |" not in text]
    assert not missing, f"docs/faults.md lacks {missing}: regenerate it (tests/conftest.py FAULTS)"


def test_what_the_refusals_leave_open_still_works(world, tmp_path):
    """--allow-mixed reports two datasets with a warning; predict --out writes the answers beside, not inside,
    what it read; an evaluation goes inside the run (RUN/eval), apart from its checkpoints."""
    proc = run_cli("report", world / "prior_a", world / "prior_b", "--out", tmp_path / "r", "--allow-mixed")
    assert "not comparable" in proc.stderr and (tmp_path / "r" / "results.md").is_file()
    run_cli("predict", "--checkpoint", world / "run", "--image", world / "tile.png", "--question", "q?",
            "--out", tmp_path / "answers.jsonl")  # fmt: skip
    answers = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert [a["question"] for a in answers] == ["q?"]
    refused = run_cli("predict", "--checkpoint", world / "run", "--image", world / "tile.png", "--question", "q?",
                      "--out", tmp_path / "answers.jsonl", check=False)  # fmt: skip
    assert refused.returncode == 2 and "--overwrite" in refused.stderr
    shutil.copytree(world / "run", tmp_path / "copy")
    run_cli("eval", "--checkpoint", tmp_path / "copy", "--out", tmp_path / "copy" / "eval", "--limit", "4")


def test_an_unreachable_hub_fails_fast_naming_the_offline_switch(tmp_path):
    """Without HF_HUB_OFFLINE, a machine that cannot reach the hub reads its cache only (said once) instead of
    retrying every file for minutes; what is not cached fails in one line naming HF_HUB_OFFLINE=1."""
    import os
    import time

    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    env.update(HF_HUB_CACHE=str(tmp_path / "empty"), HF_ENDPOINT="https://127.0.0.1:9")  # refused at once
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pathvqa", "plan", "configs/qwen25vl_lora.yaml"], env=env,
                          capture_output=True, text=True)  # fmt: skip
    took = time.perf_counter() - started
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Retrying" not in proc.stderr and took < 60, proc.stderr[-800:]
    assert (
        "cannot be reached" in lines[0]
        and lines[-1].startswith("error: ")
        and "HF_HUB_OFFLINE=1" in lines[-1]
    )
    assert len(lines) == 2, lines
    from pathvqa.models.base import load_error

    text = str(
        load_error(
            "config", "x/y", OSError("Can't load the config for 'x/y'. If you were trying,\nOtherwise,")
        )
    )
    assert ",." not in text and ", ." not in text and "\n" not in text, text


def test_version():
    import tomllib

    wanted = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"][
        "version"
    ]
    assert run_cli("--version").stdout == f"pathvqa {wanted}\n"
