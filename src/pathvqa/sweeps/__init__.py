"""Hyper-parameter sweeps on Optuna: the sweep spec and the study its workers share."""
