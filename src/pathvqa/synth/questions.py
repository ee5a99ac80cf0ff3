"""Questions about a PathVQA-style tile, written the way PathVQA asks them (the ``pathvqa`` style).

- About 7.6 questions per image (6–9), half yes/no, half open; first words in PathVQA's proportions
  (what > is > does > where > are > how); paraphrased templates; a few exact repeats.
- Every answer is decided by the pixels (and the question): a closed question names a subject (an organ,
  a finding, a stain, a pattern) and is answered "yes" only when the tile has it.
- A language prior like PathVQA's: each closed template has its own share of "yes" (0.25–0.75),
  realised by which subject it asks about, so a model that reads the question alone gets ~0.7 of the
  closed questions right (PathVQA: 0.68) while the image still decides each row.
- Open answers range from one word (an organ, a stain, a count) to the lesion's whole description
  (``multifocal kidney amyloidosis with fat``), whose combinations give the long tail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from pathvqa.synth.tiles import FINDINGS, NUMBERS, ORGANS, PATTERNS, SECONDARY, STAIN_WEIGHTS, PathTile

# Mildly skewed frequencies: common organs and findings first, a tail of rarer ones.
ORGAN_WEIGHTS = {name: 1 / (rank + 2) ** 0.25 for rank, name in enumerate(ORGANS)}
FINDING_WEIGHTS = {name: 1 / (rank + 2) ** 0.25 for rank, name in enumerate(FINDINGS)}
PATTERN_WEIGHTS = {"focal": 0.4, "multifocal": 0.3, "diffuse": 0.3}
LESION_SHARE = 0.85
SECONDARY_SHARE = 0.9
MITOSES_SHARE = 0.5
QUESTIONS_PER_IMAGE = {6: 0.3, 7: 0.35, 8: 0.2, 9: 0.15}  # mean 7.2, 7.55 with repeats (PathVQA: 7.6)
REPEAT_SHARE = 0.05
"""Chance that a question is asked twice about the same image (PathVQA has ~8% exact duplicates)."""


def _draw(rng: np.random.Generator, weights: dict[str, float], exclude=()) -> str:
    names = [n for n in weights if n not in exclude]
    p = np.asarray([weights[n] for n in names])
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def draw_tile(rng: np.random.Generator) -> PathTile:
    """A tile's attributes, drawn independently (so any combination can occur in any split)."""
    organ = _draw(rng, ORGAN_WEIGHTS)
    finding = _draw(rng, FINDING_WEIGHTS) if rng.random() < LESION_SHARE else None
    pattern = _draw(rng, PATTERN_WEIGHTS) if finding else None
    secondary = None
    if finding and rng.random() < SECONDARY_SHARE:
        secondary = _draw(rng, dict.fromkeys(SECONDARY, 1.0), exclude=(finding,))
    mitoses = int(rng.integers(1, 4)) if rng.random() < MITOSES_SHARE else 0
    return PathTile(organ, finding, pattern, secondary, _draw(rng, STAIN_WEIGHTS), mitoses)


@dataclass(frozen=True)
class Open:
    """An open question: paraphrases with ``{organ}`` / ``{finding}`` slots, and what answers it."""

    phrasings: tuple[str, ...]
    answer: Callable[[PathTile], str | None]
    """The tile's answer, or None when the question does not apply to the tile."""
    weight: float
    region: str | None = None
    """Which of the tile's regions (``tiles.REGION_KINDS``) the question concerns, if any."""


@dataclass(frozen=True)
class Closed:
    """A yes/no question about one subject: "yes" only when the tile has it. ``yes_share`` is the
    template's language prior: the chance it is asked about a subject the tile has."""

    phrasings: tuple[str, ...]
    subjects: Callable[[PathTile], set[str]]
    """What the tile has, among the values of ``vocabulary``."""
    vocabulary: dict[str, float]
    """Every subject the question can name, with how often one is picked for a "no"."""
    yes_share: float
    weight: float
    needs_finding: bool = False
    region: str | None = None
    """What a "yes" concerns: a region kind, or ``"subject"``: the finding's or the secondary change's region,
    whichever the question names."""


OPEN = (
    # the whole tile, asked in two wordings (PathVQA often asks about one figure twice), and its lesions
    Open(
        ("what does this image show?", "what is shown in this image?"), PathTile.description, 1.8, "finding"
    ),
    Open(
        ("what is present in this section?", "what does this section show?"),
        PathTile.description,
        1.2,
        "finding",
    ),
    Open(
        ("what are the findings in this {organ}?", "what is seen in this {organ}?"),
        PathTile.findings,
        0.8,
        "finding",
    ),
    Open(
        (
            "what organ is this tissue from?",
            "what organ does this section come from?",
            "what organ is shown in this image?",
        ),
        lambda t: t.organ,
        0.5,
    ),
    Open(("where is this tissue from?", "where was this section taken from?"), lambda t: t.organ, 0.3),
    Open(
        (
            "what lesion is seen in this {organ}?",
            "what is the main finding in this {organ}?",
            "what abnormality does this {organ} show?",
        ),
        lambda t: t.finding,
        0.6,
        "finding",
    ),
    Open(("where is the {finding} in this image?",), lambda t: t.finding and t.organ, 0.25, "finding"),
    Open(
        ("what is the distribution of the {finding}?", "what pattern does the {finding} show here?"),
        lambda t: t.pattern,
        0.3,
        "finding",
    ),
    Open(
        ("what accompanies the {finding} in this section?", "what else is seen besides the {finding}?"),
        lambda t: t.secondary,
        0.35,
        "secondary",
    ),
    Open(
        ("what stain was used for this section?", "what staining method is used in this image?"),
        lambda t: t.stain,
        0.2,
    ),
    Open(
        ("how many mitotic figures are seen here?", "how many mitotic figures are present?"),
        lambda t: NUMBERS[t.mitoses],
        0.1,
        "mitoses",
    ),
)


