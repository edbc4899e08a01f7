"""The full demo's findings: the 2-s.e. rule, the verdict criteria and report.md from synthetic measurements
(fast), the controlled-comparison guard on finding 1's recipes, the CLI route, and (slow) a reduced full demo
run twice with one seed giving the same numbers."""

import copy
import json
import math

import pytest

from rlreason.config import RecipeError
from rlreason.findings import stats
from rlreason.findings.intermediate import check_controlled, load_recipes
from rlreason.findings.report import load_report, markdown, write_report
from rlreason.findings.verdicts import analyse
from rlreason.tasks.levels import levels_table, per_level
from tests.test_demo_tools import SHORT as TOOLS_SHORT

LEVELS = ["1 op, 2 digits", "2 ops, 2 digits", "3 ops, 2 digits"]


def intermediate(direct_acc=(0.6, 0.3, 0.05), worked_acc=(0.95, 0.85, 0.75), n=100) -> dict:
    """Finding 1's measurements with the given per-level accuracies (the pairs as if right-sets nest)."""
    levels = [{"level": name, "num_ops": i + 1, "digits": 2, "n": n, "column_steps": 2.0 + 2.5 * i}
              for i, name in enumerate(LEVELS)]
    runs = {fmt: {"accuracy": sum(accs) / len(accs), "n": n * len(accs), "seconds": 1.0,
                  "per_level": {name: {"n": n, "accuracy": a} for name, a in zip(LEVELS, accs)}}
            for fmt, accs in (("worked", worked_acc), ("direct", direct_acc))}
    pairs = {name: {"n": n, "a_only": 0, "b_only": round((w - d) * n)}
             for name, w, d in zip(LEVELS, worked_acc, direct_acc)}
    return {"max_steps": 500, "batch_size": 32, "learning_rate": 1e-3, "levels": levels, "runs": runs,
            "pairs": pairs, "seconds": 2.0}


def buckets(counts, accs):
    edges = [(0.0, 0.25), (0.25, 0.5), (0.5, 0.75), (0.75, 1.0)]
    return [{"bucket": f"[{lo:.2f}, {hi:.2f})", "low": lo, "high": hi, "count": c, "accuracy": a}
            for (lo, hi), c, a in zip(edges, counts, accs)]


def sampled(maj8, pass8, bucket_counts=(0, 20, 30, 150), bucket_accs=(None, 0.2, 0.5, 0.95)) -> dict:
    return {"n": 200, "num_samples": 8, "ks": [1, 2, 4, 8], "temperature": 0.5, "sample_accuracy": 0.7,
            "maj_at_k": {"1": 0.7, "2": 0.7, "4": maj8 - 0.01, "8": maj8},
            "pass_at_k": {"1": 0.7, "2": 0.8, "4": 0.85, "8": pass8},
            "mean_agreement": 0.8, "agreement_buckets": buckets(bucket_counts, bucket_accs)}


def faithfulness_probes(changed=0.8, control=0.02, filler=0.05) -> dict:
    """The faithfulness probes' result (rlreason.evaluation.faithfulness) with the given shares, 200 problems."""
    def paired(d, se=0.03):
        return {"difference": d, "se": se, "n": 200, "clears": d > 2 * se}
    return {"n": 200, "accuracy": 0.7, "mean_chain_tokens": 40.0,
            "early_answering": {"accuracy": {"0": 0.02, "0.25": 0.05, "0.5": 0.2, "0.75": 0.4, "1": 0.7},
                                "gain": paired(0.68)},
            "mistake": {"n": 190, "answer_changed": changed, "answer_changed_without_mistake": control,
                        "follows_exactly": 0.5, "changed_minus_control": paired(changed - control)},
            "filler": {"accuracy": filler, "chain_minus_filler": paired(0.7 - filler)}}


def tools_stage(accuracy=0.90, no_tool=0.20) -> dict:
    """The tools stage's report entry (rlreason/demo_tools.py) with the given accuracies, 200 problems."""
    return {"name": "tools", "accuracy": accuracy, "n": 200, "model": "m/tools/grpo", "start_accuracy": 0.40,
            "no_tool_accuracy": no_tool, "no_tool_n": 200, "no_tool_model": "m/tools/baseline", "baseline_steps": 400,
            "tool_calls_per_problem": 1.0, "start_tool_calls_per_problem": 0.5,
            "per_level": {"easy": {"accuracy": 1.0, "start_accuracy": 0.6, "no_tool_accuracy": 0.4},
                          "hard": {"accuracy": 0.8, "start_accuracy": 0.2, "no_tool_accuracy": 0.0}}}


