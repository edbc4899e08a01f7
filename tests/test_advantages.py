"""Advantage estimators against hand-computed values (zero-variance groups, unscored rows, GAE by hand)."""

import math

import pytest
import torch

from rlreason.advantages import ADVANTAGES, get_advantage, register_advantage

REWARDS = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # group 2 has zero variance


def close(a, b):
    torch.testing.assert_close(a, torch.tensor(b, dtype=a.dtype), rtol=1e-6, atol=1e-6)


def test_grpo_group_scaling_by_hand():
    adv, stats = get_advantage("grpo")(REWARDS, 4, scale_rewards="group")
    a = 0.5 / (math.sqrt(1 / 3) + 1e-4)  # Bessel std of [1,0,0,1] is sqrt(1/3); TRL's eps is 1e-4
    close(adv, [a, -a, -a, a, 0, 0, 0, 0])
    assert stats["frac_zero_std"] == 0.5


def test_grpo_batch_and_no_scaling_by_hand():
    adv, _ = get_advantage("grpo")(REWARDS, 4, scale_rewards="batch")
    batch_std = math.sqrt((6 * 0.25 ** 2 + 2 * 0.75 ** 2) / 7)
    a = 0.5 / (batch_std + 1e-4)
    close(adv, [a, -a, -a, a, 0, 0, 0, 0])
    adv, _ = get_advantage("grpo")(REWARDS, 4, scale_rewards="none")
    close(adv, [0.5, -0.5, -0.5, 0.5, 0, 0, 0, 0])


def test_dr_grpo_is_mean_only():
    adv, stats = get_advantage("dr_grpo")(torch.tensor([3.0, 1.0, 2.0, 5.0, 5.0, 5.0]), 3)
    close(adv, [1, -1, 0, 0, 0, 0])
    assert stats["frac_zero_std"] == 0.5
    with pytest.raises(ValueError, match="scale_rewards must be 'none'"):
        get_advantage("dr_grpo")(REWARDS, 4, scale_rewards="group")


def test_rloo_leave_one_out_by_hand():
    adv, stats = get_advantage("rloo")(torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0]), 4)
    close(adv, [2 / 3, -2 / 3, -2 / 3, 2 / 3, 0, 0, 0, 0])  # 1 - mean(0,0,1) = 2/3
    assert stats["frac_zero_std"] == 0.5
    adv, _ = get_advantage("rloo")(torch.tensor([3.0, 0.0, 0.0]), 3)
    close(adv, [3.0, -1.5, -1.5])
    with pytest.raises(ValueError, match="at least 2"):
        get_advantage("rloo")(torch.tensor([1.0, 0.0]), 1)


def test_unscored_rewards_are_left_out_and_get_zero():
    rewards = torch.tensor([1.0, float("nan"), 0.0, 0.5, float("nan"), float("nan")])
    adv, stats = get_advantage("grpo")(rewards, 2, scale_rewards="group")
    a = 0.25 / (math.sqrt(0.125) + 1e-4)
    close(adv, [0, 0, -a, a, 0, 0])  # a group with one scored member carries no signal
    assert stats["frac_zero_std"] == pytest.approx(2 / 3)
    adv, _ = get_advantage("rloo")(torch.tensor([1.0, float("nan"), 0.0, 0.0]), 4)
    close(adv, [1.0, 0.0, -0.5, -0.5])
    assert not torch.isnan(adv).any()


def test_zero_variance_everywhere_gives_zero():
    for name in ("grpo", "dr_grpo", "rloo"):
        adv, stats = get_advantage(name)(torch.full((6,), 0.7), 3)
        assert torch.equal(adv, torch.zeros(6)) and stats["frac_zero_std"] == 1.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="groups of num_generations=3"):
        get_advantage("grpo")(REWARDS, 3)
    with pytest.raises(ValueError, match="1-D"):
        get_advantage("grpo")(REWARDS.view(2, 4), 4)
    with pytest.raises(ValueError, match="scale_rewards"):
        get_advantage("grpo")(REWARDS, 4, scale_rewards="token")


def test_registry():
    with pytest.raises(ValueError, match="dr_grpo, gae, grpo, rloo"):
        get_advantage("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_advantage("grpo")(lambda r, k: r)

    @register_advantage("test_constant")
    def constant(rewards, num_generations):
        return torch.ones_like(rewards), {}

    try:
        assert get_advantage("test_constant") is constant
    finally:
        del ADVANTAGES["test_constant"]


def test_gae_by_hand():
    values = torch.tensor([[0.5, 0.2, 0.1, 0.0], [0.3, 0.3, 0.3, 0.3], [0.4, 0.0, 0.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
    rewards = torch.tensor([1.0, 5.0, 2.0])
    adv, info = get_advantage("gae")(rewards, values=values, mask=mask, gamma=0.9, lam=0.5)
    # row 0: reward 1 at t=2. A2 = 1 - 0.1 = 0.9; A1 = (0.9*0.1 - 0.2) + 0.45*0.9 = 0.295;
    # A0 = (0.9*0.2 - 0.5) + 0.45*0.295 = -0.18725. Row 1 is fully masked. Row 2: A0 = 2 - 0.4.
    close(adv, [[-0.18725, 0.295, 0.9, 0.0], [0, 0, 0, 0], [1.6, 0, 0, 0]])
    close(info["returns"], [[0.31275, 0.495, 1.0, 0.0], [0, 0, 0, 0], [2.0, 0, 0, 0]])
    assert not adv.requires_grad
    # gamma = lam = 1 is Monte Carlo: the return minus the value
    adv, info = get_advantage("gae")(rewards, values=values, mask=mask, gamma=1.0, lam=1.0)
    close(adv[0], [0.5, 0.8, 0.9, 0.0])
    close(info["returns"][0], [1.0, 1.0, 1.0, 0.0])


def test_gae_token_rewards_match_sequence_rewards():
    values = torch.rand(3, 5)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]])
    rewards = torch.tensor([1.0, -1.0, 0.5])
    token_rewards = torch.zeros(3, 5)
    token_rewards[0, 4], token_rewards[1, 1], token_rewards[2, 2] = 1.0, -1.0, 0.5
    a, _ = get_advantage("gae")(rewards, values=values, mask=mask, gamma=0.99, lam=0.95)
    b, _ = get_advantage("gae")(token_rewards, values=values, mask=mask, gamma=0.99, lam=0.95)
    torch.testing.assert_close(a, b)
    assert (a[mask == 0] == 0).all()
    with pytest.raises(ValueError, match="rewards"):
        get_advantage("gae")(torch.zeros(2), values=values, mask=mask)
