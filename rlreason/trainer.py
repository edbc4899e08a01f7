"""The on-policy trainer: rollout -> rewards -> advantages -> clipped loss, on transformers.Trainer.

Everything around the loop (optimiser, schedule, gradient accumulation, checkpoints, resume,
DeepSpeed, report_to) is transformers.Trainer's. This file adds one rollout per optimizer step
(`get_batch_samples`) and the policy loss (`compute_loss`). Algorithms plug in by overriding
`sample`, `reference_logps`, `compute_advantages`, `kl_weights` and `compute_loss` -- see
algorithms/ppo.py (values and GAE) and algorithms/score.py (two attempts).
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import torch
from transformers import Trainer

from rlreason.advantages import get_advantage
from rlreason.losses import get_policy_loss
from rlreason.models.parallel import check_sharded_generation, model_for_evaluation, unwrap_parallel
from rlreason.monitors import MonitorBoard, rollout_statistics
from rlreason.rollout import completion_logprobs, generate
from rlreason.sampling import check_training_sampling, training_sampling
from rlreason.scoring import RewardScorer
from rlreason.tool_rollout import generate_with_tools
from rlreason.tools import ToolConfig


class OnlineRLTrainer(Trainer):
    """GRPO-family trainer. `args` is an RLConfig; `train_dataset` holds task rows."""

    loss_is_scaled_for_ga = True  # the policy losses divide by the accumulation steps themselves, as TRL's do

    def __init__(self, model, args, train_dataset, processing_class, reward_funcs, reward_weights=None,
                 peft_config=None, callbacks=None, eval_dataset=None, eval_max_completion_length=None):
        check_training_sampling(args)  # repetition_penalty / min_p / generation_kwargs the loss cannot follow
        if peft_config is not None:
            from peft import get_peft_model

            model = get_peft_model(model, peft_config)
        self.use_peft = peft_config is not None
        if args.gradient_checkpointing:
            model.config.use_cache = False
        super().__init__(model=model, args=args, train_dataset=train_dataset, processing_class=processing_class,
                         eval_dataset=eval_dataset, data_collator=lambda rows: rows, callbacks=callbacks)
        from transformers.integrations import is_deepspeed_zero3_enabled

        check_sharded_generation(args, is_deepspeed_zero3_enabled(), self.accelerator.num_processes)
        self.eval_max_completion_length = eval_max_completion_length or args.max_completion_length
        self.model_accepts_loss_kwargs = False  # the loss normalises for accumulation itself, as TRL's does
        if args.per_device_train_batch_size % args.num_generations:
            raise ValueError(f"per_device_train_batch_size ({args.per_device_train_batch_size}) must be a multiple "
                             f"of num_generations ({args.num_generations}): each micro-batch holds whole groups")
        self.scorer = RewardScorer(reward_funcs, reward_weights)
        self.ref_model = self._make_reference(model) if self.uses_reference() and not self.use_peft else None
        if args.disable_dropout:  # TRL's option: every dropout (LoRA's too) at p = 0, in the policy and the reference
            from trl.trainer.utils import disable_dropout_in_model

            for net in (model, self.ref_model):
                if net is not None:
                    disable_dropout_in_model(net)
        self.policy_loss = get_policy_loss(args.loss_type)
        self.advantage_fn = get_advantage(args.advantage_estimator)
        self._metrics: dict[str, list[float]] = defaultdict(list)
        self._buffer: list[dict] | None = None
        self._rollouts_done = 0
        self._table: list[dict] = []
        self.monitor_board = MonitorBoard.for_trainer(self)

    # ----------------------------------------------------------------------------------- data
    def get_train_dataloader(self):
        """Batches of one rollout's prompts on this process (rows as dicts), each repeated for every optimizer
        step the rollout serves, gradient_accumulation_steps batches per step (data_order.RepeatRolloutSampler)."""
        from torch.utils.data import DataLoader

        from rlreason.data_order import RepeatRolloutSampler, rollout_layout

        layout = rollout_layout(self.args, self.accelerator.num_processes)
        per_process = layout["prompts_per_process"]
        sampler = RepeatRolloutSampler(len(self.train_dataset), per_process * self.accelerator.num_processes,
                                       repeats=layout["optimizer_steps"] * self.args.gradient_accumulation_steps,
                                       shuffle=bool(self.args.shuffle_dataset), seed=self.args.seed)
        loader = DataLoader(self.train_dataset, batch_size=per_process, collate_fn=lambda rows: rows,
                            sampler=sampler, drop_last=True)
        return self.accelerator.prepare(loader)

    def uses_reference(self) -> bool:
        """Whether the loss has a KL term, so reference log-probs are needed."""
        return self.args.beta != 0.0

    def _make_reference(self, model):
        """A frozen copy of the initial policy (only without LoRA; with LoRA the adapter is switched off)."""
        import copy

        from transformers.integrations import is_deepspeed_zero3_enabled

        from rlreason.models.value_head import critic_modules

        if is_deepspeed_zero3_enabled():  # the policy holds shards, so a copy would too: load it again, sharded
            from transformers import AutoModelForCausalLM
            from trl.models.utils import prepare_deepspeed

            if not model.name_or_path:
                raise ValueError("under ZeRO-3 the reference model is loaded again from model.name_or_path, "
                                 "which is empty: load the policy with from_pretrained, or set beta: 0")
            ref = AutoModelForCausalLM.from_pretrained(model.name_or_path, dtype=model.dtype)
            return prepare_deepspeed(ref, self.accelerator)
        # the copy leaves out PPO's value head and separate critic: the reference only gives log-probs
        ref = copy.deepcopy(model, memo={id(m): None for m in critic_modules(model)}).eval()
        ref.requires_grad_(False)
        return ref.to(self.args.device)

    # ----------------------------------------------------------------------------------- rollout
    def get_batch_samples(self, epoch_iterator, num_batches, device):
        """This optimizer step's micro-batches: a fresh rollout (steps_per_generation micro-batches) at the start
        of each cycle, else the next slice of the current one; a rollout is reused num_iterations times."""
        from rlreason.data_order import rollout_layout

        layout = rollout_layout(self.args, self.accelerator.num_processes)
        if 0 < self.state.max_steps <= self.state.global_step:  # resumed at the end: no rollout for a step past it
            return [], None
        batches = []
        for _ in range(num_batches):  # every step consumes its batches, so epochs and resume skips stay exact
            try:
                batches.append(next(epoch_iterator))
            except StopIteration:
                break
        position = self.state.global_step % layout["optimizer_steps"]
        if not batches:
            self._buffer = None
            return [], None
        if position == 0 or self._buffer is None:  # a cycle starts (or a resume lands inside one)
            rows, m = batches[0], layout["prompts_per_micro_batch"]
            micro = [rows[i * m:(i + 1) * m] for i in range(layout["micro_batches"])]
            self._buffer = self.make_experience(micro)
            self._buffer_ids = [[r.get("id") for r in mb] for mb in micro]
        self._rollouts_done += 1
        first = (position % layout["slices"]) * self.args.gradient_accumulation_steps
        chosen = self._buffer[first:first + self.args.gradient_accumulation_steps]
        _record_prompts(self, self._buffer_ids[first:first + self.args.gradient_accumulation_steps])
        local = sum(b["completion_mask"].sum() for b in chosen)
        num_items = self.accelerator.gather(local.to(device).reshape(1)).sum()
        return chosen, num_items

    @torch.no_grad()
    def make_experience(self, micro_batches: list[list[dict]]) -> list[dict]:
        """Sample, score and weigh completions for every micro-batch of prompt rows."""
        rows = [r for mb in micro_batches for r in mb]
        batch, rollout, gen_seconds = self.sample(rows)
        expanded = [r for r in rows for _ in range(self.args.num_generations)]
        scores = self.scorer(expanded, rollout.texts)
        rewards = scores.total.to(self.args.device)
        batch["old_logps"], batch["ref_logps"] = self.reference_logps(batch)
        batch["advantages"], adv_stats = self.compute_advantages(batch, rewards)
        self._log_rollout(rows, rollout, scores, rewards, batch["advantages"], adv_stats, gen_seconds)
        return split_micro_batches(batch, len(micro_batches))

    def sample(self, rows: list[dict]):
        """k completions per prompt -> (batch of token tensors on the device, the Rollout, seconds)."""
        args, k, device = self.args, self.args.num_generations, self.args.device
        start = time.perf_counter()
        prompts, tools = [r["prompt"] for r in rows], ToolConfig.from_args(args)
        with _unwrap_for_generation(self.model_wrapped, self.accelerator, args) as gen_model:
            if tools is not None:  # multi-turn: the model's code runs in the sandbox, its output comes back as tokens
                rollout = generate_with_tools(gen_model, self.processing_class, prompts, tools, num_generations=k,
                                              max_completion_length=args.max_completion_length,
                                              **training_sampling(args), compile=args.rollout_compile)
            else:
                rollout = generate(gen_model, self.processing_class, prompts, num_generations=k,
                                   max_completion_length=args.max_completion_length, **training_sampling(args),
                                   engine=args.rollout_engine, compile=args.rollout_compile)
        gen_seconds = time.perf_counter() - start
        completion_ids, completion_mask = rollout.completion_ids.to(device), rollout.completion_mask.to(device)
        if args.mask_truncated_completions:
            completion_mask = completion_mask * (~rollout.truncated.to(device)).unsqueeze(1).int()
        prompt_ids, prompt_mask = (t.to(device) for t in rollout.expanded_prompts())
        batch = {"input_ids": torch.cat([prompt_ids, completion_ids], 1),
                 "attention_mask": torch.cat([prompt_mask, completion_mask], 1),
                 "completion_ids": completion_ids, "completion_mask": policy_token_mask(completion_mask, rollout)}
        return batch, rollout, gen_seconds

    def reference_logps(self, batch: dict):
        """(old log-probs, when a rollout is reused; reference log-probs, when beta != 0), both with dropout off."""
        model = unwrap_parallel(self.model)
        ids, attention, C = batch["input_ids"], batch["attention_mask"], batch["completion_ids"].size(1)
        args = self.args
        reused = args.num_iterations > 1 or (args.steps_per_generation or 0) > args.gradient_accumulation_steps
        with dropout_off(model):
            old = self._logps(model, ids, attention, C) if reused else None  # the rollout serves later steps too
        return old, self.reference_only_logps(batch)

    def reference_only_logps(self, batch: dict):
        """The reference model's log-probs (dropout off), or None when beta is 0."""
        if not self.uses_reference():
            return None
        model = unwrap_parallel(self.model)
        ids, attention, C = batch["input_ids"], batch["attention_mask"], batch["completion_ids"].size(1)
        if self.use_peft:
            with dropout_off(model), model.disable_adapter():
                return self._logps(model, ids, attention, C)
        with dropout_off(self.ref_model):
            return self._logps(self.ref_model, ids, attention, C)

    def compute_advantages(self, batch: dict, rewards: torch.Tensor):
        """Sequence rewards -> advantages with the recipe's estimator; PPO overrides this with GAE."""
        return self.group_advantages(rewards)

    def group_advantages(self, rewards: torch.Tensor):
        """The estimator on this process's groups; `scale_rewards: batch` takes the std of every process's rewards
        (gathered, as TRL does) and keeps this process's slice."""
        args = self.args
        if args.scale_rewards != "batch" or self.accelerator.num_processes == 1:
            return self.advantage_fn(rewards, args.num_generations, scale_rewards=args.scale_rewards)
        return advantages_of_slice(self.advantage_fn, rewards, self.accelerator.gather(rewards),
                                   self.accelerator.process_index, args.num_generations, args.scale_rewards)

    def _logps(self, model, input_ids, attention, C):
        bs = self.args.per_device_train_batch_size
        parts = [completion_logprobs(model, input_ids[i:i + bs], attention[i:i + bs], C,
                                     temperature=self.args.temperature)[0] for i in range(0, len(input_ids), bs)]
        return torch.cat(parts, 0)

    # ----------------------------------------------------------------------------------- loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        logps, entropy = self.policy_logprobs(model, inputs)
        mask = inputs["completion_mask"]
        old = inputs["old_logps"] if inputs["old_logps"] is not None else logps.detach()
        loss, stats = self.policy_loss(
            logps, old, inputs["advantages"], mask, ref_logps=inputs["ref_logps"], beta=self.kl_weights(inputs),
            epsilon_low=args.epsilon, epsilon_high=args.epsilon_high or args.epsilon,
            max_completion_length=args.max_completion_length, num_items_in_batch=num_items_in_batch,
            num_processes=self.accelerator.num_processes,
            gradient_accumulation_steps=self.current_gradient_accumulation_steps, entropy=entropy,
            use_bias_correction_kl=args.use_bias_correction_kl, delta=args.delta,
            importance_sampling_level=args.importance_sampling_level,
            steps_per_generation=args.steps_per_generation,  # dapo: the rollout's tokens spread over this many steps
        )
        if inputs["old_logps"] is not None:  # how far the policy moved from the one that sampled
            stats["approx_kl"] = (0.5 * (logps.detach() - old) ** 2 * mask).sum() / mask.sum().clamp(min=1)
        for key, value in stats.items():
            self._metrics[key].append(float(value))
        return loss

    def policy_logprobs(self, model, inputs):
        """(log-probs with gradients, entropies) of the micro-batch's completion tokens under `model`."""
        return completion_logprobs(model, inputs["input_ids"], inputs["attention_mask"],
                                   inputs["completion_ids"].size(1), temperature=self.args.temperature,
                                   return_entropy=True)

    def kl_weights(self, inputs):
        """KL weight per token; a float for GRPO, a (B, C) tensor where attempts differ (SCoRe)."""
        return self.args.beta

    # ----------------------------------------------------------------------------------- evaluation
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        """Greedy accuracy on the held-out rows (every eval_steps with eval_strategy: steps; with the recipe's tools,
        if any), logged as eval_*;
        with num_generations_eval, also that many samples per problem at the training sampling settings
        (eval_sample_accuracy, eval_pass@N). Every rank takes its share of the problems."""
        from rlreason.evaluation import evaluate_greedy, evaluate_sampled

        rows = eval_dataset if eval_dataset is not None else self.eval_dataset
        metrics = {}
        if rows is not None:
            args, common = self.args, dict(reward=self.scorer.names[0], progress=False,
                                           max_completion_length=self.eval_max_completion_length,
                                           chat_template_kwargs=self.args.chat_template_kwargs,
                                           tools=ToolConfig.from_args(self.args))  # a tool policy uses them here too
            with model_for_evaluation(self) as model:
                result = evaluate_greedy(model, self.processing_class, rows, **common)
                found = {f"{metric_key_prefix}_accuracy": result["accuracy"]}
                if args.num_generations_eval:
                    n = int(args.num_generations_eval)
                    sampled = evaluate_sampled(model, self.processing_class, rows, n=n, ks=(1, n),
                                               temperature=args.temperature, top_p=args.top_p,
                                               top_k=args.top_k or 0, **common)
                    found[f"{metric_key_prefix}_sample_accuracy"] = sampled["sample_accuracy"]
                    found[f"{metric_key_prefix}_pass@{n}"] = sampled["pass_at_k"][str(n)]
                if self.is_world_process_zero():
                    metrics = found
            if metrics:
                self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    # ----------------------------------------------------------------------------------- logging
    def _log_rollout(self, rows, rollout, scores, rewards, advantages, adv_stats, gen_seconds):
        lengths = rollout.completion_mask.sum(1).float()
        gathered_len = self.accelerator.gather(lengths.to(self.args.device))
        m = self._metrics
        for name, values in scores.per_function.items():
            col = values.to(self.args.device)
            valid = col[~torch.isnan(col)]
            m[f"rewards/{name}/mean"].append(valid.mean().item() if len(valid) else float("nan"))
            m[f"rewards/{name}/std"].append(valid.std().item() if len(valid) > 1 else 0.0)
        m["reward"].append(torch.nanmean(self.accelerator.gather(rewards)).item())  # rows no reward scored: left out
        m["accuracy"].append(scores.accuracy)
        m["completions/mean_length"].append(gathered_len.mean().item())
        m["completions/max_length"].append(gathered_len.max().item())
        m["completions/clipped_ratio"].append(rollout.truncated.float().mean().item())
        m["frac_reward_zero_std"].append(float(adv_stats.get("frac_zero_std", _frac_zero_std(rewards, self.args.num_generations))))
        m["reward_errors"].append(float(scores.errors))
        m["rollout_seconds"].append(gen_seconds)
        m["tokens_per_second"].append(float(lengths.sum().item()) / max(gen_seconds, 1e-9))
        stats = rollout_statistics(rollout.texts, self.processing_class, scores.errors, self.args.monitors)
        for key, value in stats.items():  # what the run monitors read
            m[key].append(value)
        if rollout.tool_stats is not None:
            for key, value in tool_metrics(rollout, self.accelerator.gather, self.args.device).items():
                m[key].append(value)
            _record_tool_counts(self, rollout)
        if self.args.log_completions_steps and self.state.global_step % self.args.log_completions_steps == 0:
            names = list(scores.per_function)
            shown = rollout.display_texts or rollout.texts  # tool rollouts: observations marked
            self._table = [
                {"step": self.state.global_step, "prompt": _prompt_text(rows[i // self.args.num_generations]),
                 "completion": shown[i], **{n: float(scores.per_function[n][i]) for n in names},
                 "advantage": float(advantages[i].float().mean())}
                for i in range(min(len(rollout.texts), 16))
            ]

    def log(self, logs: dict, start_time=None):
        for key, values in self._metrics.items():
            vals = [v for v in values if v == v]
            if vals:
                logs[key] = sum(vals) / len(vals) if not key.endswith("max_length") else max(vals)
        self._metrics.clear()
        self.monitor_board.watch(self, logs)
        super().log(logs, start_time)
        if self._table and self.accelerator.is_main_process:
            self._log_table()
        self._table = []

    def _log_table(self):
        from rlreason.tracking import wants_wandb

        if not wants_wandb(self.args.report_to):
            return
        import wandb

        if wandb.run is None:
            return
        columns = list(self._table[0])
        wandb.log({"completions": wandb.Table(columns=columns, data=[[r[c] for c in columns] for r in self._table])})


def policy_token_mask(completion_mask: torch.Tensor, rollout) -> torch.Tensor:
    """The tokens the loss, log-probs, KL and entropy count: completion_mask without a tool rollout's
    observation tokens (the policy did not sample them). Attention still covers the observations."""
    if rollout.observation_mask is None:
        return completion_mask
    return completion_mask * (1 - rollout.observation_mask.to(completion_mask.device, completion_mask.dtype))


def tool_metrics(rollout, gather, device) -> dict[str, float]:
    """Tool use over every process's rows: calls, errors, timeouts and turns per completion, errors and timeouts
    per call, and the share of the trajectories' tokens that are observations."""
    totals = {key: gather(value.to(device).float()) for key, value in rollout.tool_stats.items()}
    tokens = gather(rollout.completion_mask.sum(1).to(device).float()).sum().clamp(min=1)
    calls = totals["tool_calls"].sum()
    return {"tools/calls_per_completion": totals["tool_calls"].mean().item(),
            "tools/errors_per_completion": totals["tool_errors"].mean().item(),
            "tools/timeouts_per_completion": totals["tool_timeouts"].mean().item(),
            "tools/error_rate": (totals["tool_errors"].sum() / calls.clamp(min=1)).item(),
            "tools/timeout_rate": (totals["tool_timeouts"].sum() / calls.clamp(min=1)).item(),
            "tools/turns": totals["turns"].mean().item(),
            "tools/observation_share": (totals["observation_tokens"].sum() / tokens).item()}


def _record_prompts(trainer, micro_batch_ids: list[list]) -> None:
    """With RLREASON_PROMPT_LOG=FILE, append the prompt ids of each optimizer step (a test's view of data order)."""
    import json
    import os

    path = os.environ.get("RLREASON_PROMPT_LOG")
    if path:
        row = {"step": trainer.state.global_step + 1, "rank": trainer.accelerator.process_index,
               "ids": [i for mb in micro_batch_ids for i in mb]}
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


def _record_tool_counts(trainer, rollout) -> None:
    """With RLREASON_TOOL_LOG=FILE, append this process's tool counts of each rollout (a test's view of every
    rank's tool use, against which the logged tools/* metrics are checked)."""
    import json
    import os

    path = os.environ.get("RLREASON_TOOL_LOG")
    if path:
        row = {"step": trainer.state.global_step + 1, "rank": trainer.accelerator.process_index,
               "rows": len(rollout.texts), "tokens": int(rollout.completion_mask.sum()),
               **{key: int(value.sum()) for key, value in rollout.tool_stats.items()}}
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")


@contextlib.contextmanager
def dropout_off(model):
    """Eval mode (every dropout, LoRA's included, off) within the block; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def advantages_of_slice(advantage_fn, local: torch.Tensor, gathered: torch.Tensor, process_index: int, k: int,
                        scale_rewards: str):
    """Advantages of the whole gathered batch (every process's rewards, in process order), sliced back to the
    `local` rows of process `process_index`: batch statistics are global, group statistics unchanged."""
    advantages, stats = advantage_fn(gathered, k, scale_rewards=scale_rewards)
    n = local.numel()
    return advantages[process_index * n:(process_index + 1) * n], stats


def split_micro_batches(batch: dict, count: int) -> list[dict]:
    """One rollout's tensors cut into `count` equal micro-batches (the accumulation steps it came from)."""
    rows = len(batch["input_ids"])
    per = -(-rows // count)
    return [{key: (None if value is None else value[i:i + per]) for key, value in batch.items()}
            for i in range(0, rows, per)]


def _frac_zero_std(rewards: torch.Tensor, k: int) -> float:
    groups = rewards.view(-1, k)
    return (groups.std(1) < 1e-6).float().mean().item()


def _prompt_text(row) -> str:
    prompt = row["prompt"]
    return prompt if isinstance(prompt, str) else prompt[-1]["content"]


def _unwrap_for_generation(model, accelerator, args):
    """The rollout's model: ZeRO-3 shards gathered when `ds3_gather_for_generation` says so, a plain unwrap
    otherwise. `model` is trainer.model_wrapped (the DeepSpeed engine), so ZeRO-3's hooks are lifted."""
    from rlreason.models.parallel import unwrap_for_generation

    return unwrap_for_generation(model, accelerator, gather_deepspeed3_params=args.ds3_gather_for_generation,
                                 gradient_checkpointing_kwargs=args.gradient_checkpointing_kwargs)
