"""Group relative policy optimisation (``train.method: grpo``): reinforcement learning with verifiable
rewards, one more stage of the same recipe for every model family.

Each step takes ``train.batch_size`` questions; for each it samples a group of G answers
(``grpo.num_generations``, ``temperature``, ``top_p``; seeded by the run's seed, the step and the question,
so a resumed run and any number of processes draw the same answers), scores them with the configured
rewards (:mod:`pathvqa.training.rewards`), turns rewards into advantages within each group and takes a clipped
policy-gradient step on the answer tokens, as TRL's ``GRPOTrainer`` defines it (its loss types, reward
scaling, ``epsilon``, ``beta`` and ``num_iterations``; :func:`policy_loss`). Checkpoints, resume, logs,
validation and several processes are the SFT loop's (:class:`pathvqa.training.loop.Trainer`); a group never
spans processes. With ``beta > 0`` the KL term is taken to the starting policy: under LoRA the same model
with its adapters disabled, otherwise a frozen copy of the starting weights.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch

from pathvqa.config import EvalConfig, ExperimentConfig, GrpoConfig
from pathvqa.data.batches import Collator
from pathvqa.data.prepare import Sample
from pathvqa.errors import PathVQAError
from pathvqa.models.base import ModelInputs, answer_means, undistributed
from pathvqa.runtime.trained import start_from
from pathvqa.training import rewards as reward_functions
from pathvqa.training.loop import Trainer

EPS = 1e-4  # added to the reward spread before dividing, as TRL does
STATS = ("tokens", "answers", "clipped", "kl")  # summed over micro-batches and processes per update


def advantages(rewards: torch.Tensor, group: int, scale: str, batch_std: torch.Tensor | None = None):
    """(advantages (N,), per-answer std (N,)) of N = questions × G rewards, each group consecutive: reward
    minus its group's mean, divided by the group's std (``group``), the whole batch's (``batch``;
    ``batch_std`` when the batch spans processes) or nothing (``none``). Unscored answers (NaN) get 0."""
    grouped = rewards.view(-1, group)
    mean = torch.nanmean(grouped, dim=1, keepdim=True).expand_as(grouped).reshape(-1)
    if scale == "batch":
        std = (batch_std if batch_std is not None else _nanstd(rewards)).expand_as(rewards)
    else:
        std = _nanstd(grouped, dim=1).repeat_interleave(group)
    advantage = rewards - mean
    if scale != "none":
        advantage = advantage / (std + EPS)
    return torch.nan_to_num(advantage, nan=0.0), std


def _nanstd(values: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Standard deviation ignoring NaN (unbiased, as ``torch.std``)."""
    mean = torch.nanmean(values, dim=dim, keepdim=dim is not None)
    count = (~values.isnan()).sum(dim=dim).float()
    squares = torch.nansum((values - mean) ** 2, dim=dim)
    return (squares / (count - 1).clamp(min=1)).sqrt()


@dataclass
class LossParts:
    """A micro-batch's loss as (numerator, denominator): the loop divides the numerators of every
    micro-batch and process by the sum of their denominators, so the loss is the whole batch's."""

    numerator: torch.Tensor
    denominator: float
    stats: dict[str, torch.Tensor]


def policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantage: torch.Tensor,
    mask: torch.Tensor,
    cfg: GrpoConfig,
    max_new_tokens: int,
    ref_logp: torch.Tensor | None = None,
) -> LossParts:
    """TRL's GRPO loss on per-token log-probabilities (N, T) of N answers with mask (N, T):
    ``-min(ρ·A, clip(ρ, 1-ε, 1+ε_high)·A) + β·KL`` per token (ρ = exp(logp - old_logp); KL: the k3
    estimator to ``ref_logp``), then ``grpo``: mean over each answer's tokens, mean over answers;
    ``dr_grpo``: sum / (answers × max_new_tokens); ``dapo``: sum / all answer tokens."""
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp)
    high = cfg.epsilon_high if cfg.epsilon_high is not None else cfg.epsilon
    adv = advantage.unsqueeze(1)
    per_token = -torch.min(ratio * adv, torch.clamp(ratio, 1 - cfg.epsilon, 1 + high) * adv)
    stats = {"tokens": mask.sum().detach(), "answers": torch.tensor(float(len(logp)))}
    if cfg.beta:
        kl = torch.exp(ref_logp - logp) - (ref_logp - logp) - 1
        per_token = per_token + cfg.beta * kl
        stats["kl"] = (kl * mask).sum().detach()
    else:
        stats["kl"] = torch.zeros(())
    clipped = ((ratio < 1 - cfg.epsilon) & (adv < 0)) | ((ratio > 1 + high) & (adv > 0))
    stats["clipped"] = (clipped * mask).sum().detach()
    numerator = answer_means(per_token, mask).sum() if cfg.loss_type == "grpo" else (per_token * mask).sum()
    return LossParts(
        numerator, normalizer(cfg.loss_type, len(logp), float(mask.sum()), max_new_tokens), stats
    )


def normalizer(loss_type: str, answers: int, tokens: float, max_new_tokens: int) -> float:
    """What the summed loss is divided by: answers (``grpo``, after each answer's token mean), answers ×
    ``max_new_tokens`` (``dr_grpo``) or answer tokens (``dapo``)."""
    if loss_type == "grpo":
        return float(answers)
    if loss_type == "dr_grpo":
        return float(answers * max_new_tokens)
    return tokens


def sampling_config(cfg: ExperimentConfig, grpo: GrpoConfig) -> EvalConfig:
    """The decoding settings a group of answers is sampled with (``grpo.max_new_tokens`` null: the
    evaluation's)."""
    return cfg.eval.model_copy(
        update={"do_sample": True, "temperature": grpo.temperature, "top_p": grpo.top_p,
                "max_new_tokens": grpo.max_new_tokens or cfg.eval.max_new_tokens, "min_new_tokens": 0}
    )  # fmt: skip


def sample_group(
    family, bundle, pipeline, task: str, sample: Sample, count: int, decoding: EvalConfig, device="cpu"
) -> list[str]:
    """``count`` answers to one question from one ``generate`` call with ``decoding``: a GRPO group (the
    caller seeds the draw)."""
    collate = Collator([sample] * count, family, bundle, pipeline, task, train=False, share_images=True)
    return [g.text for g in family.generate(bundle, collate(list(range(count))).to(device), decoding)]


