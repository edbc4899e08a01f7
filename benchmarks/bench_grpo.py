"""Seconds per GRPO step, ours against TRL's GRPOTrainer, side by side on one model and one config.

    python -m benchmarks.bench_grpo [--steps 12] [--prompts 4] [--k 8] [--max_completion_length 32] [--repeats 3]
                                    [--lengths 32,128,512] [--length_steps 5]

Prints tables and the lines `grpo_step_ratio_vs_trl: X` (ours / TRL's, LoRA off; lower is better) and
`grpo_step_ratio_vs_trl_lora: X`, for our recipe defaults (rollout_engine static; its decode step compiled on a
GPU only) and with `rollout_compile: true` (`..._compiled`); `rollout_speedup_vs_generate: X` (our rollout's
tokens/s over a bare `model.generate` of the same batch with the same sampling settings; higher is better), the
compile time of the decode step and the steps that amortise it; and step times for several max_completion_length.
The trainers take turns, `repeats` runs each, and each side reports the median of its runs' medians: on a shared
machine one run's timing drifts by 30%. On a GPU (`make bench` picks CUDA when there is one) the model is a
0.5B-class shape in bf16 and the batch 8 prompts x 8 samples x 512 tokens.
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


def _recipe(model_dir, out, backend, lora, ns, **extra):
    from rlreason.config import load_recipe

    raw = {"algorithm": "grpo", "backend": backend, "model_name_or_path": model_dir, "task": "arithmetic",
           "task_options": {"num_ops": 2, "digits": 2, "seed": 3, "num_train": 512, "num_test": 16},
           "reward_funcs": ["rewards.math.accuracy"], "num_generations": ns.k,
           "per_device_train_batch_size": ns.k * ns.prompts, "max_completion_length": ns.max_completion_length,
           "learning_rate": 1e-5, "beta": 0.04, "loss_type": "dapo", "max_steps": ns.steps, "logging_steps": 1000,
           "save_strategy": "no", "report_to": "none", "gradient_checkpointing": False, "output_dir": str(out),
           "use_peft": lora, "lora_r": 8, "lora_alpha": 16, "lora_target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"],
           "eval_after_train": False, "disable_tqdm": True, "seed": 0, **_device_keys(), **extra}
    return load_recipe(None, base=raw)


def time_trainer(model_dir, backend, lora, ns, **extra) -> float:
    """Median seconds per optimizer step, from step-to-step intervals after the first step; `extra` recipe keys
    (rollout_engine, rollout_compile, max_completion_length, max_steps) for our trainer or both."""
    from rlreason.algorithms.common import load_rows
    from rlreason.algorithms.grpo import _trl_trainer
    from rlreason.models.loading import load_policy, lora_config
    from rlreason.trainer import OnlineRLTrainer

    with tempfile.TemporaryDirectory() as out:
        recipe = _recipe(model_dir, out, backend, lora, ns, **extra)
        model, tok = load_policy(model_dir, _dtype())
        rows = load_rows(recipe.args, "train")
        timer = StepTimer()
        if backend == "trl":
            trainer = _trl_trainer(recipe, model, tok, rows, [timer])
        else:
            trainer = OnlineRLTrainer(model, recipe.training_args, rows, tok, recipe.args.reward_funcs,
                                      peft_config=lora_config(recipe.args), callbacks=[timer])
        trainer.train()
    return statistics.median(timer.times)


def time_rollout(model_dir, ns) -> dict:
    """Seconds for the same prompts, k, length and sampling settings: our rollout (recipe defaults, and with the
    decode step compiled) and a bare `model.generate`; medians of 5 after one warm-up call each. Also the
    compile time of the decode step (its first compiled call) and the completion tokens of each."""
    from rlreason import rollout_engine
    from rlreason.models.loading import load_policy
    from rlreason.rollout import generate
    from rlreason.tasks import load_task

    model, tok = load_policy(model_dir, _dtype())
    model = model.to(_device()).eval()
    rows = load_task("arithmetic", "train", num_ops=2, digits=2, seed=3, num_train=64, num_test=8)
    prompts = [r["prompt"] for r in rows.select(range(ns.prompts))]
    texts = [tok.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    tok.padding_side = "left"
    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(_device())
    sampling = dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0)  # the bench recipe's (TRL's defaults)

    def ours(compile):
        out = generate(model, tok, prompts, num_generations=ns.k, max_completion_length=ns.max_completion_length,
                       temperature=1.0, top_p=1.0, top_k=0, engine="static", compile=compile)
        return int(out.completion_mask.sum())

    def bare():
        with torch.no_grad():
            out = model.generate(**enc, **sampling, num_return_sequences=ns.k, max_new_tokens=ns.max_completion_length,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        completion = out[:, enc["input_ids"].size(1):]
        ended = (completion == tok.eos_token_id).int().cumsum(1)
        return int(((ended == 0) | ((ended == 1) & (completion == tok.eos_token_id))).sum())  # up to the first eos

    key = f"{type(model).__name__}/{_device().type}"
    start = time.perf_counter()
    ours(True)
    compile_s = rollout_engine.COMPILE_SECONDS.get(key, time.perf_counter() - start)
    result = {"compile_seconds": compile_s}
    for name, fn in (("ours", lambda: ours(None)), ("ours_compiled", lambda: ours(True)), ("bare", bare)):
        fn()
        times, tokens = [], []
        for i in range(5):
            torch.manual_seed(i)
            _sync()
            t = time.perf_counter()
            tokens.append(fn())
            _sync()
            times.append(time.perf_counter() - t)
        result[name] = (statistics.median(times), statistics.median(tokens))
    return result


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _dtype() -> str:
    return "bfloat16" if torch.cuda.is_available() else "float32"


def _device_keys() -> dict:
    return {"bf16": True} if torch.cuda.is_available() else {}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# The bench's model: a tiny Llama on a CPU; on a GPU a 0.5B-class shape (Qwen2.5-0.5B's widths and depth; the
# vocabulary is the tiny tokenizer's, so the embedding is small), random weights either way.
CPU_SHAPE = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=1024)
GPU_SHAPE = dict(hidden_size=896, num_hidden_layers=24, num_attention_heads=14, intermediate_size=4864,
                 max_position_embeddings=1024)
GPU_DEFAULTS = dict(prompts=8, k=8, max_completion_length=512, steps=6, repeats=2)


def step_ratios(model_dir, ns) -> list[tuple]:
    """(LoRA, ours s/step with the recipe defaults, ours with rollout_compile true, TRL s/step), LoRA off and on."""
    rows = []
    compiled_differs = not torch.cuda.is_available()  # on a GPU the default already compiles
    for lora in (False, True):
        trl_runs, ours_runs, compiled_runs = [], [], []
        for _ in range(ns.repeats):
            trl_runs.append(time_trainer(model_dir, "trl", lora, ns))
            ours_runs.append(time_trainer(model_dir, "rlreason", lora, ns))
            if compiled_differs:
                compiled_runs.append(time_trainer(model_dir, "rlreason", lora, ns, rollout_compile=True))
        ours_s = statistics.median(ours_runs)
        rows.append((lora, ours_s, statistics.median(compiled_runs) if compiled_runs else ours_s,
                     statistics.median(trl_runs)))
    return rows


def step_times_by_length(model_dir, ns) -> list[tuple]:
    """(max_completion_length, ours s/step, TRL s/step), one run each of length_steps steps, LoRA off."""
    out = []
    for length in ns.lengths:
        extra = {"max_completion_length": length, "max_steps": ns.length_steps}
        out.append((length, time_trainer(model_dir, "rlreason", False, ns, **extra),
                    time_trainer(model_dir, "trl", False, ns, **extra)))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpu = torch.cuda.is_available()
    defaults = GPU_DEFAULTS if gpu else {}
    parser.add_argument("--steps", type=int, default=defaults.get("steps", 12))
    parser.add_argument("--prompts", type=int, default=defaults.get("prompts", 4))
    parser.add_argument("--k", type=int, default=defaults.get("k", 8))
    parser.add_argument("--max_completion_length", type=int, default=defaults.get("max_completion_length", 32))
    parser.add_argument("--repeats", type=int, default=defaults.get("repeats", 3), help="runs per trainer, taking turns")
    parser.add_argument("--lengths", type=lambda v: [int(x) for x in v.split(",")], default=[32, 128, 512],
                        help="max_completion_length values of the step-time table")
    parser.add_argument("--length_steps", type=int, default=5, help="steps per run of the step-time table")
    ns = parser.parse_args(argv)
    from rlreason.models.tiny import build_tiny, task_texts

    torch.set_num_threads(max(1, torch.get_num_threads()))
    shape = GPU_SHAPE if gpu else CPU_SHAPE
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny(f"{tmp}/model", texts=task_texts("arithmetic", num_ops=2, digits=2), **shape)
        rows = step_ratios(model_dir, ns)
        by_length = step_times_by_length(model_dir, ns)
        roll = time_rollout(model_dir, ns)
    where = (f"CUDA bf16, {torch.cuda.get_device_name()}" if gpu else
             f"CPU, {torch.get_num_threads()} threads") + f", Llama {shape['hidden_size']}x{shape['num_hidden_layers']}"
    print(f"\nGRPO step, {where}, {ns.prompts} prompts x {ns.k} samples, max {ns.max_completion_length} tokens, "
          f"beta 0.04, {ns.steps} steps (median after the first; median of {ns.repeats} runs each)")
    print(f"{'LoRA':<6}{'ours s/step':>14}{'compiled':>10}{'TRL s/step':>12}{'ratio':>8}{'compiled':>10}")
    for lora, ours_s, compiled_s, trl_s in rows:
        print(f"{'on' if lora else 'off':<6}{ours_s:>14.4f}{compiled_s:>10.4f}{trl_s:>12.4f}{ours_s / trl_s:>8.2f}"
              f"{compiled_s / trl_s:>10.2f}")
    print(f"\nstep time by max_completion_length ({ns.length_steps} steps, one run each, LoRA off, recipe defaults)")
    print(f"{'max tokens':<12}{'ours s/step':>14}{'TRL s/step':>12}{'ratio':>8}")
    for length, ours_s, trl_s in by_length:
        print(f"{length:<12}{ours_s:>14.4f}{trl_s:>12.4f}{ours_s / trl_s:>8.2f}")
    (ours_t, ours_n), (comp_t, comp_n), (bare_t, bare_n) = roll["ours"], roll["ours_compiled"], roll["bare"]
    print(f"\nrollout of {ns.prompts} x {ns.k} x max {ns.max_completion_length} tokens: ours {ours_t:.4f} s "
          f"({ours_n} tokens), compiled {comp_t:.4f} s ({comp_n}), bare model.generate {bare_t:.4f} s ({bare_n})")
    saved = rows[0][1] - rows[0][2]
    amortise = f"{roll['compile_seconds'] / saved:.0f}" if saved > 0 else "never (no saving per step)"
    print(f"rollout_compile_seconds: {roll['compile_seconds']:.1f}  (first compiled call; steps to amortise at "
          f"this step's saving: {amortise})")
    for name, (t, n) in (("", roll["ours"]), ("_compiled", roll["ours_compiled"])):
        print(f"rollout_speedup_vs_generate{name}: {(n / t) / (bare_n / bare_t):.3f}")
    for index, name in ((1, ""), (2, "_compiled")):
        print(f"grpo_step_ratio_vs_trl_lora{name}: {rows[1][index] / rows[1][3]:.3f}")
        print(f"grpo_step_ratio_vs_trl{name}: {rows[0][index] / rows[0][3]:.3f}")


if __name__ == "__main__":
    main()
