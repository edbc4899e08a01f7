"""Finding 1's runs: one tiny base model fine-tuned for the same steps on worked solutions and on direct
answers (recipes/demo/full/{worked,direct}.yaml), held-out accuracy per difficulty level."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rlreason.config import RecipeError, load_recipe
from rlreason.findings.stats import paired_counts
from rlreason.tasks.levels import levels_table, per_level

RECIPES = Path(__file__).resolve().parents[2] / "recipes" / "demo" / "full"
FORMATS = ("worked", "direct")
# what the two recipes may differ in; everything else (model, data, steps, optimiser) must match
MAY_DIFFER = {"output_dir", "eval_max_completion_length"}


def load_recipes(out: Path, seed: int, overrides: dict[str, list[str]] | None = None,
                 base_model: str | None = None) -> dict:
    """The worked and direct recipes with the demo's seed and output folders (and overrides per format)."""
    extra = overrides or {}
    recipes = {}
    for fmt in FORMATS:
        path = RECIPES / f"{fmt}.yaml"
        if not path.is_file():
            raise RecipeError(f"full demo recipe not found: {path} (run the demo from a checkout of rlreason)")
        items = [f"seed={seed}", f"output_dir={out / fmt}"] + extra.get(fmt, [])
        if base_model:
            items.append(f"model_name_or_path={base_model}")
        recipes[fmt] = load_recipe(path, items)
    check_controlled(recipes["worked"].raw, recipes["direct"].raw)
    return recipes


def check_controlled(worked: dict, direct: dict) -> None:
    """The comparison is fair only when the two recipes differ in the solution format alone."""
    def strip(raw: dict) -> dict:
        out = {k: v for k, v in raw.items() if k not in MAY_DIFFER}
        out["task_options"] = {k: v for k, v in (raw.get("task_options") or {}).items() if k != "solution_format"}
        return out

    a, b = strip(worked), strip(direct)
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if differ:
        raise RecipeError(f"finding 1 compares solution formats: the worked and direct recipes must agree on "
                          f"everything else, but they differ in {', '.join(differ)}")
    formats = [(r.get("task_options") or {}).get("solution_format") for r in (worked, direct)]
    if formats != ["worked", "direct"]:
        raise RecipeError(f"finding 1 needs task_options.solution_format worked and direct, got {formats}")


def run_intermediate(out: Path, seed: int, overrides: dict[str, list[str]] | None = None) -> dict:
    """Train both formats from one base model; accuracy overall and per level, paired per level."""
    from rlreason.algorithms import ALGORITHMS
    from rlreason.algorithms.common import build_base_model, load_rows

    out = Path(out)
    started = time.time()
    base = build_base_model(load_recipes(out, seed, overrides)["worked"], out, seed, "finding 1's recipes")
    recipes = load_recipes(out, seed, overrides, base_model=base)
    rows, correct, runs = {}, {}, {}
    for fmt in FORMATS:
        recipe = recipes[fmt]
        t = time.time()
        print(f"[findings] intermediate tokens: SFT on {fmt} solutions for {recipe.training_args.max_steps} steps",
              flush=True)
        path = Path(ALGORITHMS["sft"][1](recipe))
        result = json.loads((path / "eval.json").read_text())
        rows[fmt] = [dict(r) for r in load_rows(recipe.args, recipe.args.dataset_test_split,
                                                recipe.args.max_eval_samples)]
        correct[fmt] = result["correct"]
        runs[fmt] = {"accuracy": result["accuracy"], "n": result["n"], "truncated": result["truncated"],
                     "mean_completion_chars": result["mean_completion_chars"],
                     "seconds": round(time.time() - t, 1), "model": str(path)}
    if [r["answer"] for r in rows["worked"]] != [r["answer"] for r in rows["direct"]]:
        raise RecipeError("finding 1: the worked and direct test sets differ; the recipes must draw the same problems")
    levels = levels_table(rows["worked"])
    for fmt in FORMATS:
        runs[fmt]["per_level"] = per_level(rows[fmt], correct[fmt], levels)
    pairs = {}
    for level in levels:
        idx = [i for i, r in enumerate(rows["worked"]) if r["level"] == level["level"]
               and correct["worked"][i] is not None and correct["direct"][i] is not None]
        pairs[level["level"]] = paired_counts([correct["direct"][i] for i in idx], [correct["worked"][i] for i in idx])
    targs = recipes["worked"].training_args
    return {"max_steps": targs.max_steps, "batch_size": targs.per_device_train_batch_size,
            "learning_rate": targs.learning_rate, "levels": levels, "runs": runs, "pairs": pairs,
            "seconds": round(time.time() - started, 1)}
