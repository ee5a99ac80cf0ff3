"""What the pixels allow on the embedded set's yes/no questions: a line above every VQA model's.

The embedded (``pathvqa synth``) set decides every closed answer from the tile's attributes (organ, finding,
pattern, secondary change, stain, mitoses: ``synth.questions.CLOSED``). So a small image classifier trained
on the training images to predict those attributes, and a rule that answers each closed question from the
predicted attributes with the generator's own definition of "yes", measures how much of the closed split
96 px pixels let a model get right. It is not a VQA model: it is given the generator's attributes as class
labels (read back from each row's caption), where a VQA model meets them only as words (in answers, and in
vlm-tiny's caption stage), and it answers only the yes/no questions whose template it knows. Its accuracy
is an estimate from below of what the pixels allow: a better classifier could only raise it.

    pathvqa.analysis.ceiling.run(out="runs/demo/ceiling", dataset="runs/demo/data")
"""

from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from pathvqa.config import MAX_PIXELS
from pathvqa.data.images import decode
from pathvqa.data.prepare import Sample, load_split
from pathvqa.data.spec import as_spec
from pathvqa.destinations import check_destination, write_text_atomic
from pathvqa.errors import DataError, PathVQAError
from pathvqa.evaluation.evaluate import write_predictions
from pathvqa.runs import metrics_file, predictions_file
from pathvqa.scoring.metrics import compare, read_predictions, score_all
from pathvqa.synth.questions import CLOSED, Closed
from pathvqa.synth.tiles import FINDINGS, NUMBERS, ORGANS, PATTERNS, SECONDARY, STAIN_WEIGHTS, PathTile

NAME = "pixel-ceiling"
"""``pathvqa eval --baseline pixel-ceiling``."""
LABEL = "pixels allow (attribute classifier)"
"""The ceiling's name in tables: it is trained on the generator's attributes as class labels, not a VQA model."""
VALUES: dict[str, tuple] = {
    "organ": tuple(ORGANS),
    "finding": (None, *FINDINGS),
    "pattern": (None, *PATTERNS),
    "secondary": (None, *SECONDARY),
    "stain": tuple(STAIN_WEIGHTS),
    "mitoses": tuple(range(len(NUMBERS))),
}
"""Each attribute the classifier predicts, with its classes (None: the tile has none)."""


@dataclass(frozen=True)
class Settings:
    """The classifier's training: fixed, so the same set gives the same ceiling."""

    epochs: int = 24
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    width: int = 24
    seed: int = 0


def attributes(caption: str) -> PathTile:
    """The tile a caption describes (``PathTile.caption`` read back); ``DataError`` if it is not one."""
    match = re.fullmatch(r"(.+) stained section: (.+?)(?:, (\w+) mitotic figures)?\.", caption or "")
    if not match or match[1] not in STAIN_WEIGHTS:
        raise DataError(f"not a caption of the embedded set: {caption!r}")
    stain, description, count = match.groups()
    mitoses = NUMBERS.index(count) if count in NUMBERS else 0
    if description.startswith("normal ") and description[7:] in ORGANS:
        return PathTile(description[7:], None, None, None, stain, mitoses)
    pattern, _, rest = description.partition(" ")
    lesion, _, secondary = rest.partition(" with ")
    organ = next((o for o in sorted(ORGANS, key=len, reverse=True) if lesion.startswith(o + " ")), None)
    finding = lesion[len(organ) + 1 :] if organ else None
    if pattern not in PATTERNS or finding not in FINDINGS or (secondary and secondary not in SECONDARY):
        raise DataError(f"not a caption of the embedded set: {caption!r}")
    return PathTile(organ, finding, pattern, secondary or None, stain, mitoses)


def _template_pattern(phrasing: str) -> re.Pattern:
    slots = {"subject": r"(?P<subject>.+)", "organ": r"(?:.+)", "finding": r"(?:.+)"}
    parts = re.split(r"\{(\w+)\}", phrasing)
    return re.compile("".join(re.escape(p) if i % 2 == 0 else slots[p] for i, p in enumerate(parts)))


TEMPLATES = [(_template_pattern(p), template) for template in CLOSED for p in template.phrasings]


def closed_question(question: str) -> tuple[Closed, str] | None:
    """(template, subject) of a yes/no question the embedded set asks; None for any other question."""
    for pattern, template in TEMPLATES:
        match = pattern.fullmatch(question.lower())
        if match:
            subject = match.groupdict().get("subject") or next(iter(template.vocabulary))
            return template, subject
    return None


def answer(question: str, tile: PathTile) -> str | None:
    """The generator's answer to a closed question about ``tile``: "yes" only when the tile has the subject."""
    asked = closed_question(question)
    if asked is None:
        return None
    template, subject = asked
    return "yes" if subject in template.subjects(tile) else "no"


class TileNet(nn.Module):
    """Four convolution blocks (96 px → 6 px) pooled two ways (mean: textures; max: a single small figure,
    such as a mitosis), and one linear head per attribute."""

    def __init__(self, width: int):
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        blocks: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(chans)):
            stride = 2 if i == 0 else 1
            blocks += [nn.Conv2d(a, b, 3, stride, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU()]
            if i:
                blocks.append(nn.MaxPool2d(2))
        self.body = nn.Sequential(*blocks)
        self.heads = nn.ModuleDict({k: nn.Linear(2 * chans[-1], len(v)) for k, v in VALUES.items()})

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.body(images)
        pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)
        return {k: head(pooled) for k, head in self.heads.items()}