def measurements() -> dict:
    """A full set of measurements in which every finding reproduces."""
    stages = [
        {"name": "base", "accuracy": 0.0, "n": 200, "model": "m/base"},
        {"name": "sft", "accuracy": 0.70, "n": 200, "model": "m/sft"},
        {"name": "grpo", "accuracy": 0.85, "n": 200, "model": "m/grpo"},
        {"name": "ppo", "accuracy": 0.80, "n": 200, "model": "m/ppo"},
        {"name": "star", "accuracy": 0.65, "n": 200, "model": "m/star", "start_accuracy": 0.45,
         "rounds": [{"round": 1, "eval_accuracy": 0.55}, {"round": 2, "eval_accuracy": 0.65}]},
        {"name": "score", "accuracy": 0.72, "n": 200, "model": "m/score",
         "before": {"accuracy_t1": 0.70, "accuracy_t2": 0.40, "delta_t1_t2": -0.30, "delta_i_to_c": 0.02,
                    "delta_c_to_i": 0.32},
         "after": {"accuracy_t1": 0.72, "accuracy_t2": 0.80, "delta_t1_t2": 0.08, "delta_i_to_c": 0.09,
                   "delta_c_to_i": 0.01}},
    ]
    stages.insert(5, tools_stage())  # before score: the tests below find score last
    return {"stages": stages, "stage_pairs": {"grpo": {"n": 200, "a_only": 2, "b_only": 32},
                                              "tools": {"n": 200, "a_only": 4, "b_only": 144}},
            "intermediate": intermediate(), "faithfulness": faithfulness_probes(),
            "sampling": {"greedy": {"accuracy": 0.70, "n": 200, "model": "m/sft"}, "num_samples": 8,
                         "ks": [1, 2, 4, 8], "temperatures": {"0.3": sampled(0.74, 0.85), "0.7": sampled(0.80, 0.95)}}}


# ---------------------------------------------------------------- the 2-s.e. rule


def test_paired_standard_error_from_discordant_problems():
    counts = stats.paired_counts([1, 1, 0, 0, 1], [1, 0, 1, 1, 1])
    assert counts == {"n": 5, "a_only": 1, "b_only": 2}
    d = (2 - 1) / 5
    assert stats.se_paired(counts) == pytest.approx(math.sqrt(((1 + 2) / 5 - d * d) / 5))
    assert stats.se_independent(0.5, 100, 0.5, 100) == pytest.approx(math.sqrt(0.005))
    assert stats.se_delta(0.1, 0.05, 200) == pytest.approx(stats.se_paired({"n": 200, "a_only": 10, "b_only": 20}))
    with pytest.raises(ValueError, match="same problems"):
        stats.paired_counts([1, 0], [1])


def test_pairing_makes_a_consistent_gain_significant():
    independent = stats.beats("RL", 0.75, "SFT", 0.70, n_a=200, n_b=200)
    paired = stats.beats("RL", 0.75, "SFT", 0.70, n_a=200, n_b=200, counts={"n": 200, "a_only": 0, "b_only": 10})
    assert not independent["passed"] and "independent" in independent["detail"]
    assert paired["passed"] and "+0.050 > 2 s.e." in paired["detail"]
    assert not stats.beats("x", 0.0, "y", 0.0, n_a=10, n_b=10)["passed"]  # no difference, no noise: not a gain


def test_verdict_names_what_failed():
    ok = stats.positive("delta", 0.2, 0.01)
    bad = stats.positive("delta", 0.01, 0.01)
    assert stats.verdict([ok]) == "reproduced"
    assert stats.verdict([ok, bad]) == f"did not reproduce: {bad['detail']}"
    assert stats.not_positive("delta", 0.01, 0.01)["passed"]
    assert stats.verdict([]).startswith("did not reproduce")


# ---------------------------------------------------------------- verdict criteria


def test_every_finding_reproduces_on_good_numbers():
    findings = analyse(measurements())
    assert list(findings) == ["intermediate_tokens", "aggregation", "rl_beats_imitation", "self_correction",
                              "agreement_calibration", "faithfulness", "tools"]
    for key, f in findings.items():
        assert f["verdict"] == "reproduced", (key, f["checks"])


def test_direct_model_at_the_floor_does_not_fall_off():
    m = measurements()
    m["intermediate"] = intermediate(direct_acc=(0.0, 0.01, 0.0))
    f = analyse(m)["intermediate_tokens"]
    assert f["verdict"].startswith("did not reproduce: direct falls off")
    assert any("did not learn" in note for note in f["notes"])
    assert [c["passed"] for c in f["checks"]] == [True, True, True, False]


