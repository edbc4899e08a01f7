"""Seconds per GRPO step, ours against TRL's GRPOTrainer, side by side on one tiny model and one config; and the
peak memory of the log-prob pass, ours against TRL's.

    python -m benchmarks.bench_grpo [--steps 12] [--prompts 4] [--k 8] [--max_completion_length 32] [--repeats 3]
    python -m benchmarks.bench_grpo --only memory [--memory_prompts 8]   # the log-prob memory line alone

Prints a table and ends with `grpo_step_ratio_vs_trl: X` (ours / TRL's, LoRA off; lower is better), and
compares our rollout with a bare `model.generate` of the same batch. The two trainers take turns, `repeats` runs
each, and each side reports the median of its runs' medians: on a shared machine one run's timing drifts by 30%.

Memory: one log-prob pass, forward and backward (the sum of the log-probs), of a 1-layer Llama with hidden size
64 and Qwen2.5's 151,936-token vocabulary on 8 prompts x 8 samples x 512 completion tokens (32-token prompts),
ours (rlreason.rollout.completion_logprobs) against TRL 1.16 GRPOTrainer._get_per_token_logps_and_entropies
(its fused LM head) on the same model and inputs. Each side runs in a fresh process; on CUDA the peak is
torch.cuda.max_memory_allocated, on a CPU it is the process's resident-set high-water mark (getrusage
ru_maxrss) minus its resident set just before the pass, with glibc's mmap threshold fixed at 1 MiB so freed
tensors go back to the system. Prints `logprob_peak_memory_ratio_vs_trl: X` (ours / TRL's; target <= 0.5).
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


MEMORY_SHAPE = dict(vocab_size=151_936, hidden_size=64, prompts=8, k=8, completion=512, prompt=32)


def _logprob_pass_peak(side: str, prompts: int) -> dict:
    """Run one log-prob pass (forward + backward) for `side` ("ours" or "trl") in this process; peak bytes."""
    import resource
    import types

    from accelerate import Accelerator
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = MEMORY_SHAPE
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    B, C, P = prompts * shape["k"], shape["completion"], shape["prompt"]
    stub = types.SimpleNamespace(accelerator=Accelerator(cpu=not cuda))

    def make(vocab):
        config = LlamaConfig(vocab_size=vocab, hidden_size=shape["hidden_size"], intermediate_size=128,
                             num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=4,
                             max_position_embeddings=1024, tie_word_embeddings=False)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).to(device).train()
        if side == "trl":
            from trl import GRPOTrainer
            from trl.trainer.utils import add_fused_lm_head

            add_fused_lm_head(model, temperature=1.0, outputs=("log_probs", "entropy"))  # as GRPOTrainer does

            def logprob_pass(i, m):
                return GRPOTrainer._get_per_token_logps_and_entropies(stub, model, i, m, C, compute_entropy=True)[:2]
        else:
            from rlreason.rollout import completion_logprobs

            def logprob_pass(i, m):
                return completion_logprobs(model, i, m, C, temperature=1.0, return_entropy=True)

        def once(i, m):
            logps, entropy = logprob_pass(i, m)
            logps.sum().backward()
            model.zero_grad(set_to_none=True)
            return float(entropy.detach().float().mean())

        ids = torch.randint(0, vocab, (B, P + C), device=device)
        return once, ids, torch.ones_like(ids)

    warm, ids, mask = make(1024)
    warm(ids[:2], mask[:2])  # lazy initialisation (kernels, thread pools) is not part of the pass
    del warm, ids, mask
    once, ids, mask = make(shape["vocab_size"])
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/statm") as f:
            before = int(f.read().split()[1]) * resource.getpagesize()
        high_water_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    start = time.perf_counter()
    entropy = once(ids, mask)
    seconds = time.perf_counter() - start
    if cuda:
        torch.cuda.synchronize()
        peak, slack = torch.cuda.max_memory_allocated() - before, 0
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before
        slack = max(0, high_water_before - before)  # a high-water mark above `before` from earlier would hide a peak
    return {"side": side, "rows": B, "peak_bytes": peak, "slack_bytes": slack, "seconds": seconds,
            "entropy": entropy,
            "method": "torch.cuda.max_memory_allocated" if cuda else "ru_maxrss - resident set before the pass"}


def memory_ratio(prompts: int = MEMORY_SHAPE["prompts"]) -> tuple[dict, dict]:
    """(ours, TRL's) log-prob pass peaks, each measured in its own fresh process."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "1048576", "MALLOC_TRIM_THRESHOLD_": "0"}
    results = {}
    for side in ("trl", "ours"):
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_grpo", "--memory_side", side,
                              "--memory_prompts", str(prompts)], env=env,
                             capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"the {side} memory run failed:\n{out.stderr[-3000:]}")
        results[side] = json.loads(out.stdout.strip().splitlines()[-1])
    return results["ours"], results["trl"]


def print_memory(ours: dict, trl: dict) -> None:
    s = MEMORY_SHAPE
    mib = 2 ** 20
    full = ours["rows"] * s["completion"] * s["vocab_size"] * 4 / 2 ** 30
    print(f"\nlog-prob pass, forward + backward: vocabulary {s['vocab_size']:,}, hidden {s['hidden_size']}, "
          f"{ours['rows'] // s['k']} x {s['k']} x {s['completion']} completion tokens ({ours['method']}; "
          f"the fp32 logits "
          f"of the whole micro-batch alone would be {full:.1f} GiB)")
    print(f"{'':<8}{'peak MiB':>10}{'seconds':>10}{'entropy':>10}")
    for name, r in (("ours", ours), ("TRL", trl)):
        print(f"{name:<8}{r['peak_bytes'] / mib:>10.0f}{r['seconds']:>10.1f}{r['entropy']:>10.4f}"
              + (f"   (high-water slack before the pass {r['slack_bytes'] / mib:.0f} MiB)" if r["slack_bytes"] else ""))
    print(f"logprob_peak_memory_ratio_vs_trl: {ours['peak_bytes'] / trl['peak_bytes']:.3f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["memory", "steps"], default=None,
                        help="run only the log-prob memory comparison, or only the step timing")
    parser.add_argument("--memory_prompts", type=int, default=MEMORY_SHAPE["prompts"],
                        help="prompts (x 8 samples x 512 tokens) in the memory comparison; fewer run faster")
    parser.add_argument("--memory_side", choices=["ours", "trl"], default=None, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--max_completion_length", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="runs per trainer, taking turns")
    ns = parser.parse_args(argv)
    if ns.memory_side:  # a child process of memory_ratio
        import json

        print(json.dumps(_logprob_pass_peak(ns.memory_side, ns.memory_prompts)))
        return
    if ns.only == "memory":
        print_memory(*memory_ratio(ns.memory_prompts))
        return
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
    if ns.only != "steps":
        print_memory(*memory_ratio(ns.memory_prompts))


if __name__ == "__main__":
    main()
