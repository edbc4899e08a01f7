"""`rlreason demo`: build a tiny model, SFT cold start, then RL, evaluating every stage on the same problems."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rlreason.config import RecipeError, dump_json, load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "demo"
FROM_BASE = {"star"}  # stages that make their own weak start from the untrained base model (stage.json: start_accuracy)
OWN_SFT = {"score": "score_sft"}  # stages that start from a further SFT recipe run on the SFT model first
OWN_BASE = ("tools",)  # stages with their own task and tiny base model (rlreason/demo_tools.py)


def recipe_path(name: str) -> Path:
    path = RECIPES / f"{name}.yaml"
    if not path.is_file():
        raise RecipeError(f"demo recipe not found: {path} (run the demo from a checkout of rlreason)")
    return path


def available_algorithms() -> list[str]:
    """Stages that can follow SFT: every algorithm with a demo recipe."""
    from rlreason.algorithms import ALGORITHMS

    return [a for a in ALGORITHMS if a != "sft" and (RECIPES / f"{a}.yaml").is_file()] + list(OWN_BASE)


def _stage_from_run(name: str, output_dir: str, seconds: float) -> dict:
    result = json.loads((Path(output_dir) / "eval.json").read_text())
    stage = {"name": name, "accuracy": result["accuracy"], "n": result["n"], "seconds": round(seconds, 1),
             "model": output_dir}
    extra = Path(output_dir) / "stage.json"  # algorithms may add their own keys (SCoRe's before/after, ...)
    if extra.is_file():
        stage.update(json.loads(extra.read_text()))
    return stage


def run_demo(algorithms: str | None = None, output_dir: str | None = None, seed: int = 0,
             overrides: dict[str, list[str]] | None = None) -> dict:
    """Run the demo stages and write report.json, report.md and accuracy.png under output_dir.

    The untrained model (`base`) is built and evaluated, and the SFT stage run, only when a chosen stage starts
    from them: `--algorithms star,tools` trains no SFT model.
    overrides: extra recipe items (key=value) per stage name, e.g. {"sft": ["max_steps=5"]} for short test runs."""
    out = Path(output_dir or "runs/demo")
    names = _choose(algorithms)
    started = time.time()
    common = [f"seed={seed}"]
    extra = overrides or {}
    needs_sft = not names or any(n not in FROM_BASE and n not in OWN_BASE for n in names)
    stages: list[dict] = []
    if needs_sft or any(n in FROM_BASE for n in names):
        base_path, sft = _base_stage(out, common, extra, stages)
        _report(out, stages, started)
    if needs_sft:
        from rlreason.algorithms import ALGORITHMS

        t = time.time()
        sft_path = ALGORITHMS["sft"][1](sft)
        stages.append(_stage_from_run("sft", sft_path, time.time() - t))
        _report(out, stages, started)

    for name in names:
        if name in OWN_BASE:
            stages.append(_own_base_stage(out, name, seed, extra))
        else:
            stages.append(_stage(out, name, base_path if name in FROM_BASE else sft_path, common, extra))
        _report(out, stages, started)
    return {"stages": stages}


def _base_stage(out: Path, common: list[str], extra: dict, stages: list[dict]):
    """Build the demo's untrained tiny model and evaluate it (the `base` row); returns its path and the SFT
    recipe that starts from it."""
    from rlreason.algorithms.common import evaluate_saved, prepare_model_path

    sft = load_recipe(recipe_path("sft"), common + [f"output_dir={out / 'sft'}"] + extra.get("sft", []))
    base_path = prepare_model_path(sft.args, str(out))
    sft = load_recipe(recipe_path("sft"), common + [f"output_dir={out / 'sft'}", f"model_name_or_path={base_path}"]
                      + extra.get("sft", []))
    t = time.time()
    base = evaluate_saved(base_path, sft, "the untrained model")
    stages.append({"name": "base", "accuracy": base["accuracy"], "n": base["n"], "seconds": round(time.time() - t, 1),
                   "model": base_path})
    return base_path, sft


def _stage(out: Path, name: str, start: str, common: list[str], extra: dict) -> dict:
    """One stage that starts from `start` (the SFT model or the untrained one), after its own further SFT run
    where OWN_SFT names one."""
    from rlreason.algorithms import ALGORITHMS

    if name in OWN_SFT:
        own = load_recipe(recipe_path(OWN_SFT[name]), common + [f"output_dir={out / OWN_SFT[name]}",
                                                              f"model_name_or_path={start}"]
                          + extra.get(OWN_SFT[name], []))
        start = ALGORITHMS["sft"][1](own)
    recipe = load_recipe(recipe_path(name), common + [f"output_dir={out / name}", f"model_name_or_path={start}"]
                         + extra.get(name, []))
    t = time.time()
    path = ALGORITHMS[name][1](recipe)
    return _stage_from_run(name, path, time.time() - t)


def _own_base_stage(out: Path, name: str, seed: int, extra: dict) -> dict:
    from rlreason.demo_tools import run_tools_stage

    t = time.time()
    path = run_tools_stage(out / name, seed, extra)["path"]
    return _stage_from_run(name, path, time.time() - t)


def _choose(algorithms: str | None) -> list[str]:
    available = available_algorithms()
    if algorithms is None:
        return [a for a in ("grpo",) if a in available]
    names = [a.strip() for a in algorithms.split(",") if a.strip()]
    for name in names:
        if name not in available:
            raise RecipeError(f"--algorithms: unknown stage '{name}': valid choices are {', '.join(available) or 'none yet'}")
    return names


def _report(out: Path, stages: list[dict], started: float) -> None:
    """report.json, report.md and a bar chart, rewritten after every stage so a crash keeps what was done."""
    dump_json({"stages": stages, "seconds": round(time.time() - started, 1)}, out / "report.json")
    base = next((s["accuracy"] for s in stages if s["name"] == "base"), None)
    lines = ["# rlreason demo", "", "Greedy accuracy on the same held-out synthetic problems after each stage.", "",
             "| stage | accuracy | vs. base | seconds |", "|---|---|---|---|"]
    for s in stages:
        versus = "" if base is None or s["name"] in OWN_BASE else f"{s['accuracy'] - base:+.3f}"
        lines.append(f"| {s['name']} | {s['accuracy']:.3f} | {versus} | {s.get('seconds', '')} |")
    for s in stages:
        if s["name"] == "tools":
            lines += ["", f"tools (on its own problems): with the tool after GRPO "
                          f"{s['accuracy']:.3f}, cold start {s['start_accuracy']:.3f}, no-tool baseline "
                          f"{s['no_tool_accuracy']:.3f}; tool calls per problem {s['start_tool_calls_per_problem']:.2f} "
                          f"-> {s['tool_calls_per_problem']:.2f}"]
    lines += ["", f"Total time: {time.time() - started:.0f} s. Plot: accuracy.png"]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    _plot(out / "accuracy.png", stages)
    print("\n".join(lines))


def _plot(path: Path, stages: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar([s["name"] for s in stages], [s["accuracy"] for s in stages], color="tab:blue")
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out greedy accuracy")
    ax.set_title("rlreason demo")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
