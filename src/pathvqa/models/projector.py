"""Vision → language projector, built from a string (the LLaVA-1.5 naming)."""

from __future__ import annotations

import re

from torch import nn

PROJECTORS = ("linear", "mlp2x_gelu")


def build_projector(kind: str, vision_dim: int, text_dim: int) -> nn.Module:
    """``linear``: one matrix (LLaVA-1); ``mlpNx_gelu``: N linear layers with GELU between (LLaVA-1.5: N=2).

    Maps patch features (B, N, vision_dim) to the language model's embedding width (B, N, text_dim).
    """
    if kind == "linear":
        return nn.Linear(vision_dim, text_dim)
    match = re.fullmatch(r"mlp(\d+)x_gelu", kind)
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"unknown projector {kind!r} (expected 'linear' or 'mlp<N>x_gelu')")
    layers: list[nn.Module] = [nn.Linear(vision_dim, text_dim)]
    for _ in range(int(match.group(1)) - 1):
        layers += [nn.GELU(), nn.Linear(text_dim, text_dim)]
    return nn.Sequential(*layers)
