"""The order prompts reach the on-policy trainer: one rollout's prompts per batch, repeated for every optimizer
step that rollout serves (as TRL's RepeatSampler does), shuffled per epoch from seed + epoch.

Because each optimizer step consumes gradient_accumulation_steps batches, reused and fresh steps alike,
transformers.Trainer's epoch count and its resume skip (steps x accumulation batches) stay exact, and a resumed
run sees the prompts an uninterrupted run sees."""

from __future__ import annotations

import torch
from torch.utils.data import Sampler


class RepeatRolloutSampler(Sampler[int]):
    """Indices in chunks of `chunk` prompts (one rollout, every process), each chunk yielded `repeats` times.

    The permutation of epoch e is drawn from `seed + e` (set_epoch), so a resumed run does not restart from the
    first epoch's order; the last incomplete chunk is dropped."""

    def __init__(self, size: int, chunk: int, repeats: int, shuffle: bool = True, seed: int = 0):
        if chunk > size:
            raise ValueError(f"one rollout needs {chunk} prompts but the training split has {size}: lower "
                             f"per_device_train_batch_size or steps_per_generation, or use more rows")
        self.size, self.chunk, self.repeats, self.shuffle, self.seed = size, chunk, repeats, shuffle, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.size))
        return torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + self.epoch)).tolist()

    def __iter__(self):
        order = self.order()
        for start in range(0, self.size - self.chunk + 1, self.chunk):
            block = order[start:start + self.chunk]
            for _ in range(self.repeats):
                yield from block

    def __len__(self) -> int:
        return (self.size // self.chunk) * self.chunk * self.repeats


def rollout_layout(args, num_processes: int) -> dict:
    """Sizes of one rollout under TRL's semantics: steps_per_generation micro-batches (default: the accumulation
    steps) per process, reused num_iterations times, so it serves steps_per_generation x num_iterations /
    gradient_accumulation_steps optimizer steps."""
    ga = args.gradient_accumulation_steps
    spg = args.steps_per_generation or ga
    prompts = args.per_device_train_batch_size // args.num_generations
    return {"prompts_per_micro_batch": prompts, "micro_batches": spg, "prompts_per_process": prompts * spg,
            "optimizer_steps": spg * args.num_iterations // ga, "slices": spg // ga}
