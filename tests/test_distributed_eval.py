"""Two processes over gloo: evaluation and STaR sampling are split across the ranks and gathered, so each problem
is generated once; the results equal a single process's. The eval CLI and STaR under DDP, SCoRe's before/after
evaluation under ZeRO-2 (where rank 0 used to generate alone while rank 1 waited in a collective).
Each process counts its generate calls (tests/_count_generation.py). Slow: `make test-cluster`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .conftest import ARITH
from .test_distributed import rl_recipe

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
COUNTER = ROOT / "tests" / "_count_generation.py"


def launch_counted(config: str | None, counts: Path, *argv: str, timeout=900) -> list[list]:
    """`rlreason ARGV` under accelerate launch (or in one process when config is None); per-rank generate calls."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "COUNT_DIR": str(counts),
           "PYTHONPATH": str(ROOT)}
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(ROOT / "recipes" / "accelerate" / config)] if config else [sys.executable]
    result = subprocess.run([*launcher, str(COUNTER), *argv], capture_output=True, text=True, env=env, cwd=ROOT,
                            timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return [json.loads(p.read_text()) for p in sorted(counts.glob("rank-*.json"))]


def prompts(calls: list, do_sample: bool | None = None) -> int:
    return sum(n for sampled, n in calls if do_sample is None or sampled == do_sample)


def test_eval_cli_splits_the_problems_across_two_processes(tiny_model_dir, tmp_path):
    argv = ["eval", "--model", tiny_model_dir, "--task", "arithmetic", "--task_options", json.dumps(ARITH),
            "--limit", "10", "--n", "2", "--ks", "1,2", "--max_completion_length", "12", "--cot", "--branches", "2",
            "--two_attempts", "--no_progress"]
    one = launch_counted(None, tmp_path / "one", *argv, "--output_dir", str(tmp_path / "single"))
    two = launch_counted("cpu-ddp.yaml", tmp_path / "two", *argv, "--output_dir", str(tmp_path / "ddp"))
    assert len(one) == 1 and len(two) == 2
    # greedy, attempt 1 and attempt 2: 10 problems each, 5 per rank; sampling: 10 problems, 5 per rank
    assert prompts(one[0], False) == 30 and [prompts(c, False) for c in two] == [15, 15]
    assert prompts(one[0], True) == 10 and [prompts(c, True) for c in two] == [5, 5]
    single = json.loads((tmp_path / "single" / "eval.json").read_text())
    ddp = json.loads((tmp_path / "ddp" / "eval.json").read_text())
    assert ddp["greedy"]["correct"] == single["greedy"]["correct"]  # greedy is the same, however it is split
    assert [s["completion"] for s in ddp["greedy"]["samples"]] == [s["completion"] for s in single["greedy"]["samples"]]
    assert ddp["two_attempts"] == single["two_attempts"]
    assert ddp["cot_decoding"]["accuracy"] == single["cot_decoding"]["accuracy"]
    assert ddp["sampled"]["n"] == single["sampled"]["n"] == 10


def star_raw(model_dir, out):
    return {"algorithm": "star", "model_name_or_path": str(model_dir), "task": "arithmetic",
            "task_options": {**ARITH, "solution_format": "direct"}, "learning_rate": 3e-3,
            "per_device_train_batch_size": 8, "max_steps": 2, "max_length": 64, "gradient_checkpointing": False,
            "logging_steps": 1, "save_strategy": "no", "report_to": "none", "iterations": 1, "k": 2,
            "max_train_samples": 16, "sampling_max_completion_length": 8, "max_eval_samples": 8,
            "eval_max_completion_length": 8, "rationalization": False, "threshold": 0.0, "output_dir": str(out), "seed": 0, "disable_tqdm": True}


@pytest.mark.parametrize("config", ["cpu-ddp.yaml", "cpu-zero3.yaml"])
def test_star_round_samples_each_problem_once(config, tiny_model_dir, tmp_path):
    """Each rank samples 8 of the 16 problems (threshold 0 keeps every non-empty rationale); the round's data
    holds both halves."""
    recipe = tmp_path / "star.yaml"
    out = tmp_path / "run"
    recipe.write_text(yaml.safe_dump(star_raw(tiny_model_dir, out)))
    calls = launch_counted(config, tmp_path / "counts", "train", str(recipe))
    assert len(calls) == 2
    # under ZeRO-3 the sampling copy holds full weights (no zero.Init shards); start and round-1 evaluation: 8 problems each, 4 per rank; sampling: 16 problems, 8 per rank
    assert [prompts(c, False) for c in calls] == [8, 8] and [prompts(c, True) for c in calls] == [8, 8]
    rows = [json.loads(line) for line in (out / "round-1" / "data.jsonl").read_text().splitlines()]
    stats = json.loads((out / "round-1" / "round.json").read_text())
    assert stats["problems"] == 16 and stats["dataset_size"] == len(rows) > 0
    assert len({r["id"] for r in rows}) == stats["solved_by_sampling"]
    assert json.loads((out / "eval.json").read_text())["n"] == 8


def test_score_before_and_after_evaluation_split_under_zero2(tiny_model_dir, tmp_path):
    """Under ZeRO-2 the model is not placed before train(): both ranks still evaluate their halves, and the
    before/after numbers are what one process gives on the same weights."""
    from rlreason.algorithms.common import load_rows
    from rlreason.config import load_recipe
    from rlreason.evaluation import evaluate_two_attempts
    from rlreason.models.loading import load_policy

    out = tmp_path / "run"
    recipe = rl_recipe(tmp_path / "score.yaml", tiny_model_dir, out, "score", stage_one_steps=1,
                       correction_instruction="Check it.", eval_strategy="no")
    calls = launch_counted("cpu-zero2.yaml", tmp_path / "counts", "train", str(recipe))
    args = load_recipe(recipe).args
    n = len(load_rows(args, "test", args.max_eval_samples))
    # before and after two greedy attempts each, then finish_run's greedy accuracy: half the problems per rank
    assert [prompts(c, False) for c in calls] == [2 * n + n // 2] * 2
    reported = json.loads((out / "stage.json").read_text())
    rows = load_rows(args, "test", args.max_eval_samples)
    for when, path in (("before", tiny_model_dir), ("after", str(out))):
        model, tok = load_policy(path)
        again = evaluate_two_attempts(model, tok, rows, reward=args.reward_funcs[0], instruction="Check it.",
                                      max_completion_length=args.eval_max_completion_length, progress=False)
        for key, value in reported[when].items():
            assert again[key] == pytest.approx(value), (when, key, again[key], value)


def test_sft_sampled_first_attempts_split_under_ddp(tiny_model_dir, tmp_path):
    """correction_attempts: sampled under two processes: each rank samples half of the two-turn rows' attempts."""
    recipe = tmp_path / "sft.yaml"
    raw = {"algorithm": "sft", "model_name_or_path": str(tiny_model_dir), "task": "arithmetic", "task_options": ARITH,
           "learning_rate": 1e-3, "per_device_train_batch_size": 8, "max_steps": 2, "max_length": 96,
           "gradient_checkpointing": False, "logging_steps": 1, "save_strategy": "no", "report_to": "none",
           "eval_after_train": False, "max_train_samples": 40, "correction_fraction": 0.5,
           "correction_attempts": "sampled", "correction_max_completion_length": 8, "output_dir": str(tmp_path / "run"),
           "seed": 0, "disable_tqdm": True}
    recipe.write_text(yaml.safe_dump(raw))
    one = launch_counted(None, tmp_path / "one", "train", str(recipe), f"output_dir={tmp_path / 'single'}")
    two = launch_counted("cpu-ddp.yaml", tmp_path / "two", "train", str(recipe))
    total = prompts(one[0], True)
    assert 10 <= total <= 30 and [prompts(c, True) for c in two] == [(total + 1) // 2, (total + 1) // 2]
