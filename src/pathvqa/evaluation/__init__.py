"""Evaluation of a trained run: predictions and scores on a split, and a loaded model that answers questions."""
