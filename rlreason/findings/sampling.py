"""Findings 2 and 5's measurement: k samples per problem from the stage pipeline's SFT model, at a few
temperatures, on the same held-out problems its greedy accuracy was measured on (evaluate_sampled)."""

from __future__ import annotations

import time

DROP = ("samples",)  # completions shown for reading: not numbers, left out of the report


def run_sampling(stages: list[dict], seed: int, temperatures: tuple[float, ...] = (0.3, 0.5, 0.7),
                 num_samples: int = 8, overrides: dict[str, list[str]] | None = None) -> dict:
    """{"greedy": {...}, "temperatures": {"0.3": evaluate_sampled's result, ...}, "seconds"} for the SFT stage."""
    import transformers

    from rlreason.algorithms.common import load_rows
    from rlreason.config import load_recipe
    from rlreason.demo import recipe_path
    from rlreason.evaluation import evaluate_sampled
    from rlreason.models.loading import load_for_generation

    sft = next((s for s in stages if s["name"] == "sft"), None)
    if sft is None:
        raise ValueError("the stage pipeline's report has no sft stage to sample from; run it with the sft stage")
    started = time.time()
    recipe = load_recipe(recipe_path("sft"), [f"seed={seed}", f"model_name_or_path={sft['model']}"]
                         + (overrides or {}).get("sft", []))
    args = recipe.args
    rows = load_rows(args, args.dataset_test_split, args.max_eval_samples)
    if len(rows) != sft["n"]:
        raise ValueError(f"the sft stage's greedy accuracy is on {sft['n']} problems but its recipe gives {len(rows)}; "
                         f"sample with the same recipe overrides the stage pipeline ran with")
    model, tokenizer = load_for_generation(sft["model"])
    reward = args.reward_funcs[0] if args.reward_funcs else "rewards.math.accuracy"
    ks = sorted({k for k in (1, 2, 4, 8, 16, 32) if k <= num_samples} | {num_samples})
    out = {"greedy": {"accuracy": sft["accuracy"], "n": sft["n"], "model": sft["model"]}, "num_samples": num_samples,
           "ks": ks, "temperatures": {}}
    for temperature in temperatures:
        print(f"[findings] sampling {num_samples} answers per problem at temperature {temperature}", flush=True)
        transformers.set_seed(seed)
        result = evaluate_sampled(model, tokenizer, rows, n=num_samples, ks=ks, temperature=temperature,
                                  max_completion_length=args.eval_max_completion_length, reward=reward)
        out["temperatures"][f"{temperature:g}"] = {k: v for k, v in result.items() if k not in DROP}
    out["seconds"] = round(time.time() - started, 1)
    return out
