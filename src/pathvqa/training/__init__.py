"""Training: processes and precision, atomic checkpoints, trackers, the recipe (supervised and GRPO), and stages."""
