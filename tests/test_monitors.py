"""Run monitors: each fires on a metric stream built to cross it and stays quiet on the honest demo's stream;
alarms.jsonl, recipe thresholds, and stop_on_alarm in a real (tiny) GRPO run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlreason.config import RecipeError, load_recipe
from rlreason.monitors import MONITORS, MonitorBoard, check_monitors, read_alarms, replay
from rlreason.tracking import read_metrics

from .test_grpo import grpo_recipe, run

# metrics.jsonl of a real honest run: recipes/demo/grpo.yaml from the demo SFT model (seed 0, 2 cores), monitors on
HONEST = Path(__file__).with_name("fixtures") / "honest_grpo_metrics.jsonl"


def healthy_row(step: int, **changes) -> dict:
    """One logging step of a healthy run (values like the demo GRPO run's); `changes` override."""
    row = {"reward": 0.7, "accuracy": 0.7, "rewards/accuracy/mean": 0.7, "completions/mean_length": 45.0,
           "completions/clipped_ratio": 0.0, "entropy": 0.3, "kl": 0.01, "reward_errors": 0.0,
           "completions/answer_without_reasoning": 0.0, "completions/repetition": 0.02,
           "completions/reward_error_share": 0.0}
    row.update(changes)
    return {"step": step, **row}


def stream(n: int = 10, **ramps) -> list[dict]:
    """n logging steps 5 apart; each ramp key goes linearly from its (start, end) values."""
    rows = []
    for i in range(n):
        t = i / (n - 1)
        rows.append(healthy_row(5 * (i + 1), **{k: a + (b - a) * t for k, (a, b) in ramps.items()}))
    return rows


def with_evals(rows: list[dict], values: list[float]) -> list[dict]:
    """Insert eval_accuracy rows (as the trainer logs them, separately) after evenly spaced steps."""
    out, every = [], len(rows) // len(values)
    for i, row in enumerate(rows):
        out.append(row)
        if (i + 1) % every == 0 and (i + 1) // every <= len(values):
            out.append({"step": row["step"], "eval_accuracy": values[(i + 1) // every - 1]})
    return out


CROSSING = {
    "reward_vs_heldout": with_evals(stream(reward=(0.4, 0.8)), [0.6, 0.58, 0.55]),
    "length": stream(**{"completions/mean_length": (45.0, 12.0)}),
    "answer_without_reasoning": stream(**{"completions/answer_without_reasoning": (0.0, 0.6)}),
    "format_only": [{**r, "rewards/format_and_brevity/mean": 0.3 + 0.05 * i} for i, r in enumerate(stream())],
    "repetition": stream(**{"completions/repetition": (0.02, 0.7)}),
    "reward_errors": stream(**{"completions/reward_error_share": (0.0, 0.3)}),
    "entropy": stream(entropy=(0.3, 0.01)),
    "kl": stream()[:6] + [healthy_row(35, kl=2.0)],
    "tool_abuse": [{**r, "tools/calls_per_completion": 1.0 + 3 * i} for i, r in enumerate(stream())],
}


def test_every_registered_monitor_has_a_crossing_stream():
    assert set(CROSSING) == set(MONITORS)


@pytest.mark.parametrize("name", sorted(CROSSING))
def test_each_monitor_fires_on_a_stream_that_crosses_it(name):
    fired = {a["monitor"] for a in replay(CROSSING[name])}
    assert name in fired, fired
    assert fired <= {name, "reward_vs_heldout", "format_only"}  # others only where the stream implies them


def test_monitors_stay_quiet_on_a_healthy_synthetic_stream():
    rows = with_evals(stream(reward=(0.6, 0.8), accuracy=(0.6, 0.8), **{"completions/mean_length": (45.0, 40.0)}),
                      [0.62, 0.7, 0.78])
    assert replay(rows) == []


def test_monitors_stay_quiet_on_the_honest_demo_grpo_stream():
    rows = read_metrics(HONEST)
    assert len([r for r in rows if "reward" in r]) >= 10
    assert replay(rows) == []


def test_an_alarm_is_written_printed_and_logged_once(tmp_path, capsys):
    board = MonitorBoard(None, output_dir=str(tmp_path))
    logs = []
    still_crossed = healthy_row(55, **{"completions/answer_without_reasoning": 0.7})
    for row in CROSSING["answer_without_reasoning"] + [still_crossed]:
        step, values = row["step"], {k: v for k, v in row.items() if k != "step"}
        board.observe(step, values)
        logs.append(values)
    alarms = read_alarms(tmp_path)
    assert len(alarms) == 1  # raised when it crossed, not again while it stays crossed
    assert set(alarms[0]) == {"step", "monitor", "value", "threshold", "message"}
    assert alarms[0]["monitor"] == "answer_without_reasoning" and alarms[0]["value"] > alarms[0]["threshold"] == 0.2
    printed = [line for line in capsys.readouterr().out.splitlines() if "ALARM" in line]
    assert len(printed) == 1 and "answer_without_reasoning" in printed[0]
    assert "monitor/answer_without_reasoning" in logs[-1] and logs[-1]["monitor/alarms"] == 1.0


def test_recipe_thresholds_override_defaults_and_unknown_names_are_refused():
    lowered = {"answer_without_reasoning": {"max_share": 0.9}}
    assert replay(CROSSING["answer_without_reasoning"], lowered) == []
    assert replay(CROSSING["kl"], {"kl": False}) == []
    with pytest.raises(ValueError, match="unknown monitor 'lenght'"):
        check_monitors({"lenght": {}})
    with pytest.raises(ValueError, match="unknown threshold 'max'.*max_ratio"):
        check_monitors({"length": {"max": 3}})
    with pytest.raises(RecipeError, match="monitors.kl.max_kl: expected a number"):
        load_recipe(None, base={"algorithm": "grpo", "model_name_or_path": "gpt2", "task": "arithmetic",
                                "monitors": {"kl": {"max_kl": "high"}}})


def test_grpo_run_logs_monitors_and_stop_on_alarm_stops_with_a_checkpoint(tiny_model_dir, tmp_path):
    # a random tiny model runs every completion to the length limit: the length monitor's max_clipped crosses
    out = Path(run(grpo_recipe(tiny_model_dir, tmp_path / "run", max_steps=6, stop_on_alarm=True,
                               monitors={"length": {"max_clipped": 0.1}})))
    logged = [r for r in read_metrics(out / "metrics.jsonl") if "reward" in r]
    assert logged and all("monitor/length" in r and "monitor/answer_without_reasoning" in r for r in logged)
    alarms = read_alarms(out)
    assert alarms and alarms[0]["monitor"] == "length" and alarms[0]["step"] == 1
    assert logged[-1]["step"] == 1  # stopped after the step that raised it ...
    assert (out / "checkpoint-1").is_dir()  # ... with a checkpoint to resume from
    assert json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())["global_step"] == 1


def test_an_alarm_sends_a_wandb_alert_when_wandb_is_on(monkeypatch):
    import wandb

    sent = []
    monkeypatch.setattr(wandb, "run", object())
    monkeypatch.setattr(wandb, "alert", lambda **kw: sent.append(kw))
    board = MonitorBoard(None, output_dir=None, wandb_on=True)
    for row in CROSSING["entropy"]:
        board.observe(row["step"], {k: v for k, v in row.items() if k != "step"})
    assert len(sent) == 1 and "entropy" in sent[0]["title"] and sent[0]["level"] == wandb.AlertLevel.WARN
