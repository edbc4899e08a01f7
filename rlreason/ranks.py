"""Work split across the processes of a run and gathered, so each item (a problem to generate for, a completion
to score) is handled once, and every process ends with all the results in order.

Under `accelerate launch` (DDP, ZeRO-2, ZeRO-3) every process must call these together. Each process gets an
equal share (the last one's padded with repeats of the last item, dropped again after gathering), so the processes
make the same number of `generate` calls: under ZeRO-3 generation steps are collective. In a single process
everything runs here, unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any


def world() -> tuple[int, int]:
    """(rank, number of processes) of the initialised process group, or (0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def barrier() -> None:
    import torch.distributed as dist

    if world()[1] > 1:
        dist.barrier()


def leave_process_group() -> None:
    """Wait for every process, then tear the process group down, so no process exits while its communication
    threads still run (gloo aborts such a process with 'terminate called without an active exception')."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        barrier()
        dist.destroy_process_group()


def map_across_ranks(fn: Callable[[list], list], items: Sequence[Any]) -> list:
    """fn(this process's share of items) -> one result per item; returns every item's result, in order, on every
    process. fn sees equal-sized shares on all processes."""
    items = list(items)
    rank, size = world()
    if size == 1 or not items:
        return _checked(fn(items), len(items))
    per = math.ceil(len(items) / size)
    share = items[rank * per:(rank + 1) * per]
    real = len(share)
    results = _checked(fn(share + [items[-1]] * (per - real)), per)[:real]
    import torch.distributed as dist

    gathered: list = [None] * size
    dist.all_gather_object(gathered, results)
    return [r for part in gathered for r in part]


def broadcast(value: Any) -> Any:
    """Rank 0's value on every process."""
    rank, size = world()
    if size == 1:
        return value
    import torch.distributed as dist

    box = [value if rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _checked(results: list, expected: int) -> list:
    if len(results) != expected:
        raise RuntimeError(f"map_across_ranks: fn returned {len(results)} results for {expected} items")
    return list(results)