def _pixels(samples: list[Sample]) -> torch.Tensor:
    """(N, 3, H, W) in [-1, 1] of the samples' images."""
    arrays = [np.asarray(decode(s.image, MAX_PIXELS)) for s in samples]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def _targets(tiles: list[PathTile]) -> dict[str, torch.Tensor]:
    return {k: torch.tensor([v.index(getattr(t, k)) for t in tiles]) for k, v in VALUES.items()}


def _distinct(samples: list[Sample]) -> list[Sample]:
    return list({s.image_key: s for s in samples}.values())


def _dihedral(images: torch.Tensor, draw: int) -> torch.Tensor:
    """One of the 8 flips and quarter turns (every attribute of the set is invariant to them)."""
    out = torch.rot90(images, draw % 4, (2, 3))
    return out.flip(3) if draw >= 4 else out


def train(samples: list[Sample], settings: Settings = Settings(), progress: bool = False) -> TileNet:
    """The classifier trained on the distinct images of ``samples`` (their captions give the labels)."""
    from tqdm.auto import tqdm

    torch.manual_seed(settings.seed)
    images = _distinct(samples)
    pixels, targets = _pixels(images), _targets([attributes(s.caption) for s in images])
    net = TileNet(settings.width)
    steps = settings.epochs * -(-len(images) // settings.batch_size)
    opt = torch.optim.AdamW(net.parameters(), settings.lr, weight_decay=settings.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, settings.lr, total_steps=steps)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(settings.seed)
    bar = tqdm(total=steps, desc="pixel ceiling", disable=not progress)
    net.train()
    for _ in range(settings.epochs):
        order = torch.randperm(len(images), generator=generator)
        for batch in order.split(settings.batch_size):
            draw = int(torch.randint(8, (1,), generator=generator))
            logits = net(_dihedral(pixels[batch], draw))
            loss = sum(loss_fn(logits[k], targets[k][batch]) for k in VALUES)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
    bar.close()
    return net.eval()


@torch.no_grad()
def predict(net: TileNet, samples: list[Sample]) -> dict[str, PathTile]:
    """Each distinct image's predicted tile (the most likely value of every attribute), by image key."""
    images = _distinct(samples)
    tiles = {}
    for start in range(0, len(images), 128):
        chunk = images[start : start + 128]
        logits = net(_pixels(chunk))
        best = {k: logits[k].argmax(1).tolist() for k in VALUES}
        for i, s in enumerate(chunk):
            tiles[s.image_key] = PathTile(**{k: VALUES[k][best[k][i]] for k in VALUES})
    return tiles


def attribute_accuracy(predicted: dict[str, PathTile], samples: list[Sample]) -> dict[str, float]:
    """The share of distinct images whose attribute the classifier names right, per attribute."""
    images = _distinct(samples)
    truth = {s.image_key: attributes(s.caption) for s in images}
    return {
        k: float(np.mean([getattr(predicted[key], k) == getattr(t, k) for key, t in truth.items()]))
        for k in VALUES
    }


def closed_rows(predicted: dict[str, PathTile], samples: list[Sample]) -> list[dict[str, Any]]:
    """``predictions.jsonl`` rows of the closed questions the rule answers, from the predicted tiles."""
    rows = []
    for s in samples:
        said = answer(s.question, predicted[s.image_key])
        if said is not None and s.type == "closed":
            rows.append(s.prediction_row(said))
    return rows


def _check(dataset: str, split: str) -> tuple[list[Sample], list[Sample]]:
    train_split = load_split(dataset, "train", progress=False).samples
    test = load_split(dataset, split, progress=False, dedupe=False).samples
    if not all(s.caption for s in train_split[:1] + test[:1]):
        raise DataError(f"{dataset}: no captions; the pixel ceiling needs the embedded set (pathvqa synth)")
    attributes(train_split[0].caption)  # a caption of another set is one clear error
    return train_split, test


def run(
    *, out: str | Path, dataset: str, split: str = "test", prior: str | Path | None = None,
    settings: Settings = Settings(), progress: bool = False, overwrite: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Train the classifier on ``dataset``'s training images, answer ``split``'s closed questions from its
    predictions, and write ``predictions.jsonl`` and ``metrics.json`` to ``out`` (with the paired
    difference from the question-only prior's predictions in the folder ``prior``, if given)."""
    out = check_destination(out, reads=as_spec(dataset).local_paths())
    if predictions_file(out).is_file() and not overwrite:
        raise PathVQAError(f"{out} already holds an evaluation: give --overwrite to replace it")
    train_split, test = _check(dataset, split)
    started = time.perf_counter()
    net = train(train_split, settings, progress)
    predicted = predict(net, test)
    rows = closed_rows(predicted, test)
    closed = sum(s.type == "closed" for s in test)
    scores = score_all(rows)
    metrics = {
        "model": LABEL,
        **{k: scores[k] for k in ("n_closed", "closed_accuracy", "closed_accuracy_ci")},
        "dataset": dataset,
        "split": split,
        "rows": f"{len(rows)} of {closed} closed rows",
        "attribute_accuracy": attribute_accuracy(predicted, test),
        "settings": asdict(settings),
        "seconds": round(time.perf_counter() - started, 1),
    }
    if prior is not None:
        paired = compare(read_predictions(predictions_file(prior)), rows)
        metrics["closed_minus_prior"] = paired["metrics"]["closed_accuracy"]
    out.mkdir(parents=True, exist_ok=True)
    write_predictions(rows, predictions_file(out))
    write_text_atomic(metrics_file(out), json.dumps(metrics, indent=2))
    return metrics
