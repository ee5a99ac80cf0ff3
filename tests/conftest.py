"""Shared fixtures: generated datasets only (tests never download)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Tests never reach the network: hub ids must fail at once with the offline message.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
# lazy parquet loads convert through the datasets cache: keep the suite's out of the user's ~/.cache
if "HF_DATASETS_CACHE" not in os.environ:
    os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(prefix="pathvqa-tests-datasets-")
    atexit.register(shutil.rmtree, os.environ["HF_DATASETS_CACHE"], ignore_errors=True)

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pathvqa.synth import generator as synthetic

SMALL = [
    "model.hidden_size=32",
    "model.num_layers=1",
    "model.image_size=32",
    "train.threads=1",
    "train.batch_size=8",
]
"""Overrides that shrink a tiny config further: seconds per run (smoke tests of the loop, not learning)."""
QUICK = [*SMALL, "data.eval_samples=16", "eval.max_new_tokens=4"]


def run_cli(*args: str, check: bool = True, process: bool = False) -> subprocess.CompletedProcess:
    """Run ``pathvqa ARGS`` and return what a finished process would (exit status, text output).

    In this test process by default (each ``python -m pathvqa`` pays seconds of imports: most of what a
    small command costs), as ``python -m pathvqa`` calls it: the same ``main``, with stdout, stderr, log
    records and warnings captured as a process prints them, and environment variables and torch's
    thread count restored after. ``process=True`` runs a real ``python -m pathvqa`` (what the one-line
    error tests use: nothing imported earlier in the session can hide a line there)."""
    argv = [str(a) for a in args]
    if process:
        proc = subprocess.run([sys.executable, "-m", "pathvqa", *argv], capture_output=True, text=True)
    else:
        proc = _run_in_process(argv)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"pathvqa {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return proc


def _run_in_process(argv: list[str]) -> subprocess.CompletedProcess:
    import contextlib
    import logging
    import threading
    import traceback
    import warnings

    # stdout, stderr, argv and the environment are the process's: one command at a time, on the main thread
    assert threading.current_thread() is threading.main_thread(), "run_cli(process=True) off the main thread"

    import torch

    from pathvqa.apps import cli

    out, err = io.StringIO(), io.StringIO()
    environ, threads, saved_argv = dict(os.environ), torch.get_num_threads(), sys.argv
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    handler = logging.StreamHandler(err)  # what ``logging.basicConfig`` in the CLI installs in a process
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    code: int | str | None = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: (
                err.write(warnings.formatwarning(message, category, filename, lineno, line))
            )
            sys.argv = ["pathvqa", *argv]
            try:
                cli.main()
            except SystemExit as stop:
                code = stop.code
            except BaseException:
                err.write(traceback.format_exc())
                code = 1
    finally:
        root.handlers[:], root.level = handlers, level
        os.environ.clear()
        os.environ.update(environ)
        torch.set_num_threads(threads)
        sys.argv = saved_argv
    returncode = code if isinstance(code, int) else (0 if code is None else 1)
    if isinstance(code, str):
        err.write(code + "\n")
    return subprocess.CompletedProcess(["pathvqa", *argv], returncode, out.getvalue(), err.getvalue())


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def noise_image(seed: int, size: int = 32, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).convert(mode)


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A small synthetic set in the hub layout (train 240 / validation 40 / test 80 pairs, 48 px), in the
    ``simple`` style: short answers, no repeated rows (smoke tests of every family)."""
    out = tmp_path_factory.mktemp("synth")
    synthetic.write(
        out, {"train": 240, "validation": 40, "test": 80}, size=48, seed=1, progress=False, style="simple"
    )
    return out


@pytest.fixture(scope="session")
def pathvqa_dir(tmp_path_factory) -> Path:
    """A small set of the default, PathVQA-shaped style (train 600 / validation 60 / test 200 pairs, 48 px)."""
    out = tmp_path_factory.mktemp("pathvqa-style")
    synthetic.write(out, {"train": 600, "validation": 60, "test": 200}, size=48, seed=2, progress=False)
    return out


