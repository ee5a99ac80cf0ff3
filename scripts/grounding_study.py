"""The study notes' "where the model looked": blip-tiny, vlm-tiny and llava-tiny from a finished demo
(``pathvqa demo --with llava_tiny``), each scored as ``pathvqa explain --score`` scores it on the test split's
region questions (``<out>/<model>/grounding.json``), and two figures: the three models' maps of the same test
answers, and their cascading randomisation.

    pathvqa demo --with llava_tiny --out runs/demo
    python scripts/grounding_study.py --demo runs/demo --out runs/grounding
    python scripts/docs.py --record-grounding runs/grounding   # docs/results/grounding.json, then the table
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from PIL import Image

MODELS = {"blip-tiny": "blip_tiny", "vlm-tiny": "vlm_tiny", "llava-tiny": "llava_tiny"}
FIGURES = Path(__file__).resolve().parent.parent / "docs" / "images"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--demo", type=Path, default=Path("runs/demo"))
    parser.add_argument("--out", type=Path, default=Path("runs/grounding"))
    parser.add_argument("--limit", type=int, help="the first N region questions (default: all)")
    args = parser.parse_args()
    from pathvqa.analysis.maps import cascade_curves, grounding_compare
    from pathvqa.evaluation.explain import score_split
    from pathvqa.runtime.trained import load, resolve_run

    examples, cascades = {}, {}
    for label, name in MODELS.items():
        if not (args.demo / name).is_dir():
            raise SystemExit(f"{args.demo / name} is missing: run `pathvqa demo --with llava_tiny` first")
        trained = resolve_run(args.demo / name)
        family, bundle = load(trained)
        started = time.perf_counter()
        result, examples[label] = score_split(
            trained.config, family, bundle, "test", args.out / name, str(args.demo / name), args.limit
        )
        seconds = time.perf_counter() - started
        (args.out / name / "seconds.json").write_text(json.dumps({"seconds": round(seconds, 1)}))
        cascades[label] = result["cascade"]
        whole = result["table"]["all"]
        print(f"{label}: {result['questions']} questions in {seconds:.0f} s; pointing {whole['pointing']} "
              f"(uniform {whole['uniform']}, randomised {whole['pointing_randomised']})")  # fmt: skip
    for figure, draw in (
        ("grounding_maps.png", lambda path: grounding_compare(examples, path)),
        ("grounding_cascade.png", lambda path: cascade_curves(cascades, path)),
    ):
        draw(args.out / figure)
        with Image.open(args.out / figure) as drawn:  # the docs' copy: half the 300 dpi, 256 colours
            half = drawn.convert("RGB").resize(
                (drawn.width // 2, drawn.height // 2), Image.Resampling.LANCZOS
            )
            half.quantize(256).save(FIGURES / figure, optimize=True)
        print(f"figure: {FIGURES / figure}")


if __name__ == "__main__":
    main()
