"""Test-time strategies at several budgets, each with the tokens it generated: `rlreason eval --strategy ...`.

- greedy: one greedy completion (budget 1);
- majority: a vote over the extracted final answers of n samples (metrics.maj_at_k);
- best_of_n: the one of n samples the verifier scores highest (metrics.best_of_k, exact over every n-subset);
- weighted_majority: the vote with each sample weighted by the verifier's score (metrics.weighted_maj_at_k);
- revise: greedy attempt, then K rounds of the SCoRe self-correction turn; round r sees the problem, the attempt of
  round r-1 and the correction instruction (two_attempts.second_attempts), budget r = rounds 0..r.

The sampling strategies share one set of N samples per problem, judged at budgets 1, 2, 4, ..., N. Compute is the
generated tokens: every completion token of every generation call (eos included, as the completion mask counts it;
the prompt, and for revise the earlier attempts re-read as prompt, are not generated). A sampling budget n uses
n / N of each problem's N samples' tokens (exact at n = N); revise at round r the attempts of rounds 0..r.
"""

from __future__ import annotations

from collections.abc import Callable

from rlreason.evaluation import metrics
from rlreason.evaluation.evaluate import (DEFAULT_REWARD, _cached, _equal, as_rows, extract, generate_texts,
                                          is_correct, is_math, resolve_reward, score)

STRATEGIES = ("greedy", "majority", "best_of_n", "weighted_majority", "revise")
SAMPLING = ("majority", "best_of_n", "weighted_majority")
NEEDS_VERIFIER = ("best_of_n", "weighted_majority")
VOTING = ("majority", "weighted_majority")


def parse_strategies(text: str) -> tuple[str, ...]:
    """'greedy,best_of_n' -> ('greedy', 'best_of_n'); ValueError naming an unknown one and the valid names."""
    names = tuple(dict.fromkeys(t.strip() for t in str(text).split(",") if t.strip()))
    if not names:
        raise ValueError(f"--strategy: give one or more of {','.join(STRATEGIES)} (comma-separated)")
    for name in names:
        if name not in STRATEGIES:
            raise ValueError(f"--strategy: unknown strategy '{name}'; use one or more of {','.join(STRATEGIES)} "
                             f"(comma-separated)")
    return names


def check_strategies(strategies, *, n: int, verifier, revise_rounds: int) -> None:
    """ValueError, in one line naming the flag and the fix, for a combination that cannot run."""
    needs = [s for s in strategies if s in NEEDS_VERIFIER]
    if needs and not verifier:
        raise ValueError(f"--strategy {','.join(needs)} needs --verifier PATH (a folder saved by algorithm: verifier; "
                         f"train one with `rlreason train recipes/demo/verifier.yaml`), or drop {','.join(needs)}")
    sampling = [s for s in strategies if s in SAMPLING]
    if sampling and n < 1:
        raise ValueError(f"--strategy {','.join(sampling)} samples --n completions per problem: give --n >= 1")
    if "revise" in strategies and revise_rounds < 1:
        raise ValueError(f"--revise_rounds must be >= 1 for --strategy revise, got {revise_rounds}")


def budgets(n: int) -> list[int]:
    """1, 2, 4, ... below n, and n."""
    return sorted({2 ** i for i in range(n.bit_length()) if 2 ** i < n} | {n})


def _point(budget: int, accuracy: float, tokens: float, problems: int) -> dict:
    return {"budget": budget, "accuracy": accuracy, "generated_tokens": tokens,
            "tokens_per_problem": tokens / max(problems, 1)}


def _accuracy(values: list) -> tuple[float, int]:
    scored = [is_correct(v) for v in values if v is not None]
    return (sum(scored) / len(scored) if scored else float("nan")), len(scored)


def evaluate_strategies(model, tokenizer, rows, *, strategies, n: int = 8, verifier: str | Callable | None = None,
                        revise_rounds: int = 2, instruction: str | None = None,
                        reward: str | Callable = DEFAULT_REWARD, temperature: float = 1.0, top_p: float = 1.0,
                        top_k: int = 0, min_p: float | None = None, repetition_penalty: float = 1.0,
                        max_completion_length: int = 256, batch_size: int = 64, progress: bool = True,
                        chat_template_kwargs: dict | None = None) -> dict:
    """Accuracy and generated tokens of each strategy at each budget: {"curves": {name: [{budget, accuracy,
    generated_tokens, tokens_per_problem}]}, "n", "revise_rounds", "problems", "per_problem", ...}.

    verifier: a verifier folder (loaded as rewards.model.verifier on the policy's device) or any callable with the
    reward signature returning a score per completion (higher: more likely right)."""
    from rlreason.rollout import SELF_CORRECTION_INSTRUCTION

    strategies = parse_strategies(strategies if isinstance(strategies, str) else ",".join(strategies))
    check_strategies(strategies, n=n, verifier=verifier, revise_rounds=revise_rounds)
    rows = as_rows(rows)
    if any(s in VOTING for s in strategies) and not is_math(rows):
        raise ValueError("--strategy majority/weighted_majority vote over final answers, and these rows have no gold "
                         "'answer' (a code task?): use greedy, best_of_n or revise")
    reward_fn = resolve_reward(reward)
    prompts = [r["prompt"] for r in rows]
    common = dict(max_completion_length=max_completion_length, batch_size=batch_size, progress=progress)
    curves: dict[str, list[dict]] = {}
    per_problem: dict = {"id": [r.get("id") for r in rows]}
    greedy_texts = None
    if "greedy" in strategies or "revise" in strategies:
        tokens: list[int] = []
        greedy_texts, _ = generate_texts(model, tokenizer, prompts, do_sample=False, desc="greedy",
                                         chat_template_kwargs=chat_template_kwargs, token_counts=tokens, **common)
        greedy_values = score(rows, greedy_texts, reward_fn)
        per_problem["greedy_correct"] = [None if v is None else is_correct(v) for v in greedy_values]
        per_problem["greedy_tokens"] = tokens
        if "greedy" in strategies:
            curves["greedy"] = [_point(1, _accuracy(greedy_values)[0], float(sum(tokens)), len(rows))]
    if any(s in SAMPLING for s in strategies):
        curves.update(_sampling_curves(model, tokenizer, rows, strategies, n, verifier, reward_fn, per_problem,
                                       dict(temperature=temperature, top_p=top_p, top_k=top_k, min_p=min_p,
                                            repetition_penalty=repetition_penalty,
                                            chat_template_kwargs=chat_template_kwargs, **common)))
    if "revise" in strategies:
        curves["revise"] = _revise_curve(model, tokenizer, rows, greedy_texts, per_problem, revise_rounds,
                                         instruction or SELF_CORRECTION_INSTRUCTION, reward_fn, common)
    named = verifier if verifier is None or isinstance(verifier, str) else getattr(verifier, "__name__", "callable")
    return {"strategies": list(strategies), "n": n, "budgets": budgets(n) if n > 0 else [],
            "revise_rounds": revise_rounds if "revise" in strategies else None, "verifier": named,
            "problems": len(rows), "curves": {s: curves[s] for s in strategies}, "per_problem": per_problem}


