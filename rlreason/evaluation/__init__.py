"""Evaluation: greedy accuracy, unbiased pass@k, maj@k self-consistency, agreement, CoT-decoding, SCoRe metrics."""

from rlreason.evaluation.cot_decoding import cot_decoding
from rlreason.evaluation.evaluate import evaluate_greedy, evaluate_sampled
from rlreason.evaluation.metrics import (agreement, agreement_buckets, maj_at_k, majority_vote, mean_pass_at_k,
                                         pass_at_k, score_two_attempts)
from rlreason.evaluation.plots import plot_accuracy_vs_k
from rlreason.evaluation.run import EvalArgs, evaluate_all, load_for_eval, main, run_eval, scalar_metrics
from rlreason.evaluation.two_attempts import evaluate_two_attempts

__all__ = ["EvalArgs", "agreement", "agreement_buckets", "cot_decoding", "evaluate_all", "evaluate_greedy",
           "evaluate_sampled", "evaluate_two_attempts", "load_for_eval", "maj_at_k", "majority_vote", "main",
           "mean_pass_at_k", "pass_at_k", "plot_accuracy_vs_k", "run_eval", "scalar_metrics", "score_two_attempts"]
