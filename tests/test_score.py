"""SCoRe: per-attempt KL weights, stage rewards and the shaped bonus, the KL's direction and gradient, LoRA."""

from pathlib import Path

import pytest
import torch

from rlreason.algorithms.score import stage_kl_weights, stage_rewards
from rlreason.config import load_recipe
from rlreason.losses import get_policy_loss
from rlreason.tracking import read_metrics

from .conftest import ARITH
from .test_grpo import USER_REWARD


def test_stage_one_rewards_attempt_two_only_and_pins_attempt_one():
    r1, r2 = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 1.0])
    t1, t2 = stage_rewards(r1, r2, stage=1, alpha=10.0)
    assert torch.isnan(t1).all() and torch.equal(t2, r2)
    assert stage_kl_weights(1, beta_first=0.1, beta=0.01) == (0.1, 0.01)


def test_stage_two_shaped_bonus():
    r1, r2 = torch.tensor([1.0, 0.0, 1.0, 0.0]), torch.tensor([0.0, 1.0, 1.0, 0.0])
    t1, t2 = stage_rewards(r1, r2, stage=2, alpha=10.0)
    assert torch.equal(t1, r1)
    assert t2.tolist() == [0.0 - 10.0, 1.0 + 10.0, 1.0, 0.0]  # c->i punished, i->c rewarded, rest unchanged
    assert stage_kl_weights(2, beta_first=0.1, beta=0.01) == (0.01, 0.01)


def kl_loss(logps, ref, mask, beta):
    zero_adv = torch.zeros(logps.size(0))
    loss, stats = get_policy_loss("grpo")(logps, logps.detach(), zero_adv, mask, ref_logps=ref, beta=beta)
    return loss


def test_kl_is_zero_with_zero_gradient_at_the_reference():
    ref = torch.log_softmax(torch.randn(4, 6), -1)
    logps = ref.clone().requires_grad_(True)
    mask = torch.ones(4, 6)
    loss = kl_loss(logps, ref, mask, torch.tensor([0.1, 0.1, 0.01, 0.01]))
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-7)
    assert logps.grad.abs().max().item() == pytest.approx(0.0, abs=1e-7)


def test_kl_is_positive_away_from_the_reference_and_pulls_back():
    ref = torch.full((2, 5), -1.0)
    logps = torch.full((2, 5), -0.5, requires_grad=True)  # the policy puts more mass on these tokens
    loss = kl_loss(logps, ref, torch.ones(2, 5), 0.1)
    loss.backward()
    assert loss.item() > 0
    assert (logps.grad > 0).all()  # descending the gradient lowers logps back toward the reference


def test_kl_excludes_masked_tokens_and_weights_attempts_per_row():
    ref = torch.full((2, 6), -1.0)
    logps = torch.full((2, 6), -0.5)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.float)
    base = kl_loss(logps, ref, mask, torch.tensor([0.1, 0.01]))
    moved = ref.clone()
    moved[:, 3:] = -9.0  # prompt/instruction/padding positions: outside the mask
    assert kl_loss(logps, moved, mask, torch.tensor([0.1, 0.01])).item() == pytest.approx(base.item())
    first_only = kl_loss(logps, ref, mask, torch.tensor([0.1, 0.0]))
    second_only = kl_loss(logps, ref, mask, torch.tensor([0.0, 0.01]))
    assert first_only.item() == pytest.approx(10 * second_only.item(), rel=1e-5)  # beta_first pins harder
    per_token = torch.exp(torch.tensor(-0.5)) + 0.5 - 1  # k3 = exp(ref - logp) - (ref - logp) - 1 at one token
    assert second_only.item() == pytest.approx(0.5 * 0.01 * per_token.item(), rel=1e-4)


def test_score_runs_both_stages_with_lora(tiny_model_dir, tmp_path):
    from rlreason.algorithms.score import train

    raw = {"algorithm": "score", "model_name_or_path": tiny_model_dir, "task": "arithmetic", "task_options": ARITH,
           "reward_funcs": ["rewards.math.accuracy", USER_REWARD], "num_generations": 2,
           "per_device_train_batch_size": 4, "max_completion_length": 12, "learning_rate": 1e-3, "beta": 0.01,
           "beta_first": 0.1, "alpha": 10.0, "stage_one_steps": 2, "max_steps": 4, "logging_steps": 1,
           "save_steps": 1000, "report_to": "none", "gradient_checkpointing": False, "max_eval_samples": 4,
           "eval_max_completion_length": 8, "correction_instruction": "Check it.", "use_peft": True, "lora_r": 4,
           "lora_alpha": 8, "lora_target_modules": ["q_proj", "v_proj"], "output_dir": str(tmp_path / "run"),
           "disable_tqdm": True}
    out = train(load_recipe(None, base=raw))
    logged = [m for m in read_metrics(Path(out) / "metrics.jsonl") if "score/stage" in m]
    assert [m["score/stage"] for m in logged] == [1.0, 1.0, 2.0, 2.0]
    assert all(m["kl"] >= 0 for m in logged)
    assert all("monitor/answer_without_reasoning" in m and "monitor/kl" in m for m in logged)  # run monitors
    for key in ("score/accuracy_t1", "score/accuracy_t2", "score/delta_t1_t2", "score/delta_t1_t2_se",
                "score/delta_i_to_c", "score/delta_c_to_i", "score/changed_answer_rate", "score/edit_distance"):
        assert key in logged[0], key
    assert all(0 <= m["score/changed_answer_rate"] <= 1 and m["score/edit_distance"] >= 0 for m in logged)
    import json

    from rlreason.evaluation.two_attempts import TWO_ATTEMPT_KEYS

    stage = json.loads((Path(out) / "stage.json").read_text())
    assert set(stage) == {"before", "after"}
    assert all(set(stage[when]) == set(TWO_ATTEMPT_KEYS) and stage[when]["n"] == 4 for when in stage)
    assert (Path(out) / "adapter_config.json").is_file()
