"""The demo's `tools` stage (rlreason/demo_tools.py): its three runs are controlled, and a short run of it reports
what the issue asks (accuracy with the tool, the cold start's, the no-tool baseline's, tool calls per problem)."""

import json

import pytest

from rlreason.config import RecipeError
from rlreason.demo_tools import RUNS, check_controlled, recipe, run_tools_stage

TINY = "tiny_model={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2}"
TASK = "task_options={{levels: [[1, 2], [3, 4]], seed: 4321, num_train: 200, num_test: 20{}}}"
SHORT = {
    "tools_sft": ["max_steps=4", "per_device_train_batch_size=8", "max_eval_samples=6", "save_steps=4", TINY,
                  TASK.format(", solution_format: worked, tool_fraction: 0.4")],
    "tools_baseline": ["max_steps=4", "per_device_train_batch_size=8", "max_eval_samples=6", "save_steps=4", TINY,
                       TASK.format(", solution_format: worked, tool_fraction: 0.0")],
    "tools": ["max_steps=2", "per_device_train_batch_size=4", "num_generations=2", "max_completion_length=40",
              "max_eval_samples=6", "eval_max_completion_length=40", "logging_steps=1", "save_steps=2", TASK.format("")],
}


def recipes(tmp_path, overrides=None):
    return {run: recipe(run, tmp_path, 0, overrides, model=str(tmp_path)) for run in RUNS}


def test_the_shipped_recipes_are_a_controlled_comparison(tmp_path):
    found = recipes(tmp_path)
    check_controlled(found)
    assert found["start"].args.task_options["tool_fraction"] < 0.5  # a minority of the cold start calls the tool
    assert found["grpo"].training_args.tools == ["python"]
    assert found["grpo"].args.task_options["levels"] == found["start"].args.task_options["levels"]


@pytest.mark.parametrize("change,message", [
    ({"tools_baseline": ["learning_rate=0.01"]}, "differ in learning_rate"),
    ({"tools_baseline": ["max_steps=7"]}, "differ in max_steps"),
    ({"tools_baseline": ["mask_tool_observations=false"]}, "differ in mask_tool_observations"),
    ({"tools": ["max_eval_samples=100"]}, "same held-out problems"),
    ({"tools_baseline": ["task_options={levels: [[1, 2], [3, 4]], seed: 4321, num_train: 20000, num_test: 200, "
                         "solution_format: worked, tool_fraction: 0.2}"]}, "tool_fraction must be 0"),
])
def test_an_uncontrolled_baseline_is_refused(tmp_path, change, message):
    with pytest.raises(RecipeError, match=message):
        check_controlled(recipes(tmp_path, change))


def test_a_short_tools_stage_reports_its_keys(tmp_path):
    stage = run_tools_stage(tmp_path / "tools", seed=0, overrides=SHORT)
    for key in ("accuracy", "start_accuracy", "no_tool_accuracy", "tool_calls_per_problem"):
        assert 0 <= stage[key] <= (1 if "accuracy" in key else 2), (key, stage[key])
    assert stage["n"] == 6 and stage["baseline_steps"] == 4
    assert set(stage["per_level"]) == {"1 op, 2 digits", "3 ops, 4 digits"}
    assert all(set(v) == {"accuracy", "start_accuracy", "no_tool_accuracy"} for v in stage["per_level"].values())
    saved = json.loads((tmp_path / "tools" / "grpo" / "stage.json").read_text())
    assert saved["no_tool_accuracy"] == stage["no_tool_accuracy"]
    logged = [json.loads(line) for line in (tmp_path / "tools" / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert any("tools/calls_per_completion" in m for m in logged)


def test_baseline_and_cold_start_side_by_side_match_the_runs_in_turn(tmp_path):
    """With two threads the baseline trains in a spawned process beside the cold start, one thread each; with one
    thread they run in turn here. The two SFT runs and their evaluations come out the same."""
    import torch

    from rlreason.demo_tools import train_baseline, train_cold_start

    saved = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        side = run_tools_stage(tmp_path / "side", seed=0, overrides=SHORT)
    finally:
        torch.set_num_threads(saved)
    assert "lane done" in (tmp_path / "side" / "baseline.log").read_text()
    torch.set_num_threads(1)
    try:
        base = str(tmp_path / "side" / "base-model")
        alone = {"cold": train_cold_start(str(tmp_path / "turn"), 0, SHORT, base),
                 "baseline": train_baseline(str(tmp_path / "turn"), 0, SHORT, base)}
    finally:
        torch.set_num_threads(saved)
    assert side["no_tool_accuracy"] == alone["baseline"]["eval"]["accuracy"]
    assert side["start_accuracy"] == alone["cold"]["eval"]["accuracy"]
    for run, name in (("baseline", "baseline"), ("cold", "start")):
        with_lanes = json.loads((tmp_path / "side" / name / "eval.json").read_text())
        assert with_lanes["correct"] == alone[run]["eval"]["correct"]
        completions = [s["completion"] for s in alone[run]["eval"]["samples"]]
        assert [s["completion"] for s in with_lanes["samples"]] == completions
