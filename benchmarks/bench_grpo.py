"""Seconds per GRPO step, ours against TRL's GRPOTrainer, side by side on one tiny model and one config.

    python -m benchmarks.bench_grpo [--steps 12] [--prompts 4] [--k 8] [--max_completion_length 32] [--repeats 3]

Prints a table and ends with `grpo_step_ratio_vs_trl: X` (ours / TRL's, LoRA off; lower is better), and
compares our rollout with a bare `model.generate` of the same batch. The two trainers take turns, `repeats` runs
each, and each side reports the median of its runs' medians: on a shared machine one run's timing drifts by 30%.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    """Wall time between consecutive optimizer steps: rollout, scoring, forward, backward and update, whatever
    the trainer does them in (ours samples in get_batch_samples, before on_step_begin)."""

    def __init__(self):
        self.times: list[float] = []
        self._t = None

    def on_step_end(self, args, state, control, **kwargs):
        now = time.perf_counter()
        if self._t is not None:
            self.times.append(now - self._t)
        self._t = now


def _recipe(model_dir, out, backend, lora, ns):
    from rlreason.config import load_recipe

    raw = {"algorithm": "grpo", "backend": backend, "model_name_or_path": model_dir, "task": "arithmetic",
           "task_options": {"num_ops": 2, "digits": 2, "seed": 3, "num_train": 512, "num_test": 16},
           "reward_funcs": ["rewards.math.accuracy"], "num_generations": ns.k,
           "per_device_train_batch_size": ns.k * ns.prompts, "max_completion_length": ns.max_completion_length,
           "learning_rate": 1e-5, "beta": 0.04, "loss_type": "dapo", "max_steps": ns.steps, "logging_steps": 1000,
           "save_strategy": "no", "report_to": "none", "gradient_checkpointing": False, "output_dir": str(out),
           "use_peft": lora, "lora_r": 8, "lora_alpha": 16, "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
           "eval_after_train": False, "disable_tqdm": True, "seed": 0}
    return load_recipe(None, base=raw)


def time_trainer(model_dir, backend, lora, ns) -> float:
    """Median seconds per optimizer step, from step-to-step intervals after the first step."""
    from rlreason.algorithms.common import load_rows
    from rlreason.algorithms.grpo import _trl_trainer
    from rlreason.models.loading import load_policy, lora_config
    from rlreason.trainer import OnlineRLTrainer

    with tempfile.TemporaryDirectory() as out:
        recipe = _recipe(model_dir, out, backend, lora, ns)
        model, tok = load_policy(model_dir)
        rows = load_rows(recipe.args, "train")
        timer = StepTimer()
        if backend == "trl":
            trainer = _trl_trainer(recipe, model, tok, rows, [timer])
        else:
            trainer = OnlineRLTrainer(model, recipe.training_args, rows, tok, recipe.args.reward_funcs,
                                      peft_config=lora_config(recipe.args), callbacks=[timer])
        trainer.train()
    return statistics.median(timer.times)


def time_rollout(model_dir, ns) -> tuple[float, float]:
    """(our rollout, bare model.generate) seconds for the same prompts, k and lengths; medians of 5."""
    from rlreason.models.loading import load_policy
    from rlreason.rollout import generate
    from rlreason.tasks import load_task

    model, tok = load_policy(model_dir)
    rows = load_task("arithmetic", "train", num_ops=2, digits=2, seed=3, num_train=64, num_test=8)
    prompts = [r["prompt"] for r in rows.select(range(ns.prompts))]
    texts = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    ours, bare = [], []
    for _ in range(5):
        torch.manual_seed(0)
        t = time.perf_counter()
        generate(model, tok, prompts, num_generations=ns.k, max_completion_length=ns.max_completion_length)
        ours.append(time.perf_counter() - t)
        torch.manual_seed(0)
        t = time.perf_counter()
        with torch.no_grad():
            model.generate(**enc, do_sample=True, temperature=1.0, top_k=0, top_p=1.0, num_return_sequences=ns.k,
                           max_new_tokens=ns.max_completion_length, pad_token_id=tok.pad_token_id)  # our settings
        bare.append(time.perf_counter() - t)
    return statistics.median(ours), statistics.median(bare)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max_completion_length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="runs per trainer, taking turns")
    ns = parser.parse_args(argv)
    from rlreason.models.tiny import build_tiny, task_texts

    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny(f"{tmp}/model", texts=task_texts("arithmetic", num_ops=2, digits=2),
                               hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
        rows = []
        for lora in (False, True):
            trl_runs, ours_runs = [], []
            for _ in range(ns.repeats):
                trl_runs.append(time_trainer(model_dir, "trl", lora, ns))
                ours_runs.append(time_trainer(model_dir, "rlreason", lora, ns))
            rows.append((lora, statistics.median(ours_runs), statistics.median(trl_runs)))
        ours_r, bare_r = time_rollout(model_dir, ns)
    print(f"\nGRPO step, tiny Llama, {ns.prompts} prompts x {ns.k} samples, max {ns.max_completion_length} tokens, "
          f"beta 0.04, {ns.steps} steps (median after the first; median of {ns.repeats} runs each)")
    print(f"{'LoRA':<6}{'ours s/step':>14}{'TRL s/step':>14}{'ratio':>8}")
    for lora, ours_s, trl_s in rows:
        print(f"{'on' if lora else 'off':<6}{ours_s:>14.4f}{trl_s:>14.4f}{ours_s / trl_s:>8.2f}")
    print(f"rollout: ours {ours_r:.4f} s, bare model.generate {bare_r:.4f} s, ratio {ours_r / bare_r:.2f}")
    print(f"grpo_step_ratio_vs_trl_lora: {rows[1][1] / rows[1][2]:.3f}")
    print(f"grpo_step_ratio_vs_trl: {rows[0][1] / rows[0][2]:.3f}")


if __name__ == "__main__":
    main()
