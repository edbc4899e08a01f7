"""Advantage estimators, a registry in verl's style: `register_advantage(name)` and `get_advantage(name)`.

Every estimator is called as `fn(rewards, num_generations, **options)` and returns `(advantages, stats)`.
Group estimators take rewards (B*k,) grouped by prompt (rows i*k .. i*k+k-1 share prompt i, as
rlreason.rollout returns them) and give one advantage per completion; NaN rewards (no reward function
applied) are left out of the group statistics and get advantage 0, as in TRL. Their stats hold
`frac_zero_std`, the fraction of groups whose rewards do not vary (those get advantage 0: nothing to learn).
`gae` is token-level and also returns the `returns` the value head regresses on, in stats.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

EPS = 1e-4  # TRL's GRPOTrainer: (r - mean) / (std + 1e-4)
SCALES = ("group", "batch", "none")
ADVANTAGES: dict[str, Callable] = {}


def register_advantage(name: str):
    """Decorator adding an estimator to the registry under `name`."""

    def wrap(fn: Callable) -> Callable:
        if name in ADVANTAGES:
            raise ValueError(f"advantage estimator '{name}' is already registered")
        ADVANTAGES[name] = fn
        return fn

    return wrap


def get_advantage(name: str) -> Callable:
    """The estimator registered as `name`; an unknown name raises ValueError listing the valid ones."""
    if name not in ADVANTAGES:
        raise ValueError(f"unknown advantage estimator '{name}'; choose one of {', '.join(sorted(ADVANTAGES))}")
    return ADVANTAGES[name]


def _groups(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be a 1-D tensor (B*k,), got shape {tuple(rewards.shape)}")
    if num_generations < 1 or rewards.numel() % num_generations:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of num_generations={num_generations}")
    return rewards.float().view(-1, num_generations)


def _nanstd(x: torch.Tensor, dim=None, keepdim: bool = False) -> torch.Tensor:
    """Sample standard deviation (Bessel-corrected, as torch.std and TRL's nanstd) ignoring NaNs."""
    valid = ~torch.isnan(x)
    n = valid.sum(dim=dim, keepdim=True) if dim is not None else valid.sum()
    mean = torch.nanmean(x, dim=dim, keepdim=True) if dim is not None else torch.nanmean(x)
    sq = torch.where(valid, (x - mean) ** 2, torch.zeros_like(x))
    total = sq.sum(dim=dim, keepdim=True) if dim is not None else sq.sum()
    std = (total / (n - 1).clamp(min=1)).sqrt()
    return std if keepdim or dim is None else std.squeeze(dim)


def _group_stats(groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """Per-group nan-mean and nan-std (NaN when no member applies) and the zero-variance fraction."""
    mean = torch.nanmean(groups, dim=1, keepdim=True)
    std = _nanstd(groups, dim=1, keepdim=True) if groups.size(1) > 1 else torch.zeros_like(mean)
    zero = torch.isclose(torch.nan_to_num(std, nan=0.0), torch.zeros_like(std)).squeeze(1)
    return mean, std, {"frac_zero_std": zero.float().mean().item(), "zero_std_groups": zero}


def _finish(adv: torch.Tensor, groups: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
    adv = torch.where(torch.isnan(groups), torch.zeros_like(adv), adv)
    adv = torch.where(zero.unsqueeze(1), torch.zeros_like(adv), adv)  # no signal in a constant group
    return adv.reshape(-1)


@register_advantage("grpo")
def grpo(rewards: torch.Tensor, num_generations: int, *, scale_rewards: str = "group", eps: float = EPS):
    """(r - group mean) / (std + eps), std of the group ("group"), of the whole batch ("batch"), or 1 ("none")."""
    if scale_rewards not in SCALES:
        raise ValueError(f"scale_rewards must be one of {', '.join(SCALES)}, got '{scale_rewards}'")
    groups = _groups(rewards, num_generations)
    mean, std, stats = _group_stats(groups)
    adv = groups - mean
    if scale_rewards == "group":
        adv = adv / (std + eps)
    elif scale_rewards == "batch":
        adv = adv / (_nanstd(groups) + eps)
    return _finish(adv, groups, stats.pop("zero_std_groups")), stats


@register_advantage("dr_grpo")
def dr_grpo(rewards: torch.Tensor, num_generations: int, *, scale_rewards: str = "none"):
    """Dr. GRPO (Liu et al. 2025): r - group mean, never divided by a standard deviation."""
    if scale_rewards != "none":
        raise ValueError(f"dr_grpo does not scale advantages (scale_rewards must be 'none', got '{scale_rewards}'); "
                         "use advantage_estimator grpo to divide by a std")
    return grpo(rewards, num_generations, scale_rewards="none")


@register_advantage("rloo")
def rloo(rewards: torch.Tensor, num_generations: int, *, scale_rewards: str = "none", eps: float = EPS):
    """REINFORCE leave-one-out: r_i - mean of the other k-1 rewards of the group (optionally std-scaled)."""
    if scale_rewards not in SCALES:
        raise ValueError(f"scale_rewards must be one of {', '.join(SCALES)}, got '{scale_rewards}'")
    groups = _groups(rewards, num_generations)
    valid = ~torch.isnan(groups)
    n = valid.sum(1, keepdim=True)
    if (n[n > 0] < 2).any():
        raise ValueError("rloo needs at least 2 scored completions per group (num_generations >= 2)")
    total = torch.nan_to_num(groups, nan=0.0).sum(1, keepdim=True)
    adv = groups - (total - torch.nan_to_num(groups, nan=0.0)) / (n - 1).clamp(min=1)
    _, std, stats = _group_stats(groups)
    if scale_rewards == "group":
        adv = adv / (std + eps)
    elif scale_rewards == "batch":
        adv = adv / (_nanstd(groups) + eps)
    return _finish(adv, groups, stats.pop("zero_std_groups")), stats


@register_advantage("gae")
def gae(rewards: torch.Tensor, num_generations: int = 1, *, values: torch.Tensor, mask: torch.Tensor,
        gamma: float = 1.0, lam: float = 0.95):
    """Generalised advantage estimation over completion tokens (Schulman et al. 2016), mask-aware.

    rewards: (B,) sequence rewards, placed on the last completion token, or (B, C) per-token rewards.
    values: (B, C) value predictions V(s_t) for each completion position; mask: (B, C) completion mask.
    The episode ends after the last masked-in token (the next value is 0). Masked-out positions before it (a tool
    rollout's observation tokens) are skipped: the step before one bootstraps from the next masked-in token.
    Returns (advantages (B, C), {"returns": advantages + values}); both are 0 outside the mask. num_generations
    is not used."""
    if values.shape != mask.shape or values.dim() != 2:
        raise ValueError(f"values {tuple(values.shape)} and mask {tuple(mask.shape)} must both be (B, C)")
    mask = mask.to(values.dtype)
    if rewards.dim() == 1:
        if rewards.size(0) != values.size(0):
            raise ValueError(f"{rewards.size(0)} rewards for {values.size(0)} sequences")
        last = last_token_index(mask)
        token_rewards = torch.zeros_like(values)
        token_rewards[torch.arange(values.size(0)), last] = torch.nan_to_num(rewards.to(values.dtype), nan=0.0)
    elif rewards.shape == values.shape:
        token_rewards = rewards.to(values.dtype)
    else:
        raise ValueError(f"rewards must be (B,) or (B, C) like values {tuple(values.shape)}, got {tuple(rewards.shape)}")
    token_rewards, values = token_rewards * mask, values.detach() * mask
    C = values.size(1)
    positions = torch.arange(C, device=mask.device).unsqueeze(0)
    hole = (mask == 0) & (positions < last_token_index(mask).unsqueeze(1)) & mask.bool().any(1, keepdim=True)
    advantages = torch.zeros_like(values)
    running = torch.zeros_like(values[:, 0])
    next_value = torch.zeros_like(running)
    for t in reversed(range(C)):
        delta = token_rewards[:, t] + gamma * next_value - values[:, t]
        step = (delta + gamma * lam * running) * mask[:, t]
        running = torch.where(hole[:, t], running, step)  # an observation is skipped; padding ends the episode
        next_value = torch.where(hole[:, t], next_value, values[:, t] * mask[:, t])
        advantages[:, t] = running * mask[:, t]
    return advantages, {"returns": (advantages + values) * mask}


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """(B,) index of each row's last masked-in position (0 for an empty row); holes in the mask are allowed."""
    C = mask.size(1)
    flipped = mask.flip(1).bool()
    last = C - 1 - flipped.int().argmax(1)
    return torch.where(flipped.any(1), last, torch.zeros_like(last))
