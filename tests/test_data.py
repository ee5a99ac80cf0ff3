import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pathvqa.answers import answer_type
from pathvqa.data import images
from pathvqa.data.prepare import clean_answer, load_split
from pathvqa.data.spec import open_split
from pathvqa.errors import DataError
from pathvqa.synth.generator import _features
from tests.conftest import noise_image, png_bytes, run_cli, write_jsonl


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def messy_rows() -> list[dict]:
    """Six good rows in six image modes, and one bad row of each kind."""
    rgb = noise_image(0)
    i16 = Image.fromarray((np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 60), mode="I;16")
    good = [
        (png_bytes(rgb), "is there necrosis?", "Yes."),
        (png_bytes(noise_image(1, mode="L")), "what stain is used?", "hematoxylin and eosin"),
        (png_bytes(noise_image(2, mode="P")), "what does this image show?", "  Squamous  cell carcinoma "),
        (png_bytes(noise_image(3, mode="RGBA")), "are nuclei pleomorphic?", "no"),
        (_encode(noise_image(4, mode="CMYK"), "JPEG"), "how many vessels?", "two"),
        (png_bytes(i16), "what organ?", "liver"),
    ]
    full = png_bytes(noise_image(5))
    huge = png_bytes(Image.new("1", (7000, 7000)))  # 49 MP, a few KB on disk
    bad = [
        (b"not an image at all", "is there fibrosis?", "no"),  # corrupt
        (full[: len(full) // 2], "is there fibrosis?", "yes"),  # truncated
        (png_bytes(noise_image(6)), "   ", "yes"),  # empty question
        (png_bytes(noise_image(7)), "is there hemorrhage?", None),  # missing answer
        (png_bytes(rgb), "is there necrosis?", "Yes."),  # exact duplicate of the first row
        (huge, "is there inflammation?", "no"),  # over the pixel limit
        (None, "is there inflammation?", "yes"),  # missing image
    ]
    return [{"image": {"bytes": b, "path": None}, "question": q, "answer": a} for b, q, a in good + bad]


EXPECTED_SKIPS = {
    "undecodable_image": 2,
    "empty_question": 1,
    "missing_answer": 1,
    "duplicate": 1,
    "image_too_large": 1,
    "missing_image": 1,
}


def write_hub_layout(folder, rows, split="train"):
    (folder / "data").mkdir(parents=True, exist_ok=True)
    schema = _features().arrow_schema
    schema = pa.schema([f for f in schema if f.name != "caption"], metadata=schema.metadata)
    pq.write_table(
        pa.Table.from_pylist(rows, schema=schema), folder / "data" / f"{split}-00000-of-00001.parquet"
    )


def write_flat_parquet(folder, rows, split="train"):
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), folder / f"{split}.parquet")


def write_save_to_disk(folder, rows, split="train"):
    from datasets import Dataset, DatasetDict, Features, Image, Value

    features = Features(
        {"image": Image(decode=False), "question": Value("string"), "answer": Value("string")}
    )
    rows = [{**r, "image": r["image"] if r["image"]["bytes"] else None} for r in rows]
    DatasetDict({split: Dataset.from_list(rows, features=features)}).save_to_disk(str(folder))


def write_jsonl_images(folder, rows, split="train"):
    (folder / "images").mkdir(parents=True, exist_ok=True)
    records = []
    for i, row in enumerate(rows):
        data = row["image"]["bytes"]
        rel = f"images/{i}.img"
        if data is not None:
            (folder / rel).write_bytes(data)
        records.append({"image": rel, "question": row["question"], "answer": row["answer"]})
    write_jsonl(folder, split, records)


@pytest.mark.parametrize(
    "writer", [write_hub_layout, write_flat_parquet, write_save_to_disk, write_jsonl_images]
)
def test_every_source_kind_skips_bad_rows_by_reason(tmp_path, writer):
    writer(tmp_path / "ds", messy_rows())
    data = load_split(str(tmp_path / "ds"), "train", progress=False)
    stats = data.stats()
    assert stats["rows_total"] == 13 and stats["rows_kept"] == 6 and stats["rows_skipped"] == 7
    assert stats["skipped_reasons"] == EXPECTED_SKIPS
    assert (stats["closed"], stats["open"]) == (2, 4)
    assert [s.target for s in data.samples][:3] == ["yes", "hematoxylin and eosin", "squamous cell carcinoma"]
    for s in data.samples:  # every kept image decodes to RGB whatever its mode
        assert images.decode(s.image, 40_000_000).mode == "RGB"


def test_data_stats_cli_json(tmp_path):
    write_hub_layout(tmp_path / "ds", messy_rows())
    stats = json.loads(
        run_cli("data-stats", "--dataset", tmp_path / "ds", "--split", "train", "--json").stdout
    )
    for key in (
        "rows_total",
        "rows_kept",
        "rows_skipped",
        "skipped_reasons",
        "closed",
        "open",
        "unique_answers",
        "top_answers",
    ):
        assert key in stats
    assert stats["skipped_reasons"] == EXPECTED_SKIPS and stats["unique_answers"] == 6
    # a lower pixel limit turns more images away, counted under the same reason
    stats = json.loads(
        run_cli("data-stats", "--dataset", tmp_path / "ds", "--max-pixels", "500", "--json").stdout
    )
    assert stats["skipped_reasons"]["image_too_large"] == 9 and stats["rows_kept"] == 0


