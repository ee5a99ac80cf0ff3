"""`make bench`: pathvqa against what people would write instead, in one run, on the same model, data and
batch size; and how data loading grows with the dataset. Prints a table, then one JSON line.

1. Training: blip-tiny through pathvqa's Trainer (configs/blip_tiny.yaml) vs a plain Hugging Face
   ``Trainer`` script written the way its documentation shows (the processor called in the collator;
   default arguments apart from batch size, learning rate and steps): same initial weights, the same
   2,000 PathVQA-shaped synthetic pairs, batch 32, the same number of optimizer steps. Samples/s of the training loop
   (model and data already built on both sides).
2. Evaluation: ``generation.predict`` (what ``pathvqa eval`` runs: length-sorted batches) vs a loop that
   calls ``generate`` once per question, on the same checkpoint and 400 questions; answers must be
   identical; `eval_answers_sha1` fingerprints the answers, so two versions of the code can be compared.
3. Growth: loading and validating 1k / 8k / 32k rows of 256 px images, eager and lazy, each in a fresh
   process: seconds and peak RSS.
4. Each image encoded once (``benchmarks/image_once.py``): evaluation per question vs per image, grouped
   training, a frozen encoder's cached features; ``eval_speedup_image_once`` is real-shape BLIP-base's.
5. Augmentation: images/s of ``data.images.augment`` on the set's tiles (batches of 32 at 96 px, one
   thread: what one DataLoader worker does), as shipped (flips, rotations, optical-density jitter) and with
   HED stain augmentation added (``train.augment.stain``).
6. A map of where the model looked (``benchmarks/explain_cost.py``): its seconds against one forward and
   one backward of the training loss on the same questions; ``map_vs_forward_backward`` is the largest
   ratio (at most 1: a map costs no more than a training step's forward and backward).

    python benchmarks/bench.py [--steps 200] [--skip-growth] [--skip-image-once] [--skip-explain]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import explain_cost  # benchmarks/explain_cost.py, beside this script
import image_once  # benchmarks/image_once.py, beside this script
import torch

from pathvqa.config import load_config
from pathvqa.data.prepare import load_split
from pathvqa.synth import generator as synthetic

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "runs" / "bench_data"
THREADS = 2


def pathvqa_set() -> Path:
    """The PathVQA-shaped set (``pathvqa synth`` style): 2,000 / 200 / 1,500 pairs at 96 px, shared with
    ``benchmarks/image_once.py``."""
    return image_once.dataset()


def synthetic_set(name: str, splits: dict[str, int], size: int) -> Path:
    """The growth measurement's base set: what is measured there is reading rows, not their content."""
    out = CACHE / name
    if not (out / "synth.json").is_file():
        synthetic.write(out, splits, size=size, seed=0, progress=False, style="simple")
    return out


# ---- 1. training ---------------------------------------------------------------------------------------
def train_pathvqa(data: Path, steps: int, out: Path) -> tuple[float, Path]:
    from pathvqa.training.stages import Trainer

    cfg = load_config(
        "configs/blip_tiny.yaml",
        [
            f"data.dataset={data}",
            f"train.max_steps={steps}",
            "data.eval_split=null",
            f"train.threads={THREADS}",
            "train.fused_adamw=true",  # the optimizer kernel the Trainer uses by default: same on both sides
        ],
    )
    trainer = Trainer(cfg, out, progress=False)
    try:
        trainer.setup()
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
        trainer.finish()
    finally:
        trainer.close()
    return steps * cfg.train.batch_size / seconds, out


