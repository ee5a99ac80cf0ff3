"""Where the time of a training step goes: pyinstrument over N steps of a tiny recipe (one CPU thread),
printed as a call tree. Findings are written up in benchmarks/README.md.

    python benchmarks/profile_train.py blip_tiny [--steps 150] [--set key=value ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from pyinstrument import Profiler

from pathvqa.config import load_config
from pathvqa.synth import generator as synthetic
from pathvqa.training.stages import Trainer

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    data = ROOT / "runs" / "bench_data" / "demo_like"
    if not (data / "synth.json").is_file():
        synthetic.write(
            data,
            {"train": 2000, "validation": 200, "test": 400},
            size=96,
            seed=0,
            progress=False,
            style="simple",
        )
    sets = [
        f"data.dataset={data}",
        f"train.max_steps={args.steps}",
        "data.eval_split=null",
        "train.threads=1",
    ]
    cfg = load_config(ROOT / "configs" / f"{args.config}.yaml", sets + args.overrides)
    cfg = cfg.stage_config(cfg.stages[-1]) if cfg.stages else cfg
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(cfg, Path(out) / "run", progress=False)
        try:
            trainer.setup()
            profiler = Profiler(interval=0.002)
            profiler.start()
            trainer.train()
            profiler.stop()
        finally:
            trainer.close()
    print(profiler.output_text(unicode=True, color=False, show_all=False))


if __name__ == "__main__":
    main()
