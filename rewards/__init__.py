"""Rule-based reward functions with TRL's signature `fn(prompts, completions, **columns) -> list[float | None]`.

Imports nothing from rlreason. Built-ins (see REWARDS): rewards.math.accuracy, rewards.code.unit_tests,
rewards.format.think_answer, rewards.length.overlong, rewards.length.cosine, rewards.repetition.ngram_penalty."""

from .registry import REWARDS, BatchScores, RewardSet, call_reward, get_reward, score_batch

__all__ = ["REWARDS", "BatchScores", "RewardSet", "call_reward", "get_reward", "score_batch"]
