"""Where the model looked: the embedded set's regions, the grounding scores validated on maps whose answer is
known, a map for every family, and ``pathvqa explain``."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pathvqa.config import load_config
from pathvqa.data.prepare import load_split
from pathvqa.data.regions import split_regions
from pathvqa.scoring.grounding import grounding_table, mass_in, pointing, question_scores, rank_correlation
from pathvqa.synth import questions, tiles
from tests.conftest import run_cli
from tests.test_confidence import FAMILIES, tiny


def disk_region(size: int = 48, radius: int = 10, centre=(16, 20)) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2


def test_a_map_equal_to_the_region_scores_one_and_a_uniform_map_its_area_share():
    region = disk_region()
    area = float(region.mean())
    assert pointing(region.astype(float), region) == 1.0 and mass_in(region.astype(float), region) == 1.0
    flat = np.ones(region.shape)
    assert pointing(flat, region) == pytest.approx(area) and mass_in(flat, region) == pytest.approx(area)
    assert mass_in(np.zeros(region.shape), region) == pytest.approx(area)  # a zero map counts as uniform
    outside = (~region).astype(float)
    assert pointing(outside, region) == 0.0 and mass_in(outside, region) == 0.0
    peak = np.zeros(region.shape)
    peak[16, 20] = 1.0
    assert pointing(peak, region) == 1.0


def test_the_rank_correlation_and_the_table_read_off_the_same_scores():
    rng = np.random.default_rng(0)
    a = rng.random((12, 12))
    assert rank_correlation(a, a) == pytest.approx(1.0) and rank_correlation(a, -a) == pytest.approx(-1.0)
    assert rank_correlation(a, np.ones_like(a)) is None
    region = disk_region(12, 3, (6, 6))
    rows = [question_scores(region.astype(float), np.ones((12, 12)), region) for _ in range(5)]
    rows += [question_scores(np.ones((12, 12)), np.ones((12, 12)), region) for _ in range(5)]
    table = grounding_table(rows, ["finding"] * 5 + ["mitoses"] * 5, [True] * 5 + [False] * 5)
    assert table["all"]["n"] == 10 and table["kind:finding"]["pointing"] == 1.0
    assert table["kind:mitoses"]["pointing"] == pytest.approx(region.mean(), abs=1e-4)
    assert table["kind:finding"]["pointing_gain_over_uniform"] == pytest.approx(1 - region.mean(), abs=1e-4)
    assert table["answer:wrong"]["pointing_gain_over_randomised"] == pytest.approx(0.0)
    low, high = table["all"]["pointing_ci"]
    assert low <= table["all"]["pointing"] <= high


def test_the_embedded_set_names_the_region_of_each_question_about_one(pathvqa_dir):
    regions = split_regions(str(pathvqa_dir), "test")
    samples = {s.id: s for s in load_split(str(pathvqa_dir), "test", dedupe=False, progress=False).samples}
    assert {r.kind for r in regions.values()} == set(tiles.REGION_KINDS)
    for qid, region in regions.items():
        mask = region.mask()
        assert mask.shape == (48, 48) and 0 < mask.mean() < 1, qid
        assert samples[qid].answer != "no", "a 'no' concerns nothing that is there"
    mitoses = [q for q, r in regions.items() if r.kind == "mitoses"]
    assert all("mitotic" in samples[q].question for q in mitoses)
    stains = [s for s in samples.values() if "stain" in s.question]
    assert stains and not any(s.id in regions for s in stains), "a stain is everywhere: no region"
    tile = tiles.PathTile("lung", "necrosis", "focal", "fibrosis", "hematoxylin and eosin", 2)
    assert questions.region_of("subject", tile, "fibrosis") == "secondary"
    assert questions.region_of("subject", tile, "necrosis") == "finding"
    assert questions.region_of("mitoses", tile) == "mitoses"
    assert (
        questions.region_of("finding", tiles.PathTile("lung", None, None, None, "masson trichrome", 0))
        is None
    )
    proc = run_cli("data-stats", "--dataset", pathvqa_dir, "--split", "test")
    assert "region" in proc.stdout and f"{len(regions)} of" in proc.stdout


@pytest.mark.parametrize("name", FAMILIES)
def test_every_family_maps_an_answer_at_the_image_size(pathvqa_dir, name):
    from pathvqa.evaluation.explain import answer_maps, randomised

    family, bundle = tiny(pathvqa_dir, name)
    samples = load_split(str(pathvqa_dir), "test", progress=False).samples[:2]
    shuffled = randomised(bundle)
    maps = answer_maps(family, bundle, samples, ["yes", "necrosis"])
    again = answer_maps(family, shuffled, samples, ["yes", "necrosis"])
    for m, r in zip(maps, again, strict=True):
        assert m.shape == r.shape == (48, 48) and (m >= 0).all() and np.isfinite(m).all()
    pairs = zip(bundle.model.state_dict().values(), shuffled.model.state_dict().values(), strict=True)
    assert sum(not torch.equal(a, b) for a, b in pairs) > 2, "randomised: the weights drawn again"


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, pathvqa_dir):
    from pathvqa.training.stages import fit

    root = tmp_path_factory.mktemp("explain_run")
    sets = [f"data.dataset={pathvqa_dir}", "stages=[]", "model.image_size=32", "model.hidden_size=32",
            "train.max_steps=6", "train.eval_every=6", "data.eval_samples=8", "eval.max_new_tokens=3"]  # fmt: skip
    fit(load_config("configs/vlm_tiny.yaml", sets), root / "run", progress=False)
    return root / "run"


def test_explain_writes_one_map_and_scores_a_split(trained_run, pathvqa_dir, tmp_path):
    tile = tmp_path / "tile.png"
    sample = load_split(str(pathvqa_dir), "test", progress=False).samples[0]
    tile.write_bytes(sample.image)
    proc = run_cli("explain", "--checkpoint", trained_run, "--image", tile, "--question", sample.question,
                   "--out", tmp_path / "map.png")  # fmt: skip
    assert "map:" in proc.stdout and "(p = " in proc.stdout
    with Image.open(tmp_path / "map.png") as drawn:
        assert drawn.width > drawn.height > 100
    refused = run_cli("explain", "--checkpoint", trained_run, "--image", tile, "--question", "q?",
                      "--out", tmp_path / "map.png", check=False)  # fmt: skip
    assert refused.returncode == 2 and "--overwrite" in refused.stderr

    proc = run_cli(
        "explain", "--checkpoint", trained_run, "--score", "--limit", "24", "--out", tmp_path / "g"
    )
    result = json.loads((tmp_path / "g" / "grounding.json").read_text())
    assert result["questions"] == 24 and len(result["rows"]) == 24 and (tmp_path / "g" / "maps.png").is_file()
    whole = result["table"]["all"]
    for key in ("pointing", "mass", "uniform", "pointing_randomised", "mass_randomised", "rank_correlation"):
        assert key in whole and f"{key}_ci" in whole, key
    assert 0 < whole["uniform"] < 1 and "pointing" in proc.stdout
    stages = result["cascade"]
    assert [s["share"] for s in stages] == [0.25, 0.5, 0.75, 1.0] and (
        tmp_path / "g" / "cascade.png"
    ).is_file()
    assert stages[-1]["modules"] == stages[-1]["of"] > stages[0]["modules"] >= 1
    full = [r["rank_correlation"] for r in result["rows"] if r["rank_correlation"] is not None]
    assert stages[-1]["rank_correlation"] == pytest.approx(np.mean(full), abs=1e-4), (
        "24 ≤ 48: the same answers"
    )


def test_the_cascade_draws_the_layers_again_from_the_top(pathvqa_dir):
    from pathvqa.evaluation.explain import layers_from_the_top, randomised

    _, bundle = tiny(pathvqa_dir, "vlm_tiny")
    names = layers_from_the_top(bundle.model)
    modules = dict(bundle.model.named_modules())
    quarter = dict(randomised(bundle, 0.25).model.named_modules())
    changed = [n for n in names if any(not torch.equal(a, b) for a, b in zip(
        modules[n].parameters(recurse=False), quarter[n].parameters(recurse=False), strict=True))]  # fmt: skip
    assert changed and set(changed) <= set(names[: round(0.25 * len(names))]), "only the top quarter"
    assert names[-1] not in changed, "the first layer the model declares is kept"


def test_explain_refuses_bad_input_in_one_line(trained_run, synth_dir, tmp_path):
    tile = tmp_path / "notes.png"
    tile.write_text("not an image\n")
    cases = [
        ("--image", tile, "--question", "what is this?", "--out", tmp_path / "a.png"),
        ("--image", tile, "--question", "  ", "--out", tmp_path / "b.png"),
        ("--score", "--image", tile, "--out", tmp_path / "c"),
        ("--score", "--dataset", synth_dir, "--out", tmp_path / "d"),  # the simple style marks no regions
    ]
    for args in cases:
        proc = run_cli("explain", "--checkpoint", trained_run, *args, check=False)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), (args, proc.stderr)
    assert not any((tmp_path / name).exists() for name in ("a.png", "b.png", "c", "d"))


def test_a_family_that_cannot_map_and_an_empty_answer_are_one_line(
    trained_run, pathvqa_dir, tmp_path, monkeypatch
):
    from dataclasses import replace

    from pathvqa.models.base import Family
    from pathvqa.models.registry import get_family

    tile = tmp_path / "tile.png"
    tile.write_bytes(load_split(str(pathvqa_dir), "test", progress=False).samples[0].image)
    family = type(get_family("vlm"))
    args = (
        "explain",
        "--checkpoint",
        trained_run,
        "--image",
        tile,
        "--question",
        "q?",
        "--out",
        tmp_path / "m.png",
    )
    generate = family.generate
    monkeypatch.setattr(family, "generate", lambda *a, **k: [replace(g, text="") for g in generate(*a, **k)])
    empty = run_cli(*args, check=False)
    monkeypatch.setattr(family, "patch_site", Family.patch_site)  # what a family that names no site says
    no_site = run_cli(*args, check=False)
    for proc, says in ((empty, "no answer to this question"), (no_site, "cannot say where its image patch")):
        # (in this process the test's own log handler shows INFO records, which a real process does not)
        lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("INFO ")]
        assert proc.returncode == 2 and len(lines) == 1 and says in lines[0], proc.stderr
    assert not (tmp_path / "m.png").exists()
