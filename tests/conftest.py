"""Shared fixtures: generated datasets only (tests never download)."""

from __future__ import annotations

import os
import tempfile

# Tests never reach the network: hub ids must fail at once with the offline message.
for _var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_var, "1")
# lazy parquet loads convert through the datasets cache: keep the suite's out of the user's ~/.cache
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="pathvqa-tests-datasets-"))

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pathvqa.data import synthetic


def run_cli(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``python -m pathvqa ARGS`` and return the finished process (text output)."""
    proc = subprocess.run([sys.executable, "-m", "pathvqa", *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"pathvqa {' '.join(map(str, args))} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return proc


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
