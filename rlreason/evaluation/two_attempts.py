"""SCoRe's two-attempt evaluation: greedy attempt 1, the self-correction instruction, greedy attempt 2.

`two_attempt_metrics` turns the two attempts into the report (and the training run's score/* metrics):
accuracies, delta_t1_t2 with its paired standard error, i->c and c->i, the share of changed final answers and
the mean character-level edit distance between the attempts."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from rlreason.evaluation.evaluate import (DEFAULT_REWARD, SHOWN_SAMPLES, as_rows, extract, generate_texts,
                                          generated_tokens, is_correct, is_math, prompt_text, resolve_reward, score)
from rlreason.evaluation.metrics import attempt_changes, score_two_attempts
from rlreason.rollout import SELF_CORRECTION_INSTRUCTION, generate_second_attempt


# the keys of two_attempt_metrics, as eval.json's two_attempts and SCoRe's stage.json hold them
TWO_ATTEMPT_KEYS = ("accuracy_t1", "accuracy_t2", "delta_t1_t2", "delta_t1_t2_se", "delta_i_to_c", "delta_i_to_c_se",
                    "delta_c_to_i", "delta_c_to_i_se", "changed_answer_rate", "changed_answer_rate_se",
                    "edit_distance", "n")


def evaluate_two_attempts(model, tokenizer, rows, *, max_completion_length: int = 256, batch_size: int = 64,
                          reward: str | Callable = DEFAULT_REWARD, instruction: str | None = None,
                          progress: bool = True, num_shown: int = SHOWN_SAMPLES) -> dict:
    """two_attempt_metrics over the rows the reward applies to, plus n_skipped, the instruction, samples and
    per_problem (each scored problem's id, correct_1 and correct_2, for paired comparisons between models)."""
    rows = as_rows(rows)
    reward_fn = resolve_reward(reward)
    instruction = instruction or SELF_CORRECTION_INSTRUCTION  # the words the SCoRe rollout trains with
    prompts = [r["prompt"] for r in rows]
    first, _ = generate_texts(model, tokenizer, prompts, do_sample=False, max_completion_length=max_completion_length,
                              batch_size=batch_size, progress=progress, desc="attempt 1")
    second = second_attempts(model, tokenizer, prompts, first, instruction=instruction,
                             max_completion_length=max_completion_length, batch_size=batch_size, progress=progress)
    v1, v2 = score(rows, first, reward_fn), score(rows, second, reward_fn)
    keep = [i for i in range(len(rows)) if v1[i] is not None and v2[i] is not None]
    if not keep:
        raise ValueError("the reward applied to none of the rows (it returned None everywhere): check --reward")
    kept, texts_1, texts_2 = [rows[i] for i in keep], [first[i] for i in keep], [second[i] for i in keep]
    answers_1, answers_2 = final_answers(kept, texts_1), final_answers(kept, texts_2)
    result = two_attempt_metrics([is_correct(v1[i]) for i in keep], [is_correct(v2[i]) for i in keep],
                                 texts_1, texts_2, answers_1, answers_2)
    result["n_skipped"] = len(rows) - len(keep)
    result["instruction"] = instruction
    result["per_problem"] = {"id": [rows[i].get("id") for i in keep], "correct_1": [is_correct(v1[i]) for i in keep],
                             "correct_2": [is_correct(v2[i]) for i in keep]}
    result["samples"] = [{"id": rows[i].get("id"), "prompt": prompt_text(rows[i]["prompt"]), "attempt_1": first[i],
                          "attempt_2": second[i], "answer": rows[i].get("answer"), "correct_1": is_correct(v1[i]),
                          "correct_2": is_correct(v2[i]), "answer_1": answers_1[j],
                          "answer_2": answers_2[j]} for j, i in enumerate(keep[:num_shown])]
    return result


def final_answers(rows, texts: list[str]) -> list[str | None]:
    """The final answer of each completion as the math reward extracts it; for rows without a gold answer (code),
    the whole stripped completion."""
    if rows and is_math(rows):
        return [extract(t, r["answer"]) for r, t in zip(rows, texts)]
    return [t.strip() for t in texts]


def two_attempt_metrics(correct_1, correct_2, texts_1: list[str], texts_2: list[str], answers_1: list,
                        answers_2: list) -> dict:
    """accuracy_t1, accuracy_t2, delta_t1_t2, delta_t1_t2_se, delta_i_to_c, delta_c_to_i, changed_answer_rate,
    edit_distance (mean character-level Levenshtein distance) and n, per problem (one attempt 1 and its attempt 2)."""
    from rewards.math import answers_equal

    result = score_two_attempts(correct_1, correct_2)
    result.update(attempt_changes(answers_1, answers_2, texts_1, texts_2, answers_equal))
    return result


def second_attempts(model, tokenizer, prompts: list, first: list[str], *, instruction: str,
                    max_completion_length: int, batch_size: int, progress: bool = True, desc: str = "attempt 2",
                    token_counts: list | None = None) -> list[str]:
    """Greedy attempt 2 after each attempt 1, split across the processes of a run and gathered; each attempt 2's
    generated tokens are appended to `token_counts` when given."""
    from rlreason.ranks import is_main, map_across_ranks

    def share_of(pairs: list) -> list[tuple[str, int]]:
        out: list[tuple[str, int]] = []
        for start in tqdm(range(0, len(pairs), batch_size), desc=desc, disable=not (progress and is_main()),
                          unit="batch"):
            chunk = pairs[start:start + batch_size]
            rollout = generate_second_attempt(model, tokenizer, [p for p, _ in chunk], [f for _, f in chunk],
                                              instruction=instruction, do_sample=False,
                                              max_completion_length=max_completion_length)
            counts = generated_tokens(rollout) if token_counts is not None else [0] * len(rollout.texts)
            out += list(zip(rollout.texts, counts))
        return out

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            pairs = map_across_ranks(share_of, list(zip(prompts, first)))
    finally:
        model.train(was_training)
    if token_counts is not None:
        token_counts.extend(c for _, c in pairs)
    return [t for t, _ in pairs]
