"""``pathvqa eval --stain-shift 0.05,0.1``: the split's images under another lab's stain, simulated.

Each image is jittered in HED space (``data.stain``: haematoxylin, eosin and DAB concentrations scaled by
U(1 − s, 1 + s) and shifted by U(−s, s), Tellez et al. 2019) with its own draw, seeded by its bytes and
:data:`SEED`, so the stressed set is the same bytes on every run and in every process; the same questions
are answered again, and each strength's scores are paired with the unshifted answers (B − A on the same
questions, with intervals). Strength 0 is the split itself, unchanged. The answers under each strength are
kept beside ``predictions.jsonl`` (``runs.stain_predictions``); the scores go into ``metrics.json`` under
``stain_shift``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from pathvqa.data.prepare import Sample
from pathvqa.data.stain import stressed
from pathvqa.destinations import write_text_atomic
from pathvqa.models.generation import predict
from pathvqa.runs import stain_predictions
from pathvqa.scoring.metrics import HEADLINE, compare, score

SEED = 0
"""The stress's seed (each image's draw mixes it with the image's bytes)."""
METHOD = "hed"


def stressed_samples(samples: list[Sample], strength: float, progress: bool = False) -> list[Sample]:
    """``samples`` with their images under HED jitter of ``strength`` (each distinct image once)."""
    done: dict[str, tuple[bytes, str]] = {}
    out = []
    for sample in tqdm(samples, desc=f"stain {strength:g}", unit="q", disable=not progress, leave=False):
        if sample.image_key not in done:
            image = stressed(sample.image, strength, SEED)
            done[sample.image_key] = (image, hashlib.sha1(image).hexdigest())
        image, key = done[sample.image_key]
        out.append(replace(sample, image_source=image, image_key=key))
    return out


def stain_shift(
    family,
    bundle,
    samples: list[Sample],
    cfg,
    rows: list[dict],
    strengths: list[float] | None,
    out: Path,
    accelerator=None,
) -> dict[str, Any] | None:
    """Answer ``samples`` again at every strength, write each strength's answers, and return what
    ``metrics.json`` records: the method, the seed, and per strength the headline scores with their paired
    differences from the unshifted answers ``rows`` (None without strengths)."""
    if not strengths:
        return None
    main = accelerator is None or accelerator.is_main_process
    results = []
    for strength in strengths:
        again = stressed_samples(samples, strength, progress=main) if strength else samples
        shifted = (
            predict(family, bundle, again, cfg, accelerator=accelerator, progress=main) if strength else rows
        )
        if main:
            write_text_atomic(
                out / stain_predictions(strength), "".join(json.dumps(r) + "\n" for r in shifted)
            )
            results.append(_scored(strength, rows, shifted))
    return {"method": METHOD, "seed": SEED, "strengths": strengths, "results": results}


def _scored(strength: float, rows: list[dict], shifted: list[dict]) -> dict[str, Any]:
    scores, paired = score(shifted, intervals=True), compare(rows, shifted)["metrics"]
    return {
        "strength": strength,
        **{k: scores.get(k) for k in HEADLINE},
        **{f"{k}_ci": scores.get(f"{k}_ci") for k in HEADLINE},
        "paired": {k: {x: paired[k].get(x) for x in ("difference", "ci", "p")} for k in HEADLINE},
    }
