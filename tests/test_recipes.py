"""The tiny recipes end to end on the synthetic set: the bars of the BLIP and VLM issues, measured.

Each trains from scratch (about 3–4 minutes on 2 CPU cores) on 2,000 pairs and is scored on the
400 test pairs, with images and blind (grey images: what the question alone gives).
"""

import json
import time

import pytest

from pathvqa.config import load_config
from pathvqa.data import synthetic
from pathvqa.evaluate import run
from pathvqa.train import fit


@pytest.fixture(scope="module")
def recipe_data(tmp_path_factory):
    data = tmp_path_factory.mktemp("recipe_data")
    synthetic.write(data, {"train": 2000, "validation": 200, "test": 400}, size=96, seed=0, progress=False)
    return data


@pytest.mark.slow
@pytest.mark.parametrize("config", ["blip_tiny", "vlm_tiny"])
def test_tiny_recipe_learns_the_synthetic_set_and_needs_the_image(tmp_path, recipe_data, config):
    cfg = load_config(f"configs/{config}.yaml", [f"data.dataset={recipe_data}"])
    started = time.perf_counter()
    fit(cfg, tmp_path / "run", progress=False)
    seconds = time.perf_counter() - started
    normal = run(out=tmp_path / "eval", checkpoint_dir=str(tmp_path / "run"), progress=False)
    blind = run(out=tmp_path / "blind", checkpoint_dir=str(tmp_path / "run"), blind=True, progress=False)
    summary = {k: normal[k] for k in ("closed_accuracy", "open_exact_match", "exact_match", "meteor")}
    summary.update(blind_closed_accuracy=blind["closed_accuracy"], train_seconds=round(seconds))
    print(config, json.dumps(summary))  # shown with -s / in the -ra report on failure
    assert normal["n"] == 400
    assert normal["closed_accuracy"] >= 0.80, summary
    assert normal["open_exact_match"] >= 0.50, summary
    assert blind["closed_accuracy"] <= 0.65, summary
