"""The tiny recipes end to end on the synthetic set: the bars of the BLIP and VLM issues, measured.

Both train from scratch on 2,000 pairs, one CPU thread each, in background processes that start as
soon as the test session has collected these tests (``conftest.pytest_collection_modifyitems``), so
the rest of the suite runs beside them; each test then scores its run on the 400 test pairs, with
images and blind (grey images: what the question alone gives).
"""

import atexit
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from pathvqa.data import synthetic
from pathvqa.evaluate import run

RECIPES = ["blip_tiny", "vlm_tiny"]
STARTED: dict[str, tuple[subprocess.Popen, Path, float]] = {}


def start_training() -> None:
    """Generate the data and launch both trainings (``pathvqa train``), without waiting."""
    if STARTED:
        return
    root = Path(tempfile.mkdtemp(prefix="pathvqa-recipes-"))
    data = root / "data"
    synthetic.write(data, {"train": 2000, "validation": 200, "test": 400}, size=96, seed=0, progress=False)
    for config in RECIPES:
        args = ["train", f"configs/{config}.yaml", "--out", root / config, "--set", f"data.dataset={data}"]
        with (root / f"{config}.log").open("w") as log:  # a file, not a pipe: neither process can block
            proc = subprocess.Popen(
                [sys.executable, "-m", "pathvqa", *map(str, args), "--set", "train.threads=1"],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        STARTED[config] = (proc, root, time.perf_counter())
        atexit.register(proc.kill)  # a session that ends early leaves no training behind


@pytest.fixture(scope="module")
def trained():
    """{config: (run folder, seconds from launch to finish)} once both trainings are done."""
    start_training()
    done = {}
    for config, (proc, root, started) in STARTED.items():
        proc.wait(timeout=1800)
        assert proc.returncode == 0, f"{config}: {(root / f'{config}.log').read_text()[-3000:]}"
        done[config] = (root / config, round(time.perf_counter() - started))
    return done


@pytest.mark.slow
@pytest.mark.parametrize("config", RECIPES)
def test_tiny_recipe_learns_the_synthetic_set_and_needs_the_image(tmp_path, trained, config):
    run_dir, seconds = trained[config]
    normal = run(out=tmp_path / "eval", checkpoint_dir=str(run_dir), progress=False)
    blind = run(out=tmp_path / "blind", checkpoint_dir=str(run_dir), blind=True, progress=False)
    summary = {k: normal[k] for k in ("closed_accuracy", "open_exact_match", "exact_match", "meteor")}
    summary.update(blind_closed_accuracy=blind["closed_accuracy"], seconds_from_launch=seconds)
    print(config, json.dumps(summary))  # shown with -s / in the -ra report on failure
    assert normal["n"] == 400
    assert normal["closed_accuracy"] >= 0.80, summary
    assert normal["open_exact_match"] >= 0.50, summary
    assert blind["closed_accuracy"] <= 0.65, summary
