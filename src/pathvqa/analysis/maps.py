"""The pictures of where a model looked (``pathvqa explain``, ``predict --explain``, ``serve``'s maps, the
report's gallery with maps): a map over its image, a grid of answers with their regions, the cascading
randomisation's curves."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

from pathvqa.analysis.figures import gallery_samples, plt_agg, save
from pathvqa.analysis.results import Run
from pathvqa.answers import correct


def _decoded(image: bytes):
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(image)) as img:
        return np.asarray(img.convert("RGB"))


def _overlay(ax, pixels, saliency, region=None) -> None:
    ax.imshow(pixels)
    ax.imshow(saliency, cmap="inferno", alpha=0.55, vmin=0.0, vmax=max(float(saliency.max()), 1e-12))
    if region is not None:
        ax.contour(region, levels=[0.5], colors="cyan", linewidths=0.8)
    ax.set_axis_off()


def overlay_image(image: bytes, saliency, alpha: float = 0.55, least: int = 256):
    """The map blended over the image as one PIL image (no axes: for the app), colours as ``explanation``
    draws them, enlarged to at least ``least`` pixels a side."""
    import matplotlib
    import numpy as np
    from PIL import Image

    pixels = _decoded(image) / 255.0
    heat = matplotlib.colormaps["inferno"](saliency / max(float(saliency.max()), 1e-12))[..., :3]
    blended = Image.fromarray(np.uint8(np.round(255 * ((1 - alpha) * pixels + alpha * heat))))
    scale = max(1, -(-least // min(blended.size)))
    return blended.resize((blended.width * scale, blended.height * scale), Image.Resampling.NEAREST)


def explanation(image: bytes, saliency, question: str, answer: str, path: Path) -> Path:
    """One PNG: the image, and the map of where the model looked over it, under the question and answer."""
    plt = plt_agg()
    pixels = _decoded(image)
    fig, (left, right) = plt.subplots(1, 2, figsize=(6.4, 3.6))
    left.imshow(pixels)
    left.set_axis_off()
    left.set_title("image", fontsize=9)
    _overlay(right, pixels, saliency)
    right.set_title("where the model looked", fontsize=9)
    fig.suptitle(textwrap.fill(f"{question} → {answer}", 70), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


def grounding_maps(examples: list[dict], path: Path, columns: int = 4) -> Path | None:
    """A grid of answers: each the image with its region outlined, the trained model's map and the
    randomised model's (``examples``: image bytes, region mask, two maps, question, answer)."""
    if not examples:
        return None
    plt = plt_agg()
    fig, axes = plt.subplots(len(examples), 3, figsize=(6.6, 2.3 * len(examples)), squeeze=False)
    for row, ex in zip(axes, examples, strict=True):
        pixels = _decoded(ex["image"])
        row[0].imshow(pixels)
        row[0].contour(ex["region"], levels=[0.5], colors="cyan", linewidths=0.8)
        row[0].set_axis_off()
        row[0].set_title(textwrap.fill(f"{ex['question']} → {ex['answer']}", 34), fontsize=7)
        _overlay(row[1], pixels, ex["trained"], ex["region"])
        row[1].set_title("trained", fontsize=8)
        _overlay(row[2], pixels, ex["randomised"], ex["region"])
        row[2].set_title("weights randomised", fontsize=8)
    fig.tight_layout()
    save(fig, path)
    return path


def cascade_curves(cascades: dict[str, list[dict]], path: Path) -> Path | None:
    """Adebayo's cascading randomisation, one line per model (``cascades``: label → the ``cascade`` stages of
    its ``grounding.json``): the rank correlation of the maps with the trained ones, and the pointing game,
    as more of the layers are drawn again from the top (0: the trained model)."""
    if not any(cascades.values()):
        return None
    plt = plt_agg()
    fig, (rho, point) = plt.subplots(1, 2, figsize=(8.4, 3.4))
    for label, stages in cascades.items():
        if not stages:
            continue
        shares = [0.0] + [s["share"] for s in stages]
        rho.plot(shares, [1.0] + [s.get("rank_correlation", float("nan")) for s in stages], "o-", label=label)
        point.plot(shares, [stages[0]["pointing"]] + [s["pointing_randomised"] for s in stages], "o-",
                   label=label)  # fmt: skip
    uniform = next(s for s in cascades.values() if s)[0]["uniform"]
    point.axhline(uniform, color="grey", linestyle=":", label="uniform map")
    rho.set_ylabel("rank correlation with the trained map")
    point.set_ylabel("pointing game")
    for ax in (rho, point):
        ax.set_xlabel("share of the layers drawn again, from the top")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, path)


