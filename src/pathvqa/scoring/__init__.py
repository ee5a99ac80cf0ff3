"""Scoring: the three protocols, paired comparisons, WordNet for METEOR, and the question-only prior."""
