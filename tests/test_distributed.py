"""Two processes over gloo: SFT, GRPO, PPO and SCoRe under DDP, ZeRO-2 and ZeRO-3 (GRPO and PPO with tools too),
launched with `accelerate launch`.

Each run's saved model must be the model the processes trained: it reloads with from_pretrained (peft
for an adapter), its eval loss (SFT) or greedy answers (GRPO, PPO) match what the training process
reported, and under DeepSpeed its weights equal the fp32 weights rebuilt from the ranks' shards.
Slow (DeepSpeed compiles one C++ op on its first use, ~40 s): `make test-slow`."""

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
import torch
import yaml

from rlreason.tracking import read_metrics

from .conftest import ARITH
from .test_grpo import USER_REWARD  # digit_share: a reward that varies within a group, so weights move
from .test_tool_rollout import RANDOM_CALLS, TOOL_METRICS  # tool settings under which a random model calls often

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
LORA = {"use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_target_modules": ["q_proj", "v_proj"]}


def launch(config: str, recipe: Path, *overrides: str, timeout=900, env=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", **(env or {})}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "recipes" / "accelerate" / config), "-m", "rlreason", "train", str(recipe), *overrides]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return result


def write_recipe(path: Path, **raw) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def saved_weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    adapter = out / "adapter_model.safetensors"
    return load_file(str(adapter if adapter.is_file() else out / "model.safetensors"))


def check_against_shards(out: Path, config: str, step: int) -> dict[str, torch.Tensor]:
    """Under DeepSpeed, the saved weights equal the fp32 weights rebuilt from every rank's checkpoint shards."""
    saved = saved_weights(out)
    if "zero" not in config:
        return saved
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    rebuilt = get_fp32_state_dict_from_zero_checkpoint(str(out / f"checkpoint-{step}"))
    rebuilt = {k.replace(".default.", "."): v for k, v in rebuilt.items()}  # peft's adapter name, as saved
    missing = [k for k in saved if k not in rebuilt]
    assert not missing, (missing, sorted(rebuilt)[:8])
    for key, value in saved.items():
        assert torch.equal(value.float(), rebuilt[key].float()), key
    return saved


def greedy_eval_of(model_dir: Path, recipe: Path) -> dict:
    """evaluate_after_train's evaluation, redone in this process on the reloaded model (adapter unmerged)."""
    from rlreason.algorithms.common import load_rows
    from rlreason.config import load_recipe
    from rlreason.evaluation import evaluate_greedy
    from rlreason.models.loading import load_model, load_tokenizer

    args = load_recipe(recipe).args
    model = load_model(str(model_dir), merge_adapter=False).eval()
    rows = load_rows(args, args.dataset_test_split, args.max_eval_samples)
    result = evaluate_greedy(model, load_tokenizer(str(model_dir)), rows, reward=args.reward_funcs[0],
                             max_completion_length=args.eval_max_completion_length, progress=False)
    return json.loads(json.dumps(result))


def check_reload(out: Path, recipe: Path) -> None:
    """The reloaded model answers the held-out problems exactly as the training process did at its end."""
    reported = json.loads((out / "eval.json").read_text())
    during = [m["eval_accuracy"] for m in read_metrics(out / "metrics.jsonl") if "eval_accuracy" in m]
    assert during == [reported["accuracy"]]  # the trainer's own evaluation at the last step, on the same rows
    again = greedy_eval_of(out, recipe)
    assert again["n"] == reported["n"] > 0
    assert [s["completion"] for s in again["samples"]] == [s["completion"] for s in reported["samples"]]
    assert again["correct"] == reported["correct"]
    assert again["mean_completion_chars"] == pytest.approx(reported["mean_completion_chars"])


def eval_loss_of(model_dir: str, recipe: Path) -> float:
    """eval_loss of the saved model on the same eval rows, in this (single) process."""
    from trl import SFTTrainer

    from rlreason.algorithms.common import load_rows
    from rlreason.algorithms.sft import to_prompt_completion
    from rlreason.config import load_recipe
    from rlreason.models.loading import load_policy

    rec = load_recipe(recipe, [f"model_name_or_path={model_dir}", f"output_dir={Path(model_dir) / 'reeval'}"])
    model, tok = load_policy(model_dir)
    rows = to_prompt_completion(load_rows(rec.args, "test", rec.args.max_eval_samples))
    trainer = SFTTrainer(model=model, args=rec.training_args, train_dataset=rows, eval_dataset=rows,
                         processing_class=tok)
    return trainer.evaluate()["eval_loss"]


@pytest.mark.parametrize("config", ["cpu-ddp.yaml", "cpu-zero2.yaml", "cpu-zero3.yaml"])
def test_sft_two_processes(config, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    recipe = write_recipe(
        tmp_path / "sft.yaml", algorithm="sft", model_name_or_path=tiny_model_dir, task="arithmetic",
        task_options=ARITH, max_eval_samples=16, learning_rate=3e-3, per_device_train_batch_size=16,
        per_device_eval_batch_size=1, max_steps=6, max_length=96, gradient_checkpointing=False, logging_steps=2,
        eval_strategy="steps", eval_steps=6, save_steps=6, report_to="none", eval_after_train=False,
        output_dir=str(out))
    launch(config, recipe)
    reported = [m["eval_loss"] for m in read_metrics(out / "metrics.jsonl") if "eval_loss" in m]
    assert reported, read_metrics(out / "metrics.jsonl")
    check_against_shards(out, config, step=6)
    assert eval_loss_of(str(out), recipe) == pytest.approx(reported[-1], rel=1e-4)


def rl_recipe(path: Path, model_dir: str, out: Path, algorithm: str, **extra) -> Path:
    return write_recipe(path, **{
        "algorithm": algorithm, "model_name_or_path": model_dir, "task": "arithmetic", "task_options": ARITH,
        "reward_funcs": ["rewards.math.accuracy", USER_REWARD], "num_generations": 4,
        "per_device_train_batch_size": 8, "max_completion_length": 24, "learning_rate": 1e-3, "beta": 0.04,
        "max_steps": 3, "logging_steps": 1, "save_steps": 3, "report_to": "none", "gradient_checkpointing": False,
        "max_eval_samples": 8, "eval_max_completion_length": 24, "eval_strategy": "steps", "eval_steps": 3,
        "output_dir": str(out), **extra})


@pytest.mark.parametrize("config,lora", [("cpu-ddp.yaml", False), ("cpu-zero2.yaml", False),
                                         ("cpu-zero3.yaml", False), ("cpu-zero3.yaml", True)],
                         ids=["ddp", "zero2", "zero3", "zero3-lora"])
def test_grpo_two_processes(config, lora, tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    recipe = rl_recipe(tmp_path / "grpo.yaml", tiny_model_dir, out, "grpo", **(LORA if lora else {}))
    launch(config, recipe)
    steps = [m["step"] for m in read_metrics(out / "metrics.jsonl") if "reward" in m]
    assert steps == [1, 2, 3]
    saved = check_against_shards(out, config, step=3)
    if lora:
        assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
        trained = [k for k in saved if "lora_B" in k]  # lora_B starts at zero: nonzero means trained and saved
        assert trained and all(saved[k].abs().max() > 0 for k in trained), sorted(saved)
    else:
        from safetensors.torch import load_file

        initial = load_file(str(Path(tiny_model_dir) / "model.safetensors"))
        assert any(not torch.equal(saved[k], initial[k]) for k in initial)
    check_reload(out, recipe)


def test_ppo_zero2_two_processes(tiny_model_dir, tmp_path):
    """PPO under ZeRO-2: the value head trains on both ranks, is saved with the policy and reloads with it."""
    from rlreason.models.loading import load_policy
    from rlreason.models.value_head import attach_value_head

    out = tmp_path / "run"
    recipe = rl_recipe(tmp_path / "ppo.yaml", tiny_model_dir, out, "ppo", kl_in_reward=True, num_iterations=2,
                       loss_type="bnpo", num_generations=2)
    launch("cpu-zero2.yaml", recipe)
    logged = read_metrics(out / "metrics.jsonl")
    assert [m["step"] for m in logged if "value/loss" in m] == [1, 2, 3]
    saved = check_against_shards(out, "cpu-zero2.yaml", step=3)
    assert {"v_head.weight", "v_head.bias"} <= set(saved), sorted(saved)
    model, _ = load_policy(str(out))  # from_pretrained: the policy without its head
    head = attach_value_head(model)
    missing, unexpected = model.load_state_dict(saved, strict=False)
    assert not unexpected and all("lm_head" in k for k in missing), (missing, unexpected)
    assert torch.equal(head.weight, saved["v_head.weight"])
    check_reload(out, recipe)


def test_score_zero3_two_processes(tiny_model_dir, tmp_path):
    """SCoRe under ZeRO-3: both stages train on gathered weights, and the before/after two-attempt evaluation
    (every rank, weights gathered) is what the saved model gives in a single process."""
    from rlreason.algorithms.common import load_rows
    from rlreason.config import load_recipe
    from rlreason.evaluation import evaluate_two_attempts
    from rlreason.models.loading import load_policy

    out = tmp_path / "run"
    recipe = rl_recipe(tmp_path / "score.yaml", tiny_model_dir, out, "score", stage_one_steps=2,
                       correction_instruction="Check it.")
    launch("cpu-zero3.yaml", recipe)
    stages = [m["score/stage"] for m in read_metrics(out / "metrics.jsonl") if "score/stage" in m]
    assert stages == [1.0, 1.0, 2.0]
    check_against_shards(out, "cpu-zero3.yaml", step=3)
    reported = json.loads((out / "stage.json").read_text())
    args = load_recipe(recipe).args
    model, tok = load_policy(str(out))
    again = evaluate_two_attempts(model, tok, load_rows(args, "test", args.max_eval_samples), reward=args.reward_funcs[0],
                                  max_completion_length=args.eval_max_completion_length, instruction="Check it.",
                                  progress=False)
    for key, value in reported["after"].items():
        assert again[key] == pytest.approx(value), (key, again[key], value)


# the tiny random model calls the tool in about half its completions (an "a", then one of b..h): every step has calls
TOOLS = {"tools": ["python"], "tool_call_open": RANDOM_CALLS["tool_call_open"],
         "tool_stop_strings": list(RANDOM_CALLS["tool_stop_strings"]), "max_tool_output_tokens": 8,
         "tool_timeout": 2.0, "max_completion_length": 40}


def tool_metrics_of(counts: list[dict]) -> dict[str, float]:
    """The tools/* metrics of the rollouts whose RLREASON_TOOL_LOG rows are `counts` (one per rank)."""
    def total(key):
        return sum(r[key] for r in counts)
    rows, calls = total("rows"), total("tool_calls")
    return {"tools/calls_per_completion": calls / rows, "tools/errors_per_completion": total("tool_errors") / rows,
            "tools/timeouts_per_completion": total("tool_timeouts") / rows,
            "tools/error_rate": total("tool_errors") / max(calls, 1),
            "tools/timeout_rate": total("tool_timeouts") / max(calls, 1), "tools/turns": total("turns") / rows,
            "tools/observation_share": total("observation_tokens") / total("tokens")}


def check_tool_metrics_over_ranks(logged: list[dict], counts_file: Path) -> None:
    """The tools/* metrics of each step are those of both ranks' rollouts together (RLREASON_TOOL_LOG: each rank's
    own counts), every step made calls, and rank 0's rollouts alone give other values at some step (so metrics of
    one rank would not pass)."""
    ranks: dict[int, dict[int, dict]] = defaultdict(dict)
    for line in counts_file.read_text().splitlines():
        row = json.loads(line)
        ranks[row["step"]][row["rank"]] = row
    assert sorted(ranks) == [1, 2, 3] and all(sorted(r) == [0, 1] for r in ranks.values()), dict(ranks)
    assert [m["step"] for m in logged] == [1, 2, 3]
    for m in logged:
        assert all(k in m for k in TOOL_METRICS), sorted(m)
        expected = tool_metrics_of(list(ranks[m["step"]].values()))
        assert {k: m[k] for k in expected} == pytest.approx(expected), (m["step"], ranks[m["step"]])
        assert expected["tools/calls_per_completion"] > 0 and expected["tools/observation_share"] > 0
    assert any(tool_metrics_of([r[0]]) != pytest.approx(tool_metrics_of([r[0], r[1]])) for r in ranks.values())


@pytest.mark.parametrize("config,lora", [("cpu-zero2.yaml", False), ("cpu-zero3.yaml", False),
                                         ("cpu-zero3.yaml", True)], ids=["zero2", "zero3", "zero3-lora"])
def test_grpo_with_tools_two_processes(config, lora, tiny_model_dir, tmp_path):
    """GRPO with the Python tool on two ranks whose trajectories take different numbers of turns and calls:
    the run ends, the tool metrics cover both ranks, the saved weights are the shards' and reload."""
    out, counts = tmp_path / "run", tmp_path / "tool_counts.jsonl"
    recipe = rl_recipe(tmp_path / "grpo.yaml", tiny_model_dir, out, "grpo", **TOOLS, **(LORA if lora else {}))
    launch(config, recipe, env={"RLREASON_TOOL_LOG": str(counts)})
    check_tool_metrics_over_ranks([m for m in read_metrics(out / "metrics.jsonl") if "reward" in m], counts)
    saved = check_against_shards(out, config, step=3)
    if lora:
        trained = [k for k in saved if "lora_B" in k]
        assert trained and all(saved[k].abs().max() > 0 for k in trained), sorted(saved)
    check_reload(out, recipe)


def test_ppo_with_tools_zero2_two_processes(tiny_model_dir, tmp_path):
    """PPO with the Python tool under ZeRO-2: GAE over trajectories with observation holes, on both ranks."""
    out, counts = tmp_path / "run", tmp_path / "tool_counts.jsonl"
    recipe = rl_recipe(tmp_path / "ppo.yaml", tiny_model_dir, out, "ppo", kl_in_reward=True, loss_type="bnpo",
                       num_generations=2, **TOOLS)
    launch("cpu-zero2.yaml", recipe, env={"RLREASON_TOOL_LOG": str(counts)})
    logged = [m for m in read_metrics(out / "metrics.jsonl") if "reward" in m]
    assert all("value/loss" in m for m in logged), logged
    check_tool_metrics_over_ranks(logged, counts)
    assert {"v_head.weight", "v_head.bias"} <= set(check_against_shards(out, "cpu-zero2.yaml", step=3))
    check_reload(out, recipe)
