"""Prints training and generation throughput of a config's model on synthetic batches.

    python benchmarks/train_speed.py configs/vlm_tiny.yaml [--steps 30] [--set key=value ...]

Offline sizes run anywhere; real ids (e.g. configs/biomedclip_mistral_vqa.yaml on a GPU) need the
weights locally. For a config with stages the last stage is measured. Prints steps/s, samples/s and,
on CUDA, peak memory.
"""

import argparse
import tempfile
import time

import torch

from pathvqa.config import load_config
from pathvqa.data.batches import ImagePipeline
from pathvqa.data.prepare import load_split
from pathvqa.models.registry import build
from pathvqa.synth import generator as synthetic

parser = argparse.ArgumentParser()
parser.add_argument("config")
parser.add_argument("--steps", type=int, default=30)
parser.add_argument("--set", dest="overrides", action="append", default=[])
args = parser.parse_args()

cfg = load_config(args.config, args.overrides)
cfg = cfg.stage_config(cfg.stages[-1]) if cfg.stages else cfg
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
if cfg.train.threads and device.type == "cpu":
    torch.set_num_threads(cfg.train.threads)
with tempfile.TemporaryDirectory() as folder:
    synthetic.write(folder, {"train": cfg.train.batch_size * 4}, size=96, seed=0, progress=False)
    samples = load_split(folder, "train", progress=False).samples
family, bundle = build(cfg)
bundle.model.to(device)
pipeline = ImagePipeline(bundle.image_size)
params = [p for p in bundle.model.parameters() if p.requires_grad]
optimizer = torch.optim.AdamW(params, lr=cfg.train.lr)
batches = []
for i in range(4):
    chosen = samples[i * cfg.train.batch_size : (i + 1) * cfg.train.batch_size]
    batches.append(family.inputs(bundle, chosen, pipeline.batch(chosen), cfg.task, train=True).to(device))

dtype = torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
bundle.model.train()
for step in range(args.steps + 3):  # 3 warm-up steps
    if step == 3:
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        total, tokens = family.loss(bundle, batches[step % 4])
    (total / tokens).backward()
    optimizer.step()
    optimizer.zero_grad()
if device.type == "cuda":
    torch.cuda.synchronize()
seconds = time.perf_counter() - start
line = (
    f"{cfg.name} ({cfg.model.name}, {device.type}): {args.steps / seconds:.1f} steps/s, "
    f"{args.steps * cfg.train.batch_size / seconds:.0f} samples/s at batch {cfg.train.batch_size}"
)
if device.type == "cuda":
    line += f", peak memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB"
print(line)

bundle.model.eval()
start = time.perf_counter()
with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
    for i in range(4):
        chosen = samples[i * cfg.train.batch_size : (i + 1) * cfg.train.batch_size]
        inputs = family.inputs(bundle, chosen, pipeline.batch(chosen), cfg.task, train=False)
        family.generate(bundle, inputs.to(device), cfg.eval)
seconds = time.perf_counter() - start
print(
    f"generation: {4 * cfg.train.batch_size / seconds:.0f} answers/s (max {cfg.eval.max_new_tokens} new tokens)"
)
