"""Our policy losses and their gradients equal TRL 1.16 GRPOTrainer's on one identical batch.

How TRL's numbers are obtained: a real `trl.GRPOTrainer` is built on the tiny Llama saved to disk
(GRPOConfig with use_cpu=True, bf16=False, report_to="none", beta > 0, epsilon != epsilon_high,
temperature 0.7, num_iterations=2), and its own `compute_loss(model, inputs)` is called in train mode with
the `inputs` dict its `_generate_and_score_completions` produces: prompt_ids / prompt_mask (left-padded),
completion_ids / completion_mask (right-padded; one row fully masked, as mask_truncated_completions does),
advantages (B,), old_per_token_logps and ref_per_token_logps (B, C) and num_items_in_batch. The old and
reference log-probs are the current ones plus fixed noise, as after num_iterations > 1 updates, so the
ratio is clipped on both sides and the KL term is non-zero. TRL computes the log-probs with its fused LM
head (logits / temperature); we compute them with rlreason.rollout.completion_logprobs on the same model,
apply rlreason.losses, and compare the loss and every parameter's gradient (relative error < 1e-5).
"""

import pytest
import torch

from rlreason.advantages import get_advantage
from rlreason.losses import get_policy_loss
from rlreason.rollout import completion_logprobs, generate
from tests._tiny_fixture import CHAT_PROMPTS, tiny_model, tiny_tokenizer

C, K, TEMPERATURE, BETA, EPS_LOW, EPS_HIGH = 10, 3, 0.7, 0.1, 0.2, 0.28
RTOL = 1e-5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    tok = tiny_tokenizer()
    path = tmp_path_factory.mktemp("parity") / "tiny"
    tiny_model(tok, eos_scale=20.0).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def make_trainer(model_dir, tmp_path, loss_type, grad_accum, extra):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    config = GRPOConfig(output_dir=str(tmp_path / loss_type), use_cpu=True, bf16=False, report_to="none",
                        per_device_train_batch_size=K * len(CHAT_PROMPTS), num_generations=K,
                        gradient_accumulation_steps=grad_accum, max_completion_length=C, temperature=TEMPERATURE,
                        beta=BETA, epsilon=EPS_LOW, epsilon_high=EPS_HIGH, loss_type=loss_type, num_iterations=2,
                        save_strategy="no", logging_strategy="no", seed=0, **extra)
    rows = Dataset.from_list([{"prompt": p} for p in CHAT_PROMPTS] * 4)
    trainer = GRPOTrainer(model=model_dir, reward_funcs=lambda completions, **_: [0.0] * len(completions),
                          args=config, train_dataset=rows)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = grad_accum
    return trainer


def make_batch(trainer):
    """One rollout from the trainer's model, shaped as GRPOTrainer._generate_and_score_completions returns it."""
    model, tok = trainer.model, trainer.processing_class
    torch.manual_seed(0)
    out = generate(model, tok, CHAT_PROMPTS, num_generations=K, max_completion_length=C)
    model.train()
    prompt_ids, prompt_mask = out.expanded_prompts()
    completion_mask = out.completion_mask.clone()
    completion_mask[1] = 0  # a fully masked row (mask_truncated_completions)
    rewards = torch.tensor([1.0, 0.0, 0.5, 1.0, 1.0, 1.0, 0.0, 0.2, 0.9])  # the middle group has zero variance
    advantages, _ = get_advantage("grpo")(rewards, K, scale_rewards="group")
    ids = torch.cat([prompt_ids, out.completion_ids], 1)
    with torch.no_grad():
        logps, _ = completion_logprobs(model, ids, torch.cat([prompt_mask, completion_mask], 1), C,
                                       temperature=TEMPERATURE)
    g = torch.Generator().manual_seed(1)
    shape = logps.shape
    old = (logps + 0.4 * torch.randn(shape, generator=g)) * completion_mask
    ref = (logps + 0.5 * torch.randn(shape, generator=g)) * completion_mask
    # num_items_in_batch counts the whole generation batch: steps_per_generation micro-batches of this size
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": out.completion_ids,
            "completion_mask": completion_mask, "advantages": advantages, "old_per_token_logps": old,
            "ref_per_token_logps": ref, "num_items_in_batch": completion_mask.sum() * trainer.args.steps_per_generation}


def grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


CASES = [("grpo", 1, {}), ("dapo", 1, {}), ("dr_grpo", 1, {}), ("bnpo", 1, {}), ("grpo", 2, {}), ("dapo", 2, {}),
         ("dr_grpo", 2, {}), ("dapo", 2, {"steps_per_generation": 4}), ("grpo", 1, {"use_bias_correction_kl": False}),
         ("dapo", 1, {"delta": 1.1})]


