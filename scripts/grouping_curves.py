"""Validation curves of grouped (data.group_by_image) vs per-question training, from two learning_spread runs:

python scripts/learning_spread.py --seeds 0 --threads 1 --out runs/spread3
python scripts/learning_spread.py --seeds 0 --threads 1 --out runs/spread-grouped --set data.group_by_image=true
python scripts/grouping_curves.py   # → docs/images/grouping_curves.png
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

runs = {"blip-tiny": ("blip_tiny-s0-t1", "logs"), "vlm-tiny (instruct)": ("vlm_tiny-s0-t1", "instruct/logs")}
fig, axes = plt.subplots(1, 2, figsize=(10, 4.0))
for ax, (label, (name, sub)) in zip(axes, runs.items(), strict=False):
    for root, style, what in (
        ("runs/spread3", "-", "per question (default)"),
        ("runs/spread-grouped", "--", "data.group_by_image"),
    ):
        log = Path(f"{root}/{name}/{sub}/train.jsonl")
        rows = [json.loads(line) for line in log.read_text().splitlines()]
        val = [r for r in rows if "val_open_exact_match" in r]
        for key, marker, metric in (
            ("val_open_exact_match", "o", "open EM"),
            ("val_closed_accuracy", "s", "closed acc."),
        ):
            steps, values = [r["step"] for r in val], [r[key] for r in val]
            ax.plot(steps, values, style, marker=marker, label=f"{what}: {metric}")
    ax.set_title(label)
    ax.set_xlabel("optimizer step")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
axes[0].set_ylabel("validation (200 questions)")
handles, labels = axes[0].get_legend_handles_labels()
fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=4)
fig.suptitle(
    "Grouped batches (whole images' questions) vs per question: data seed 0, train seed 0, 1 thread",
    fontsize=9,
)
fig.tight_layout(rect=(0, 0.08, 1, 1))
fig.savefig("docs/images/grouping_curves.png", dpi=110)