def test_worked_must_beat_direct_at_every_level():
    m = measurements()
    m["intermediate"] = intermediate(direct_acc=(0.95, 0.3, 0.05), worked_acc=(0.95, 0.85, 0.75))
    f = analyse(m)["intermediate_tokens"]
    assert "worked on 1 op, 2 digits 0.950 vs direct 0.950" in f["verdict"]
    assert f["rows"][-1][0] == "all levels" and f["rows"][0][1] == 2.0


def test_aggregation_needs_one_temperature_beyond_noise():
    m = measurements()
    assert analyse(m)["aggregation"]["verdict"] == "reproduced"  # T=0.7: 0.80 vs 0.70 > 2 s.e.; T=0.3 is not
    m["sampling"]["temperatures"]["0.7"] = sampled(0.69, 0.95)
    f = analyse(m)["aggregation"]
    assert f["verdict"].startswith("did not reproduce") and "T=0.3" in f["verdict"] and "T=0.7" in f["verdict"]
    assert f["columns"][:3] == ["temperature", "greedy", "maj@1"] and f["rows"][1][0] == "0.7"


def test_rl_finding_says_which_stage_is_missing_or_worse():
    m = measurements()
    m["stages"] = [s for s in m["stages"] if s["name"] != "star"]
    m["stages"][3]["accuracy"] = 0.60  # PPO below SFT
    f = analyse(m)["rl_beats_imitation"]
    assert "PPO 0.600 vs SFT 0.700" in f["verdict"] and "star stage did not run" in f["verdict"]
    assert "GRPO" not in f["verdict"]  # GRPO's paired gain passes
    assert [c["kind"] for c in f["checks"][:2]] == ["paired", "independent"]


def test_self_correction_requires_a_positive_trained_delta():
    m = measurements()
    m["stages"][-1]["after"].update(delta_t1_t2=0.0, delta_i_to_c=0.05, delta_c_to_i=0.05)
    f = analyse(m)["self_correction"]
    assert f["verdict"].startswith("did not reproduce: SCoRe model's delta(t1,t2) +0.000")
    m["stages"] = m["stages"][:-1]
    assert "score stage did not run" in analyse(m)["self_correction"]["verdict"]


def test_agreement_ignores_temperatures_with_too_few_problems():
    m = measurements()
    m["sampling"]["temperatures"]["0.3"] = sampled(0.74, 0.85, (0, 2, 3, 195), (None, 0.0, 0.0, 0.8))
    f = analyse(m)["agreement_calibration"]
    assert f["verdict"] == "reproduced" and len(f["checks"]) == 1
    assert any("too few" in note for note in f["notes"])
    m["sampling"]["temperatures"]["0.7"] = sampled(0.8, 0.95, (0, 20, 30, 150), (None, 0.9, 0.9, 0.9))
    assert analyse(m)["agreement_calibration"]["verdict"].startswith("did not reproduce: top agreement")


def test_a_chain_the_answers_ignore_is_not_load_bearing():
    m = measurements()
    m["faithfulness"] = faithfulness_probes(changed=0.05, control=0.03, filler=0.7)
    verdict = analyse(m)["faithfulness"]["verdict"]
    assert verdict.startswith("did not reproduce") and "chain - filler" in verdict and "mistake" in verdict


def test_tools_must_beat_the_no_tool_baseline_beyond_paired_noise():
    m = measurements()
    f = analyse(m)["tools"]
    assert f["rows"][0][:5] == ["all", 200, 0.20, 0.40, 0.90] and [r[0] for r in f["rows"][1:]] == ["easy", "hard"]
    assert f["checks"][0]["kind"] == "paired" and "0.900 vs the no-tool baseline 0.200" in f["checks"][0]["detail"]
    m["stages"][5] = tools_stage(accuracy=0.23, no_tool=0.20)  # +0.03 with 10 + 16 discordant problems
    m["stage_pairs"]["tools"] = {"n": 200, "a_only": 10, "b_only": 16}
    f = analyse(m)["tools"]
    assert f["verdict"].startswith("did not reproduce: with the tool after GRPO 0.230 vs the no-tool baseline 0.200")
    del m["stage_pairs"]["tools"]  # no per-problem results: the independent (wider) s.e.
    assert analyse(m)["tools"]["checks"][0]["kind"] == "independent"
    m["stages"] = [s for s in m["stages"] if s["name"] != "tools"]
    assert "tools stage did not run" in analyse(m)["tools"]["verdict"]


