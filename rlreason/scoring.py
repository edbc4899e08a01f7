"""Scoring a rollout: the recipe's reward functions over completions, weighted, as tensors for the trainer."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Scores:
    per_function: dict[str, torch.Tensor]  # name -> (N,), NaN where the function does not apply
    total: torch.Tensor  # (N,) weighted sum over the functions that apply (NaN counted as 0)
    accuracy: float  # mean of the first reward function: the verifier
    errors: int  # rows where a function raised or timed out


class RewardScorer:
    """Calls each reward function once per batch with the rows' columns, as TRL's GRPOTrainer does."""

    def __init__(self, names: list[str], weights: list[float] | None = None):
        import rewards

        self.names = list(names)
        self.funcs = [rewards.get_reward(n) for n in self.names]
        self.weights = list(weights) if weights is not None else [1.0] * len(self.names)
        if len(self.weights) != len(self.funcs):
            raise ValueError(f"{len(self.weights)} reward_weights for {len(self.funcs)} reward_funcs")

    def __call__(self, rows: list[dict], completions: list[str]) -> Scores:
        from rewards.registry import score_batch

        prompts = [r["prompt"] for r in rows]
        columns = {key: [r[key] for r in rows] for key in rows[0] if key != "prompt"} if rows else {}
        result = score_batch(self.funcs, self.weights, prompts, completions, columns, names=self.names)
        per_function = {n: torch.tensor(result.per_function[n], dtype=torch.float32) for n in self.names}
        total = torch.tensor(result.total, dtype=torch.float32)
        first = per_function[self.names[0]]
        valid = first[~torch.isnan(first)]
        accuracy = valid.mean().item() if len(valid) else float("nan")
        return Scores(per_function, total, accuracy, int(sum(result.errors.values())))
