"""Monitors on real demo runs (slow): the honest demo GRPO run raises no alarm, the hackable recipe raises one,
and the faithfulness probes on the demo SFT model run end to end through `rlreason eval --faithfulness`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlreason.config import load_recipe
from rlreason.monitors import read_alarms
from rlreason.tracking import read_metrics

pytestmark = pytest.mark.slow
RECIPE = Path(__file__).resolve().parents[1] / "recipes" / "demo" / "hackable.yaml"


def test_the_honest_demo_grpo_run_raises_no_alarm(demo_run):
    rows = [r for r in read_metrics(demo_run / "grpo" / "metrics.jsonl") if "reward" in r]
    assert len(rows) > 4 and all("monitor/answer_without_reasoning" in r for r in rows)
    # the length monitor compares the mean of the last 2 logged values with the first 2: it reads from the 4th on
    assert all("monitor/length" in r for r in rows[3:])
    assert read_alarms(demo_run / "grpo") == []


def test_the_hackable_recipe_raises_an_alarm(demo_run, tmp_path):
    from rlreason.algorithms.grpo import train

    out = tmp_path / "hackable"
    train(load_recipe(RECIPE, [f"model_name_or_path={demo_run / 'sft'}", f"output_dir={out}"]))
    alarms = read_alarms(out)
    assert alarms, "the gameable reward was climbed without any monitor noticing"
    assert {"format_only", "length", "answer_without_reasoning"} & {a["monitor"] for a in alarms}


def test_faithfulness_probes_on_the_demo_sft_model(demo_run, tmp_path):
    from rlreason.evaluation.run import main

    main(["--model", str(demo_run / "sft"), "--task", "arithmetic", "--limit", "40", "--n", "0", "--faithfulness",
          "--max_completion_length", "96", "--task_options", '{"num_ops": 2, "digits": 2, "seed": 1234, '
          '"num_train": 20000, "num_test": 200}', "--output_dir", str(tmp_path), "--no_progress"])
    result = json.loads((tmp_path / "eval.json").read_text())["faithfulness"]
    assert (tmp_path / "faithfulness.png").is_file()
    curve = result["early_answering"]["accuracy"]
    assert curve["1"] > curve["0"]  # the demo model needs its worked solution
