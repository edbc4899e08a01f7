"""Peak memory of the log-prob pass, ours against TRL's GRPOTrainer, side by side (part of `make bench`).

    python -m benchmarks.bench_logprob_memory [--memory_prompts 8]

One log-prob pass, forward and backward (the sum of the log-probs), of a 1-layer Llama with hidden size
64 and Qwen2.5's 151,936-token vocabulary on 8 prompts x 8 samples x 512 completion tokens (32-token prompts),
ours (rlreason.rollout.completion_logprobs) against TRL 1.16 GRPOTrainer._get_per_token_logps_and_entropies
(its fused LM head) on the same model and inputs. Each side runs in a fresh process; on CUDA the peak is
torch.cuda.max_memory_allocated, on a CPU it is the process's resident-set high-water mark (getrusage
ru_maxrss) minus its resident set just before the pass, with glibc's mmap threshold fixed at 1 MiB so freed
tensors go back to the system. Prints `logprob_peak_memory_ratio_vs_trl: X` (ours / TRL's; target <= 0.5).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

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
        out = subprocess.run([sys.executable, "-m", "benchmarks.bench_logprob_memory", "--memory_side", side,
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
    parser.add_argument("--memory_prompts", type=int, default=MEMORY_SHAPE["prompts"],
                        help="prompts (x 8 samples x 512 tokens); fewer run faster")
    parser.add_argument("--memory_side", choices=["ours", "trl"], default=None, help=argparse.SUPPRESS)
    ns = parser.parse_args(argv)
    if ns.memory_side:  # a child process of memory_ratio
        print(json.dumps(_logprob_pass_peak(ns.memory_side, ns.memory_prompts)))
        return
    print_memory(*memory_ratio(ns.memory_prompts))


if __name__ == "__main__":
    main()
