"""Finding 7, tools extend what a fixed model can compute: the `tools` stage's accuracy with the Python tool (after
GRPO) against its no-tool baseline (the same model size, problems and SFT steps, worked solutions only), paired
over the same held-out problems."""

from __future__ import annotations

from rlreason.findings.stats import Z, beats, missing

TITLE = "7. Tools extend what a fixed model can compute"
CLAIM = ("Tools extend what a fixed model can compute: a tiny model that hands its arithmetic to a Python "
         "interpreter mid-solution, and is taught by RL when to, solves problems that the same model trained on "
         "worked solutions without the tool cannot.")
CRITERIA = (f"Reproduced when the `tools` stage's greedy accuracy with the tool after GRPO exceeds the no-tool "
            f"baseline's by more than {Z:g} s.e. (paired: the same held-out problems).")


def tools_finding(m: dict) -> dict:
    """The finding's table (all problems, then each level) and its check, from the stage `tools` (paired by
    run.stage_pairs from the two runs' per-problem results)."""
    stage = next((s for s in m.get("stages", []) if s["name"] == "tools"), None)
    if stage is None or "no_tool_accuracy" not in stage:
        return {"checks": [missing("tools vs no tools", "the tools stage did not run")]}
    check = beats("with the tool after GRPO", stage["accuracy"], "the no-tool baseline", stage["no_tool_accuracy"],
                  n_a=stage.get("no_tool_n", stage["n"]), n_b=stage["n"],
                  counts=m.get("stage_pairs", {}).get("tools"))
    rows = [["all", stage["n"], stage["no_tool_accuracy"], stage["start_accuracy"], stage["accuracy"],
             check["value"], Z * check["se"]]]
    for level, accs in (stage.get("per_level") or {}).items():
        rows.append([level, None, accs.get("no_tool_accuracy"), accs.get("start_accuracy"), accs.get("accuracy"),
                     None, None])
    notes = [f"Greedy, on {stage['n']} held-out problems of the stage's own task; the baseline and the cold start "
             f"train the same freshly built model for {stage.get('baseline_steps', '?')} SFT steps (the cold start "
             f"with a minority of solutions that call the tool), then GRPO with the tool from the cold start.",
             f"Tool calls per problem: {_calls(stage.get('start_tool_calls_per_problem'))} at the cold start, "
             f"{_calls(stage.get('tool_calls_per_problem'))} after GRPO."]
    return {"columns": ["problems", "n", "no tool", "cold start, tool", "GRPO, tool", "GRPO - no tool",
                        f"{Z:g} s.e."], "rows": rows, "checks": [check], "notes": notes}


def _calls(value) -> str:
    return "-" if value is None else f"{value:.2f}"
