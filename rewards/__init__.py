"""Rule-based reward functions with TRL's signature `fn(prompts, completions, **columns) -> list[float | None]`.

Imports nothing from rlreason. Built-ins (see REWARDS): rewards.math.accuracy, rewards.code.unit_tests,
rewards.format.think_answer, rewards.length.overlong, rewards.length.cosine, rewards.repetition.ngram_penalty, and
the model-based rewards.model.verifier?path=FOLDER (a trained outcome verifier's probability of being right)."""

from .registry import REWARDS, BatchScores, RewardSet, call_reward, get_reward, score_batch, split_options

__all__ = ["REWARDS", "BatchScores", "RewardSet", "call_reward", "get_reward", "score_batch", "split_options"]
