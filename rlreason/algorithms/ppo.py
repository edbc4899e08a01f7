"""`ppo`: clipped policy gradient with a learned value head and GAE, on rule-based rewards.

The sequence reward sits on the last completion token; with `kl_in_reward` every token also pays
-beta * (log pi_old - log pi_ref) (and the loss has no KL term), else the KL is a per-token loss
weight as in GRPO. Advantages are GAE(gamma, lam) over completion tokens, whitened; the value loss
is clipped (`cliprange_value`) and weighted by `vf_coef`. `num_iterations` reuses each rollout for
that many optimizer passes (PPO epochs), with importance ratios against the sampling policy.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import TrainerCallback

from rlreason.algorithms.common import finish_run, load_rows, prepare_model_path, run_training, start_run
from rlreason.advantages import last_token_index
from rlreason.config import RecipeError
from rlreason.losses import masked_mean, value_loss, whiten
from rlreason.models.parallel import unwrap_parallel
from rlreason.models.value_head import (HEAD_NAME, attach_value_head, attach_value_model, capture_hidden,
                                        completion_values, critic_values, is_critic_parameter)
from rlreason.rollout import completion_logprobs
from rlreason.trainer import OnlineRLTrainer, dropout_off


class PPOTrainer(OnlineRLTrainer):
    """OnlineRLTrainer with token-level values: GAE advantages and a clipped value loss."""

    def __init__(self, model, args, *rest, **kwargs):
        if args.value_model:
            attach_value_model(model, args.value_model)
        else:
            attach_value_head(model)
        super().__init__(model, args, *rest, **kwargs)
        self.separate_critic = bool(args.value_model)
        if args.critic_warmup_steps > 0:
            self.add_callback(_FreezePolicyDuringWarmup(self))

    def reference_logps(self, batch):
        """PPO always keeps the sampling policy's log-probs (one pass, dropout off, values from the same pass):
        they define the ratio and the KL-in-reward."""
        model = unwrap_parallel(self.model)
        ids, attention, C = batch["input_ids"], batch["attention_mask"], batch["completion_ids"].size(1)
        with dropout_off(model), capture_hidden(model) as box:
            old = self._logps(model, ids, attention, C, keep_hidden=box)
        batch["old_values"] = box["values"]
        return old, self.reference_only_logps(batch)

    def _logps(self, model, input_ids, attention, C, keep_hidden=None):
        if keep_hidden is None:
            return super()._logps(model, input_ids, attention, C)
        bs, logps, values = self.args.per_device_train_batch_size, [], []
        for i in range(0, len(input_ids), bs):
            logps.append(completion_logprobs(model, input_ids[i:i + bs], attention[i:i + bs], C,
                                             temperature=self.args.temperature, return_entropy=False)[0])
            values.append(self._values(model, input_ids[i:i + bs], attention[i:i + bs], C, keep_hidden))
        keep_hidden["values"] = torch.cat(values, 0)
        return torch.cat(logps, 0)

    def _values(self, model, input_ids, attention, C, box):
        if self.separate_critic:
            return critic_values(model, input_ids, attention, C)
        return completion_values(model, box["hidden"], C)

    def compute_advantages(self, batch, rewards):
        args, mask = self.args, batch["completion_mask"]
        token_rewards = torch.zeros_like(batch["old_values"])
        last = last_token_index(mask)  # the mask has holes where a tool rollout inserted observations
        token_rewards[torch.arange(len(last)), last] = torch.nan_to_num(rewards.float(), nan=0.0)
        if args.kl_in_reward and batch["ref_logps"] is not None:
            token_rewards = token_rewards - args.beta * (batch["old_logps"] - batch["ref_logps"]) * mask
        advantages, extra = self.advantage_fn(token_rewards, values=batch["old_values"], mask=mask,
                                              gamma=args.gamma, lam=args.lam)
        batch["returns"] = extra["returns"]
        if args.whiten_advantages:
            advantages = whiten(advantages, mask)
        values, returns = batch["old_values"], batch["returns"]
        residual_var = _masked_var(returns - values, mask)
        stats = {"explained_variance": (1 - residual_var / _masked_var(returns, mask).clamp(min=1e-8)).item(),
                 "returns_mean": masked_mean(returns, mask).item(), "value_mean": masked_mean(values, mask).item()}
        for key, value in stats.items():
            self._metrics[key].append(value)
        return advantages, {}

    def kl_weights(self, inputs):
        return 0.0 if self.args.kl_in_reward else self.args.beta

    def create_optimizer(self, model=None):
        """Transformers' optimizer, with the value head (or critic) in its own group at `value_learning_rate`."""
        optimizer = super().create_optimizer(model)
        lr = self.args.value_learning_rate or self.args.learning_rate
        if lr == self.args.learning_rate and self.args.critic_warmup_steps == 0:
            return optimizer  # the critic's own group is needed for its own rate, or for the warm-up's schedule
        head = self._critic_parameter_ids(model)
        head_params = [p for g in optimizer.param_groups for p in g["params"] if id(p) in head]
        for group in optimizer.param_groups:
            group["params"] = [p for p in group["params"] if id(p) not in head]
        optimizer.param_groups = [g for g in optimizer.param_groups if g["params"]]
        optimizer.add_param_group({"params": head_params, "lr": lr, "weight_decay": 0.0})
        return optimizer

    def _critic_parameter_ids(self, model=None) -> set[int]:
        return {id(p) for n, p in (model or self.model).named_parameters() if is_critic_parameter(n) and p.requires_grad}

    def create_scheduler(self, num_training_steps, optimizer=None):
        """Transformers' schedule; with critic warm-up the policy's groups sit at rate 0 for the warm-up steps and
        then run the whole schedule over the remaining steps, while the critic's group runs it over all steps."""
        warmup = self.args.critic_warmup_steps
        if warmup <= 0 or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        from torch.optim.lr_scheduler import LambdaLR

        optimizer = optimizer or self.optimizer
        critic_fn = self._schedule_lambda(optimizer, num_training_steps)
        policy_fn = self._schedule_lambda(optimizer, max(1, num_training_steps - warmup))
        critic = self._critic_parameter_ids()

        def delayed(step, fn=policy_fn):
            return 0.0 if step < warmup else fn(step - warmup)

        lambdas = [critic_fn if any(id(p) in critic for p in g["params"]) else delayed for g in optimizer.param_groups]
        self.lr_scheduler = LambdaLR(optimizer, lambdas)
        self._created_lr_scheduler = True
        return self.lr_scheduler

    def _schedule_lambda(self, optimizer, steps):
        from transformers import get_scheduler

        schedule = get_scheduler(self.args.lr_scheduler_type, optimizer=optimizer,
                                 num_warmup_steps=self.args.get_warmup_steps(steps), num_training_steps=steps,
                                 scheduler_specific_kwargs=self.args.lr_scheduler_kwargs)
        if not hasattr(schedule, "lr_lambdas"):
            raise RecipeError(f"critic_warmup_steps needs a step schedule (e.g. linear, cosine, constant); "
                              f"lr_scheduler_type {self.args.lr_scheduler_type} is not one")
        return schedule.lr_lambdas[0]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        warming_up = self.state.global_step < self.args.critic_warmup_steps
        with capture_hidden(model) as box:
            loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if warming_up:  # only the critic learns: no policy gradient, and none through the shared trunk
            loss = loss * 0.0
            box["hidden"] = box["hidden"].detach()
        C = inputs["completion_ids"].size(1)
        values = self._values(model, inputs["input_ids"], inputs["attention_mask"], C, box)
        mask = inputs["completion_mask"]
        v_loss, v_stats = value_loss(values, inputs["old_values"], inputs["returns"], mask,
                                     cliprange_value=self.args.cliprange_value, vf_coef=self.args.vf_coef)
        for key, value in v_stats.items():
            self._metrics[key].append(float(value))
        return loss + v_loss / self.current_gradient_accumulation_steps


