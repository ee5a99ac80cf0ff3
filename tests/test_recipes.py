"""The tiny recipes end to end on the synthetic set: the bars of the BLIP and VLM issues, measured.

Both train from scratch on 2,000 pairs at once, one CPU thread each (about 5 minutes together on 2
cores), and are scored on the 400 test pairs, with images and blind (grey images: what the question
alone gives).
"""

import json
import subprocess
import sys
import time

import pytest

from pathvqa.data import synthetic
from pathvqa.evaluate import run

RECIPES = ["blip_tiny", "vlm_tiny"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Both recipes trained side by side (``pathvqa train``), each on one thread: {config: (run, seconds)}."""
    root = tmp_path_factory.mktemp("recipes")
    data = root / "data"
    synthetic.write(data, {"train": 2000, "validation": 200, "test": 400}, size=96, seed=0, progress=False)
    started = time.perf_counter()
    procs = {}
    for config in RECIPES:
        args = ["train", f"configs/{config}.yaml", "--out", root / config, "--set", f"data.dataset={data}"]
        with (root / f"{config}.log").open("w") as log:  # a file, not a pipe: neither process can block
            procs[config] = subprocess.Popen(
                [sys.executable, "-m", "pathvqa", *map(str, args), "--set", "train.threads=1"],
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
    done = {}
    for config, proc in procs.items():
        proc.wait(timeout=1200)
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
    summary.update(blind_closed_accuracy=blind["closed_accuracy"], train_seconds_both_at_once=seconds)
    print(config, json.dumps(summary))  # shown with -s / in the -ra report on failure
    assert normal["n"] == 400
    assert normal["closed_accuracy"] >= 0.80, summary
    assert normal["open_exact_match"] >= 0.50, summary
    assert blind["closed_accuracy"] <= 0.65, summary
