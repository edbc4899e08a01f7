"""Policy-loss aggregation, clipping, KL, value loss and whitening against hand-computed values."""

import math

import pytest
import torch

from rlreason.losses import POLICY_LOSSES, get_policy_loss, kl_k3, register_policy_loss, value_loss, whiten

MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]])  # the last row is fully masked
ADV = torch.tensor([1.0, -2.0, 3.0])


def on_policy(loss_type, **options):
    """ratio = 1 everywhere, so each token's loss is -advantage; returns (loss, grad wrt logps, stats)."""
    logps = torch.full((3, 4), -1.0, requires_grad=True)
    loss, stats = get_policy_loss(loss_type)(logps, None, ADV, MASK, **options)
    loss.backward()
    return loss.item(), logps.grad, stats


@pytest.mark.parametrize("loss_type, options, expected", [
    ("grpo", {}, (-1 + 2 + 0) / 3),  # per-sequence token means -1, 2, 0 (empty row), then their mean
    ("bnpo", {}, (-3 + 2) / 4),  # sum over the 4 tokens / 4
    ("dapo", {}, (-3 + 2) / 4),  # without num_items_in_batch: this micro-batch's tokens
    ("dapo", {"num_items_in_batch": 8}, -1 / 8),  # tokens of the global batch
    ("dapo", {"num_items_in_batch": 8, "num_processes": 2}, -1 / 4),  # each process holds half of them
    ("dapo", {"num_items_in_batch": 8, "gradient_accumulation_steps": 2}, -1 / 8),  # 2 micro-batches, 1 rollout
    ("dapo", {"num_items_in_batch": 8, "gradient_accumulation_steps": 2, "steps_per_generation": 4}, -1 / 4),
    ("dr_grpo", {"max_completion_length": 5}, -1 / (3 * 5)),  # sum / (B * max_completion_length)
    ("dr_grpo", {}, -1 / (3 * 4)),  # max_completion_length defaults to C
    ("grpo", {"gradient_accumulation_steps": 2}, 1 / 6),
    ("bnpo", {"gradient_accumulation_steps": 2}, -1 / 8),
])
def test_aggregation_by_hand(loss_type, options, expected):
    loss, grad, stats = on_policy(loss_type, **options)
    assert loss == pytest.approx(expected, rel=1e-6)
    assert torch.isfinite(grad).all() and (grad[MASK == 0] == 0).all()
    assert stats["clip_ratio/region_mean"] == 0


def test_grpo_gradient_by_hand():
    _, grad, _ = on_policy("grpo")
    # d loss / d logp = -A / (tokens in the row) / (rows), with ratio' = 1 on-policy
    expected = torch.tensor([[-1 / 9, -1 / 9, -1 / 9, 0], [2 / 3, 0, 0, 0], [0, 0, 0, 0]])
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("ratio, adv, eps_high, loss, grad, clip", [
    (1.5, 1.0, 0.28, -1.28, 0.0, "high"),  # above 1 + epsilon_high with A > 0: clipped, no gradient
    (1.5, 1.0, 0.6, -1.5, -1.5, None),  # DAPO clip-higher lets it through: d(-r A)/dlogp = -r A
    (0.5, -1.0, 0.28, 0.8, 0.0, "low"),  # below 1 - epsilon_low with A < 0: clipped at 0.8
    (0.5, 1.0, 0.28, -0.5, -0.5, None),  # pessimistic min: the unclipped term is smaller, gradient flows
    (1.5, -1.0, 0.28, 1.5, 1.5, None),
])
def test_clipping_by_hand(ratio, adv, eps_high, loss, grad, clip):
    logps = torch.tensor([[math.log(ratio)]], requires_grad=True)
    value, stats = get_policy_loss("bnpo")(logps, torch.zeros(1, 1), torch.tensor([adv]), torch.ones(1, 1),
                                           epsilon_low=0.2, epsilon_high=eps_high)
    value.backward()
    assert value.item() == pytest.approx(loss, rel=1e-6)
    assert logps.grad.item() == pytest.approx(grad, abs=1e-6)
    assert stats["clip_ratio/high_mean"] == (clip == "high") and stats["clip_ratio/low_mean"] == (clip == "low")
    assert stats["clip_ratio/region_mean"] == (clip is not None)


def test_epsilon_high_defaults_to_epsilon_low():
    logps = torch.tensor([[math.log(1.25)]])
    loss, stats = get_policy_loss("bnpo")(logps, torch.zeros(1, 1), torch.tensor([1.0]), torch.ones(1, 1),
                                          epsilon_low=0.2)
    assert loss.item() == pytest.approx(-1.2) and stats["clip_ratio/high_mean"] == 1


@pytest.mark.parametrize("correction", [True, False])
def test_kl_zero_with_zero_gradient_when_policy_is_reference(correction):
    logps = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    adv = torch.tensor([0.0])  # isolate the KL term
    loss, stats = get_policy_loss("grpo")(logps, None, adv, torch.ones(1, 3), ref_logps=logps.detach().clone(),
                                          beta=0.5, use_bias_correction_kl=correction)
    loss.backward()
    assert loss.item() == 0 and stats["kl"] == 0
    assert torch.equal(logps.grad, torch.zeros(1, 3))