FAULTS: list[tuple[str, str, str, str]] = []
"""(section, fault, what the test did, what happened): ``docs/faults.md`` is this record, written at the end of
a session run with ``PATHVQA_RELIABILITY_DOC=docs/faults.md pytest tests/test_reliability.py
tests/test_bad_input.py``."""
FAULT_SECTIONS = {
    "faults": "Faults: kills, damaged files, diverging training, untrusted input",
    "bad input": "Bad input: what each command says (one line, exit 2, nothing written)",
}


def record_fault(section: str, fault: str, action: str, outcome: str) -> None:
    FAULTS.append((section, fault, action, outcome))


@pytest.fixture(scope="session", autouse=True)
def faults_doc():
    yield
    target = os.environ.get("PATHVQA_RELIABILITY_DOC")
    if not (target and FAULTS):
        return
    lines = [
        "# Reliability: faults and bad inputs tried, and what happened",
        "",
        "Written by `tests/test_reliability.py` and `tests/test_bad_input.py` from what each test observed "
        "(CPU, tiny models): `PATHVQA_RELIABILITY_DOC=docs/faults.md pytest tests/test_reliability.py "
        "tests/test_bad_input.py`.",
    ]
    for section, title in FAULT_SECTIONS.items():
        rows = [row for row in FAULTS if row[0] == section]
        if rows:
            lines += [
                "",
                f"## {title}",
                "",
                "| fault | what the test does | what happened |",
                "|---|---|---|",
            ]
            lines += [f"| {f} | {a} | {o} |" for _, f, a, o in rows]
    Path(target).write_text("\n".join([*lines, ""]))


def write_jsonl(folder: Path, split: str, rows: list[dict]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{split}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def model_inputs(family, bundle, samples, train: bool, task: str = "vqa") -> dict:
    """The family's model inputs for ``samples`` with their images (no augmentation), as the loop gets them."""
    from pathvqa.data.batches import ImagePipeline

    images = ImagePipeline(bundle.image_size).batch(samples)
    return family.inputs(bundle, samples, images, task, train).tensors


def pytest_collection_modifyitems(session, config, items):
    """The learning tests last: they wait for the background trainings, which the rest of the suite
    runs beside."""
    items.sort(key=lambda item: item.nodeid.startswith("tests/test_recipes.py"))


def pytest_collection_finish(session):
    """Start the tiny recipes' trainings (minutes) in the background as soon as they are selected (after
    ``-m``/``-k`` deselection), so the rest of the suite runs beside them instead of before them."""
    items = session.items
    if session.config.option.collectonly or not any(
        i.nodeid.startswith("tests/test_recipes.py") for i in items
    ):
        return
    from tests import test_recipes

    test_recipes.start_training()
    from pathvqa.runtime.processes import beside_trainings

    # The two trainings hold both cores of a 2-core machine and end the suite: they go first. The rest
    # of the suite (and every process it starts) runs beside them at a lower priority, in the CPU time
    # they leave, and with one torch thread (two would oversubscribe the cores, and OpenMP threads spin
    # while they wait); ``pytest_runtest_setup`` gives the cores back once the trainings are done.
    # Measured: with equal priority the trainings finished last, ~80 s apart with a core idle between.
    os.nice(BESIDE_TRAININGS_NICENESS)
    beside_trainings()


BESIDE_TRAININGS_NICENESS = 5
"""CPU weight 335 against the trainings' 1024 (Linux): they keep most of their cores, the rest still moves."""


def pytest_runtest_setup(item):
    """Every core for the tests once the background trainings are done."""
    from tests import test_recipes

    job = test_recipes.STARTED.get("job")
    if job is not None and job.poll() is not None:
        test_recipes.give_cores_back()