def step_seed(seed: int, step: int, sample_id: str) -> int:
    """The sampling seed of one question's group at one step."""
    digest = hashlib.blake2b(f"{seed}:{step}:{sample_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


@dataclass
class Rollout:
    """One micro-batch's sampled groups: N = questions × G answers, each group consecutive."""

    inputs: dict[str, torch.Tensor]  # the answers as training targets
    tokens: int  # answer tokens the loss covers
    answers: int
    advantage: torch.Tensor  # (N,)
    old_logp: torch.Tensor | None  # (N, T) when num_iterations > 1
    ref_logp: torch.Tensor | None  # (N, T) when beta > 0
    rewards: torch.Tensor  # (N,)
    same_reward_groups: int
    groups: int


class GrpoTrainer(Trainer):
    """The SFT loop with a different step: sample, reward, clipped policy gradient."""

    def setup(self) -> None:
        super().setup()
        self.grpo = self.cfg.train.grpo
        self.rewards = reward_functions.load(self.grpo.rewards)
        self.weights = [weight for _, _, weight in self.rewards]
        self.sampling = sampling_config(self.cfg, self.grpo)
        self.max_new_tokens = self.sampling.max_new_tokens
        self.pipeline = self.val_pipeline  # no augmentation: the answers are rewarded on the image as it is

    def updates_per_step(self) -> int:
        return self.cfg.train.grpo.num_iterations

    def cache_features(self) -> None:
        self.reference = self._reference_bundle()  # before the policy's encoder is given a feature cache
        super().cache_features()

    def make_collate(self) -> Callable[[list[int]], list[Sample]]:
        """The loader hands over questions: each step samples answers to them, then builds its inputs."""
        return _Questions(self.samples)

    def collate_for(self, epoch: int) -> Callable[[list[int]], list[Sample]]:
        return self.collate  # no augmentation: nothing draws from the epoch

    def _reference_bundle(self):
        """β > 0: the starting policy. LoRA: the adapters disabled at compute time (None here); else a
        frozen copy of the weights this stage started from (rebuilt from ``init`` after a resume)."""
        if not self.cfg.train.grpo.beta or _peft(self.bundle.model) is not None:
            return None
        if self.start is not None and self.init is None:
            raise PathVQAError("train.grpo.beta > 0 without LoRA needs the stage to start from a checkpoint")
        if self.start is not None:  # resumed: rebuild the start, not the resumed weights
            _, bundle = start_from(self.cfg, self.init)
        else:
            bundle = replace(
                self.bundle, model=copy.deepcopy(self.accelerator.unwrap_model(self.bundle.model))
            )
        bundle.model.requires_grad_(False).eval().to(self.accelerator.device)
        return bundle

    # ---- one step ------------------------------------------------------------------------------------
    def train_step(self, micro_batches: list) -> dict[str, Any]:
        """Sample and reward each micro-batch's groups, then ``num_iterations`` updates on them."""
        rollouts = [self.rollout(samples) for samples in micro_batches]
        for _ in range(self.grpo.num_iterations):
            update = self.update(rollouts)
        return {**update, "rollouts": rollouts}

    def update(self, rollouts: list[Rollout]) -> dict[str, float]:
        """One optimizer update over the window's rollouts (every process's answers together)."""
        acc, cfg = self.accelerator, self.grpo
        self.bundle.model.eval()  # no dropout: the sampled answers' log-probabilities, as sampled
        local = sum(normalizer(cfg.loss_type, r.answers, r.tokens, self.max_new_tokens) for r in rollouts)
        denominator = acc.reduce(torch.tensor(float(local), device=acc.device), "sum")
        # accelerate divides by grad_accum and DDP averages over processes: undo both
        scale = acc.num_processes * self.accum / denominator.clamp(min=1)
        parts: list[LossParts] = []

        def loss_of(rollout: Rollout) -> torch.Tensor:
            parts.append(self.loss(rollout))
            return parts[-1].numerator

        loss_sum = self.backward_window(rollouts, loss_of, scale)
        stats = [torch.as_tensor(sum(p.stats[k] for p in parts), device=acc.device) for k in STATS]
        loss, tokens, answers, clipped, kl = acc.reduce(torch.stack([loss_sum, *stats]), "sum").tolist()
        loss /= max(float(denominator), 1.0)
        self.optimizer_step(loss)
        return {"loss": loss, "clipped": clipped / max(tokens, 1.0), "kl": kl / max(tokens, 1.0),
                "answer_tokens": tokens / max(answers, 1.0)}  # fmt: skip

    def loss(self, rollout: Rollout) -> LossParts:
        """The clipped policy-gradient loss of one rollout under the current policy."""
        logp, mask = self._logprobs(self.bundle, rollout.inputs)
        old = rollout.old_logp if rollout.old_logp is not None else logp.detach()
        return policy_loss(
            logp, old, rollout.advantage, mask, self.grpo, self.max_new_tokens, rollout.ref_logp
        )

    # ---- sampling and rewards ----------------------------------------------------------------------
    def rollout(self, samples: list[Sample]) -> Rollout:
        """Sample a group of answers to each question, reward them, and build the inputs that score them."""
        acc, g = self.accelerator, self.grpo.num_generations
        completions = [answer for sample in samples for answer in self.sample_answers(sample)]
        repeated = [sample for sample in samples for _ in range(g)]
        per_function = reward_functions.table(self.rewards, completions, repeated)
        reward = reward_functions.combine(per_function, self.weights).to(acc.device)
        batch_std = None
        if self.grpo.scale_rewards == "batch":  # the std of every process's rewards
            batch_std = _nanstd(acc.gather(reward))
        advantage, std = advantages(reward, g, self.grpo.scale_rewards, batch_std)
        targets = [replace(s, target=c) for s, c in zip(repeated, completions, strict=True)]
        batch = self.model_inputs(targets)
        inputs = batch.to(acc.device)
        old = ref = None
        with torch.no_grad():
            if self.grpo.num_iterations > 1:
                old = self._logprobs(self.bundle, inputs)[0]
            if self.grpo.beta:
                ref = self._reference_logprobs(inputs)
        same = int(torch.isclose(std.view(-1, g)[:, 0], torch.zeros((), device=std.device)).sum())
        return Rollout(inputs, batch.targets, len(targets), advantage, old, ref, reward, same, len(samples))

    def sample_answers(self, sample: Sample) -> list[str]:
        """G answers to one question, sampled from a seed of (run seed, step, question id)."""
        device = self.accelerator.device
        devices = [device] if device.type == "cuda" else []
        was_training = self.bundle.model.training
        self.bundle.model.eval()
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(step_seed(self.cfg.train.seed, self.pos.step, sample.id))
            answers = sample_group(
                self.family, self.bundle, self.pipeline, self.cfg.task, sample, self.grpo.num_generations,
                self.sampling, device,
            )  # fmt: skip
        self.bundle.model.train(was_training)
        return answers

    def model_inputs(self, samples: list[Sample]) -> ModelInputs:
        """Training inputs for ``samples`` (their ``target``: the sampled answer), images unaugmented."""
        collate = Collator(
            samples, self.family, self.bundle, self.pipeline, self.cfg.task, train=True, share_images=True
        )
        return collate(list(range(len(samples))))

    def _reference_logprobs(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with self._as_reference() as bundle:
            return self._logprobs(bundle, inputs)[0]

    def _logprobs(self, bundle, inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """The answers' token log-probabilities under the distribution they were sampled from (the logits
        divided by ``grpo.temperature``, as TRL computes them), and their mask."""
        return self.family.token_logprobs(bundle, inputs, self.sampling.temperature)

    @contextmanager
    def _as_reference(self):
        if self.reference is None:  # LoRA: the base model is the reference
            with _peft(self.bundle.model).disable_adapter():
                yield self.bundle
        else:
            yield self.reference

    # ---- logs -------------------------------------------------------------------------------------------
    def log_step(self, logged: dict[str, Any]) -> None:
        """Rewards, their spread, KL and clipping every ``log_every`` steps."""
        rollouts, update = logged["rollouts"], logged
        if self.pos.step % self.cfg.train.log_every and self.pos.step != self.total_steps:
            return
        acc = self.accelerator
        reward = acc.gather(torch.cat([r.rewards for r in rollouts]))
        groups = acc.reduce(
            torch.tensor([float(sum(r.same_reward_groups for r in rollouts)), float(sum(r.groups for r in rollouts))],
                         device=acc.device), "sum",
        )  # fmt: skip
        row = {
            "step": self.pos.step,
            "epoch": self.pos.epoch,
            "loss": update["loss"],
            "reward": float(torch.nanmean(reward)),
            "reward_std": float(_nanstd(reward)),
            "same_reward_groups": float(groups[0] / groups[1].clamp(min=1)),
            "kl": update["kl"],
            "clipped": update["clipped"],
            "answer_tokens": update["answer_tokens"],
            "lr": self.scheduler.get_last_lr()[0],
        }
        self.write_log("grpo", row)
        acc.log({f"grpo/{k}": v for k, v in row.items() if k not in ("step", "epoch")}, step=self.pos.step)
        self.bar.set_postfix(reward=f"{row['reward']:.3f}", same=f"{row['same_reward_groups']:.2f}")


class _Questions:
    """``collate_fn`` of a GRPO stage: sample indices → the samples (the step builds the model inputs)."""

    def __init__(self, samples: list[Sample]):
        self.samples = samples

    def __call__(self, indices: list[int]) -> list[Sample]:
        return [self.samples[i] for i in indices]


def _peft(model):
    """The peft model inside ``model`` (DDP-wrapped or not), or None."""
    inner = undistributed(model)
    return inner if hasattr(inner, "disable_adapter") else None
