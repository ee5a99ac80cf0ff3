"""Each image encoded once (PathVQA asks 7.6 questions per image): answers/s of evaluation and samples/s of
a training step, per question (before) and per image (after), on the PathVQA-shaped set.

Models: blip-tiny and vlm-tiny as configured (random weights: the speed is the architecture's), and a
real-shape BLIP-base (``BlipConfig()``: ViT-B/16 at 384 px, 577 tokens, 12 + 12 + 12 text layers; random
weights, nothing downloaded) — the shape users run. Evaluation is ``generation.predict`` with
``eval.image_once`` off and on (answers must be identical); training is the collator + the family's loss +
backward on the same batches cut from the image-grouped order (``data.group_by_image``), with each
image's features shared or not; and a stage with the image encoder frozen and no augmentation, per
question, with its features computed each step or served from ``model.cache_image_features``'s cache.

    python benchmarks/image_once.py [--questions 400] [--real-questions 48]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from pathvqa.config import load_config
from pathvqa.data.batches import Collator, ImagePipeline, image_groups
from pathvqa.data.prepare import load_split
from pathvqa.models.generation import predict
from pathvqa.models.registry import build
from pathvqa.synth import generator as synthetic

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "runs" / "bench_data" / "pathvqa_shaped"
THREADS = 2


def dataset() -> Path:
    if not (DATA / "synth.json").is_file():
        synthetic.write(
            DATA, {"train": 2000, "validation": 200, "test": 1500}, size=96, seed=0, progress=False
        )
    return DATA


def tiny(name: str, extra: list[str]):
    cfg = load_config(f"configs/{name}.yaml", [f"data.dataset={DATA}", "eval.batch_size=64", *extra])
    family, bundle = build(cfg)
    return cfg, family, bundle


def blip_base(extra: list[str]):
    """BLIP-vqa-base's architecture with random weights, in the blip family's bundle."""
    from transformers import BlipConfig, BlipForQuestionAnswering

    from pathvqa.data.images import ImageSpec
    from pathvqa.models.base import CLIP_MEAN, CLIP_STD, WHOLE_MODEL, SharedImages
    from pathvqa.models.blip import BlipBundle, BlipFamily, mask_cross_attention
    from pathvqa.models.tokenizers import tiny_bert_tokenizer

    cfg = load_config("configs/blip_tiny.yaml", [f"data.dataset={DATA}", "eval.batch_size=32", *extra])
    torch.manual_seed(0)
    model = BlipForQuestionAnswering(BlipConfig())
    mask_cross_attention(model)
    bundle = BlipBundle(
        model=model, tokenizer=tiny_bert_tokenizer(), image_size=384, image_spec=ImageSpec(384, CLIP_MEAN, CLIP_STD),
        shared=SharedImages(model.vision_model), random_parts=(WHOLE_MODEL,), image_encoder=model.vision_model,
    )  # fmt: skip
    return cfg, BlipFamily(), bundle


class EncoderClock:
    """Seconds spent inside the image encoder's forward (the profile's vision share)."""

    def __init__(self, encoder: torch.nn.Module):
        self.seconds, self.started = 0.0, 0.0
        encoder.register_forward_pre_hook(lambda *_: setattr(self, "started", time.perf_counter()))
        encoder.register_forward_hook(
            lambda *_: setattr(self, "seconds", self.seconds + time.perf_counter() - self.started)
        )


def evaluation(cfg, family, bundle, samples) -> dict:
    bundle.model.eval()
    clock = EncoderClock(bundle.image_encoder)
    seconds, answers, vision = {}, {}, {}
    predict(family, bundle, samples[:8], cfg, progress=False)  # warm-up (first-call set-up), not timed
    for once in (False, True):
        run_cfg = cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"image_once": once})})
        clock.seconds = 0.0
        started = time.perf_counter()
        answers[once] = [r["prediction"] for r in predict(family, bundle, samples, run_cfg, progress=False)]
        seconds[once] = time.perf_counter() - started
        vision[once] = clock.seconds / seconds[once]
    same = sum(a == b for a, b in zip(answers[False], answers[True], strict=True))
    return {
        "per_question_answers_per_s": round(len(samples) / seconds[False], 2),
        "image_once_answers_per_s": round(len(samples) / seconds[True], 2),
        "speedup": round(seconds[False] / seconds[True], 2),
        "vision_share_per_question": round(vision[False], 2),
        "vision_share_image_once": round(vision[True], 2),
        "identical": f"{same}/{len(samples)}",
    }


def training(cfg, family, bundle, samples, batch: int, steps: int) -> dict:
    bundle.model.train()
    order = image_groups(samples, list(range(len(samples))))
    batches = [order[i * batch : (i + 1) * batch] for i in range(steps + 1)]
    pipeline = ImagePipeline(bundle.image_size)
    pipeline.warm(samples)
    speed = {}
    for share in (False, True):
        collate = Collator(samples, family, bundle, pipeline, "vqa", train=True, share_images=share)
        collate(batches[0])  # warm-up step, not timed
        started = time.perf_counter()
        for indices in batches[1:]:
            total, _ = family.loss(bundle, collate(indices).tensors)
            total.backward()
            bundle.model.zero_grad(set_to_none=True)
        speed[share] = steps * batch / (time.perf_counter() - started)
    return {
        "per_question_samples_per_s": round(speed[False], 2),
        "grouped_samples_per_s": round(speed[True], 2),
        "speedup": round(speed[True] / speed[False], 2),
    }


def cached_training(cfg, family, bundle, samples, batch: int, steps: int) -> dict:
    """A stage with the image encoder frozen and no augmentation: samples/s of loss + backward per question,
    uncached vs served from ``FeatureCache`` (filled by one pass over the same batches first, as by the
    first epoch of a run)."""
    from pathvqa.models.feature_cache import FeatureCache

    bundle.model.train()
    bundle.image_encoder.requires_grad_(False)
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(0))[: steps * batch].tolist()
    pipeline = ImagePipeline(bundle.image_size)
    pipeline.warm([samples[i] for i in order])
    collate = Collator(samples, family, bundle, pipeline, "vqa", train=True)  # shuffled, as training draws
    inputs = [collate(order[i * batch : (i + 1) * batch]).tensors for i in range(steps)]

    def timed() -> float:
        started = time.perf_counter()
        for tensors in inputs:
            total, _ = family.loss(bundle, tensors)
            total.backward()
            bundle.model.zero_grad(set_to_none=True)
        return steps * batch / (time.perf_counter() - started)

    plain = timed()
    with tempfile.TemporaryDirectory() as folder:
        cache = FeatureCache(bundle.image_encoder, Path(folder), cap_mb=4096)
        timed()  # the first epoch: every image encoded once, into the cache
        cached = timed()
        cache.close()
    bundle.image_encoder.requires_grad_(True)
    return {
        "uncached_samples_per_s": round(plain, 2),
        "cached_samples_per_s": round(cached, 2),
        "speedup": round(cached / plain, 2),
    }


def measure(questions: int = 400, real_questions: int = 48) -> dict:
    """Every figure above, as one dict (``make bench`` adds it to its JSON line)."""
    torch.set_num_threads(THREADS)
    test = load_split(str(dataset()), "test", progress=False).samples
    train = load_split(str(DATA), "train", progress=False).samples
    result: dict = {
        "threads": THREADS,
        "questions_per_image": round(len(test) / len({s.image_key for s in test}), 2),
    }
    models = [
        ("blip_tiny", tiny("blip_tiny", [])),
        ("vlm_tiny", tiny("vlm_tiny", ["stages=[]", "model.train_vision=true"])),
    ]
    for name, (cfg, family, bundle) in models:
        result[name] = {"eval": evaluation(cfg, family, bundle, test[:questions])}
        result[name]["train"] = training(cfg, family, bundle, train, batch=32, steps=20)
        result[name]["train_cached_frozen_encoder"] = cached_training(
            cfg, family, bundle, train, batch=32, steps=20
        )
        print(f"{name:>16}  {result[name]}", flush=True)
    cfg, family, bundle = blip_base(["eval.max_new_tokens=5"])
    real = result["blip_base_shape"] = {"eval": evaluation(cfg, family, bundle, test[:real_questions])}
    print(
        f"{'blip_base_shape':>16}  eval {real['eval']}", flush=True
    )  # minutes each on CPU: print as measured
    # a step of 8 questions through ViT-B/16 at 384 px and back takes about a minute on 2 CPU threads
    real["train"] = training(cfg, family, bundle, train[:400], batch=8, steps=2)
    print(f"{'blip_base_shape':>16}  train {real['train']}", flush=True)
    result["eval_speedup_image_once"] = real["eval"]["speedup"]
    result["train_speedup_group_by_image"] = real["train"]["speedup"]
    result["train_speedup_feature_cache"] = result["vlm_tiny"]["train_cached_frozen_encoder"]["speedup"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--questions", type=int, default=400)
    parser.add_argument("--real-questions", type=int, default=48)
    args = parser.parse_args()
    print(json.dumps(measure(args.questions, args.real_questions)))


if __name__ == "__main__":
    main()