def test_missing_source_and_split_fail_with_what_was_looked_for(tmp_path):
    proc = run_cli("data-stats", "--dataset", tmp_path / "nothing", check=False)
    assert proc.returncode == 2 and "dataset not found" in proc.stderr and "Traceback" not in proc.stderr
    write_hub_layout(tmp_path / "ds", messy_rows())
    with pytest.raises(DataError, match=r"split 'test' not found .*data/test-\*\.parquet"):
        open_split(str(tmp_path / "ds"), "test")


def test_hub_id_offline_fails_clearly():
    proc = run_cli("data-stats", "--dataset", "flaviagiammarino/path-vqa", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "'flaviagiammarino/path-vqa' split 'train'" in proc.stderr and "offline mode is on" in proc.stderr
    assert "save_to_disk" in proc.stderr
    assert proc.stderr.strip().count("\n") == 0


def test_jsonl_lines_that_are_not_json_are_counted(tmp_path):
    folder = tmp_path / "ds"
    write_jsonl_images(folder, messy_rows()[:2])
    with open(folder / "train.jsonl", "a") as f:
        f.write("{broken json\n")
    stats = load_split(str(folder), "train", progress=False).stats()
    assert stats["rows_kept"] == 2 and stats["skipped_reasons"] == {"invalid_row": 1}


@pytest.mark.parametrize(
    ("raw", "clean", "kind"),
    [
        ("Yes.", "yes", "closed"),
        (" NO!! ", "no", "closed"),
        ("Carcinoma  in situ.", "carcinoma in situ", "open"),
        ("no, it is not", "no, it is not", "open"),
    ],
)
def test_clean_answer_and_type(raw, clean, kind):
    assert clean_answer(raw) == clean and answer_type(clean) == kind


def test_seeded_subsample_is_reproducible(synth_dir):
    a = load_split(str(synth_dir), "train", samples=50, seed=3, progress=False).samples
    b = load_split(str(synth_dir), "train", samples=50, seed=3, progress=False).samples
    c = load_split(str(synth_dir), "train", samples=50, seed=4, progress=False).samples
    assert len(a) == 50 and [s.id for s in a] == [s.id for s in b] != [s.id for s in c]


def test_to_rgb_scales_16_bit():
    image = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16), mode="I;16")
    assert images.to_rgb(image).getpixel((0, 0)) == (255, 255, 255)
    rgba = Image.new("RGBA", (2, 2), (0, 0, 0, 0))  # fully transparent → white background
    assert images.to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("writer", [write_hub_layout, write_save_to_disk, write_jsonl_images])
def test_lazy_images_hold_references_not_bytes(tmp_path, writer):
    writer(tmp_path / "ds", messy_rows())
    eager = load_split(str(tmp_path / "ds"), "train", progress=False)
    lazy = load_split(str(tmp_path / "ds"), "train", progress=False, lazy_images=True)
    assert lazy.stats() == eager.stats()
    assert all(not isinstance(s.image_source, bytes) for s in lazy.samples)
    assert [s.image for s in lazy.samples] == [s.image for s in eager.samples]


@pytest.mark.slow
def test_training_and_evaluation_read_images_lazily(tmp_path, synth_dir):
    from pathvqa.config import load_config
    from pathvqa.evaluation.evaluate import run
    from pathvqa.training.stages import fit

    sets = [
        f"data.dataset={synth_dir}",
        "data.lazy_images=true",
        "data.cache_images=false",
        "train.max_steps=2",
        "model.hidden_size=32",
        "model.num_layers=1",
        "model.image_size=32",
        "train.threads=2",
    ]
    fit(load_config("configs/blip_tiny.yaml", sets), tmp_path / "run", progress=False)
    assert run(out=tmp_path / "eval", checkpoint_dir=str(tmp_path / "run"), progress=False)["n"] == 80


def test_augment_is_label_preserving_seeded_and_independent_of_the_batch():
    from types import SimpleNamespace

    import torch

    tiles = torch.randint(
        0, 256, (16, 3, 24, 24), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    seeds = images.augment_seeds(3, 1, list(range(16)))
    geometric = SimpleNamespace(hflip=True, vflip=True, rot90=True, stain_jitter=0.0)
    out = images.augment(tiles, geometric, seeds)
    for tile, moved in zip(tiles, out, strict=True):  # each a flip/rotation of its own tile, no new pixels
        dihedral = [torch.rot90(t, k, dims=(-2, -1)) for t in (tile, tile.flip(-1)) for k in range(4)]
        assert any(torch.equal(moved, d) for d in dihedral)
    assert len({tuple(o.flatten()[:8].tolist()) for o in out}) > 1
    jitter = SimpleNamespace(hflip=True, vflip=True, rot90=True, stain_jitter=0.05)
    batch = images.augment(tiles, jitter, seeds)
    assert batch.dtype == torch.uint8 and torch.equal(batch, images.augment(tiles, jitter, seeds))
    alone = images.augment(tiles[5:6], jitter, seeds[5:6])
    assert torch.equal(alone[0], batch[5])  # a sample looks the same in any batch (or process)
    mild = (batch.float() - images.augment(tiles, geometric, seeds).float()).abs().mean()
    assert 0 < mild < 12  # stain jitter shifts colours a little, it does not repaint the tile