@pytest.mark.parametrize("loss_type, grad_accum, extra", CASES)
def test_loss_and_gradients_match_trl(model_dir, tmp_path, loss_type, grad_accum, extra):
    trainer = make_trainer(model_dir, tmp_path, loss_type, grad_accum, extra)
    model = trainer.model
    inputs = make_batch(trainer)

    model.zero_grad(set_to_none=True)
    trl_loss = trainer.compute_loss(model, inputs)
    trl_loss.backward()
    trl_grads = grads(model)

    model.zero_grad(set_to_none=True)
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    logps, entropy = completion_logprobs(model, ids, attention, C, temperature=TEMPERATURE)
    loss, stats = get_policy_loss(loss_type)(
        logps, inputs["old_per_token_logps"], inputs["advantages"], inputs["completion_mask"],
        ref_logps=inputs["ref_per_token_logps"], beta=BETA, epsilon_low=EPS_LOW, epsilon_high=EPS_HIGH,
        max_completion_length=C, num_items_in_batch=inputs["num_items_in_batch"],
        gradient_accumulation_steps=grad_accum, steps_per_generation=trainer.args.steps_per_generation,
        use_bias_correction_kl=trainer.args.use_bias_correction_kl, delta=trainer.args.delta, entropy=entropy)
    loss.backward()
    ours = grads(model)

    assert abs(loss.item() - trl_loss.item()) <= RTOL * abs(trl_loss.item())
    assert ours.keys() == trl_grads.keys() and len(ours) > 10
    worst = max(((ours[n] - trl_grads[n]).abs().max() / trl_grads[n].abs().max().clamp(min=1e-12)).item()
                for n in ours)
    print(f"{loss_type} ga={grad_accum} {extra}: loss {loss.item():.8f} vs TRL {trl_loss.item():.8f}, "
          f"max relative gradient error {worst:.2e}")
    assert worst < RTOL
    # the batch exercises both clipping sides (delta caps the ratio below 1 + epsilon_high) and the KL term
    assert stats["clip_ratio/low_mean"] > 0 and stats["kl"] > 0
    assert (stats["clip_ratio/high_mean"] > 0) == ("delta" not in extra)
    trl_metrics = trainer._metrics["train"]
    assert stats["kl"].item() == pytest.approx(trl_metrics["kl"][-1], rel=1e-5)
    assert stats["clip_ratio/region_mean"].item() == pytest.approx(trl_metrics["clip_ratio/region_mean"][-1],
                                                                   rel=1e-5)
    assert stats["entropy"].item() == pytest.approx(trl_metrics["entropy"][-1], rel=1e-5)


@pytest.mark.parametrize("loss_type, beta", [("grpo", BETA), ("dapo", 0.0)])
def test_sequence_level_importance_sampling_matches_trl(model_dir, tmp_path, loss_type, beta):
    """GSPO (importance_sampling_level: sequence): one clipped ratio per sequence, loss and gradients as TRL's."""
    trainer = make_trainer(model_dir, tmp_path, loss_type, 1, {"importance_sampling_level": "sequence"})
    trainer.beta = beta
    model = trainer.model
    inputs = make_batch(trainer)
    model.zero_grad(set_to_none=True)
    trl_loss = trainer.compute_loss(model, inputs)
    trl_loss.backward()
    trl_grads = grads(model)

    model.zero_grad(set_to_none=True)
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    logps, _ = completion_logprobs(model, ids, attention, C, temperature=TEMPERATURE)
    loss, stats = get_policy_loss(loss_type)(
        logps, inputs["old_per_token_logps"], inputs["advantages"], inputs["completion_mask"],
        ref_logps=inputs["ref_per_token_logps"] if beta else None, beta=beta, epsilon_low=EPS_LOW,
        epsilon_high=EPS_HIGH, max_completion_length=C, num_items_in_batch=inputs["num_items_in_batch"],
        steps_per_generation=trainer.args.steps_per_generation, importance_sampling_level="sequence")
    loss.backward()
    ours = grads(model)
    assert abs(loss.item() - trl_loss.item()) <= RTOL * abs(trl_loss.item())
    worst = max(((ours[n] - trl_grads[n]).abs().max() / trl_grads[n].abs().max().clamp(min=1e-12)).item()
                for n in ours)
    assert worst < RTOL
    trl_metrics = trainer._metrics["train"]
    assert stats["clip_ratio/region_mean"].item() == pytest.approx(trl_metrics["clip_ratio/region_mean"][-1], abs=1e-6)
    token_level, _ = get_policy_loss(loss_type)(
        logps.detach(), inputs["old_per_token_logps"], inputs["advantages"], inputs["completion_mask"],
        ref_logps=inputs["ref_per_token_logps"] if beta else None, beta=beta, epsilon_low=EPS_LOW,
        epsilon_high=EPS_HIGH, num_items_in_batch=inputs["num_items_in_batch"],
        steps_per_generation=trainer.args.steps_per_generation)
    assert abs(token_level.item() - loss.item()) > 1e-4  # the option changes the objective
