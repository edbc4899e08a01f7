"""The score_baselines demo stage (rlreason/demo_score.py): both baselines start where SCoRe starts, train for as
many steps, are evaluated on SCoRe's problems, and are compared with SCoRe per problem (training replaced by
stand-ins here; the real runs are what README reports)."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

import rlreason.algorithms as algorithms
import rlreason.demo_score as demo_score
from rlreason.demo import run_demo
from rlreason.evaluation.metrics import compare_deltas

SMALL = ["max_eval_samples=2", "eval_max_completion_length=4",
         "tiny_model={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2}"]
KEYS = ("accuracy_t1", "accuracy_t2", "delta_t1_t2", "delta_i_to_c", "delta_c_to_i", "changed_answer_rate", "n")


def two_attempt_result(c1, c2):
    from rlreason.evaluation.metrics import score_two_attempts

    return {**score_two_attempts(c1, c2), "changed_answer_rate": 0.5, "changed_answer_rate_se": 0.25, "edit_distance": 1.0,
            "per_problem": {"id": list(range(len(c1))), "correct_1": list(c1), "correct_2": list(c2)}}


def test_compare_deltas_is_the_paired_difference_of_deltas():
    rng = np.random.default_rng(0)
    a1, a2, b1, b2 = (rng.random(500) < p for p in (0.5, 0.7, 0.5, 0.45))
    a = {"id": list(range(500)), "correct_1": a1.tolist(), "correct_2": a2.tolist()}
    b = {"id": list(range(500)), "correct_1": b1.tolist(), "correct_2": b2.tolist()}
    got = compare_deltas(a, b)
    d = (a2.astype(float) - a1) - (b2.astype(float) - b1)
    assert math.isclose(got["difference"], (a2.mean() - a1.mean()) - (b2.mean() - b1.mean()))
    assert math.isclose(got["se"], d.std(ddof=1) / math.sqrt(500)) and got["n"] == 500
    assert compare_deltas(a, a)["difference"] == 0 and compare_deltas(a, a)["se"] == 0
    with pytest.raises(ValueError, match="same problems"):
        compare_deltas(a, {**b, "id": list(range(1, 501))})


@pytest.fixture
def trained(monkeypatch):
    """Stand-in train functions that record each run's recipe; score runs write SCoRe's two-attempt files."""
    calls = []

    def stand_in(name, real):
        def train(recipe):
            calls.append((name, recipe))
            out = Path(recipe.training_args.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            recipe.save(out)
            (out / "eval.json").write_text(json.dumps({"accuracy": 0.5, "n": 4}))
            if name == "score":
                from rlreason.algorithms.score import write_two_attempts

                naive = recipe.training_args.stage_one_steps == 0
                before = None if not recipe.training_args.evaluate_start else two_attempt_result(
                    [1, 0, 1, 0], [1, 0, 0, 0])
                after = two_attempt_result([1, 0, 1, 0], [1, 0, 1, 0] if naive else [1, 1, 1, 1])
                write_two_attempts(out, {"before": before, "after": after})
            return str(out)
        return lambda: (real()[0], train)

    for name, real in list(algorithms._LOADERS.items()):
        monkeypatch.setitem(algorithms._LOADERS, name, stand_in(name, real))
    evaluated = []

    def evaluate(path, recipe):
        evaluated.append(path)
        return two_attempt_result([1, 0, 1, 0], [1, 1, 0, 0])

    monkeypatch.setattr(demo_score, "evaluate_attempts", evaluate)
    return calls, evaluated


def test_score_baselines_share_scores_start_steps_and_problems(tmp_path, trained):
    calls, evaluated = trained
    stages = run_demo("score,score_baselines", str(tmp_path), overrides={"sft": SMALL, "score": ["max_steps=7"]})
    stages = stages["stages"]
    start = str(tmp_path / "score_sft")
    assert [s["name"] for s in stages] == ["base", "sft", "score", "score_baselines"]
    assert [(n, r.args.model_name_or_path) for n, r in calls] == [
        ("sft", str(tmp_path / "base-model")), ("sft", str(tmp_path / "sft")),  # the demo SFT, then SCoRe's start once
        ("score", start), ("sft", start), ("score", start)]  # SCoRe, sft_corrections, naive_multi_turn
    score, corrections, naive = (r for _, r in calls[2:])
    assert corrections.training_args.max_steps == naive.training_args.max_steps == score.training_args.max_steps == 7
    c = corrections.training_args
    assert (c.correction_attempts, c.correction_targets) == ("sampled", "sampled")
    assert c.correction_max_completion_length == score.training_args.max_completion_length
    # the start's own SFT recipe otherwise, with about as many two-turn rows as SCoRe samples first attempts
    start_sft = calls[1][1].training_args
    assert (c.correction_fraction, c.learning_rate) == (start_sft.correction_fraction, start_sft.learning_rate)
    assert corrections.args.max_train_samples * c.correction_fraction == pytest.approx(
        7 * score.training_args.per_device_train_batch_size, rel=0.01)
    n = naive.training_args
    assert (n.stage_one_steps, n.alpha, n.beta_first, n.evaluate_start) == (0, 0.0, n.beta, False)
    assert naive.args.task_options == score.args.task_options and naive.args.max_eval_samples == score.args.max_eval_samples
    # SCoRe's own before is reused (same start); only the SFT baseline is evaluated by the stage itself
    assert evaluated == [str(tmp_path / "score_baselines" / "sft_corrections")]
    report = json.loads((tmp_path / "report.json").read_text())["stages"]
    baselines = report[3]
    for key in ("before", "sft_corrections", "naive_multi_turn"):
        assert set(KEYS) <= set(baselines[key])
    for key in ("before", "after"):
        assert set(KEYS) <= set(report[2][key])
    # SCoRe fixes problems 1 and 3 (delta +0.5); sft_corrections fixes 1 and breaks 2 (0); naive changes nothing (0)
    assert baselines["versus_score"]["sft_corrections"]["difference"] == pytest.approx(0.5)
    assert baselines["versus_score"]["naive_multi_turn"]["difference"] == pytest.approx(0.5)
    md = (tmp_path / "report.md").read_text()
    assert "| SCoRe |" in md and "| naive_multi_turn |" in md and "SCoRe's delta minus sft_corrections's" in md


def test_score_baselines_alone_evaluate_the_start_themselves(tmp_path, trained):
    calls, evaluated = trained
    stages = run_demo("score_baselines", str(tmp_path), overrides={"sft": SMALL})["stages"]
    start = str(tmp_path / "score_sft")
    assert evaluated == [start, str(tmp_path / "score_baselines" / "sft_corrections")]
    assert "versus_score" not in stages[-1] and stages[-1]["before"]["n"] == 4
