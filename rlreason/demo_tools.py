"""The demo's `tools` stage: a fixed tiny model learns, by RL, to hand arithmetic it cannot do in its head to Python.

Three runs from one freshly built tiny base model, on easy (1 op, 2 digits) and hard (3 ops, 4 digits) problems
(recipes/demo/tools_*.yaml):
- the baseline: SFT on worked solutions without the tool, for as many steps as the cold start;
- the cold start: SFT on solutions of which a minority call the tool (task_options.tool_fraction), the rest worked;
- GRPO with the tool from the cold start (recipes/demo/tools.yaml: `tools: [python]`).
The stage reports greedy accuracy with the tool after GRPO (`accuracy`), of the cold start (`start_accuracy`), the
baseline's (`no_tool_accuracy`) and the tool calls per problem before and after RL."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rlreason.config import RecipeError, dump_json, load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "demo"
RUNS = {"baseline": "tools_baseline", "start": "tools_sft", "grpo": "tools"}
# what the baseline and the cold start may differ in; the model, problems and optimiser must match
MAY_DIFFER = {"output_dir", "eval_after_train"}


def recipe(run: str, out: Path, seed: int, overrides: dict[str, list[str]] | None, model: str | None = None):
    """One of the stage's recipes (RUNS) with the demo's seed, its output folder under `out`, its start model and
    the overrides given for its recipe name."""
    path = RECIPES / f"{RUNS[run]}.yaml"
    if not path.is_file():
        raise RecipeError(f"demo recipe not found: {path} (run the demo from a checkout of rlreason)")
    items = [f"seed={seed}", f"output_dir={out / run}"] + ([f"model_name_or_path={model}"] if model else [])
    return load_recipe(path, items + (overrides or {}).get(RUNS[run], []))


def load_recipes(out: Path, seed: int, overrides: dict[str, list[str]] | None, base_model: str) -> dict:
    """The three recipes, all starting from `base_model` (GRPO's start is replaced by the cold start later)."""
    recipes = {run: recipe(run, out, seed, overrides, base_model) for run in RUNS}
    check_controlled(recipes)
    return recipes


def check_controlled(recipes: dict) -> None:
    """The baseline is fair only when it is the cold start without the tool: the same model, problems, optimiser
    and steps."""
    def strip(raw: dict) -> dict:
        out = {k: v for k, v in raw.items() if k not in MAY_DIFFER}
        out["task_options"] = {k: v for k, v in (raw.get("task_options") or {}).items() if k != "tool_fraction"}
        return out

    base, start = recipes["baseline"].raw, recipes["start"].raw
    a, b = strip(base), strip(start)
    differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if differ:
        raise RecipeError(f"the tools stage's baseline must be its cold start without the tool, but "
                          f"tools_baseline and tools_sft differ in {', '.join(differ)}")
    if (base.get("task_options") or {}).get("tool_fraction", 0) != 0:
        raise RecipeError("tools_baseline: task_options.tool_fraction must be 0 (the baseline never sees the tool)")

    def problems(r) -> tuple:
        options = {k: v for k, v in r.args.task_options.items() if k not in ("tool_fraction", "solution_format")}
        return r.args.task, options, r.args.max_eval_samples

    if problems(recipes["grpo"]) != problems(recipes["baseline"]):
        raise RecipeError("the tools stage compares runs on the same held-out problems: tools.yaml's task, "
                          "task_options and max_eval_samples must be tools_baseline's")


def per_level_accuracy(grpo_recipe, results: dict) -> dict:
    """{level: {key: accuracy}} of each evaluation (all on the same held-out problems), from its per-problem
    results."""
    from rlreason.algorithms.common import load_rows
    from rlreason.tasks.levels import levels_table, per_level

    args = grpo_recipe.args
    rows = [dict(r) for r in load_rows(args, args.dataset_test_split, args.max_eval_samples)]
    levels = levels_table(rows)
    table = {level["level"]: {} for level in levels}
    for key, result in results.items():
        for level, found in per_level(rows, result["correct"], levels).items():
            table[level][key] = found["accuracy"]
    return table


def train_baseline(out: str, seed: int, overrides: dict | None, base: str) -> dict:
    """The no-tool baseline: SFT on worked solutions; its folder and held-out evaluation."""
    from rlreason.algorithms import ALGORITHMS

    recipes = load_recipes(Path(out), seed, overrides, base)
    t = time.time()
    print(f"[demo] tools: baseline SFT on worked solutions, {recipes['baseline'].training_args.max_steps} steps",
          flush=True)
    path = ALGORITHMS["sft"][1](recipes["baseline"])
    return {"path": path, "eval": json.loads((Path(path) / "eval.json").read_text()),
            "seconds": round(time.time() - t, 1)}


def train_cold_start(out: str, seed: int, overrides: dict | None, base: str) -> dict:
    """The cold start: SFT where a minority of the solutions call the tool; its folder and its held-out
    evaluation with the tool."""
    from rlreason.algorithms import ALGORITHMS
    from rlreason.algorithms.common import evaluate_saved
    from rlreason.tools import ToolConfig

    recipes = load_recipes(Path(out), seed, overrides, base)
    t = time.time()
    print(f"[demo] tools: cold start SFT, {recipes['start'].args.task_options.get('tool_fraction', 0):.0%} of the "
          f"solutions call the tool", flush=True)
    path = ALGORITHMS["sft"][1](recipes["start"])
    start = evaluate_saved(path, recipes["grpo"], "the tools cold start, with the tool",
                           ToolConfig.from_args(recipes["grpo"].training_args))
    dump_json(start, Path(path) / "eval.json")
    return {"path": path, "eval": start, "seconds": round(time.time() - t, 1)}


def run_tools_stage(out: Path, seed: int = 0, overrides: dict[str, list[str]] | None = None) -> dict:
    """Baseline and cold start (side by side, one thread each, when this process has two threads or more;
    in turn otherwise, e.g. inside a lane of the full demo), then GRPO with the tool from the cold start; the
    stage's report entry (also written to out/stage.json)."""
    from functools import partial

    from rlreason.algorithms import ALGORITHMS
    from rlreason.algorithms.common import build_base_model  # its tokenizer learns the tool's text
    from rlreason.lanes import side_by_side_or_in_turn

    out = Path(out)
    started = time.time()
    base = build_base_model(recipe("start", out, seed, overrides), out, seed, "the tools stage's recipes")
    recipes = load_recipes(out, seed, overrides, base)
    cold, baseline_run = side_by_side_or_in_turn(partial(train_cold_start, str(out), seed, overrides, base),
                                                 partial(train_baseline, str(out), seed, overrides, base),
                                                 out / "baseline.log")
    start_path, start, baseline_path, baseline = cold["path"], cold["eval"], baseline_run["path"], baseline_run["eval"]
    seconds = {"baseline": baseline_run["seconds"], "cold start": cold["seconds"]}

    t = time.time()
    grpo = recipe("grpo", out, seed, overrides, start_path)
    print(f"[demo] tools: GRPO with the tool, {grpo.training_args.max_steps} steps", flush=True)
    grpo_path = ALGORITHMS["grpo"][1](grpo)
    after = json.loads((Path(grpo_path) / "eval.json").read_text())
    seconds["grpo"] = round(time.time() - t, 1)

    stage = {"accuracy": after["accuracy"], "start_accuracy": start["accuracy"],
             "per_level": per_level_accuracy(grpo, {"accuracy": after, "start_accuracy": start,
                                                    "no_tool_accuracy": baseline}),
             "no_tool_accuracy": baseline["accuracy"], "n": after["n"],
             "no_tool_model": baseline_path,
             "tool_calls_per_problem": after.get("tool_calls_per_problem"),
             "start_tool_calls_per_problem": start.get("tool_calls_per_problem"),
             "no_tool_n": baseline["n"], "baseline_steps": recipes["baseline"].training_args.max_steps,
             "sample": next((s for s in after.get("samples", []) if "```" in s.get("completion", "")), None),
             "stage_seconds": {**seconds, "total": round(time.time() - started, 1)}}
    dump_json(stage, out / "stage.json")
    dump_json(stage, Path(grpo_path) / "stage.json")  # the demo report reads a stage's extra keys from its model
    return {"path": grpo_path, **stage}
