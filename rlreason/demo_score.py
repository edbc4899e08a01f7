"""The demo's `score_baselines` stage: SCoRe's two baselines, from SCoRe's start, for as many steps, on its problems.

- `sft_corrections` (STaR-style): the start's own SFT recipe (demo/score_sft.yaml: half the rows one-turn worked
  solutions, half two-turn) with CORRECTIONS_SFT, whose two-turn rows are the start model's own sampled first
  attempts, each followed by its own sampled second attempt where that one is correct (all rows two-turn left
  the model no first turn to imitate: attempt 1 fell from 0.60 to 0.02 in 60 steps);
- `naive_multi_turn`: two-turn RL that rewards both attempts, with no stage I and no bonus (demo/score.yaml with
  NAIVE_MULTI_TURN).

Both are evaluated like SCoRe (greedy attempt 1, the instruction, greedy attempt 2) on SCoRe's held-out problems.
rlreason.evaluation.metrics.compare_deltas pairs SCoRe's per-problem results with each baseline's."""

from __future__ import annotations

import json
from pathlib import Path

from rlreason.config import dump_json, load_recipe
from rlreason.evaluation.metrics import compare_deltas

# what makes each baseline what it is, on top of the recipe it shares with SCoRe's own runs
CORRECTIONS_SFT = ["correction_attempts=sampled", "correction_targets=sampled", "correction_temperature=1.0"]
NAIVE_MULTI_TURN = ["stage_one_steps=0", "alpha=0.0", "evaluate_start=false"]
BASELINES = ("sft_corrections", "naive_multi_turn")


def score_recipe(recipe_path, start: str, common: list[str], extra: dict):
    """SCoRe's own recipe from `start` (with the overrides given for `score`): the baselines' steps and problems."""
    return load_recipe(recipe_path("score"), common + extra.get("score", []) + [f"model_name_or_path={start}"])


def baseline_recipes(recipe_path, score, out: Path, start: str, common: list[str], extra: dict) -> dict:
    """{baseline: recipe}: each from `start`, for the `score` recipe's max_steps."""
    steps, beta = score.training_args.max_steps, score.training_args.beta
    attempts = score.training_args.per_device_train_batch_size * steps  # first attempts SCoRe samples in its run
    place = [f"model_name_or_path={start}", f"max_steps={steps}"]
    sft = load_recipe(recipe_path("score_sft"), common + [f"model_name_or_path={start}"])
    rows = round(attempts / max(sft.training_args.correction_fraction, 1e-9))
    return {
        # as many of the model's own attempt pairs as SCoRe samples, of which the correct second attempts are kept
        "sft_corrections": load_recipe(recipe_path("score_sft"), common + place + CORRECTIONS_SFT + [
            f"output_dir={out / 'sft_corrections'}", f"max_train_samples={rows}", f"save_steps={steps}",
            f"correction_max_completion_length={score.training_args.max_completion_length}"]  # SCoRe's cap
            + extra.get("sft_corrections", [])),
        "naive_multi_turn": load_recipe(recipe_path("score"), common + extra.get("score", []) + place
                                        + NAIVE_MULTI_TURN + [f"beta_first={beta}",
                                                              f"output_dir={out / 'naive_multi_turn'}"]
                                        + extra.get("naive_multi_turn", [])),
    }


def run_score_baselines(recipe_path, out: Path, start: str, common: list[str], extra: dict,
                        score_dir: Path | None = None) -> dict:
    """Train and evaluate both baselines; the stage's report entry (before, each baseline, versus_score when
    `score_dir` holds SCoRe's own run from the same start, done earlier in this demo run)."""
    from rlreason.algorithms import ALGORITHMS
    from rlreason.algorithms.score import write_two_attempts

    score = score_recipe(recipe_path, start, common, extra)
    recipes = baseline_recipes(recipe_path, score, out, start, common, extra)
    results: dict = {"before": _reused_before(score_dir)}
    if results["before"] is None:
        results["before"] = evaluate_attempts(start, score)
    for name in BASELINES:
        recipe = recipes[name]
        path = ALGORITHMS[recipe.args.algorithm][1](recipe)
        if name == "naive_multi_turn":
            results[name] = _read_after(Path(path))
        else:
            results[name] = evaluate_attempts(path, score)
    write_two_attempts(out, results)
    stage = json.loads((out / "stage.json").read_text())
    stage["model"] = str(out)
    stage["n"] = stage["before"]["n"]
    if score_dir is not None and (score_dir / "two_attempts.json").is_file():
        ours = json.loads((score_dir / "two_attempts.json").read_text())["after"]
        stage["versus_score"] = {name: compare_deltas(ours, results[name]["per_problem"]) for name in BASELINES}
    dump_json(stage, out / "stage.json")
    return stage


def evaluate_attempts(model_path: str, score_recipe) -> dict:
    """Two-attempt evaluation of a saved model on the score recipe's held-out problems, instruction and budget."""
    from rlreason.algorithms.common import load_rows
    from rlreason.evaluation import evaluate_two_attempts
    from rlreason.models.loading import load_for_generation

    args, targs = score_recipe.args, score_recipe.training_args
    model, tokenizer = load_for_generation(model_path, args.dtype, args.attn_implementation)
    rows = load_rows(args, args.dataset_test_split, args.max_eval_samples)
    return evaluate_two_attempts(model, tokenizer, rows, reward=args.reward_funcs[0],
                                 max_completion_length=args.eval_max_completion_length,
                                 instruction=targs.correction_instruction)


def _reused_before(score_dir: Path | None) -> dict | None:
    """SCoRe's own `before` (per-problem results included) from its run in `score_dir`, which the demo passes only
    when that run started from the same model in the same demo run."""
    if score_dir is None or not (score_dir / "two_attempts.json").is_file():
        return None
    per_problem = json.loads((score_dir / "two_attempts.json").read_text()).get("before")
    metrics = json.loads((score_dir / "stage.json").read_text()).get("before")
    return None if per_problem is None or metrics is None else {**metrics, "per_problem": per_problem}


def _read_after(run: Path) -> dict:
    after = json.loads((run / "stage.json").read_text())["after"]
    return {**after, "per_problem": json.loads((run / "two_attempts.json").read_text())["after"]}
