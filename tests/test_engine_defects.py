"""Engine defects of issue 18, one test each: RLOO's scaling, batch std over processes, PPO's old log-probs,
the reference without the critic, SCoRe's truncated attempts, critic warm-up's optimizer and schedule."""

import types
from pathlib import Path

import pytest
import torch

from rlreason.advantages import get_advantage
from rlreason.config import load_recipe

from .conftest import ARITH
from .test_grpo import grpo_recipe
from .test_ppo import ppo_recipe


def make_trainer(cls, recipe, tiny_model_dir):
    from rlreason.algorithms.common import load_rows
    from rlreason.models.loading import load_policy, lora_config

    model, tok = load_policy(tiny_model_dir)
    return cls(model, recipe.training_args, load_rows(recipe.args, "train"), tok, recipe.args.reward_funcs,
               peft_config=lora_config(recipe.args))


def test_rloo_is_leave_one_out_not_grpo_rescaled(tmp_path):
    from rlreason.rl_config import RLConfig

    args = RLConfig(output_dir=str(tmp_path), advantage_estimator="rloo", use_cpu=True, bf16=False)
    assert args.scale_rewards == "none"  # RLOO's own default, not GRPO's "group"
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    advantages, _ = get_advantage("rloo")(rewards, 4, scale_rewards=args.scale_rewards)
    expected = torch.tensor([1.0, -1 / 3, -1 / 3, -1 / 3, 2 / 3, 2 / 3, -2 / 3, -2 / 3])
    assert torch.allclose(advantages, expected)


def test_batch_std_is_taken_over_every_process(tiny_model_dir, tmp_path):
    from rlreason.trainer import OnlineRLTrainer

    trainer = make_trainer(OnlineRLTrainer, grpo_recipe(tiny_model_dir, tmp_path / "run", scale_rewards="batch",
                                                        beta=0.0), tiny_model_dir)
    mine = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.5, 0.5, 0.5, 0.0])  # this process (index 1) holds two groups of 4
    other = torch.tensor([3.0, -2.0, 0.0, 0.0, 5.0, 1.0, 0.0, 0.0])  # process 0's rewards: a much wider spread
    trainer.accelerator = types.SimpleNamespace(num_processes=2, process_index=1,
                                                gather=lambda t: torch.cat([other, t]))
    advantages, _ = trainer.compute_advantages({}, mine)
    everything, _ = get_advantage("grpo")(torch.cat([other, mine]), 4, scale_rewards="batch")
    local_only, _ = get_advantage("grpo")(mine, 4, scale_rewards="batch")
    assert torch.allclose(advantages, everything[8:])
    assert not torch.allclose(advantages, local_only)


def fixed_batch(vocab, rows=8, width=20, C=8):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, vocab, (rows, width), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "completion_ids": ids[:, -C:],
            "completion_mask": torch.ones(rows, C, dtype=torch.long)}


def test_ppo_computes_old_log_probs_once(tiny_model_dir, tmp_path):
    from rlreason.algorithms.ppo import PPOTrainer

    trainer = make_trainer(PPOTrainer, ppo_recipe(tiny_model_dir, tmp_path / "run", num_iterations=2, beta=0.05,
                                                  kl_in_reward=False), tiny_model_dir)
    calls = []
    trainer.model.register_forward_pre_hook(lambda module, args: calls.append(1))
    with torch.no_grad():
        old, ref = trainer.reference_logps(fixed_batch(trainer.model.config.vocab_size))
    assert len(calls) == 1  # one policy pass gives the old log-probs and the old values
    assert old.shape == ref.shape == (8, 8)


@pytest.mark.parametrize("value_model", [None, "policy"])
def test_reference_copy_leaves_out_the_critic(tiny_model_dir, tmp_path, value_model):
    from rlreason.algorithms.ppo import PPOTrainer
    from rlreason.models.value_head import is_critic_parameter

    trainer = make_trainer(PPOTrainer, ppo_recipe(tiny_model_dir, tmp_path / "run", beta=0.05, kl_in_reward=False,
                                                  value_model=value_model), tiny_model_dir)
    names = [n for n, _ in trainer.ref_model.named_parameters()]
    assert names and not any(is_critic_parameter(n) for n in names)
    policy = sum(p.numel() for n, p in trainer.model.named_parameters() if not is_critic_parameter(n))
    assert sum(p.numel() for p in trainer.ref_model.parameters()) == policy
    assert any(is_critic_parameter(n) for n, _ in trainer.model.named_parameters())  # the policy keeps its critic
    logps, _ = trainer.reference_logps(fixed_batch(trainer.model.config.vocab_size))  # the reference still runs
    assert torch.isfinite(logps).all()


