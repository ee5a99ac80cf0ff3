"""Where the model looked: a map for an answer, and how well the maps of a split's answers fall on the regions
their questions concern (``pathvqa explain``).

The map is gradient × activation at the image's patch features (``Family.patch_site``: the features the
language side reads), as Grad-CAM does on a vision transformer's patch tokens: the gradient of the answer's
log-probability (the sum of its tokens' log-probabilities, teacher-forced after the question) with respect to
each patch feature, times the feature, summed over the feature's channels, its positive part kept, and the
patch grid upsampled (bilinear) to the image's own size. Captum's ``LayerGradientXActivation`` computes it:
one forward and one backward per batch of answers.

What it is: which patches, had they been a little more of what they are, would have made this answer more
likely. What it is not: a segmentation, a measure of what the model "knows", or proof that the answer came
from the lesion: a map can sit on the lesion while the answer comes from the question's wording.

The sanity check (Adebayo et al., NeurIPS 2018, cascading randomisation): the same answers are mapped
through copies of the model whose layers are drawn afresh (each module's own initialiser, a fixed seed) from
the output's side down: the top quarter of the modules that have an initialiser, then half, three quarters,
all of them (in the reverse of the order the model declares them). A map that hardly changes as the weights
go (a high rank correlation with the trained map) says little about what the trained weights learnt.
"""

from __future__ import annotations

import copy
import io
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from pathvqa.answers import exact_match
from pathvqa.data.batches import ImagePipeline
from pathvqa.data.prepare import Sample, load_data_split
from pathvqa.data.regions import Region, split_regions
from pathvqa.destinations import write_text_atomic
from pathvqa.errors import PathVQAError
from pathvqa.models.base import Bundle, Family
from pathvqa.models.generation import predict
from pathvqa.scoring.grounding import grounding_table, question_scores, summarise

log = logging.getLogger(__name__)

BATCH = 8
CASCADE = (0.25, 0.5, 0.75, 1.0)
"""The shares of the layers re-drawn, from the top, in the cascading randomisation."""
CASCADE_QUESTIONS = 48
"""The cascade maps the first answers only (each stage is a pass of its own); all answers meet full
randomisation."""
RANDOM_SEED = 1234
"""The seed of the randomised weights (fixed: the sanity check is reproducible)."""
GROUNDING = "grounding.json"
METHOD = "gradient × activation at the patch features (captum LayerGradientXActivation), positive part"


def answer_maps(
    family: Family,
    bundle: Bundle,
    samples: list[Sample],
    answers: list[str],
    pipeline: ImagePipeline | None = None,
) -> list[np.ndarray]:
    """One map per (sample, answer): (H, W) float, non-negative, at the sample's image size (see the module's
    docstring). The answers are scored as the model would generate them (its end-of-answer token included).
    ``pipeline``: how the images reach the model (default: decoded and resized, nothing else)."""
    targets, tensors = answer_inputs(family, bundle, samples, answers, pipeline)
    return maps_of(family, bundle, targets, tensors)


def given_answer_maps(
    family: Family,
    bundle: Bundle,
    samples: list[Sample],
    answers: list[str],
    pipeline: ImagePipeline | None = None,
) -> list[np.ndarray | None]:
    """:func:`answer_maps` of the answers that say something; None for an empty one (nothing to map)."""
    given = [i for i, a in enumerate(answers) if a.strip()]
    chosen = ([samples[i] for i in given], [answers[i] for i in given])
    drawn = answer_maps(family, bundle, *chosen, pipeline) if given else []  # no batch of nothing
    out: list[np.ndarray | None] = [None] * len(samples)
    for i, m in zip(given, drawn, strict=True):
        out[i] = m
    return out


def answer_inputs(family: Family, bundle: Bundle, samples: list[Sample], answers: list[str], pipeline=None):
    """(the samples with their answers as targets, the model's teacher-forced inputs for them)."""
    targets = [replace(s, target=a) for s, a in zip(samples, answers, strict=True)]
    pipeline = pipeline or ImagePipeline(bundle.image_size, cache=False)
    device = next(bundle.model.parameters()).device
    return targets, family.inputs(bundle, targets, pipeline.batch(targets), "vqa", train=True).to(device)


