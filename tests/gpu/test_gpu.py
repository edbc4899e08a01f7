"""A few steps of every path on the GPUs present, in bf16: evaluation, SFT, GRPO, PPO (value head and separate
critic), SCoRe and one STaR round, with LoRA, on one GPU and under ZeRO-2 across all of them; attention sdpa, plus
flash-attention 2 when it is installed, through the shared prompt cache. Tiny models, so a run takes seconds."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from tests.conftest import ARITH

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.gpu
ATTENTION = ["sdpa"] + (["flash_attention_2"] if importlib.util.find_spec("flash_attn") else [])
GPUS = torch.cuda.device_count()


@pytest.fixture(scope="module")
def gpu_model_dir(tmp_path_factory) -> str:
    """A tiny Llama whose head size (16) flash-attention accepts."""
    from rlreason.models.tiny import build_tiny, task_texts

    path = tmp_path_factory.mktemp("gpu") / "model"
    return build_tiny(str(path), texts=task_texts("arithmetic", **ARITH), hidden_size=64, num_hidden_layers=2,
                      num_attention_heads=4)


def common(model_dir, out, algorithm, **extra) -> dict:
    return {"algorithm": algorithm, "model_name_or_path": model_dir, "task": "arithmetic", "task_options": ARITH,
            "dtype": "bfloat16", "bf16": True, "use_cpu": False, "max_steps": 2, "logging_steps": 1,
            "save_strategy": "no", "report_to": "none", "gradient_checkpointing": False, "max_eval_samples": 16,
            "eval_max_completion_length": 16, "learning_rate": 1e-4, "output_dir": str(out), "seed": 0,
            "disable_tqdm": True, **extra}


LORA = {"use_peft": True, "lora_r": 4, "lora_alpha": 8, "lora_target_modules": ["q_proj", "v_proj"]}
RL = {"reward_funcs": ["rewards.math.accuracy", "tests._rewards:digit_share"], "num_generations": 4,
      "per_device_train_batch_size": 8, "max_completion_length": 16, "beta": 0.04}
RUNS = {
    "sft": dict(per_device_train_batch_size=8, max_length=96, **LORA),
    "grpo": dict(**RL, **LORA),
    "ppo-value-head": dict(**RL, **LORA, num_iterations=2, loss_type="bnpo"),
    "ppo-critic": dict(**RL, value_model="policy", num_iterations=2, loss_type="bnpo"),
    "score": dict(**RL, **LORA, stage_one_steps=1),
    "star": dict(per_device_train_batch_size=8, max_length=64, iterations=1, k=2, max_train_samples=16,
                 sampling_max_completion_length=8, threshold=0.0, **LORA),
}


def train(recipe: dict, tmp_path: Path, launcher: list[str] | None = None, timeout: int = 900) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    cmd = [*(launcher or [sys.executable]), "-m", "rlreason", "train", str(path)]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return Path(recipe["output_dir"])


def algorithm_of(name: str) -> str:
    return name.split("-")[0]


def check_run(out: Path, name: str) -> None:
    assert (out / "config.yaml").is_file() or any(out.iterdir())
    if name != "star":
        assert json.loads((out / "eval.json").read_text())["n"] == 16
    else:
        assert json.loads((out / "round-1" / "round.json").read_text())["problems"] == 16


@pytest.mark.parametrize("name", list(RUNS))
def test_one_gpu_bf16(name, gpu_model_dir, tmp_path):
    out = train(common(gpu_model_dir, tmp_path / "run", algorithm_of(name), **RUNS[name]), tmp_path)
    check_run(out, name)


@pytest.mark.parametrize("name", list(RUNS))
def test_zero2_on_every_gpu(name, gpu_model_dir, tmp_path):
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(ROOT / "recipes" / "accelerate" / "zero2.yaml"), "--num_processes", str(GPUS)]
    out = train(common(gpu_model_dir, tmp_path / "run", algorithm_of(name), **RUNS[name]), tmp_path, launcher)
    check_run(out, name)


def test_full_fine_tuning_in_bf16_keeps_fp32_master_weights(gpu_model_dir, tmp_path):
    """dtype auto (bf16 on this GPU) without DeepSpeed: fp32 weights, bf16 autocast, and lr 1e-6 still moves them."""
    from safetensors.torch import load_file

    out = train(common(gpu_model_dir, tmp_path / "run", "grpo", **{**RL, "dtype": "auto", "learning_rate": 1e-6,
                                                                  "max_steps": 1, "eval_after_train": False}),
                tmp_path)
    saved, initial = load_file(str(out / "model.safetensors")), load_file(str(Path(gpu_model_dir) / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in saved.values())
    moved = sum(int((saved[k] != initial[k]).sum()) for k in initial)
    assert moved / sum(v.numel() for v in initial.values()) > 0.5


def test_eval_cli_runs_on_the_gpu(gpu_model_dir, tmp_path):
    from rlreason.evaluation import load_for_eval, main

    model, _ = load_for_eval(gpu_model_dir)
    assert next(model.parameters()).device.type == "cuda" and next(model.parameters()).dtype == torch.bfloat16
    main(["--model", gpu_model_dir, "--task", "arithmetic", "--task_options", json.dumps(ARITH), "--limit", "16",
          "--n", "4", "--ks", "1,4", "--max_completion_length", "16", "--cot", "--two_attempts",
          "--output_dir", str(tmp_path / "eval"), "--no_progress"])
    assert json.loads((tmp_path / "eval" / "eval.json").read_text())["greedy"]["n"] == 16


@pytest.mark.parametrize("attention", ATTENTION)
def test_shared_prompt_cache_on_the_gpu(attention, gpu_model_dir):
    """With the attention kernel in use, the k samples of a prompt decoded greedily through the shared prompt
    cache equal one another and the uncached decoding, and sampled first tokens follow softmax(logits / T)."""
    from rlreason.models.loading import load_for_generation
    from rlreason.rollout import encode_prompts, generate

    model, tok = load_for_generation(gpu_model_dir, "bfloat16", attention)
    assert model.config._attn_implementation == attention
    prompts = [[{"role": "user", "content": "12+7"}], [{"role": "user", "content": "3-1+40"}]]
    grouped = generate(model, tok, prompts, num_generations=4, do_sample=False, max_completion_length=16)
    single = generate(model, tok, prompts, num_generations=1, do_sample=False, max_completion_length=16)
    for i in range(len(prompts)):
        assert set(grouped.texts[4 * i:4 * i + 4]) == {single.texts[i]}
    n = 4000
    torch.manual_seed(0)
    out = generate(model, tok, prompts[:1], num_generations=n, max_completion_length=1, temperature=1.0)
    ids, mask = encode_prompts(tok, prompts[:1])
    with torch.no_grad():
        logits = model(input_ids=ids.cuda(), attention_mask=mask.cuda()).logits[0, -1].float()
    probs = logits.softmax(-1).cpu()
    counts = torch.bincount(out.completion_ids[:, 0], minlength=probs.numel()).float()
    assert 0.5 * (counts / n - probs).abs().sum().item() < 0.08