class _FreezePolicyDuringWarmup(TrainerCallback):
    """Before each warm-up optimizer step, drop the policy's (zero) gradients, so the optimizer skips those
    parameters: no weight decay, no moment or step-count update (DeepSpeed keeps its own buffers: rate 0 does it)."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_pre_optimizer_step(self, args, state, control, **kwargs):
        trainer = self.trainer
        if state.global_step >= args.critic_warmup_steps or trainer.is_deepspeed_enabled:
            return
        critic = trainer._critic_parameter_ids()
        for p in trainer.model.parameters():
            if id(p) not in critic:
                p.grad = None


def _masked_var(x, mask):
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def train(recipe) -> str:
    """Run PPO as the recipe says; the saved model carries the value head as `v_head.*` weights."""
    from rlreason.models.loading import load_policy_for_training, lora_config
    from rlreason.tracking import MetricsJsonlCallback

    args, targs = recipe.args, recipe.training_args
    if targs.advantage_estimator != "gae":
        targs.advantage_estimator = "gae"
    start_run(recipe)
    model, tokenizer = load_policy_for_training(args, targs, prepare_model_path(args, targs.output_dir))
    rows = load_rows(args, args.dataset_train_split, args.max_train_samples)
    eval_rows = load_rows(args, args.dataset_test_split, args.max_eval_samples) if targs.eval_strategy != "no" else None
    peft = lora_config(args)
    if peft is not None and targs.value_model:
        raise RecipeError("value_model with LoRA is not supported: the separate critic would get adapters too; "
                          "drop value_model to use the value head on the LoRA policy's trunk")
    if peft is not None:
        peft.modules_to_save = [*(peft.modules_to_save or []), HEAD_NAME]
    trainer = PPOTrainer(model, targs, rows, tokenizer, args.reward_funcs, args.reward_weights, peft_config=peft,
                         callbacks=[MetricsJsonlCallback(targs.output_dir)], eval_dataset=eval_rows,
                         eval_max_completion_length=args.eval_max_completion_length)
    run_training(trainer, targs)
    trainer.save_model(targs.output_dir)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(targs.output_dir)
    return finish_run(recipe, trainer, Path(targs.output_dir))