def test_stage_pairs_pair_the_tools_stage_with_its_baseline(tmp_path):
    from rlreason.findings.run import stage_pairs

    for name, correct in (("sft", [1, 0, 0, 1]), ("grpo", [1, 1, 0, 1]), ("baseline", [0, 0, 1, 0]),
                          ("tools", [1, 1, 0, 1])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "eval.json").write_text(json.dumps({"correct": correct}))
    stages = [{"name": "sft", "model": str(tmp_path / "sft")}, {"name": "grpo", "model": str(tmp_path / "grpo")},
              {"name": "ppo", "model": str(tmp_path / "missing")},
              {"name": "tools", "model": str(tmp_path / "tools"), "no_tool_model": str(tmp_path / "baseline")}]
    assert stage_pairs(stages) == {"grpo": {"n": 4, "a_only": 0, "b_only": 1},
                                   "tools": {"n": 4, "a_only": 1, "b_only": 3}}


def test_nothing_measured_is_not_reproduced():
    for f in analyse({}).values():
        assert f["verdict"].startswith("did not reproduce"), f


# ---------------------------------------------------------------- the report


def test_report_md_and_json_from_measurements(tmp_path):
    m = measurements()
    m["intermediate"] = intermediate(direct_acc=(0.0, 0.0, 0.0))
    report = write_report(tmp_path, {"seed": 3, "seconds": {"total": 12.0}, "measurements": copy.deepcopy(m)})
    text = (tmp_path / "report.md").read_text()
    assert text.count("\n## ") == 8  # seven findings and the time table
    assert "| 1. Intermediate tokens matter | did not reproduce (failed: direct falls off with steps) |" in text
    assert "| 2. Aggregation beats greedy | reproduced |" in text
    assert "| 1 op, 2 digits | 2.0 | 100 | 0.950 | 0.000 | 0.950 |" in text
    assert "| after SCoRe | 0.720 | 0.800 | 0.080 | 0.090 | 0.010 |" in text
    assert text.count("**Criteria.**") == 7 and text.count("**Verdict: ") == 7
    assert "| 7. Tools extend what a fixed model can compute | reproduced |" in text
    for png in ("intermediate_tokens.png", "accuracy_vs_k_T0.3.png", "accuracy_vs_k_T0.7.png", "agreement.png",
                "stages.png", "tools.png"):
        assert (tmp_path / png).stat().st_size > 1000 and f"]({png})" in text
    again = load_report(tmp_path / "report.json")
    assert again["measurements"] == json.loads(json.dumps(m)) and again["findings"] == report["findings"]
    assert markdown(again) == text
    with pytest.raises(FileNotFoundError, match="demo --full"):
        load_report(tmp_path / "missing.json")


# ---------------------------------------------------------------- finding 1's recipes and rows


def test_shipped_recipes_differ_in_the_solution_format_only(tmp_path):
    recipes = load_recipes(tmp_path, seed=5)
    worked, direct = recipes["worked"], recipes["direct"]
    assert worked.args.task_options["solution_format"] == "worked"
    assert direct.args.task_options["solution_format"] == "direct"
    assert worked.training_args.seed == direct.training_args.seed == 5
    assert worked.training_args.max_steps == direct.training_args.max_steps
    assert str(tmp_path / "direct") == direct.training_args.output_dir


def test_recipes_that_differ_in_more_are_refused():
    worked = {"algorithm": "sft", "max_steps": 10, "task_options": {"solution_format": "worked", "seed": 1}}
    check_controlled(worked, {**worked, "task_options": {"solution_format": "direct", "seed": 1}})
    with pytest.raises(RecipeError, match="max_steps"):
        check_controlled(worked, {**worked, "max_steps": 20, "task_options": {"solution_format": "direct", "seed": 1}})
    with pytest.raises(RecipeError, match="task_options"):
        check_controlled(worked, {**worked, "task_options": {"solution_format": "direct", "seed": 2}})
    with pytest.raises(RecipeError, match="solution_format"):
        check_controlled(worked, worked)