def _verifier_scores(verifier, model, rows: list[dict], texts: list[str]) -> list[float]:
    """The verifier's score of each completion (rows: one per completion); a failed score counts as -inf."""
    if isinstance(verifier, str):
        import rewards

        verifier = rewards.get_reward("rewards.model.verifier", path=verifier,
                                      device=str(next(model.parameters()).device))
    return [float("-inf") if v is None else v for v in score(rows, texts, verifier)]


def _sampling_curves(model, tokenizer, rows, strategies, n, verifier, reward_fn, per_problem, sampling) -> dict:
    """majority / best_of_n / weighted_majority over one set of n samples per problem."""
    tokens: list[int] = []
    texts, _ = generate_texts(model, tokenizer, [r["prompt"] for r in rows], num_generations=n, do_sample=True,
                              desc=f"sampling {n} per problem", token_counts=tokens, **sampling)
    expanded = [r for r in rows for _ in range(n)]
    values = score(expanded, texts, reward_fn)
    scores = _verifier_scores(verifier, model, expanded, texts) if any(s in NEEDS_VERIFIER for s in strategies) \
        else None
    groups = [range(i * n, (i + 1) * n) for i in range(len(rows))]
    kept = [i for i, g in enumerate(groups) if all(values[j] is not None for j in g)]
    correct = {i: [is_correct(values[j]) for j in groups[i]] for i in kept}
    answers = {i: [extract(texts[j], rows[i]["answer"]) for j in groups[i]] for i in kept} if is_math(rows) else {}
    per_problem["sample_correct"] = [correct.get(i) for i in range(len(rows))]
    per_problem["sample_tokens"] = [tokens[g.start:g.stop] for g in groups]
    if scores is not None:
        per_problem["verifier_scores"] = [scores[g.start:g.stop] for g in groups]
    equal = _cached(_equal)
    total = float(sum(tokens))
    judges = {
        "majority": lambda i, k: metrics.maj_at_k(answers[i], correct[i], k, equal),
        "weighted_majority": lambda i, k: metrics.weighted_maj_at_k(answers[i], correct[i],
                                                                    scores[groups[i].start:groups[i].stop], k, equal),
        "best_of_n": lambda i, k: metrics.best_of_k(scores[groups[i].start:groups[i].stop], correct[i], k),
    }
    curves = {}
    for name in (s for s in strategies if s in SAMPLING):
        curves[name] = [_point(k, sum(judges[name](i, k) for i in kept) / len(kept) if kept else float("nan"),
                               total * k / n, len(rows)) for k in budgets(n)]
    return curves


def _revise_curve(model, tokenizer, rows, first: list[str], per_problem: dict, rounds: int, instruction: str,
                  reward_fn, common: dict) -> list[dict]:
    """Greedy attempt (round 0), then `rounds` self-correction turns, each on the previous round's attempt."""
    from rlreason.evaluation.two_attempts import second_attempts

    prompts = [r["prompt"] for r in rows]
    spent = float(sum(per_problem["greedy_tokens"]))
    values = score(rows, first, reward_fn)
    points = [_point(0, _accuracy(values)[0], spent, len(rows))]
    correct = [[None if v is None else is_correct(v)] for v in values]
    attempt = first
    for r in range(1, rounds + 1):
        tokens: list[int] = []
        attempt = second_attempts(model, tokenizer, prompts, attempt, instruction=instruction, desc=f"revise {r}",
                                  token_counts=tokens, **common)
        spent += sum(tokens)
        values = score(rows, attempt, reward_fn)
        points.append(_point(r, _accuracy(values)[0], spent, len(rows)))
        for row, v in zip(correct, values):
            row.append(None if v is None else is_correct(v))
    per_problem["revise_correct"] = correct
    return points
