"""Evaluating a policy on task rows: greedy accuracy, and sampled pass@k / maj@k / agreement.

Completions come from rlreason.rollout.generate and are scored by a reward function with TRL's signature
(rewards.math.accuracy for math, rewards.code.unit_tests for code). A completion is correct when the reward
gives it full marks (>= 1); rows where the reward returns None (does not apply) are left out of the metrics.

Under `accelerate launch` every process calls these together: generation and scoring are split across the
processes (rlreason.ranks) and gathered, so each problem is generated once and every process gets the result.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from tqdm.auto import tqdm

from rlreason.evaluation import metrics

DEFAULT_REWARD = "rewards.math.accuracy"
SHOWN_SAMPLES = 8  # completions kept in the result (and eval.json) for reading


def resolve_reward(reward: str | Callable) -> Callable:
    """A reward callable from a name ("rewards.math.accuracy", "module:function", "file.py:function")."""
    if callable(reward):
        return reward
    if not isinstance(reward, str):
        raise ValueError(f"reward must be a reward name or a callable, got {type(reward).__name__}")
    import rewards

    return rewards.get_reward(reward)


def as_rows(rows) -> list[dict]:
    """Task rows (a list of dicts or a datasets.Dataset) as a list of dicts, checked for a prompt column."""
    rows = [dict(r) for r in rows]
    if not rows:
        raise ValueError("no rows to evaluate: the task split is empty (check --split / --limit)")
    if "prompt" not in rows[0]:
        raise ValueError(f"rows need a 'prompt' column (chat messages); got columns {sorted(rows[0])}")
    return rows


def is_math(rows: Sequence[dict]) -> bool:
    """Rows with a gold final answer: majority voting over extracted answers applies."""
    return all(r.get("answer") not in (None, "") for r in rows)


def score(rows: Sequence[dict], completions: Sequence[str], reward: Callable) -> list[float | None]:
    """The reward for each completion, given the rows it answers (one row per completion); None where the
    reward does not apply, and where it failed (rewards.call_reward retries row by row and logs failures)."""
    from rewards import call_reward

    from rlreason.ranks import map_across_ranks

    if len(rows) != len(completions):
        raise ValueError(f"score: {len(rows)} rows but {len(completions)} completions")
    keys = [key for key in rows[0] if key != "prompt"] if rows else []

    def score_share(pairs: list) -> list[float | None]:
        if not pairs:
            return []
        prompts = [r["prompt"] for r, _ in pairs]
        columns = {key: [r.get(key) for r, _ in pairs] for key in keys}
        scores, _ = call_reward(reward, prompts, [c for _, c in pairs], columns)
        return [None if v is None or math.isnan(v) else float(v) for v in scores]

    return map_across_ranks(score_share, list(zip(rows, completions)))


def is_correct(value: float | None) -> bool:
    return value is not None and float(value) >= 1.0 - 1e-6


def prompt_text(prompt) -> str:
    """The last user message of a chat prompt (or the prompt string), for display."""
    if isinstance(prompt, str):
        return prompt
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    return users[-1] if users else str(prompt[-1].get("content", ""))


def generate_texts(model, tokenizer, prompts: list, *, num_generations: int = 1, max_completion_length: int = 256,
                   do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                   min_p: float | None = None, repetition_penalty: float = 1.0,
                   chat_template_kwargs: dict | None = None, batch_size: int = 64, progress: bool = True,
                   desc: str = "generating", tools=None, tool_calls: list | None = None,
                   token_counts: list | None = None) -> tuple[list[str], list[bool]]:
    """Completions (num_generations per prompt, grouped by prompt) and their truncation flags, in batches
    of about batch_size sequences with a progress bar; the model is put in eval mode and restored after.
    The prompts are split across the processes of a run and the completions gathered (rlreason.ranks).
    tools (a rlreason.tools.ToolConfig): tool-using rollouts (the texts are the model's tokens, observations
    left out, as the rewards see them); the tool calls of each completion are appended to `tool_calls`.
    token_counts: each completion's generated tokens (the completion mask: up to and including the first eos; tool
    observations, which are inserted rather than generated, left out) are appended to it."""
    from rlreason.ranks import is_main, map_across_ranks
    from rlreason.rollout import generate
    from rlreason.tool_rollout import generate_with_tools

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    per_batch = max(1, batch_size // num_generations)
    k = num_generations
    sampling = dict(num_generations=k, max_completion_length=max_completion_length, temperature=temperature,
                    top_p=top_p, top_k=top_k, do_sample=do_sample, min_p=min_p, repetition_penalty=repetition_penalty,
                    chat_template_kwargs=chat_template_kwargs)

    def generate_share(share: list) -> list[tuple[list[str], list[bool], list[int], list[int]]]:
        groups: list[tuple[list[str], list[bool], list[int], list[int]]] = []
        starts = range(0, len(share), per_batch)
        for start in tqdm(starts, desc=desc, disable=not (progress and is_main()), unit="batch"):
            batch = share[start:start + per_batch]
            out = generate(model, tokenizer, batch, **sampling) if tools is None else \
                generate_with_tools(model, tokenizer, batch, tools, **sampling)
            flags = [bool(t) for t in out.truncated.tolist()]
            stats = getattr(out, "tool_stats", None)
            calls = stats["tool_calls"].tolist() if stats is not None else [0] * len(flags)
            counts = generated_tokens(out) if token_counts is not None else [0] * len(flags)
            groups += [(out.texts[i * k:(i + 1) * k], flags[i * k:(i + 1) * k], calls[i * k:(i + 1) * k],
                        counts[i * k:(i + 1) * k]) for i in range(len(out.texts) // k)]
        return groups

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            groups = map_across_ranks(generate_share, prompts)
    finally:
        model.train(was_training)
    if tool_calls is not None:
        tool_calls.extend(c for _, _, calls, _ in groups for c in calls)
    if token_counts is not None:
        token_counts.extend(c for _, _, _, counts in groups for c in counts)
    return [t for texts, _, _, _ in groups for t in texts], [f for _, flags, _, _ in groups for f in flags]


def generated_tokens(rollout) -> list[int]:
    """Tokens the model generated for each completion of a Rollout: its completion mask (eos included), less the
    tool observations a tool rollout inserted."""
    counts = rollout.completion_mask.sum(1)
    if rollout.observation_mask is not None:
        counts = counts - (rollout.observation_mask * rollout.completion_mask).sum(1)
    return [int(c) for c in counts.tolist()]


def extract(text: str, gold: str | None = None) -> str | None:
    """The completion's final answer, extracted as rewards.math.accuracy does for this gold answer (falling
    back to the last number in the text when the gold answer is a number), so votes match the scoring."""
    from rewards.extract import to_number
    from rewards.math import extract_answer

    return extract_answer(text, last_number=gold is not None and to_number(str(gold)) is not None)


def _equal(pred: str, gold: str) -> bool:
    from rewards.math import answers_equal

    return answers_equal(pred, gold)


def _sample(row: dict, completion: str, value: float | None, math_task: bool) -> dict:
    return {"id": row.get("id"), "prompt": prompt_text(row["prompt"]), "completion": completion,
            "answer": row.get("answer"), "predicted": extract(completion, row.get("answer")) if math_task else None,
            "reward": value, "correct": is_correct(value)}


def evaluate_greedy(model, tokenizer, rows, *, max_completion_length: int = 256, batch_size: int = 64,
                    reward: str | Callable = DEFAULT_REWARD, progress: bool = True,
                    num_shown: int = SHOWN_SAMPLES, chat_template_kwargs: dict | None = None, tools=None) -> dict:
    """Greedy-decoding accuracy: {"accuracy", "n", "n_skipped", "truncated", "mean_completion_chars", "samples"};
    with tools (a rlreason.tools.ToolConfig) the model may call them, and "tool_calls_per_problem" is added."""
    rows = as_rows(rows)
    reward_fn = resolve_reward(reward)
    calls: list[int] = []
    texts, truncated = generate_texts(model, tokenizer, [r["prompt"] for r in rows], do_sample=False,
                                      max_completion_length=max_completion_length, batch_size=batch_size,
                                      chat_template_kwargs=chat_template_kwargs, progress=progress, desc="greedy",
                                      tools=tools, tool_calls=calls)
    values = score(rows, texts, reward_fn)
    scored = [is_correct(v) for v in values if v is not None]
    math_task = is_math(rows)
    extra = {"tool_calls_per_problem": sum(calls) / max(1, len(calls))} if tools is not None else {}
    return {**extra,
        "accuracy": sum(scored) / len(scored) if scored else float("nan"),
        "n": len(scored),
        "n_skipped": len(values) - len(scored),
        "truncated": sum(truncated) / len(truncated),
        "mean_completion_chars": sum(len(t) for t in texts) / len(texts),
        "correct": [None if v is None else is_correct(v) for v in values],
        "samples": [_sample(r, t, v, math_task) for r, t, v in list(zip(rows, texts, values))[:num_shown]],
    }


def evaluate_sampled(model, tokenizer, rows, *, n: int = 8, ks: Sequence[int] = (1, 2, 4, 8),
                     temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, min_p: float | None = None,
                     repetition_penalty: float = 1.0, max_completion_length: int = 256,
                     batch_size: int = 64, reward: str | Callable = DEFAULT_REWARD, progress: bool = True,
                     agreement_bins: int = 4, num_shown: int = SHOWN_SAMPLES,
                     chat_template_kwargs: dict | None = None, tools=None) -> dict:
    """n samples per problem: unbiased pass@k, maj@k self-consistency and accuracy per agreement bucket.

    maj@k (math rows only: they carry a gold `answer`) votes over extracted final answers, grouping
    equivalent ones with rewards.math.answers_equal; for k < n it averages over the n // k disjoint blocks
    of k samples (see metrics.maj_at_k). Agreement is the majority's share of all n samples; the buckets
    report the accuracy of the maj@n answer per agreement range."""
    ks = sorted({int(k) for k in ks})
    if n < 1 or not ks or ks[0] < 1 or ks[-1] > n:
        raise ValueError(f"need n >= every k >= 1; got n={n}, ks={ks} (raise --n or lower --ks)")
    rows = as_rows(rows)
    reward_fn = resolve_reward(reward)
    texts, truncated = generate_texts(model, tokenizer, [r["prompt"] for r in rows], num_generations=n,
                                      do_sample=True, temperature=temperature, top_p=top_p, top_k=top_k,
                                      min_p=min_p, repetition_penalty=repetition_penalty,
                                      max_completion_length=max_completion_length, batch_size=batch_size,
                                      chat_template_kwargs=chat_template_kwargs, progress=progress,
                                      desc=f"sampling {n} per problem", tools=tools)
    expanded = [r for r in rows for _ in range(n)]
    values = score(expanded, texts, reward_fn)
    math_task = is_math(rows)
    per_problem = []  # (row index, correctness flags, extracted answers)
    for i in range(len(rows)):
        group = values[i * n:(i + 1) * n]
        if any(v is None for v in group):
            continue
        answers = [extract(t, rows[i]["answer"]) for t in texts[i * n:(i + 1) * n]] if math_task else None
        per_problem.append((i, [is_correct(v) for v in group], answers))
    if not per_problem:
        raise ValueError("the reward applied to none of the rows (it returned None everywhere): check --reward")
    flags = [c for _, c, _ in per_problem]
    result = {
        "n": len(per_problem), "n_skipped": len(rows) - len(per_problem), "num_samples": n, "ks": ks,
        "temperature": temperature, "truncated": sum(truncated) / len(truncated),
        "sample_accuracy": sum(map(sum, flags)) / (n * len(flags)),
        "pass_at_k": {str(k): metrics.mean_pass_at_k(flags, k) for k in ks},
    }
    if math_task:
        equal = _cached(_equal)
        result["maj_at_k"] = {str(k): sum(metrics.maj_at_k(a, c, k, equal) for _, c, a in per_problem) / len(flags)
                              for k in ks}
        agreements = [metrics.agreement(a, equal) for _, _, a in per_problem]
        majority_right = [metrics.maj_at_k(a, c, n, equal) == 1.0 for _, c, a in per_problem]
        result["mean_agreement"] = sum(agreements) / len(agreements)
        result["agreement_buckets"] = metrics.agreement_buckets(agreements, majority_right, agreement_bins)
    shown = [_sample(rows[i], texts[i * n + j], values[i * n + j], math_task)
             for i, _, _ in per_problem[:num_shown] for j in range(min(n, 2))][:num_shown]
    result["samples"] = shown
    return result


def _cached(equal: Callable[[str, str], bool]) -> Callable[[str, str], bool]:
    """Memoise an answer-equivalence test: votes compare the same few strings many times."""
    memo: dict[tuple[str, str], bool] = {}

    def wrapped(a: str, b: str) -> bool:
        if (a, b) not in memo:
            memo[(a, b)] = memo[(b, a)] = bool(equal(a, b))
        return memo[(a, b)]

    return wrapped

