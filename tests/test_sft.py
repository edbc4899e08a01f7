"""The sft recipe on TRL's SFTTrainer: the loss falls (with and without LoRA), resume, wandb offline, metrics."""

import json
import os
from pathlib import Path

import pytest

from rlreason.algorithms.sft import train
from rlreason.config import load_recipe
from rlreason.tracking import read_metrics, read_wandb_history

from .conftest import ARITH


def sft_recipe(model_dir, out, **overrides):
    raw = {"algorithm": "sft", "model_name_or_path": model_dir, "task": "arithmetic", "task_options": ARITH,
           "learning_rate": 3e-3, "per_device_train_batch_size": 32, "max_steps": 40, "max_length": 96,
           "gradient_checkpointing": False, "logging_steps": 5, "save_steps": 1000, "report_to": "none",
           "eval_after_train": False, "output_dir": str(out), "seed": 0, **overrides}
    return load_recipe(None, base=raw)


def losses(out):
    return [m["loss"] for m in read_metrics(Path(out) / "metrics.jsonl") if "loss" in m]


@pytest.fixture(scope="module")
def full_sft_run(tiny_model_dir, tmp_path_factory):
    return train(sft_recipe(tiny_model_dir, tmp_path_factory.mktemp("sft") / "run"))


def test_sft_lowers_the_loss(full_sft_run):
    curve = losses(full_sft_run)
    assert len(curve) >= 6
    assert curve[-1] < 0.7 * curve[0], curve
    assert (Path(full_sft_run) / "config.yaml").is_file() and (Path(full_sft_run) / "config.json").is_file()


def test_sft_with_lora_lowers_the_loss(full_sft_run, tmp_path):
    """LoRA on top of a model that already speaks the format (as LoRA is used: on a pretrained model)."""
    out = train(sft_recipe(full_sft_run, tmp_path / "lora", use_peft=True, lora_r=16, lora_alpha=32,
                           lora_dropout=0.0, learning_rate=1e-2, max_steps=40))
    curve = losses(out)
    assert curve[-1] < 0.9 * curve[0], curve
    assert (Path(out) / "adapter_config.json").is_file()
    assert not (Path(out) / "model.safetensors").exists()  # only the adapter is saved