@pytest.mark.parametrize("correction", [True, False])
def test_kl_positive_with_gradient_when_policy_differs(correction):
    logps = torch.tensor([[-1.0, -2.0, -0.5]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0, -0.5]])
    loss, stats = get_policy_loss("bnpo")(logps, None, torch.tensor([0.0]), torch.ones(1, 3), ref_logps=ref,
                                          beta=0.5, use_bias_correction_kl=correction)
    loss.backward()
    d = ref - logps.detach()
    k3 = torch.exp(d) - d - 1
    assert loss.item() == pytest.approx(0.5 * k3.mean().item(), rel=1e-6) and stats["kl"] > 0
    # d k3 / d logp = 1 - exp(d); the bias correction multiplies k3 by the ratio r (value 1, r' = 1): adds k3
    expected = 0.5 / 3 * ((1 - torch.exp(d)) + (k3 if correction else 0))
    torch.testing.assert_close(logps.grad, expected)
    assert logps.grad.abs().sum() > 0


def test_beta_as_per_token_weight():
    logps = torch.tensor([[-1.0, -2.0], [-1.0, -2.0]], requires_grad=True)
    ref = torch.tensor([[-2.0, -1.0], [-2.0, -1.0]])
    beta = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # only the first token of row 0 is pinned
    loss, _ = get_policy_loss("bnpo")(logps, None, torch.zeros(2), torch.ones(2, 2), ref_logps=ref, beta=beta)
    loss.backward()
    assert loss.item() == pytest.approx(kl_k3(logps[0, 0], ref[0, 0]).item() / 4, rel=1e-6)
    assert logps.grad[0, 0] != 0 and (logps.grad.flatten()[1:] == 0).all()
    per_row = get_policy_loss("bnpo")(logps, None, torch.zeros(2), torch.ones(2, 2), ref_logps=ref,
                                      beta=torch.tensor([2.0, 0.0]))[0]  # (B,) broadcasts over tokens
    assert per_row.item() == pytest.approx(2 * kl_k3(logps[0], ref[0]).sum().item() / 4, rel=1e-6)


def test_fully_masked_rows_and_garbage_padding_give_no_nan():
    logps = torch.tensor([[-1.0, float("inf")], [float("nan"), -float("inf")]], requires_grad=True)
    mask = torch.tensor([[1, 0], [0, 0]])
    old = torch.tensor([[-1.2, float("nan")], [0.0, float("inf")]])
    ref = torch.tensor([[-0.8, -float("inf")], [float("nan"), 3.0]])
    for name in ("grpo", "bnpo", "dapo", "dr_grpo"):
        logps.grad = None
        loss, stats = get_policy_loss(name)(logps, old, torch.tensor([1.0, -1.0]), mask, ref_logps=ref, beta=0.1,
                                            entropy=torch.tensor([[1.0, float("nan")], [5.0, 5.0]]))
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logps.grad).all() and logps.grad[0, 0] != 0
        assert all(torch.isfinite(v) for v in stats.values()) and stats["entropy"] == 1.0
    empty = get_policy_loss("grpo")(torch.zeros(2, 3, requires_grad=True), None, torch.ones(2), torch.zeros(2, 3))
    assert empty[0].item() == 0 and all(torch.isfinite(v) for v in empty[1].values())


def test_token_level_advantages_and_errors():
    logps = torch.zeros(1, 2, requires_grad=True)
    loss, _ = get_policy_loss("bnpo")(logps, None, torch.tensor([[1.0, 3.0]]), torch.ones(1, 2))
    assert loss.item() == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="ref_logps"):
        get_policy_loss("grpo")(logps, None, torch.ones(1), torch.ones(1, 2), beta=0.1)
    with pytest.raises(ValueError, match="same"):
        get_policy_loss("grpo")(logps, None, torch.ones(1), torch.ones(1, 3))


def test_registry():
    assert set(POLICY_LOSSES) >= {"grpo", "bnpo", "dapo", "dr_grpo"}
    with pytest.raises(ValueError, match="bnpo, dapo, dr_grpo, grpo"):
        get_policy_loss("ppo2")
    with pytest.raises(ValueError, match="already registered"):
        register_policy_loss("grpo")(lambda *a, **k: None)


def test_value_loss_by_hand():
    values = torch.tensor([[1.0, 2.0]], requires_grad=True)
    old, returns, mask = torch.tensor([[0.5, 0.5]]), torch.tensor([[1.5, 0.0]]), torch.ones(1, 2)
    loss, stats = value_loss(values, old, returns, mask, cliprange_value=0.2, vf_coef=0.1)
    # clipped values 0.7, 0.7: max((1-1.5)^2, (0.7-1.5)^2) = 0.64; max((2-0)^2, (0.7-0)^2) = 4
    assert loss.item() == pytest.approx(0.1 * 0.5 * (0.64 + 4) / 2, rel=1e-6)
    assert stats["value/clipfrac"] == 0.5
    loss.backward()
    # token 0 is clipped (no gradient); token 1: vf_coef * 0.5 * d(V - R)^2/dV / 2 tokens = 0.1 * 0.5 * 4 / 2
    torch.testing.assert_close(values.grad, torch.tensor([[0.0, 0.1]]))


def test_whiten_by_hand():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    torch.testing.assert_close(whiten(x), (x - 2.5) / math.sqrt(5 / 3 + 1e-8))
    y = torch.tensor([1.0, 3.0, 100.0, 100.0])
    mask = torch.tensor([1, 1, 0, 0])
    s = 1 / math.sqrt(2)
    torch.testing.assert_close(whiten(y, mask), torch.tensor([-s, s, 0.0, 0.0]))
    torch.testing.assert_close(whiten(y, mask, shift_mean=False), torch.tensor([2 - s, 2 + s, 0.0, 0.0]))
