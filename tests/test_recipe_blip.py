"""The BLIP recipe end to end on the synthetic set: the bars of the BLIP issue, measured."""

import json

import pytest

from pathvqa.config import load_config
from pathvqa.data import synthetic
from pathvqa.evaluate import run
from pathvqa.train import fit


@pytest.mark.slow
def test_blip_tiny_learns_the_synthetic_set_and_needs_the_image(tmp_path):
    data = tmp_path / "data"
    synthetic.write(data, {"train": 2000, "validation": 200, "test": 400}, size=96, seed=0, progress=False)
    cfg = load_config("configs/blip_tiny.yaml", [f"data.dataset={data}"])
    fit(cfg, tmp_path / "run", progress=False)
    normal = run(out=tmp_path / "eval", checkpoint_dir=str(tmp_path / "run"), progress=False)
    blind = run(out=tmp_path / "blind", checkpoint_dir=str(tmp_path / "run"), blind=True, progress=False)
    summary = {k: normal[k] for k in ("closed_accuracy", "open_exact_match", "exact_match", "meteor")}
    summary["blind_closed_accuracy"] = blind["closed_accuracy"]
    print(json.dumps(summary))
    assert normal["n"] == 400
    assert normal["closed_accuracy"] >= 0.80, summary
    assert normal["open_exact_match"] >= 0.50, summary
    assert blind["closed_accuracy"] <= 0.65, summary
