"""Scoring a rollout: the recipe's reward functions (rewards.RewardSet) as tensors for the trainer."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

# wall-clock budget of one reward function's call on one batch; past it the batch's rows get None and are counted
CALL_TIMEOUT = float(os.environ.get("REWARDS_CALL_TIMEOUT", "300"))


@dataclass
class Scores:
    per_function: dict[str, torch.Tensor]  # name -> (N,), NaN where the function does not apply or failed
    total: torch.Tensor  # (N,) weighted sum over the functions that apply; NaN where none does (left out)
    accuracy: float  # mean of the first reward function (the verifier) over the rows it applies to
    errors: int  # rows where a function raised, timed out, or returned NaN/inf


class RewardScorer:
    """Calls each reward once per batch with the rows' columns, as TRL's GRPOTrainer does."""

    def __init__(self, names: list[str], weights: list[float] | None = None, timeout: float | None = CALL_TIMEOUT):
        from rewards import RewardSet

        self.names = list(names)
        self.rewards = RewardSet(self.names, weights, timeout=timeout)
        # metric keys as TRL's: the function name (options after '?' left out)
        short = [n.split("?")[0].replace(":", ".").split(".")[-1] for n in self.names]
        self.labels = dict(zip(self.names, short if len(set(short)) == len(short) else self.names))

    def __call__(self, rows: list[dict], completions: list[str]) -> Scores:
        prompts = [r["prompt"] for r in rows]
        columns = {key: [r[key] for r in rows] for key in rows[0] if key != "prompt"} if rows else {}
        result = self.rewards(prompts, completions, **columns)
        per_function = {self.labels[n]: torch.tensor(result.per_function[n], dtype=torch.float32)
                        for n in self.names}
        first = per_function[self.labels[self.names[0]]]
        valid = first[~torch.isnan(first)]
        return Scores(per_function, torch.tensor(result.total, dtype=torch.float32),
                      valid.mean().item() if len(valid) else float("nan"), int(sum(result.errors.values())))
