"""`rlreason demo`: build a tiny model, SFT cold start, then RL, evaluating every stage on the same problems."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rlreason.config import RecipeError, dump_json, load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "demo"
FROM_BASE = {"star"}  # stages that make their own weak start from the untrained base model (stage.json: start_accuracy)
# stages that start from a further SFT recipe run on the SFT model first (once per demo run when several share it)
OWN_SFT = {"score": "score_sft", "score_baselines": "score_sft"}
OWN_BASE = ("tools",)  # stages with their own task and tiny base model (rlreason/demo_tools.py)
RECIPELESS = ("score_baselines",)  # stages made of other stages' recipes (rlreason/demo_score.py)
NOT_STAGES = ("verifier",)  # demo recipes run with `rlreason train` that make no policy to evaluate as a stage
# stages evaluated on problems of their own (SCoRe's: a harder level, more problems), not on the SFT stage's
OWN_PROBLEMS = OWN_BASE + ("score", "score_baselines")


def recipe_path(name: str) -> Path:
    path = RECIPES / f"{name}.yaml"
    if not path.is_file():
        raise RecipeError(f"demo recipe not found: {path} (run the demo from a checkout of rlreason)")
    return path


def available_algorithms() -> list[str]:
    """Stages that can follow SFT: every algorithm with a demo recipe."""
    from rlreason.algorithms import ALGORITHMS

    return [a for a in ALGORITHMS if a not in ("sft", *NOT_STAGES) and (RECIPES / f"{a}.yaml").is_file()] + \
        list(OWN_BASE + RECIPELESS)


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

    starts: dict[str, str] = {}  # OWN_SFT runs done in this demo run
    for name in names:
        if name in OWN_BASE:
            stages.append(_own_base_stage(out, name, seed, extra))
        else:
            stages.append(_stage(out, name, base_path if name in FROM_BASE else sft_path, common, extra, starts,
                                 done=[s["name"] for s in stages]))
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


def _stage(out: Path, name: str, start: str, common: list[str], extra: dict, starts: dict[str, str],
           done: list[str]) -> dict:
    """One stage that starts from `start` (the SFT model or the untrained one), after its own further SFT run
    where OWN_SFT names one (trained once and kept in `starts`); `done`: the stages already run."""
    from rlreason.algorithms import ALGORITHMS

    if name in OWN_SFT:
        own_name = OWN_SFT[name]
        if own_name not in starts:
            own = load_recipe(recipe_path(own_name), common + [f"output_dir={out / own_name}",
                                                              f"model_name_or_path={start}"] + extra.get(own_name, []))
            starts[own_name] = ALGORITHMS["sft"][1](own)
        start = starts[own_name]
    t = time.time()
    if name == "score_baselines":
        from rlreason.demo_score import run_score_baselines

        stage = run_score_baselines(recipe_path, out / name, start, common, extra,
                                    score_dir=out / "score" if "score" in done else None)
        return {"name": name, "accuracy": None, "seconds": round(time.time() - t, 1), **stage}
    recipe = load_recipe(recipe_path(name), common + [f"output_dir={out / name}", f"model_name_or_path={start}"]
                         + extra.get(name, []))
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
        if name in NOT_STAGES:
            raise RecipeError(f"--algorithms: '{name}' makes no policy to evaluate as a demo stage; after the demo "
                              f"run `rlreason train recipes/demo/{name}.yaml`")
        if name not in available:
            raise RecipeError(f"--algorithms: unknown stage '{name}': valid choices are {', '.join(available) or 'none yet'}")
    return names


def _report(out: Path, stages: list[dict], started: float) -> None:
    """report.json, report.md and a bar chart, rewritten after every stage so a crash keeps what was done."""
    dump_json({"stages": stages, "seconds": round(time.time() - started, 1)}, out / "report.json")
    base = next((s["accuracy"] for s in stages if s["name"] == "base"), None)
    own = [s["name"] for s in stages if s["name"] in OWN_PROBLEMS]
    lines = ["# rlreason demo", "", "Greedy accuracy on the same held-out synthetic problems after each stage"
             + (f" ({', '.join(own)}: on problems of their own, so no 'vs. base')." if own else "."), "",
             "| stage | accuracy | vs. base | seconds |", "|---|---|---|---|"]
    for s in stages:
        if s.get("accuracy") is None:  # score_baselines: two-attempt results only (the table below)
            lines.append(f"| {s['name']} | - | | {s.get('seconds', '')} |")
            continue
        versus = "" if base is None or s["name"] in OWN_PROBLEMS else f"{s['accuracy'] - base:+.3f}"
        lines.append(f"| {s['name']} | {s['accuracy']:.3f} | {versus} | {s.get('seconds', '')} |")
    lines += two_attempt_table(stages)
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


def two_attempt_table(stages: list[dict]) -> list[str]:
    """report.md's self-correction table: each two-attempt result of the score and score_baselines stages, with
    standard errors, and SCoRe's delta against each baseline's (paired over the same problems)."""
    found = []
    for s in stages:
        if s["name"] == "score":
            found += [(label, s[key]) for key, label in (("before", "start (two-turn SFT)"), ("after", "SCoRe"))
                      if key in s]
        elif s["name"] == "score_baselines":
            found += [(name, s[name]) for name in ("sft_corrections", "naive_multi_turn") if name in s]
    if not found:
        return []
    lines = ["", "Self-correction (greedy attempt 1, the instruction, greedy attempt 2; +- one standard error):", "",
             "| model | attempt 1 | attempt 2 | delta(t1,t2) | i->c | c->i | changed answer | n |",
             "|---|---|---|---|---|---|---|---|"]
    for label, r in found:
        cells = [f"{r[k]:+.3f} +- {r[k + '_se']:.3f}" if k == "delta_t1_t2" else f"{r[k]:.3f} +- {r[k + '_se']:.3f}"
                 for k in ("delta_t1_t2", "delta_i_to_c", "delta_c_to_i", "changed_answer_rate")]
        lines.append(f"| {label} | {r['accuracy_t1']:.3f} | {r['accuracy_t2']:.3f} | {' | '.join(cells)} | {r['n']} |")
    for s in stages:
        for name, c in (s.get("versus_score") or {}).items():
            lines.append(f"\nSCoRe's delta minus {name}'s: {c['difference']:+.3f} +- {c['se']:.3f} (paired, "
                         f"{c['n']} problems)")
    return lines


def _plot(path: Path, stages: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [s for s in stages if s.get("accuracy") is not None]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar([s["name"] for s in stages], [s["accuracy"] for s in stages], color="tab:blue")
    ax.set_ylim(0, 1)
    ax.set_ylabel("held-out greedy accuracy")
    ax.set_title("rlreason demo")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
