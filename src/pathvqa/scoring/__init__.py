"""Scoring: the protocols (one module each, found by ``protocol.registry``), the metric suite over them, paired
comparisons, WordNet for METEOR."""