def gallery_maps(runs: list[Run], path: Path, chosen: list[str]) -> Path | None:
    """The gallery's questions, one row each: the image, then where each model that can be loaded looked for
    the answer it gave (``pathvqa explain``'s map), titled with that answer ✓ / ✗."""
    from pathvqa.evaluation.explain import maps_of_run

    with_predictions = [r for r in runs if r.predictions]
    samples = gallery_samples(with_predictions[-1]) if with_predictions and chosen else {}
    chosen = [q for q in chosen if q in samples]
    mapped = []
    for run in with_predictions:
        maps = maps_of_run(
            run.folder, [samples[q] for q in chosen], [run.predictions[q]["prediction"] for q in chosen]
        )
        if maps is not None:
            mapped.append((run, maps))
    if not mapped:
        return None
    plt = plt_agg()
    fig, axes = plt.subplots(len(chosen), 1 + len(mapped), figsize=(2.4 * (1 + len(mapped)), 2.6 * len(chosen)),
                             squeeze=False)  # fmt: skip
    for index, (row, qid) in enumerate(zip(axes, chosen, strict=True)):
        pixels, truth = _decoded(samples[qid].image), with_predictions[-1].predictions[qid]
        row[0].imshow(pixels)
        row[0].set_axis_off()
        row[0].set_title(
            textwrap.fill(f"{truth['question']} → {truth['answer']}", 30), fontsize=7, loc="left"
        )
        for ax, (run, maps) in zip(row[1:], mapped, strict=True):
            answer = run.predictions[qid]
            ok = bool(correct(answer["prediction"], answer["answer"], answer["type"]))
            if maps[index] is None:  # an empty answer: nothing to map
                ax.set_axis_off()
            else:
                _overlay(ax, pixels, maps[index])
            said = textwrap.shorten(answer["prediction"] or "(empty)", 40)
            title = textwrap.fill(
                f"{'✓' if ok else '✗'} {run.label}: {said}", 32
            )  # two lines, not a collision
            ax.set_title(title, fontsize=7, color="#1a7f37" if ok else "#cf222e")
    fig.tight_layout()
    return save(fig, path)


def grounding_compare(examples: dict[str, list[dict]], path: Path) -> Path | None:
    """The same answers' maps side by side, one column per model (``examples``: label → the examples
    ``explain.score_split`` returned for it, on the same questions in the same order): each row the image
    with the question's region outlined, then each model's map titled with its answer."""
    labels = [label for label, rows in examples.items() if rows]
    if not labels:
        return None
    first = examples[labels[0]]
    plt = plt_agg()
    fig, axes = plt.subplots(len(first), 1 + len(labels), figsize=(2.3 * (1 + len(labels)), 2.4 * len(first)),
                             squeeze=False)  # fmt: skip
    for index, row in enumerate(axes):
        shown = first[index]
        pixels = _decoded(shown["image"])
        row[0].imshow(pixels)
        row[0].contour(shown["region"], levels=[0.5], colors="cyan", linewidths=0.8)
        row[0].set_axis_off()
        row[0].set_title(textwrap.fill(shown["question"], 30), fontsize=7, loc="left")
        for ax, label in zip(row[1:], labels, strict=True):
            ex = examples[label][index]
            _overlay(ax, pixels, ex["trained"], ex["region"])
            ax.set_title(textwrap.shorten(f"{label}: {ex['answer']}", 34), fontsize=7)
    fig.tight_layout()
    return save(fig, path)
