"""`score`: SCoRe (Kumar et al. 2024), training a model to correct itself with two-attempt on-policy RL.

Rollout: attempt 1 to the problem; then a fixed instruction and attempt 2 conditioned on attempt 1
(no correctness feedback). Each sample becomes two training sequences: [prompt | attempt 1] and
[prompt, attempt 1, instruction | attempt 2]; only the attempt tokens are in the loss, so prompt and
instruction tokens are excluded, and attempt 1's log-probs are exactly those it was sampled with.

Stage I (the first `stage_one_steps` steps): only attempt 2 is rewarded; attempt 1 is held near the
reference by a strong per-token KL (`beta_first`), attempt 2 by `beta`.
Stage II: both attempts are rewarded; attempt 2's reward gets the bonus alpha * (r(y2) - r(y1)).
Advantages are group-normalised over the k samples of a prompt, per attempt (the recipe's estimator).

Where this differs from the paper: the loss is the recipe's clipped surrogate with a group baseline and the k3 KL
in the loss (one update per rollout is REINFORCE with a baseline; the paper puts a KL penalty on REINFORCE);
each attempt's tokens get the advantage of that attempt's own (shaped) reward, not the two-turn return (with the
return, the bonus's -alpha * r(y1) would reward a wrong attempt 1); stage I also keeps `beta` on attempt 2; the
reference is the model SCoRe starts from; attempt 2 sees attempt 1 as decoded text, re-tokenised (as evaluation
does), not its sampled ids; a rollout keeps the stage it was sampled in when later steps reuse it.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from rlreason.algorithms.common import finish_run, load_rows, prepare_model_path, run_training, start_run
from rlreason.config import dump_json
from rlreason.rollout import SELF_CORRECTION_INSTRUCTION, generate, generate_second_attempt
from rlreason.sampling import check_training_sampling, training_sampling
from rlreason.trainer import OnlineRLTrainer, _unwrap_for_generation, split_micro_batches


def stage_rewards(r1: torch.Tensor, r2: torch.Tensor, stage: int, alpha: float):
    """(reward of attempt 1, reward of attempt 2) as the stage trains them; NaN = attempt not trained."""
    if stage == 1:
        return torch.full_like(r1, float("nan")), r2
    return r1, r2 + alpha * (r2 - r1)


def stage_kl_weights(stage: int, beta_first: float, beta: float) -> tuple[float, float]:
    """Per-token KL weight on (attempt 1, attempt 2)."""
    return (beta_first, beta) if stage == 1 else (beta, beta)


def _join(first: dict, second: dict, pad_id: int) -> dict:
    """Stack two [left-padded prompt | right-padded completion] batches into one of shared widths; `attempt` says
    which rows are attempt 1 (0) and attempt 2 (1), and per-token tensors (log-probs) are padded like completions."""
    P = max(first["prompt_ids"].size(1), second["prompt_ids"].size(1))
    C = max(first["completion_ids"].size(1), second["completion_ids"].size(1))

    def widen(part):
        p = P - part["prompt_ids"].size(1)
        c = C - part["completion_ids"].size(1)
        tokens = {key: (None if part.get(key) is None else F.pad(part[key], (0, c)))
                  for key in ("old_logps", "ref_logps")}
        return (F.pad(part["prompt_ids"], (p, 0), value=pad_id), F.pad(part["prompt_mask"], (p, 0)),
                F.pad(part["completion_ids"], (0, c), value=pad_id), F.pad(part["completion_mask"], (0, c)), tokens)

    pi1, pm1, ci1, cm1, t1 = widen(first)
    pi2, pm2, ci2, cm2, t2 = widen(second)
    ids = torch.cat([torch.cat([pi1, ci1], 1), torch.cat([pi2, ci2], 1)])
    mask = torch.cat([torch.cat([pm1, cm1], 1), torch.cat([pm2, cm2], 1)])
    joined = {"input_ids": ids, "attention_mask": mask, "completion_ids": torch.cat([ci1, ci2]),
              "completion_mask": torch.cat([cm1, cm2]),
              "attempt": torch.cat([torch.zeros(len(ci1), dtype=torch.long), torch.ones(len(ci2), dtype=torch.long)])}
    for key in ("old_logps", "ref_logps"):
        joined[key] = None if t1[key] is None else torch.cat([t1[key], t2[key]])
    return joined


def by_attempt_logprobs(model, inputs: dict, temperature: float) -> tuple[torch.Tensor, torch.Tensor | None]:
    """completion_logprobs of a joined two-attempt batch, one forward per attempt, each without the left-padding
    columns all its rows share: attempt 1's rows carry attempt 2's longer prompt width only because the batch is
    joined, and with rotary positions (Llama, Qwen) a shift of every position changes no log-prob."""
    from rlreason.rollout import completion_logprobs

    C = inputs["completion_ids"].size(1)
    order, logps, entropies = [], [], []
    for attempt in (0, 1):
        rows = (inputs["attempt"] == attempt).nonzero(as_tuple=True)[0]
        if not len(rows):
            continue
        mask = inputs["attention_mask"][rows]
        used = mask.any(0).nonzero()
        start = min(int(used[0]) if len(used) else 0, mask.size(1) - C - 1)
        lp, ent = completion_logprobs(model, inputs["input_ids"][rows, start:], mask[:, start:], C,
                                      temperature=temperature, return_entropy=True)
        order.append(rows)
        logps.append(lp)
        entropies.append(ent)
    back = torch.argsort(torch.cat(order))
    return torch.cat(logps)[back], None if entropies[0] is None else torch.cat(entropies)[back]


class ScoreTrainer(OnlineRLTrainer):
    """OnlineRLTrainer whose rollout has two attempts and whose KL weight differs per attempt."""

    @property
    def stage(self) -> int:
        return 1 if self.state.global_step < self.args.stage_one_steps else 2

    @torch.no_grad()
    def make_experience(self, micro_batches):
        args, k, device = self.args, self.args.num_generations, self.args.device
        rows = [r for mb in micro_batches for r in mb]
        prompts = [r["prompt"] for r in rows]
        sampling = dict(max_completion_length=args.max_completion_length, **training_sampling(args),
                        engine=args.rollout_engine, compile=args.rollout_compile)
        start = time.perf_counter()
        with _unwrap_for_generation(self.model_wrapped, self.accelerator, args) as gen_model:
            first = generate(gen_model, self.processing_class, prompts, num_generations=k, **sampling)
            second = generate_second_attempt(gen_model, self.processing_class, prompts, first.texts,
                                             instruction=args.correction_instruction or SELF_CORRECTION_INSTRUCTION,
                                             num_generations=1, **sampling)
        seconds = time.perf_counter() - start
        parts = []
        for ro in (first, second):
            p_ids, p_mask = (t.to(device) for t in ro.expanded_prompts())
            completion_ids, completion_mask = ro.completion_ids.to(device), ro.completion_mask.to(device)
            if args.mask_truncated_completions:  # an attempt that hit the length limit leaves the loss, as in GRPO
                completion_mask = completion_mask * (~ro.truncated.to(device)).unsqueeze(1).to(completion_mask.dtype)
            part = {"prompt_ids": p_ids, "prompt_mask": p_mask, "completion_ids": completion_ids,
                    "completion_mask": completion_mask, "input_ids": torch.cat([p_ids, completion_ids], 1),
                    "attention_mask": torch.cat([p_mask, completion_mask], 1)}
            part["old_logps"], part["ref_logps"] = self.reference_logps(part)  # each attempt at its own width
            parts.append(part)
        batch = {key: (None if value is None else value.to(device))
                 for key, value in _join(*parts, self.processing_class.pad_token_id).items()}

        expanded = [r for r in rows for _ in range(k)]
        s1, s2 = self.scorer(expanded, first.texts), self.scorer(expanded, second.texts)
        r1, r2 = s1.total.to(device), s2.total.to(device)
        t1, t2 = stage_rewards(r1, r2, self.stage, args.alpha)
        a1, stats1 = self.group_advantages(t1)
        a2, stats2 = self.group_advantages(t2)
        w1, w2 = stage_kl_weights(self.stage, args.beta_first, args.beta)
        n = len(expanded)
        batch["advantages"] = torch.cat([a1, a2])
        batch["kl_weight"] = torch.cat([torch.full((n,), w1), torch.full((n,), w2)]).to(device)
        self._log_attempts(expanded, s1, s2, r1, r2, first, second, stats2, seconds)
        # interleave so every micro-batch holds both attempts of the same samples
        order = torch.arange(2 * n, device=device).view(2, n).t().reshape(-1)
        batch = {key: (None if v is None else v[order]) for key, v in batch.items()}
        return split_micro_batches(batch, len(micro_batches))

    def evaluate_attempts(self, rows, **kwargs) -> dict | None:
        """evaluate_two_attempts on the current weights, every rank taking its share (see model_for_evaluation)."""
        from rlreason.evaluation import evaluate_two_attempts
        from rlreason.models.parallel import model_for_evaluation

        with model_for_evaluation(self) as model:
            return None if model is None else evaluate_two_attempts(model, self.processing_class, rows, **kwargs)

    def uses_reference(self) -> bool:
        return self.args.beta != 0.0 or self.args.beta_first != 0.0

    def kl_weights(self, inputs):
        return inputs["kl_weight"]

    def policy_logprobs(self, model, inputs):
        """One forward per attempt (by_attempt_logprobs); a model wrapped for several processes (DDP, DeepSpeed)
        keeps the one joined forward, as their gradient hooks expect one forward per backward."""
        from rlreason.models.parallel import is_wrapped

        if is_wrapped(model):
            return super().policy_logprobs(model, inputs)
        return by_attempt_logprobs(model, inputs, self.args.temperature)

    def _log_attempts(self, rows, s1, s2, r1, r2, first, second, stats2, seconds):
        """score/* (two_attempt_metrics of this rollout: one attempt 1 and its attempt 2 per sample) and the
        trainer's usual rollout metrics, read from attempt 2."""
        from rlreason.evaluation.two_attempts import final_answers, two_attempt_metrics
        from rlreason.monitors import rollout_statistics

        name = next(iter(s1.per_function))
        c1 = (s1.per_function[name] >= 1.0).tolist()
        c2 = (s2.per_function[name] >= 1.0).tolist()
        m = self._metrics
        answers = [final_answers(rows, ro.texts) for ro in (first, second)]
        for key, value in two_attempt_metrics(c1, c2, first.texts, second.texts, *answers).items():
            if key != "n":
                m[f"score/{key}"].append(value)
        m["score/stage"].append(float(self.stage))
        m["reward"].append(r2.mean().item())
        m["accuracy"].append(s2.accuracy)
        m["completions/mean_length"].append(second.completion_mask.sum(1).float().mean().item())
        m["completions/attempt_1_mean_length"].append(first.completion_mask.sum(1).float().mean().item())
        m["frac_reward_zero_std"].append(float(stats2.get("frac_zero_std", 0.0)))
        m["rollout_seconds"].append(seconds)
        for key, value in rollout_statistics(first.texts + second.texts, self.processing_class, s1.errors + s2.errors,
                                             self.args.monitors).items():  # both attempts, for the run monitors
            m[key].append(value)


def train(recipe) -> str:
    """Stage I then stage II; writes stage.json with the two-attempt metrics before and after training."""
    from rlreason.models.loading import load_policy_for_training, lora_config
    from rlreason.tracking import MetricsJsonlCallback

    args, targs = recipe.args, recipe.training_args
    check_training_sampling(targs)  # before the model loads
    start_run(recipe)
    model, tokenizer = load_policy_for_training(args, targs, prepare_model_path(args, targs.output_dir))
    test_rows = load_rows(args, args.dataset_test_split, args.max_eval_samples)
    two = dict(reward=args.reward_funcs[0], max_completion_length=args.eval_max_completion_length,
               instruction=targs.correction_instruction)
    trainer = ScoreTrainer(model, targs, load_rows(args, args.dataset_train_split, args.max_train_samples), tokenizer,
                           args.reward_funcs, args.reward_weights, peft_config=lora_config(args),
                           callbacks=[MetricsJsonlCallback(targs.output_dir)],
                           eval_dataset=test_rows if targs.eval_strategy != "no" else None,  # greedy attempt-1 accuracy
                           eval_max_completion_length=args.eval_max_completion_length)
    evaluate = args.eval_after_train
    before = trainer.evaluate_attempts(test_rows, **two) if evaluate and targs.evaluate_start else None
    run_training(trainer, targs)
    trainer.save_model(targs.output_dir)
    after = trainer.evaluate_attempts(test_rows, **two) if evaluate else None
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(targs.output_dir)
        if after is not None:
            write_two_attempts(Path(targs.output_dir), {"before": before, "after": after})
    return finish_run(recipe, trainer, Path(targs.output_dir))


def write_two_attempts(out: Path, results: dict) -> None:
    """stage.json: the two-attempt metrics (TWO_ATTEMPT_KEYS) of each result given (before / after / ...);
    two_attempts.json: their per-problem correctness, for paired comparisons with other runs."""
    from rlreason.evaluation.two_attempts import TWO_ATTEMPT_KEYS as keys

    results = {name: r for name, r in results.items() if r is not None}
    dump_json({name: {k: r[k] for k in keys} for name, r in results.items()}, out / "stage.json")
    dump_json({name: r["per_problem"] for name, r in results.items()}, out / "two_attempts.json")