def test_sft_resumes_from_its_checkpoint(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    train(sft_recipe(tiny_model_dir, out, max_steps=12, save_steps=6, logging_steps=2))
    # pretend the run died after step 6: keep only the first checkpoint and its metrics
    import shutil

    shutil.rmtree(out / "checkpoint-12")
    (out / "metrics.jsonl").unlink()
    train(sft_recipe(tiny_model_dir, out, max_steps=12, save_steps=6, logging_steps=2,
                     resume_from_checkpoint="true"))
    steps = [m["step"] for m in read_metrics(out / "metrics.jsonl") if "loss" in m]
    assert steps and min(steps) > 6 and max(steps) == 12, steps  # continued from step 6, did not redo it
    state = json.loads((out / "checkpoint-12" / "trainer_state.json").read_text())
    assert state["global_step"] == 12


def test_wandb_offline_run_holds_the_metrics(tiny_model_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_DIR", raising=False)
    monkeypatch.setenv("WANDB_PROJECT", "rlreason-tests")
    out = train(sft_recipe(tiny_model_dir, tmp_path / "run", max_steps=10, logging_steps=2, report_to="wandb"))
    assert os.environ.get("WANDB_MODE") == "offline"
    runs = list((Path(out) / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list((Path(out) / "wandb").iterdir())
    history = read_wandb_history(runs[0])
    logged = [row for row in history if "train/loss" in row]
    assert len(logged) == 5 and logged[-1]["train/global_step"] == 10, history
    jsonl = losses(out)
    assert [round(r["train/loss"], 4) for r in logged] == [round(v, 4) for v in jsonl]
    assert f"wandb sync {runs[0]}" in capsys.readouterr().err


def test_correction_turns_keep_the_target_and_change_at_most_one_digit():
    import random

    from datasets import Dataset

    from rlreason.algorithms.sft import change_one_digit, with_correction_turns

    solutions = [f"{i}+{i + 7}: {i}+{i + 7}={2 * i + 7}\n#### {2 * i + 7}" for i in range(400)]
    rows = Dataset.from_list([{"prompt": [{"role": "user", "content": f"What is {i}+{i + 7}?"}],
                               "completion": [{"role": "assistant", "content": s}]} for i, s in enumerate(solutions)])
    out = with_correction_turns(rows, 0.25, "Check it.", seed=3)
    two_turn = [r for r in out if len(r["prompt"]) == 3]
    assert 70 <= len(two_turn) <= 130  # ~25% of 400
    changed = 0
    for row in out:
        solution = row["completion"][0]["content"]
        assert solution in solutions  # the target is always the worked solution itself
        if len(row["prompt"]) == 3:
            user, first, instruction = row["prompt"]
            assert (user["role"], first["role"], instruction) == ("user", "assistant", {"role": "user", "content": "Check it."})
            diff = [(a, b) for a, b in zip(first["content"], solution) if a != b]
            assert len(first["content"]) == len(solution) and len(diff) <= 1
            assert all(a.isdigit() and b.isdigit() for a, b in diff)
            changed += len(diff)
    assert 0.3 * len(two_turn) <= changed <= 0.7 * len(two_turn)  # half the first attempts carry an error
    assert with_correction_turns(rows, 0.0, "x") is rows
    assert change_one_digit("no digits", random.Random(0)) == "no digits"


def test_correction_fraction_out_of_range_is_a_clear_error(tiny_model_dir, tmp_path):
    from rlreason.config import RecipeError

    with pytest.raises((RecipeError, ValueError), match="correction_fraction must be between 0 and 1"):
        load_recipe(None, base={"algorithm": "sft", "model_name_or_path": tiny_model_dir, "correction_fraction": 1.5,
                                "output_dir": str(tmp_path), "use_cpu": True, "bf16": False})


def test_sampled_correction_attempts_are_the_start_models_own(tiny_model_dir, tmp_path):
    from datasets import Dataset

    from rlreason.algorithms.sft import attempt_sampler, with_correction_turns
    from rlreason.models.loading import load_policy
    from rlreason.rollout import generate

    model, tok = load_policy(tiny_model_dir)
    rows = Dataset.from_list([{"prompt": [{"role": "user", "content": f"What is {i}+{i + 3}?"}],
                               "completion": [{"role": "assistant", "content": f"#### {2 * i + 3}"}]} for i in range(40)])
    sampler = attempt_sampler(model, tok, temperature=1.0, max_completion_length=12, seed=5, batch_size=8)
    out = with_correction_turns(rows, 0.5, "Check it.", seed=1, sample_attempts=sampler)
    two_turn = [r for r in out if len(r["prompt"]) == 3]
    assert 10 <= len(two_turn) <= 30
    firsts = [r["prompt"][1]["content"] for r in two_turn]
    # exactly what the model samples for those prompts with the same seed, batch by batch
    import torch

    torch.manual_seed(5)
    prompts = [r["prompt"][:1] for r in two_turn]
    expected = [t for s in range(0, len(prompts), 8)
                for t in generate(model, tok, prompts[s:s + 8], max_completion_length=12, temperature=1.0).texts]
    assert firsts == expected
    assert all(r["completion"] == rows[i]["completion"] for i, r in enumerate(out))  # targets untouched
    # the recipe path: sft with sampled attempts trains and refuses an unknown attempt kind in one line
    from rlreason.config import RecipeError

    run = train(sft_recipe(tiny_model_dir, tmp_path / "run", max_steps=4, correction_fraction=0.5,
                           correction_attempts="sampled", correction_max_completion_length=16, max_train_samples=64,
                           logging_steps=1))
    assert losses(run)
    with pytest.raises((RecipeError, ValueError), match="correction_attempts must be one of corrupted, sampled"):
        sft_recipe(tiny_model_dir, tmp_path / "bad", correction_attempts="model")


def test_mask_tool_observations_takes_the_loss_off_the_tool_output_only(tmp_path):
    """With mask_tool_observations the labels of each observation (template and output) are -100; the call and
    the answer after it keep their labels; rows without a call are untouched."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from rlreason.algorithms.sft import SFTArgs, to_prompt_completion, without_observation_loss
    from rlreason.models.tiny import build_tiny, task_texts
    from rlreason.tasks import load_task

    options = dict(num_ops=2, digits=3, tool_fraction=0.5, solution_format="direct")
    path = build_tiny(str(tmp_path / "m"), texts=task_texts("arithmetic", **options), hidden_size=32,
                      num_hidden_layers=1, num_attention_heads=2)
    rows = load_task("arithmetic", "train", num_train=8, num_test=2, **options)
    tok = AutoTokenizer.from_pretrained(path)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(path), processing_class=tok,
                         args=SFTArgs(output_dir=str(tmp_path / "o"), use_cpu=True, bf16=False, report_to="none"),
                         train_dataset=to_prompt_completion(Dataset.from_list(rows)))
    masked = without_observation_loss(trainer.train_dataset, tok)
    for row, before, after in zip(rows, trainer.train_dataset, masked):
        trained = tok.decode([t for t, label in zip(after["input_ids"], after["labels"]) if label != -100])
        if "```python" in row["solution"]:
            call = row["solution"].split("\n```output")[0]
            assert trained == f"{call}#### {row['answer']}{tok.eos_token}", trained
        else:
            assert after["labels"] == before["labels"]


def test_own_corrections_keep_only_correct_second_attempts_as_targets():
    """correction_targets: sampled (SCoRe's sft_corrections baseline): a two-turn row's target becomes the model's own
    second attempt, and the row is kept only where that attempt is correct; one-turn rows stay as they were."""
    from datasets import Dataset

    from rlreason.algorithms.sft import with_own_corrections

    def row(i, first=None):
        prompt = [{"role": "user", "content": f"What is {i}+1?"}]
        if first is not None:
            prompt += [{"role": "assistant", "content": first}, {"role": "user", "content": "Check it."}]
        return {"prompt": prompt, "completion": [{"role": "assistant", "content": f"#### {i + 1}"}], "answer": str(i + 1)}

    # rows 0-3 two-turn: first attempts wrong, right, wrong, right; row 4 one-turn
    rows = Dataset.from_list([row(0, "#### 7"), row(1, "#### 2"), row(2, "#### 9"), row(3, "#### 4"), row(4)])
    seen = []

    def corrections(prompts, firsts):  # fixes row 0, keeps row 1, fails row 2, breaks row 3
        seen.append((prompts, firsts))
        return ["#### 1", "#### 2", "#### 5", "#### 8"]

    def reward(prompts, completions, answer, **_):
        return [float(c.split()[-1] == a) for c, a in zip(completions, answer)]

    out, counts = with_own_corrections(rows, corrections, reward)
    assert seen[0][0] == [[{"role": "user", "content": f"What is {i}+1?"}] for i in range(4)]  # the original prompts
    assert seen[0][1] == ["#### 7", "#### 2", "#### 9", "#### 4"]
    assert counts == {"two_turn": 4, "kept": 2, "kept_fixes": 1, "kept_copies": 1}
    out = list(out)
    assert [r["completion"][0]["content"] for r in out] == ["#### 1", "#### 2", "#### 5"]  # rows 0, 1 and 4
    assert [len(r["prompt"]) for r in out] == [3, 3, 1] and "answer" not in out[0]


def test_own_correction_targets_need_sampled_first_attempts(tiny_model_dir, tmp_path):
    from rlreason.config import RecipeError

    with pytest.raises((RecipeError, ValueError), match="correction_targets: sampled needs correction_attempts: sampled"):
        sft_recipe(tiny_model_dir, tmp_path / "a", correction_fraction=1.0, correction_targets="sampled")
    with pytest.raises((RecipeError, ValueError), match="correction_targets must be one of solution, sampled"):
        sft_recipe(tiny_model_dir, tmp_path / "b", correction_fraction=1.0, correction_targets="gold")


def test_own_corrections_through_the_recipe_sample_both_turns_and_say_when_none_is_kept(tiny_model_dir, tmp_path):
    """The recipe path samples the start model's first and second attempts; an untrained model gets none right, so
    no two-turn row survives the filter, and the run says so in one line instead of training on nothing."""
    import rlreason.algorithms.sft as sft

    calls = []
    original = sft.with_own_corrections

    def recording(rows, sample_corrections, reward):
        def sample(prompts, firsts):
            seconds = sample_corrections(prompts, firsts)
            calls.append((len(prompts), len(firsts), len(seconds)))
            return seconds
        return original(rows, sample, reward)

    sft.with_own_corrections = recording
    try:
        with pytest.raises(ValueError, match="correction_targets: sampled kept no two-turn row"):
            train(sft_recipe(tiny_model_dir, tmp_path / "run", max_steps=2, correction_fraction=1.0,
                             correction_attempts="sampled", correction_targets="sampled",
                             correction_max_completion_length=8, max_train_samples=12))
    finally:
        sft.with_own_corrections = original
    assert calls == [(12, 12, 12)]  # every row two-turn, one sampled correction each