def test_score_masks_truncated_attempts(tiny_model_dir, tmp_path):
    from rlreason.algorithms.score import ScoreTrainer

    raw = {"algorithm": "score", "model_name_or_path": tiny_model_dir, "task": "arithmetic", "task_options": ARITH,
           "reward_funcs": ["rewards.math.accuracy"], "num_generations": 2, "per_device_train_batch_size": 4,
           "max_completion_length": 2, "beta": 0.01, "beta_first": 0.1, "stage_one_steps": 1, "max_steps": 2,
           "report_to": "none", "gradient_checkpointing": False, "mask_truncated_completions": True,
           "output_dir": str(tmp_path / "run"), "disable_tqdm": True, "seed": 0}
    trainer = make_trainer(ScoreTrainer, load_recipe(None, base=raw), tiny_model_dir)
    rows = list(trainer.train_dataset.select(range(2)))
    torch.manual_seed(0)
    batches = trainer.make_experience([rows])
    eos = set(trainer.processing_class.convert_tokens_to_ids([trainer.processing_class.eos_token]))
    masks = torch.cat([b["completion_mask"] for b in batches])
    ids = torch.cat([b["completion_ids"] for b in batches])
    assert masks.size(0) == 8  # 2 prompts x 2 samples x 2 attempts
    for mask, row in zip(masks, ids):
        ended = any(int(t) in eos for t in row[mask.bool()])
        assert mask.sum() == 0 or ended  # a truncated attempt (no eos) is out of the loss
    assert (masks.sum(1) == 0).any()


def test_critic_warmup_holds_the_policy_schedule_and_optimizer(tiny_model_dir, tmp_path):
    from rlreason.algorithms.ppo import PPOTrainer
    from rlreason.models.value_head import is_critic_parameter

    lr = 1e-3
    trainer = make_trainer(PPOTrainer, ppo_recipe(tiny_model_dir, tmp_path / "run", critic_warmup_steps=2, max_steps=6,
                                                  learning_rate=lr, lr_scheduler_type="linear", warmup_steps=0),
                           tiny_model_dir)
    trainer.create_optimizer_and_scheduler(num_training_steps=6)
    critic = {id(p) for n, p in trainer.model.named_parameters() if is_critic_parameter(n)}
    groups = trainer.optimizer.param_groups
    is_critic = [all(id(p) in critic for p in g["params"]) for g in groups]
    assert any(is_critic) and not all(is_critic)
    seen = []
    for _ in range(6):
        seen.append([g["lr"] for g in groups])
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
    policy = [[lrs[i] for i in range(len(groups)) if not is_critic[i]][0] for lrs in seen]
    critic_lrs = [[lrs[i] for i in range(len(groups)) if is_critic[i]][0] for lrs in seen]
    assert policy == pytest.approx([0, 0, lr, 0.75 * lr, 0.5 * lr, 0.25 * lr])  # its schedule starts after warm-up
    assert critic_lrs == pytest.approx([lr * (6 - s) / 6 for s in range(6)])


def test_critic_warmup_leaves_the_policy_untouched_even_with_weight_decay(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file

    from rlreason.algorithms.ppo import train

    out = train(ppo_recipe(tiny_model_dir, tmp_path / "run", max_steps=2, critic_warmup_steps=2, weight_decay=0.1,
                           value_learning_rate=1e-2))
    start, saved = load_file(str(Path(tiny_model_dir) / "model.safetensors")), load_file(str(Path(out) / "model.safetensors"))
    policy = [k for k in saved if not k.startswith(("v_head", "value_model")) and k in start]
    assert policy and all(torch.equal(saved[k], start[k]) for k in policy)
    assert saved["v_head.weight"].abs().sum() > 0


def test_grpo_masks_truncated_completions(tiny_model_dir, tmp_path):
    from rlreason.trainer import OnlineRLTrainer

    trainer = make_trainer(OnlineRLTrainer, grpo_recipe(tiny_model_dir, tmp_path / "run", max_completion_length=2,
                                                        mask_truncated_completions=True), tiny_model_dir)
    torch.manual_seed(0)
    batch, rollout, _ = trainer.sample(list(trainer.train_dataset.select(range(2))))
    assert rollout.truncated.any()
    assert (batch["completion_mask"][rollout.truncated] == 0).all()
    assert torch.equal(batch["completion_mask"][~rollout.truncated], rollout.completion_mask[~rollout.truncated])