def maps_of(family: Family, bundle: Bundle, targets: list[Sample], tensors) -> list[np.ndarray]:
    """The maps of :func:`answer_inputs`' batch: one forward and one backward (captum), then each patch grid
    upsampled to its image's size."""
    from captum.attr import LayerGradientXActivation

    site = family.patch_site(bundle)

    def answer_logprob(_unused: torch.Tensor) -> torch.Tensor:
        logp, mask = family.token_logprobs(bundle, tensors)
        return (logp * mask).sum(-1)  # (B,)

    attribution = LayerGradientXActivation(answer_logprob, site.module).attribute(torch.zeros(len(targets)))
    grid = site.grid(attribution, tensors).sum(-1).clamp(min=0).float()  # (B, h, w)
    return upsampled(grid, [image_size(s.image) for s in targets])


def image_size(encoded: bytes) -> tuple[int, int]:
    """(height, width) of an encoded image."""
    with Image.open(io.BytesIO(encoded)) as image:
        return image.height, image.width


def upsampled(grids: torch.Tensor, sizes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Patch grids (B, h, w) → each (H, W) bilinear at its image's own size (height, width); the grids of
    images of one size in one call. Bilinear weights are non-negative: so is every map."""
    grids = grids.detach().cpu()[:, None]
    out: list[np.ndarray] = [np.empty(0)] * len(sizes)
    for size in dict.fromkeys(sizes):
        rows = [i for i, s in enumerate(sizes) if s == size]
        maps = F.interpolate(grids[rows], size=size, mode="bilinear", align_corners=False)[:, 0].numpy()
        for i, m in zip(rows, maps, strict=True):
            out[i] = m
    return out


def _resettable(module: torch.nn.Module) -> bool:
    return callable(getattr(module, "reset_parameters", None))


def layers_from_the_top(model: torch.nn.Module) -> list[str]:
    """The names of the modules that have an initialiser, the output's side first (the reverse of the order
    the model declares them: for every shipped family its head, the language model's last layer, …, the
    vision tower's first)."""
    return [name for name, module in reversed(list(model.named_modules())) if _resettable(module)]


def randomised(bundle: Bundle, share: float = 1.0, seed: int = RANDOM_SEED) -> Bundle:
    """A copy of the model with the top ``share`` of :func:`layers_from_the_top` re-drawn by their own
    initialisers (``share=1``: every one of them, the sanity check's model)."""
    model = copy.deepcopy(bundle.model)
    names = layers_from_the_top(model)
    chosen = set(names[: max(1, round(share * len(names)))])
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, module in model.named_modules():
            if name in chosen:
                module.reset_parameters()
    return replace(bundle, model=model.eval())


def cascade(
    family, bundle, samples, answers, maps: dict[str, list], masks, progress: bool, pipeline=None
) -> list[dict]:
    """Adebayo's cascading randomisation on the first :data:`CASCADE_QUESTIONS` answers: for each share of the
    layers re-drawn from the top (:data:`CASCADE`), the scores of its maps against the trained ones
    (``maps``: the trained and the fully randomised maps of every answer, already drawn)."""
    n = min(len(samples), CASCADE_QUESTIONS)
    names = layers_from_the_top(bundle.model)
    trained = maps["trained"]
    stages = []
    for share in CASCADE:
        maps_at = (
            maps["randomised"][:n]
            if share == 1.0
            else in_batches(
                family,
                randomised(bundle, share),
                samples[:n],
                answers[:n],
                progress,
                f"{share:.0%}",
                pipeline,
            )
        )
        rows = [question_scores(t, r, m) for t, r, m in zip(trained[:n], maps_at, masks[:n], strict=True)]
        top = max(1, round(share * len(names)))
        stages.append({"share": share, "modules": top, "of": len(names), "down_to": names[top - 1],
                       **summarise(rows)})  # fmt: skip
    return stages


def in_batches(
    family, bundle, samples: list[Sample], answers: list[str], progress: bool, desc: str, pipeline=None
):
    maps: list[np.ndarray] = []
    for start in tqdm(
        range(0, len(samples), BATCH), desc=desc, unit="batch", disable=not progress, leave=False
    ):
        maps += answer_maps(
            family, bundle, samples[start : start + BATCH], answers[start : start + BATCH], pipeline
        )
    return maps


def maps_of_run(folder: Path, samples: list[Sample], answers: list[str]) -> list[np.ndarray | None] | None:
    """The maps of the answers a run gave (``answers``, one per sample; an empty one has none), through the
    model it was evaluated with; None where ``folder`` holds no model to load (a baseline, a zero-shot
    evaluation of a config) or its family cannot say where its patch features are."""
    from pathvqa.runtime.trained import load, resolve_run

    try:
        trained = resolve_run(folder)
        family, bundle = load(trained)
        family.patch_site(bundle)
    except PathVQAError:
        return None
    pipeline = ImagePipeline.for_data(trained.config.data, bundle.image_size, cache=False)  # as it answered
    return given_answer_maps(family, bundle, samples, answers, pipeline)


def regions_of(cfg, split: str) -> dict[str, Region]:
    """The regions of ``split``'s questions; a one-line error for a dataset that marks none."""
    regions = split_regions(cfg.data, split)
    if not regions:
        raise PathVQAError(
            f"{cfg.data.dataset} [{split}] marks no regions (no region column): scoring maps needs a dataset "
            "that knows where each question's subject is, e.g. one written by pathvqa synth"
        )
    return regions


def score_split(
    cfg, family, bundle, split: str, out: Path, run: str, limit: int | None = None, progress: bool = True
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Map every answer to a question of ``split`` that concerns a region (the embedded set's regions), the
    trained model's and the randomised model's, and write ``out/grounding.json``: the pointing game and the
    mass in the region against the uniform map and the randomised model, by region kind and by whether the
    answer was right (``scoring.grounding``). Returns (what was written, a few answers to draw: image, region,
    both maps, question, answer; up to two per region kind)."""
    regions = regions_of(cfg, split)
    samples = [
        s
        for s in load_data_split(cfg.data, split, None, False, dedupe=False, say=False).samples
        if s.id in regions
    ]
    samples = samples[:limit] if limit else samples
    pipeline = ImagePipeline.for_data(cfg.data, bundle.image_size, cache=True)  # each image decoded once
    rows = predict(family, bundle, samples, cfg, progress=progress, pipeline=pipeline)
    answers = [r["prediction"] for r in rows]
    trained_maps = in_batches(family, bundle, samples, answers, progress, "map trained", pipeline)
    random_maps = in_batches(
        family, randomised(bundle), samples, answers, progress, "map randomised", pipeline
    )
    masks = [regions[s.id].mask(m.shape) for s, m in zip(samples, trained_maps, strict=True)]
    scores = [question_scores(*x) for x in zip(trained_maps, random_maps, masks, strict=True)]
    kinds = [regions[s.id].kind for s in samples]
    right = [bool(exact_match(r["prediction"], r["answer"])) for r in rows]
    result = {
        "run": run,
        "split": split,
        "questions": len(samples),
        "method": METHOD,
        "table": grounding_table(scores, kinds, right),
        "cascade": cascade(
            family,
            bundle,
            samples,
            answers,
            {"trained": trained_maps, "randomised": random_maps},
            masks,
            progress,
            pipeline,
        ),
        "rows": [
            {"id": s.id, "kind": k, "right": ok, **sc}
            for s, k, ok, sc in zip(samples, kinds, right, scores, strict=True)
        ],
    }
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / GROUNDING, json.dumps(result, indent=1))
    shown = [i for kind in dict.fromkeys(kinds) for i in [j for j, k in enumerate(kinds) if k == kind][:2]]
    examples = [
        {
            "image": samples[i].image,
            "region": masks[i],
            "trained": trained_maps[i],
            "randomised": random_maps[i],
            "question": samples[i].question,
            "answer": answers[i],
        }
        for i in shown
    ]
    return result, examples
