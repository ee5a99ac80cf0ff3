"""Verifiable rewards for GRPO (``train.grpo.rewards``), from the project's own metrics.

A reward is called once per batch of sampled answers with keyword arguments and returns one value per
answer, or ``None`` where it does not apply (a closed-question reward on an open question):

    def my_reward(completions, answers, questions, types, **_) -> list[float | None]: ...

Built-in: ``closed_exact_match`` (the whole answer is the right yes/no), ``closed_correct`` (the first word
is: the closed-accuracy metric, which leaves the rest of the answer free, so a policy may grow it),
``open_exact_match`` and ``open_token_f1`` (strict protocol), ``llava_med_closed`` and
``llava_med_open_recall`` (LLaVA-Med's scoring). A user's own
reward is named by import path, ``my_rewards:reward`` (opt-in: it runs your code).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable

import torch

from pathvqa import answers
from pathvqa.errors import PathVQAError
from pathvqa.scoring import llava_med, strict

Reward = Callable[..., list[float | None]]


def _per_row(score: Callable[[str, str], float], kind: str) -> Reward:
    def reward(completions, answers, types, **_) -> list[float | None]:
        return [
            score(c, a) if t == kind else None for c, a, t in zip(completions, answers, types, strict=True)
        ]

    return reward


def _llava_med_recall(prediction: str, answer: str) -> float:
    """LLaVA-Med's open recall: the share of the answer's words found in the prediction."""
    return llava_med.open_scores(prediction, answer)["recall"]


SCORES: dict[str, Callable[[str, str], float]] = {
    "exact_match": answers.exact_match,
    "correct": answers.closed_correct,
    "token_f1": strict.token_f1,
    "llava_med_closed": llava_med.closed_hit,
    "llava_med_recall": _llava_med_recall,
}
"""The per-row scores that ``answers.REWARDS`` names."""
BUILT_IN: dict[str, Reward] = {
    name: _per_row(SCORES[score], kind) for name, (kind, score) in answers.REWARDS.items()
}


def load(spec: dict[str, float]) -> list[tuple[str, Reward, float]]:
    """(name, function, weight) for each configured reward; a bad import path is a one-line error."""
    found = []
    for name, weight in spec.items():
        if name in BUILT_IN:
            found.append((name, BUILT_IN[name], weight))
            continue
        module, _, attr = name.partition(":")
        try:
            function = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as err:
            raise PathVQAError(f"train.grpo.rewards: cannot import {name!r} ({err})") from None
        if not callable(function):
            raise PathVQAError(f"train.grpo.rewards: {name!r} is not a function")
        found.append((name, function, weight))
    return found


def table(rewards: list[tuple[str, Reward, float]], completions: list[str], samples: list) -> torch.Tensor:
    """(N, K) rewards of N answers under K functions; NaN where a function gave ``None``."""
    context = {
        "completions": completions,
        "answers": [s.answer for s in samples],
        "questions": [s.question for s in samples],
        "types": [s.type for s in samples],
    }
    columns = []
    for name, function, _ in rewards:
        values = function(**context)
        if len(values) != len(completions):
            raise PathVQAError(
                f"reward {name!r} returned {len(values)} values for {len(completions)} answers"
            )
        columns.append([math.nan if v is None else float(v) for v in values])
    return torch.tensor(columns, dtype=torch.float32).T


def combine(per_function: torch.Tensor, weights: list[float]) -> torch.Tensor:
    """(N,) weighted sum over the functions that applied (TRL's ``sum_then_normalize``); NaN where none did."""
    total = (per_function * torch.tensor(weights, dtype=per_function.dtype)).nansum(dim=1)
    return total.masked_fill(per_function.isnan().all(dim=1), math.nan)