def train_hf_trainer(data: Path, steps: int) -> float:
    """A plain transformers Trainer script, as its documentation shows it (BLIP VQA fine-tuning)."""
    from PIL import Image
    from transformers import BlipImageProcessor, BlipProcessor, Trainer, TrainingArguments

    from pathvqa.models import tiny
    from pathvqa.models.base import CLIP_MEAN, CLIP_STD

    cfg = load_config("configs/blip_tiny.yaml")
    model, tokenizer = tiny.blip(
        cfg.model.hidden_size, cfg.model.num_layers, cfg.model.image_size, cfg.train.seed
    )
    size = {"height": cfg.model.image_size, "width": cfg.model.image_size}
    processor = BlipProcessor(
        BlipImageProcessor(size=size, image_mean=CLIP_MEAN, image_std=CLIP_STD), tokenizer
    )
    rows = [(s.image, s.question, s.target) for s in load_split(str(data), "train", progress=False).samples]

    class VQADataset(torch.utils.data.Dataset):
        def __len__(self):
            return len(rows)

        def __getitem__(self, i):
            image, question, answer = rows[i]
            return {
                "image": Image.open(io.BytesIO(image)).convert("RGB"),
                "question": question,
                "answer": answer,
            }

    def collate(items):
        inputs = processor(
            images=[x["image"] for x in items],
            text=[x["question"] for x in items],
            padding=True,
            return_tensors="pt",
        )
        answers = processor.tokenizer([x["answer"] for x in items], padding=True, return_tensors="pt")
        inputs.pop("token_type_ids", None)
        labels = answers["input_ids"].masked_fill(answers["attention_mask"] == 0, -100)
        return {**inputs, "decoder_input_ids": answers["input_ids"], "labels": labels}

    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out, per_device_train_batch_size=cfg.train.batch_size, learning_rate=cfg.train.lr,
            max_steps=steps, report_to="none", save_strategy="no", use_cpu=not torch.cuda.is_available(),
            remove_unused_columns=False,  # the collator needs the raw columns (as HF's VQA tutorials set it)
        )  # fmt: skip
        trainer = Trainer(model=model, args=args, train_dataset=VQADataset(), data_collator=collate)
        started = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - started
    return steps * cfg.train.batch_size / seconds


# ---- 2. evaluation -------------------------------------------------------------------------------------
def evaluate_both(run: Path, data: Path, questions: int) -> dict:
    from PIL import Image
    from transformers import BlipImageProcessor

    from pathvqa.models.generation import predict
    from pathvqa.runtime.trained import load_trained

    cfg, family, bundle, _ = load_trained(run)
    samples = load_split(str(data), "test", progress=False).samples[:questions]
    started = time.perf_counter()
    rows = predict(family, bundle, samples, cfg, progress=False)
    batched = time.perf_counter() - started

    spec = bundle.image_spec
    image_processor = BlipImageProcessor(
        size={"height": spec.size, "width": spec.size}, image_mean=spec.mean, image_std=spec.std
    )
    model, tokenizer = bundle.model, bundle.tokenizer
    answers = {}
    started = time.perf_counter()
    with torch.inference_mode():
        for sample in samples:  # what people write first: one question, one generate call
            pixels = image_processor(Image.open(io.BytesIO(sample.image)).convert("RGB"), return_tensors="pt")
            text = tokenizer(sample.question, return_tensors="pt")
            out = model.generate(
                input_ids=text["input_ids"], attention_mask=text["attention_mask"],
                pixel_values=pixels["pixel_values"], max_new_tokens=cfg.eval.max_new_tokens,
            )  # fmt: skip
            answers[sample.id] = tokenizer.decode(out[0], skip_special_tokens=True).strip()
    looped = time.perf_counter() - started
    same = sum(answers[r["id"]] == r["prediction"] for r in rows)
    digest = hashlib.sha1(json.dumps(sorted((r["id"], r["prediction"]) for r in rows)).encode()).hexdigest()
    return {
        "batched_s": batched,
        "looped_s": looped,
        "identical": same,
        "n": len(rows),
        "answers_sha1": digest,
    }


# ---- 3. growth -----------------------------------------------------------------------------------------
GROWTH_CHILD = r"""
import json, re, sys, threading, time
from pathvqa.data.prepare import load_split

def status(key):
    return int(re.search(key + r":\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024

peak_anon = [0.0]
def sample():  # anonymous memory (what must fit in RAM), every 5 ms; the kernel keeps no peak of it
    while True:
        peak_anon[0] = max(peak_anon[0], status("RssAnon"))
        time.sleep(0.005)

threading.Thread(target=sample, daemon=True).start()
before = status("RssAnon")
started = time.perf_counter()
data = load_split(sys.argv[1], "train", progress=False, lazy_images=sys.argv[2] == "lazy", max_pixels=10**8)
seconds = time.perf_counter() - started
time.sleep(0.02)
print(json.dumps({"rows": len(data.samples), "seconds": seconds, "peak_anon_mb": peak_anon[0],
                  "imports_anon_mb": before, "peak_rss_mb": status("VmHWM")}))
"""