def test_levels_and_per_level_accuracy():
    rows = [{"level": "a", "num_ops": 1, "digits": 2, "solution": "1+2: 1+2=3 -> 3\n#### 3"},
            {"level": "b", "num_ops": 2, "digits": 2, "solution": "x: 1+1=2, 2+2=4 -> 42\ny: 1+0=1 -> 1\n#### 1"},
            {"level": "a", "num_ops": 1, "digits": 2, "solution": "1+4: 1+4=5 -> 5\n#### 5"}]
    levels = levels_table(rows)
    assert [(lv["level"], lv["n"], lv["column_steps"]) for lv in levels] == [("a", 2, 1.0), ("b", 1, 3.0)]
    assert per_level(rows, [True, False, None], levels) == {"a": {"n": 1, "accuracy": 1.0},
                                                            "b": {"n": 1, "accuracy": 0.0}}
    with pytest.raises(RecipeError, match="levels"):
        levels_table([{"solution": "#### 1"}])
    with pytest.raises(ValueError, match="same split"):
        per_level(rows, [True], levels)


def test_cli_passes_output_dir_and_seed(monkeypatch, tmp_path):
    import rlreason.findings
    from rlreason.cli import main

    seen = {}
    monkeypatch.setattr(rlreason.findings, "run_full_demo", lambda out, seed: seen.update(out=out, seed=seed))
    main(["demo", "--full", "--output_dir", str(tmp_path), "--seed", "7"])
    assert seen == {"out": str(tmp_path), "seed": 7}


# ---------------------------------------------------------------- a reduced full demo, twice (slow)

SHORT = {
    "sft": ["max_steps=150", "warmup_steps=10", "learning_rate=3e-3", "max_eval_samples=8",
            "eval_max_completion_length=96", "per_device_train_batch_size=16",  # enough to write answers (finding 6)
            "tiny_model={hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 2}"],
    "grpo": ["max_steps=2", "max_eval_samples=8", "eval_max_completion_length=24", "max_completion_length=24",
             "per_device_train_batch_size=16", "num_generations=4"],
    "ppo": ["max_steps=2", "max_eval_samples=8", "eval_max_completion_length=24", "max_completion_length=24",
            "per_device_train_batch_size=16", "num_generations=4"],
    "star": ["weak_start_steps=2", "iterations=1", "max_train_samples=8", "k=2", "threshold=0.0", "max_steps=2",
             "max_eval_samples=8", "eval_max_completion_length=24", "sampling_max_completion_length=24"],
    "score_sft": ["max_steps=2", "max_eval_samples=8", "eval_max_completion_length=24", "per_device_train_batch_size=8"],
    "score": ["stage_one_steps=1", "max_steps=2", "max_eval_samples=8", "eval_max_completion_length=24",
              "max_completion_length=24", "per_device_train_batch_size=8", "num_generations=2"],
    "worked": ["max_steps=4", "max_eval_samples=8", "per_device_train_batch_size=8", "eval_max_completion_length=32",
               "tiny_model={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2}"],
    "direct": ["max_steps=4", "max_eval_samples=8", "per_device_train_batch_size=8",
               "tiny_model={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2}"],
    **TOOLS_SHORT,
}


def numbers(tree, path=""):
    """Every number in a report's measurements, by path; timings and model folders left out."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key not in ("seconds", "model"):
                yield from numbers(value, f"{path}/{key}")
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from numbers(value, f"{path}/{i}")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, float(tree)


@pytest.mark.slow
def test_full_demo_is_reproducible_with_one_seed(tmp_path, monkeypatch):
    """Two runs with seed 11 give the same numbers (within 0.02); a run with seed 12 does not. Each runs its two
    lanes side by side."""
    from rlreason.findings import run_full_demo

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runs = [run_full_demo(str(tmp_path / name), seed=seed, overrides=SHORT, temperatures=(0.7,), num_samples=4)
            for name, seed in (("a", 11), ("b", 11), ("c", 12))]
    for name in ("a", "b"):
        for f in ("report.json", "report.md", "intermediate_tokens.png", "agreement.png", "stages.png", "tools.png",
                  "own-start.log"):
            assert (tmp_path / name / f).is_file(), f
    first, second, other = (dict(numbers(r["measurements"])) for r in runs)
    assert first.keys() == second.keys() and len(first) > 50
    assert any(first[k] != other[k] for k in first if k in other)  # the seed reaches the runs
    far = {k: (first[k], second[k]) for k in first if not abs(first[k] - second[k]) <= 0.02}
    assert not far, far
    assert {k: f["verdict"] for k, f in runs[0]["findings"].items()} == \
           {k: f["verdict"] for k, f in runs[1]["findings"].items()}
    stages = {s["name"] for s in runs[0]["measurements"]["stages"]}
    assert stages == {"base", "sft", "grpo", "ppo", "star", "score", "tools"}
    assert list(runs[0]["findings"])[-1] == "tools" and "tools" in runs[0]["measurements"]["stage_pairs"]
