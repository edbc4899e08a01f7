"""CoT-decoding (Wang & Zhou 2024): reasoning paths without prompting, found by branching on the first token.

For each problem: take the top-`branches` first tokens, continue each greedily, and keep the path whose
final-answer tokens are decoded most confidently, confidence being the mean over those tokens of the
margin p(top-1) - p(top-2). Branch 0 is plain greedy decoding, so ties fall back to it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from rlreason.evaluation.evaluate import (DEFAULT_REWARD, SHOWN_SAMPLES, as_rows, extract, is_correct, is_math,
                                          prompt_text, resolve_reward, score)


def answer_span(text: str, answer: str | None) -> tuple[int, int] | None:
    """Character span of the last occurrence of the extracted answer in the completion, if it is there."""
    if not answer:
        return None
    start = text.rfind(answer)
    return (start, start + len(answer)) if start >= 0 else None


def token_range(tokenizer, ids: list[int], span: tuple[int, int]) -> tuple[int, int]:
    """Token indices [first, last) whose decoded text overlaps the character span (binary search on prefix lengths)."""

    def prefix_len(i: int) -> int:
        return len(tokenizer.decode(ids[:i], skip_special_tokens=True))

    def first_with_prefix_above(limit: int) -> int:  # smallest i with prefix_len(i) > limit
        lo, hi = 0, len(ids)
        while lo < hi:
            mid = (lo + hi) // 2
            if prefix_len(mid + 1) > limit:
                hi = mid
            else:
                lo = mid + 1
        return lo

    start, end = span
    return first_with_prefix_above(start), min(first_with_prefix_above(end - 1) + 1, len(ids))


def _margins(logits: torch.Tensor) -> torch.Tensor:
    """p(top-1) - p(top-2) of each row of logits (..., V)."""
    top = torch.softmax(logits.float(), dim=-1).topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


def _decode_paths(model, tokenizer, prompts: list, branches: int, max_completion_length: int):
    """Branch each prompt on its top first tokens and continue greedily.

    Returns per path (prompt-major, branch-minor) the completion token ids (cut after eos) and per-token margins."""
    from rlreason.rollout import encode_prompts, eos_token_ids
    from rlreason.sampling import build_generation_config, recipe_generation

    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts)  # exactly as rollout.generate encodes them
    device = next(model.parameters()).device
    enc = {"input_ids": prompt_ids.to(device), "attention_mask": prompt_mask.to(device)}
    eos = eos_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]

    def greedy(steps: int):  # argmax decoding from the recipe alone (nothing from the model's generation_config)
        return build_generation_config(do_sample=False, temperature=1.0, top_p=1.0, top_k=0, min_p=None,
                                       repetition_penalty=1.0, max_new_tokens=steps, eos_token_id=eos,
                                       pad_token_id=pad, return_dict_in_generate=True, output_logits=True)

    with recipe_generation(model, greedy(1)) as config:
        first = model.generate(**enc, generation_config=config).logits[0]  # (B, V)
    first_tokens = first.topk(branches, dim=-1).indices  # (B, branches)
    first_margin = _margins(first).repeat_interleave(branches)
    ids = torch.cat([enc["input_ids"].repeat_interleave(branches, 0), first_tokens.reshape(-1, 1)], dim=1)
    mask = torch.cat([enc["attention_mask"].repeat_interleave(branches, 0),
                      torch.ones(ids.shape[0], 1, dtype=enc["attention_mask"].dtype, device=ids.device)], dim=1)
    if max_completion_length > 1:
        with recipe_generation(model, greedy(max_completion_length - 1)) as config:
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
        rest = out.sequences[:, ids.shape[1]:]
        rest_margin = _margins(torch.stack(out.logits, dim=1))  # (B*branches, steps)
    else:
        rest = ids.new_zeros((ids.shape[0], 0))
        rest_margin = torch.zeros(ids.shape[0], 0, device=ids.device)
    tokens = torch.cat([first_tokens.reshape(-1, 1), rest], dim=1).tolist()
    margins = torch.cat([first_margin.unsqueeze(1), rest_margin], dim=1).tolist()
    paths = []
    for toks, marg in zip(tokens, margins):
        ends = [t for t, tok in enumerate(toks) if tok in eos]
        cut = ends[0] + 1 if ends else len(toks)
        paths.append((toks[:cut], marg[:cut]))
    return paths


def path_confidence(tokenizer, ids: list[int], margins: list[float], math_task: bool,
                    gold: str | None = None) -> tuple[str, str | None, float]:
    """(completion text, extracted answer, confidence) of one path.

    Math: mean margin over the tokens of the extracted final answer; 0 when no answer can be extracted;
    when the extracted (normalised) answer is not literally in the text, the mean over all tokens.
    Code (no final answer to extract): mean margin over all completion tokens."""
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if not ids:
        return text, None, 0.0
    if not math_task:
        return text, None, sum(margins) / len(margins)
    answer = extract(text, gold)
    if answer is None:
        return text, None, 0.0
    span = answer_span(text, answer)
    if span is None:
        return text, answer, sum(margins) / len(margins)
    lo, hi = token_range(tokenizer, ids, span)
    chosen = margins[lo:hi] or margins
    return text, answer, sum(chosen) / len(chosen)


def cot_decoding(model, tokenizer, rows, *, branches: int = 5, max_completion_length: int = 256, batch_size: int = 16,
                 reward: str | Callable = DEFAULT_REWARD, progress: bool = True,
                 num_shown: int = SHOWN_SAMPLES) -> dict:
    """CoT-decoding accuracy, with the greedy path's accuracy and the best-of-branches oracle beside it."""
    if branches < 1:
        raise ValueError(f"branches must be >= 1, got {branches}")
    rows = as_rows(rows)
    reward_fn = resolve_reward(reward)
    math_task = is_math(rows)
    per_batch = max(1, batch_size // branches)
    from rlreason.ranks import is_main, map_across_ranks

    def share_of(batch_rows: list) -> list[list[tuple[str, str | None, float]]]:  # per row, its branches' paths
        out = []
        for start in tqdm(range(0, len(batch_rows), per_batch), desc=f"CoT-decoding ({branches} branches)",
                          disable=not (progress and is_main()), unit="batch"):
            batch = batch_rows[start:start + per_batch]
            decoded = _decode_paths(model, tokenizer, [r["prompt"] for r in batch], branches, max_completion_length)
            for i, row in enumerate(batch):
                out.append([path_confidence(tokenizer, ids, marg, math_task, row.get("answer"))
                            for ids, marg in decoded[i * branches:(i + 1) * branches]])
        return out

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            paths = [p for per_row in map_across_ranks(share_of, rows) for p in per_row]
    finally:
        model.train(was_training)
    values = score([r for r in rows for _ in range(branches)], [p[0] for p in paths], reward_fn)
    chosen_right, greedy_right, any_right, shown = [], [], [], []
    for i, row in enumerate(rows):
        group = range(i * branches, (i + 1) * branches)
        if any(values[j] is None for j in group):
            continue
        best = max(group, key=lambda j: paths[j][2])  # max keeps the first (greedy-most) branch on ties
        chosen_right.append(is_correct(values[best]))
        greedy_right.append(is_correct(values[i * branches]))
        any_right.append(any(is_correct(values[j]) for j in group))
        if len(shown) < num_shown:
            shown.append({"id": row.get("id"), "prompt": prompt_text(row["prompt"]), "branch": best - i * branches,
                          "completion": paths[best][0], "answer": row.get("answer"), "predicted": paths[best][1],
                          "confidence": round(paths[best][2], 4), "correct": chosen_right[-1],
                          "greedy_completion": paths[i * branches][0]})
    if not chosen_right:
        raise ValueError("the reward applied to none of the rows (it returned None everywhere): check --reward")
    n = len(chosen_right)
    return {"accuracy": sum(chosen_right) / n, "greedy_path_accuracy": sum(greedy_right) / n,
            "any_path_accuracy": sum(any_right) / n, "branches": branches, "n": n,
            "n_skipped": len(rows) - n, "samples": shown}
