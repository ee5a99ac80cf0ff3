"""Another lab's stain: HED colour deconvolution against scikit-image's own, the stress's identity at strength
0 and its reproducibility, Macenko and Reinhard normalisation of a tile to its own stain, the embedded set's
other-lab test split, HED augmentation in training, ``eval --stain-shift``, and bad input."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from skimage.color import combine_stains, rgb2hed, rgb_from_hed

from pathvqa.config import load_config
from pathvqa.config.schema import AugmentConfig
from pathvqa.data import stain
from pathvqa.data.images import augment
from pathvqa.synth import generator as synthetic
from tests.conftest import QUICK, run_cli


@pytest.fixture(scope="module")
def lab_set(tmp_path_factory):
    """A small PathVQA-shaped set with its other-lab test split (48 px)."""
    out = tmp_path_factory.mktemp("other-lab")
    synthetic.write(out, {"train": 240, "validation": 40, "test": 60}, size=48, seed=3, progress=False,
                    other_lab=True)  # fmt: skip
    return out


def rows_of(folder, split: str) -> list[dict]:
    return pq.read_table(folder / "data" / f"{split}-00000-of-00001.parquet").to_pylist()


def pixels(encoded: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(encoded)) as image:
        return np.asarray(image.convert("RGB"))


def tiles(folder, n: int = 6) -> list[np.ndarray]:
    """The first ``n`` distinct images of the test split: real-looking tiles, every stain the set draws."""
    seen: dict[str, np.ndarray] = {}
    for row in rows_of(folder, "test"):
        seen.setdefault(row["image"]["path"], pixels(row["image"]["bytes"]))
    return list(seen.values())[:n]


def test_hed_round_trips_and_agrees_with_scikit_image(lab_set):
    for tile in tiles(lab_set):
        hed = stain.to_hed(tile)
        assert np.abs(stain.from_hed(hed).astype(int) - tile).max() <= 1, "the round trip to 1 grey level"
        kept = (hed >= 0).all(-1)  # where rgb2hed clamps nothing: the same concentrations, in its units
        assert kept.any()
        np.testing.assert_allclose(hed[kept] / stain.SKIMAGE_SCALE, rgb2hed(tile)[kept], atol=1e-12)
        back = combine_stains(np.clip(hed, 0, None) / stain.SKIMAGE_SCALE, rgb_from_hed)
        np.testing.assert_allclose(stain.from_hed(np.clip(hed, 0, None)), np.round(back * 255), atol=1)
    batch = np.stack(tiles(lab_set, 4))
    rng = np.random.default_rng(0)
    alpha, beta = rng.uniform(0.8, 1.2, (4, 3)), rng.uniform(-0.2, 0.2, (4, 3))
    slow = stain.from_hed(stain.to_hed(batch) * alpha[:, None, None] + beta[:, None, None])
    assert np.abs(stain.hed_jitter(batch, alpha, beta).astype(int) - slow).max() <= 1, "float32, one map"


def test_the_stress_is_the_identity_at_zero_and_the_same_bytes_every_time(lab_set):
    encoded = rows_of(lab_set, "test")[0]["image"]["bytes"]
    assert stain.stressed(encoded, 0, 0) is encoded
    light, again = stain.stressed(encoded, 0.05, 0), stain.stressed(encoded, 0.05, 0)
    assert light == again and light != stain.stressed(encoded, 0.05, 1)
    moved = [
        np.abs(pixels(stain.stressed(encoded, s, 0)).astype(int) - pixels(encoded)).mean()
        for s in (0.05, 0.2)
    ]
    assert 0 < moved[0] < moved[1], moved


def real_tile() -> np.ndarray:
    """A real stained micrograph (scikit-image's immunohistochemistry sample, shipped with it), 256 px."""
    from skimage import data

    return data.immunohistochemistry()[128:384, 128:384]


def test_normalising_a_tile_to_its_own_stain_is_near_identity(lab_set):
    tile = real_tile()
    assert np.abs(stain.from_hed(stain.to_hed(tile)).astype(int) - tile).max() <= 1
    for method, within in (("reinhard", 1.0), ("macenko", 2.0)):
        same = stain.fit_normalizer(method, tile).normalize(tile)
        assert np.abs(same.astype(int) - tile).mean() < within, method  # grey levels, mean over pixels
    # the embedded set's tiles hold colours no two stains make (black mitoses, red cells): Macenko rebuilds
    # them from two stains only, so a tile normalised to itself moves by about 12 grey levels there
    synthetic_tile = tiles(lab_set, 1)[0]
    moved = np.abs(
        stain.fit_normalizer("macenko", synthetic_tile).normalize(synthetic_tile).astype(int) - synthetic_tile
    )
    assert moved.mean() < 30


def test_the_other_lab_split_asks_the_same_questions_of_restained_images(lab_set, tmp_path):
    plain, other = rows_of(lab_set, "test"), rows_of(lab_set, "test_other_lab")
    assert [(r["question"], r["answer"], r["region"]) for r in plain] == [
        (r["question"], r["answer"], r["region"]) for r in other
    ]
    assert all(a["image"]["bytes"] != b["image"]["bytes"] for a, b in zip(plain, other, strict=True))
    profiles = [stain.profile([r["image"]["bytes"] for r in rows]) for rows in (plain, other)]
    assert profiles[0] != profiles[1]
    again = tmp_path / "again"
    synthetic.write(again, {"train": 240, "validation": 40, "test": 60}, size=48, seed=3, progress=False,
                    other_lab=True)  # fmt: skip
    assert rows_of(again, "test_other_lab") == other, "same seed, same bytes"
    proc = run_cli("data-stats", "--dataset", lab_set, "--split", "test")
    assert "test_other_lab" in proc.stdout and "haematoxylin" in proc.stdout


def test_hed_augmentation_draws_per_sample_and_leaves_the_other_draws_alone():
    images = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    plain = augment(images, AugmentConfig(), [5, 6, 7, 8])
    none = augment(images, AugmentConfig(stain={"strength": 0.0}), [5, 6, 7, 8])
    hed = augment(images, AugmentConfig(stain={"strength": 0.1}), [5, 6, 7, 8])
    assert torch.equal(plain, none) and not torch.equal(plain, hed)
    assert torch.equal(hed, augment(images, AugmentConfig(stain={"strength": 0.1}), [5, 6, 7, 8]))
    alone = augment(images[1:2], AugmentConfig(stain={"strength": 0.1}), [6])
    assert torch.equal(alone[0], hed[1]), "a sample's draw does not depend on its batch"


@pytest.fixture(scope="module")
def lab_run(tmp_path_factory, lab_set):
    from pathvqa.training.stages import fit

    root = tmp_path_factory.mktemp("lab_run")
    sets = [f"data.dataset={lab_set}", *QUICK, "train.max_steps=4", "train.eval_every=4",
            "train.augment.stain={method: hed, strength: 0.1}", "data.stain_normalize={method: reinhard}"]  # fmt: skip
    fit(load_config("configs/blip_tiny.yaml", sets), root / "run", progress=False)
    return root / "run"


def test_eval_stain_shift_pairs_each_strength_with_the_plain_answers(lab_run, tmp_path):
    run_cli(
        "eval", "--checkpoint", lab_run, "--out", tmp_path / "e", "--limit", "24", "--stain-shift", "0,0.1"
    )
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    shift = metrics["stain_shift"]
    assert shift["method"] == "hed" and shift["strengths"] == [0.0, 0.1] and len(shift["results"]) == 2

    def answers(path):
        return [(r["id"], r["prediction"]) for r in map(json.loads, path.read_text().splitlines())]

    plain = answers(tmp_path / "e" / "predictions.jsonl")  # the evaluation without the stress
    assert answers(tmp_path / "e" / "predictions_stain_0.jsonl") == plain, "strength 0: the plain answers"
    assert len(answers(tmp_path / "e" / "predictions_stain_0.1.jsonl")) == len(plain)
    zero = shift["results"][0]["paired"]["closed_accuracy"]
    assert zero["difference"] == 0
    from pathvqa.analysis.report import build

    files = build([f"stressed={tmp_path / 'e'}"], tmp_path / "report")
    assert files["stain_shift"].is_file() and "Stain shift" in files["html"].read_text()
    config = (lab_run / "config.yaml").read_text()
    assert "strength: 0.1" in config and "reinhard" in config


def test_stain_bad_input_is_one_line(lab_run, lab_set, tmp_path):
    grey = tmp_path / "grey"
    synthetic.write(grey, {"train": 40, "test": 8}, size=24, seed=0, progress=False, style="simple")
    for split in ("train", "test"):  # the same set in greyscale
        path = grey / "data" / f"{split}-00000-of-00001.parquet"
        rows = pq.read_table(path).to_pylist()
        for row in rows:
            buffer = io.BytesIO()
            Image.open(io.BytesIO(row["image"]["bytes"])).convert("L").save(buffer, format="PNG")
            row["image"]["bytes"] = buffer.getvalue()
        pq.write_table(pq.read_table(path).from_pylist(rows, schema=pq.read_schema(path)), path)
    (tmp_path / "notes.png").write_text("not an image\n")
    train = ["train", "configs/blip_tiny.yaml", "--out", tmp_path / "t", "--set", f"data.dataset={lab_set}"]
    cases = {
        "an unknown method": ([*train, "--set", "train.augment.stain={method: rgb}"], "'hed'"),
        "a strength below 0": ([*train, "--set", "train.augment.stain={strength: -0.1}"], "strength"),
        "an unknown normalisation": ([*train, "--set", "data.stain_normalize={method: vahadane}"], "macenko"),
        "a target that is not an image": (
            [*train, "--set", f"data.stain_normalize={{target: {tmp_path / 'notes.png'}}}"], "not an image file",
        ),
        "normalising a greyscale dataset": (
            ["train", "configs/blip_tiny.yaml", "--out", tmp_path / "g", "--set", f"data.dataset={grey}",
             "--set", "data.stain_normalize={method: macenko}"], "greyscale",
        ),
        "--stain-shift below 0": (
            ["eval", "--checkpoint", lab_run, "--out", tmp_path / "s", "--stain-shift", "-0.1"], "0 or more",
        ),
        "--stain-shift that is not a number": (
            ["eval", "--checkpoint", lab_run, "--out", tmp_path / "s", "--stain-shift", "light"], "as numbers",
        ),
        "--stain-shift with --blind": (
            ["eval", "--checkpoint", lab_run, "--out", tmp_path / "s", "--stain-shift", "0.1", "--blind"], "--blind",
        ),
    }  # fmt: skip
    for name, (args, says) in cases.items():
        proc = run_cli(*args, check=False)
        lines = [
            line for line in proc.stderr.strip().splitlines() if not line.startswith(("INFO ", "WARNING "))
        ]
        assert proc.returncode == 2 and len(lines) == 1 and says in lines[0], (name, proc.stderr[-800:])
    assert not any((tmp_path / name).exists() for name in ("t", "g", "s"))
