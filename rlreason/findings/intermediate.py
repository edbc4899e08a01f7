"""Finding 1's runs: one tiny base model fine-tuned for the same steps on worked solutions and on direct
answers (recipes/demo/full/{worked,direct}.yaml), held-out accuracy per difficulty level."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rlreason.config import RecipeError, load_recipe
from rlreason.findings.stats import paired_counts

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


def build_base(recipe, out: Path, seed: int, needed_by: str = "finding 1's recipes") -> str:
    """The untrained tiny model (recipe's tiny_model, its task's texts) that several runs start from, built
    afresh under out/base-model with the demo's seed."""
    from rlreason.models.tiny import build_tiny, task_texts

    args = recipe.args
    if not args.tiny_model:
        raise RecipeError(f"{needed_by} need tiny_model: the runs start from one freshly built tiny model")
    path = out / "base-model"
    build_tiny(str(path), texts=task_texts(args.task, **args.task_options), **{**args.tiny_model, "seed": seed})
    return str(path)


def column_steps(solution: str) -> int:
    """Single-digit column steps in a worked solution (each is written `a+b=s` or `a-b=d`)."""
    return solution.count("=")


def levels_table(rows: list[dict]) -> list[dict]:
    """The levels in the order of the recipe (first appearance), with problems and mean column steps."""
    table: dict[str, dict] = {}
    for row in rows:
        if "level" not in row:
            raise RecipeError("finding 1 needs rows with a level column: give the arithmetic task `levels`")
        entry = table.setdefault(row["level"], {"level": row["level"], "num_ops": row["num_ops"],
                                                "digits": row["digits"], "n": 0, "steps": 0})
        entry["n"] += 1
        entry["steps"] += column_steps(row["solution"])
    return [{**e, "column_steps": e.pop("steps") / e["n"]} for e in table.values()]


def per_level(rows: list[dict], correct: list, levels: list[dict]) -> dict:
    """Accuracy of one run on each level, from its eval.json's per-problem results."""
    if len(rows) != len(correct):
        raise ValueError(f"per_level: {len(rows)} test rows but {len(correct)} results; evaluate on the same split")
    out = {}
    for level in levels:
        flags = [bool(c) for r, c in zip(rows, correct) if r["level"] == level["level"] and c is not None]
        out[level["level"]] = {"n": len(flags), "accuracy": sum(flags) / len(flags) if flags else float("nan")}
    return out


def run_intermediate(out: Path, seed: int, overrides: dict[str, list[str]] | None = None) -> dict:
    """Train both formats from one base model; accuracy overall and per level, paired per level."""
    from rlreason.algorithms import ALGORITHMS
    from rlreason.algorithms.common import load_rows

    out = Path(out)
    started = time.time()
    base = build_base(load_recipes(out, seed, overrides)["worked"], out, seed)
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