def growth_set(rows: int) -> Path:
    """``rows`` pairs at 256 px: 2,000 rendered pairs (500 tiles) and up to 16 distinct variants of each
    tile (the 8 flips/rotations × 2 brightness offsets: new bytes, the same answers), stored as JPEG as
    PathVQA's images are, in row groups of 1,000."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    out = CACHE / f"growth_{rows}"
    target = out / "data" / "train-00000-of-00001.parquet"
    if target.is_file():
        return out
    base = pq.read_table(
        next((synthetic_set("growth_base", {"train": 2000}, 256) / "data").glob("train-*.parquet"))
    )
    table = base.to_pylist()
    tiles: dict[bytes, np.ndarray] = {}
    copies = []
    for variant in range(-(-rows // len(table))):
        for row in table:
            data = row["image"]["bytes"]
            if data not in tiles:
                tiles[data] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            image = np.rot90(tiles[data], variant % 4)
            image = image[:, ::-1] if variant % 8 >= 4 else image
            image = np.clip(image.astype(np.int16) + variant // 8, 0, 255).astype(np.uint8)
            buffer = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=90)
            copies.append({**row, "image": {"bytes": buffer.getvalue(), "path": None}})
            if len(copies) == rows:
                break
    (out / "data").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(copies, schema=base.schema), target, row_group_size=1000)
    return out


def growth(sizes=(1000, 8000, 32000)) -> list[dict]:
    """Each size eager and lazy in a fresh process. Lazy reads parquet through the datasets cache: the
    first load converts it to an Arrow file (timed apart), later loads map that file."""
    import shutil

    cache = CACHE / "hf_datasets_cache"
    results = []
    for rows in sizes:
        folder = growth_set(rows)
        shutil.rmtree(cache, ignore_errors=True)
        first = None
        for mode in ("eager", "lazy", "lazy"):
            proc = subprocess.run(
                [sys.executable, "-c", GROWTH_CHILD, str(folder), mode],
                capture_output=True,
                text=True,
                check=True,
                env={**os.environ, "HF_DATASETS_CACHE": str(cache)},
            )
            result = {"rows": rows, "mode": mode, **json.loads(proc.stdout.strip().splitlines()[-1])}
            if mode == "lazy" and first is None:
                first = result["seconds"]
                continue
            results.append({**result, "first_load_seconds": first} if mode == "lazy" else result)
    shutil.rmtree(cache, ignore_errors=True)
    return results


# ---- report --------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=2, help="training runs per side (best one counts)")
    parser.add_argument("--skip-growth", action="store_true")
    parser.add_argument("--skip-image-once", action="store_true")
    parser.add_argument("--skip-explain", action="store_true")
    args = parser.parse_args()
    os.chdir(ROOT)
    torch.set_num_threads(THREADS)
    data = pathvqa_set()
    with tempfile.TemporaryDirectory() as tmp:
        ours, theirs = [], []
        for repeat in range(args.repeats):  # alternated, best of each: noise on a shared machine only slows
            speed, run = train_pathvqa(data, args.steps, Path(tmp) / f"run{repeat}")
            ours.append(speed)
            theirs.append(train_hf_trainer(data, args.steps))
        ours, theirs = max(ours), max(theirs)
        evaluation = evaluate_both(run, data, args.questions)
    rows = [] if args.skip_growth else growth()
    print_table(args, ours, theirs, evaluation, rows)
    once = None if args.skip_image_once else image_once.measure()
    maps = None if args.skip_explain else explain_cost.measure()
    augmenting = augmentation_speed(data)
    result = {
        "train_samples_per_s": round(ours, 1),
        "hf_trainer_samples_per_s": round(theirs, 1),
        "train_speedup_vs_hf_trainer": round(ours / theirs, 2),
        "eval_samples_per_s": round(evaluation["n"] / evaluation["batched_s"], 1),
        "per_sample_generate_samples_per_s": round(evaluation["n"] / evaluation["looped_s"], 1),
        "eval_speedup_vs_per_sample_generate": round(evaluation["looped_s"] / evaluation["batched_s"], 2),
        "eval_identical_answers": f"{evaluation['identical']}/{evaluation['n']}",
        "eval_answers_sha1": evaluation["answers_sha1"],
        "load_rows_per_s": round(rows[-2]["rows"] / rows[-2]["seconds"], 1) if rows else None,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "growth": rows,
        "eval_speedup_image_once": once["eval_speedup_image_once"] if once else None,
        "image_once": once,
        **augmenting,
        "map_vs_forward_backward": max(r["ratio"] for r in maps.values()) if maps else None,
        "explain_cost": maps,
        "threads": THREADS,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    print(json.dumps(result))


def augmentation_speed(data: Path, batches: int = 30) -> dict[str, float]:
    """Images/s of the augmentation as shipped and with HED stain augmentation, on one thread."""
    from pathvqa.config.schema import AugmentConfig
    from pathvqa.data.batches import ImagePipeline
    from pathvqa.data.images import augment

    samples = load_split(str(data), "train", samples=32, seed=0, progress=False).samples
    tiles = ImagePipeline(96, cache=False).batch(samples)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    for key, cfg in (("augment_images_per_s", AugmentConfig()),
                     ("augment_hed_images_per_s", AugmentConfig(stain={"method": "hed", "strength": 0.1}))):  # fmt: skip
        augment(tiles, cfg, list(range(32)))  # warm-up
        started = time.perf_counter()
        for b in range(batches):
            augment(tiles, cfg, list(range(b * 32, b * 32 + 32)))
        out[key] = round(batches * 32 / (time.perf_counter() - started), 1)
    torch.set_num_threads(threads)
    print(f"augmentation, images/s on one thread: as shipped {out['augment_images_per_s']}, "
          f"with HED stain augmentation {out['augment_hed_images_per_s']}")  # fmt: skip
    return out


def print_table(args, ours: float, theirs: float, evaluation: dict, rows: list[dict]) -> None:
    n = evaluation["n"]
    print(
        f"blip-tiny, {args.steps} steps of 32 on 2,000 PathVQA-shaped synthetic pairs, {THREADS} CPU threads, "
        f"best of {args.repeats} training runs per side"
    )
    print(f"{'':38}{'pathvqa':>14}{'baseline':>14}{'speedup':>10}")
    print(f"{'training samples/s (HF Trainer)':38}{ours:>14.1f}{theirs:>14.1f}{ours / theirs:>9.2f}x")
    batched, looped = n / evaluation["batched_s"], n / evaluation["looped_s"]
    print(
        f"{'eval questions/s (per-sample generate)':38}{batched:>14.1f}{looped:>14.1f}{batched / looped:>9.2f}x"
    )
    print(f"identical answers: {evaluation['identical']}/{n}")
    if rows:
        print(
            f"\n{'rows':>8}{'mode':>8}{'seconds':>10}{'rows/s':>10}{'peak anon MB':>14}{'(imports)':>11}"
            f"{'peak RSS MB':>13}{'first load s':>14}"
        )
        for r in rows:
            first = f"{r['first_load_seconds']:.1f}" if r.get("first_load_seconds") else "-"
            print(
                f"{r['rows']:>8}{r['mode']:>8}{r['seconds']:>10.1f}{r['rows'] / r['seconds']:>10.0f}"
                f"{r['peak_anon_mb']:>14.0f}{r['imports_anon_mb']:>11.0f}{r['peak_rss_mb']:>13.0f}{first:>14}"
            )
        print(
            "(anon: memory that must fit in RAM; RSS adds the mapped dataset's page cache, which can be dropped)"
        )


if __name__ == "__main__":
    main()