def _present(tile: PathTile) -> set[str]:
    return {x for x in (tile.finding, tile.secondary) if x}


LESIONS = dict.fromkeys([*FINDINGS, *(s for s in SECONDARY if s not in FINDINGS)], 1.0)
CLOSED = (
    Closed(
        ("is this section from the {subject}?", "is this tissue taken from the {subject}?"),
        lambda t: {t.organ},
        ORGAN_WEIGHTS,
        0.3,
        0.8,
    ),
    Closed(
        ("is there {subject} in this section?", "is {subject} present in this image?"),
        _present,
        LESIONS,
        0.33,
        1.0,
        region="subject",
    ),
    Closed(
        ("is the {finding} {subject} in this image?",),
        lambda t: {t.pattern},
        PATTERN_WEIGHTS,
        0.67,
        0.4,
        True,
        "finding",
    ),
    Closed(
        ("is this section stained with {subject}?", "is this tissue stained with {subject}?"),
        lambda t: {t.stain},
        STAIN_WEIGHTS,
        0.67,
        0.5,
    ),
    Closed(
        (
            "does this image show {subject}?",
            "does this section show {subject}?",
            "does this {organ} show {subject}?",
        ),
        _present,
        LESIONS,
        0.63,
        1.3,
        region="subject",
    ),
    Closed(("does this tissue come from the {subject}?",), lambda t: {t.organ}, ORGAN_WEIGHTS, 0.67, 0.6),
    Closed(
        ("are mitotic figures present?", "are there mitotic figures in this image?"),
        lambda t: {"mitoses"} if t.mitoses else set(),
        {"mitoses": 1.0},
        0.6,
        0.3,
        region="mitoses",
    ),
)


def _phrase(rng, phrasings: tuple[str, ...], tile: PathTile, subject: str = "") -> str:
    text = phrasings[int(rng.integers(len(phrasings)))]
    return text.format(organ=tile.organ, finding=tile.finding or "lesion", subject=subject)


Asked = tuple[str, str, str | None]
"""(question, answer, the region it concerns: one of ``tiles.REGION_KINDS``, or None)."""


def region_of(kind: str | None, tile: PathTile, subject: str = "") -> str | None:
    """The region a question of this template ``kind`` concerns on this tile (None when the tile has none)."""
    if kind == "subject":
        kind = "finding" if subject == tile.finding else "secondary" if subject == tile.secondary else None
    has = {
        "finding": tile.finding is not None,
        "secondary": tile.secondary is not None,
        "mitoses": tile.mitoses > 0,
    }
    return kind if kind and has[kind] else None


def _closed(rng, template: Closed, tile: PathTile) -> Asked | None:
    """Ask ``template`` with a "yes" at its ``yes_share``; None when the tile cannot give that answer. A "no"
    concerns no region (what it names is not there)."""
    has = template.subjects(tile)
    want_yes = rng.random() < template.yes_share
    answer = "yes" if want_yes else "no"
    if len(template.vocabulary) == 1:  # no subject to pick: ask only when the tile's answer is the one drawn
        if bool(has) != want_yes:
            return None
        return (
            _phrase(rng, template.phrasings, tile),
            answer,
            region_of(template.region, tile) if want_yes else None,
        )
    pool = {k: v for k, v in template.vocabulary.items() if (k in has) == want_yes}
    if not pool:
        return None
    subject = _draw(rng, pool)
    region = region_of(template.region, tile, subject) if want_yes else None
    return _phrase(rng, template.phrasings, tile, subject), answer, region


def _pick(rng, weights: list[float], count: int) -> list[int]:
    p = np.asarray(weights) / sum(weights)
    return [int(i) for i in rng.choice(len(weights), size=min(count, int((p > 0).sum())), replace=False, p=p)]


def ask(tile: PathTile, rng: np.random.Generator) -> list[Asked]:
    """The questions about one tile (:data:`Asked`): 6–9 of them, half open, a few asked twice."""
    count = int(rng.choice(list(QUESTIONS_PER_IMAGE), p=list(QUESTIONS_PER_IMAGE.values())))
    n_open = count // 2 + int(rng.random() < 0.5) * (count % 2)
    open_ok = [t.weight if t.answer(tile) else 0.0 for t in OPEN]
    pairs = [
        (_phrase(rng, OPEN[i].phrasings, tile), OPEN[i].answer(tile), region_of(OPEN[i].region, tile))
        for i in _pick(rng, open_ok, n_open)
    ]
    closed_ok = [0.0 if t.needs_finding and not tile.finding else t.weight for t in CLOSED]
    for i in _pick(rng, closed_ok, len(CLOSED)):
        if len(pairs) >= count:
            break
        pair = _closed(rng, CLOSED[i], tile)
        if pair is not None:
            pairs.append(pair)
    order = rng.permutation(len(pairs))
    pairs = [pairs[i] for i in order]
    return pairs + [p for p in pairs if rng.random() < REPEAT_SHARE]


def vocabulary() -> list[str]:
    """Every word the style's questions, answers and captions use (the tiny tokenizers' whole words)."""
    texts = [
        *ORGANS,
        *FINDINGS,
        *SECONDARY,
        *PATTERNS,
        *STAIN_WEIGHTS,
        *NUMBERS,
        "normal with mitotic figures",
    ]
    for template in (*OPEN, *CLOSED):
        texts.extend(template.phrasings)
    words = " ".join(texts).replace("?", " ").replace(":", " ").replace(",", " ").replace(".", " ").split()
    return [w for w in dict.fromkeys(words) if not w.startswith("{")]
