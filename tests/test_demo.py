"""The demo's claims, read from a real run (slow): SFT learns the task, then GRPO, PPO and SCoRe improve on it."""

import json

import pytest

from rlreason.tracking import read_metrics

pytestmark = pytest.mark.slow


def stages(demo_run) -> dict:
    report = json.loads((demo_run / "report.json").read_text())
    return {s["name"]: s for s in report["stages"]}


def improved(before: float, after: float) -> bool:
    return after >= before + 0.10 or after >= 0.95


def test_sft_is_half_a_point_above_the_untrained_model(demo_run):
    s = stages(demo_run)
    assert s["sft"]["accuracy"] >= s["base"]["accuracy"] + 0.5, s
    assert s["base"]["n"] == s["sft"]["n"] == 200  # the same held-out problems for every stage


def test_grpo_improves_on_sft(demo_run):
    s = stages(demo_run)
    assert improved(s["sft"]["accuracy"], s["grpo"]["accuracy"]), s


def test_ppo_improves_on_sft_and_its_value_head_explains_returns(demo_run):
    s = stages(demo_run)
    assert improved(s["sft"]["accuracy"], s["ppo"]["accuracy"]), s
    variance = [m["explained_variance"] for m in read_metrics(demo_run / "ppo" / "metrics.jsonl")
                if "explained_variance" in m]
    assert variance and max(variance) > 0, variance


def test_score_fixes_more_and_breaks_less_than_its_start(demo_run):
    score = stages(demo_run)["score"]
    assert score["after"]["delta_i_to_c"] > score["before"]["delta_i_to_c"], score
    assert score["after"]["delta_c_to_i"] < score["before"]["delta_c_to_i"], score
    assert score["before"]["n"] == score["after"]["n"] == 1000  # SCoRe's own held-out problems


@pytest.mark.xfail(reason="open issue 'SCoRe that learns to correct': delta(t1,t2) stays below 0 on the demo "
                          "(-0.078 -> -0.053, seed 0)", strict=False)
def test_score_makes_the_second_attempt_better(demo_run):
    score = stages(demo_run)["score"]
    assert score["after"]["delta_t1_t2"] > 2 * score["after"]["delta_t1_t2_se"], score
