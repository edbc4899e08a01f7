"""Stop cleanly on SIGTERM / SIGUSR1 (Slurm preemption, Ctrl-C on a cluster): save a checkpoint, then exit.

The handlers are installed when `rlreason train` starts (a signal during loading is kept, not fatal). At each
step end the ranks agree: if any rank was signalled, every rank saves after that same step and stops."""

from __future__ import annotations

from transformers import TrainerCallback

from rlreason.stop_flag import SIGNALS, install as install_handlers, received as _received  # noqa: F401

EXIT_CODE = 143  # what a process killed by SIGTERM reports; Slurm and shells read it as "terminated"


def any_rank(flag: bool, device=None) -> bool:
    """True on every rank when `flag` is true on at least one (a max all-reduce; the flag alone without one)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    if dist.get_backend() == "nccl" and torch.cuda.is_available():
        device = torch.device("cuda", torch.cuda.current_device())
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=device or "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


class SaveOnSignal(TrainerCallback):
    """After the optimizer step in flight, save a checkpoint and stop on every rank; `train` then exits 143."""

    def __init__(self, signals=SIGNALS):
        install_handlers(signals)
        self.stopped = False  # the ranks agreed to stop (saved a checkpoint at state.global_step)

    @property
    def received(self) -> int | None:
        return _received[0] if _received else None

    def on_step_end(self, args, state, control, **kwargs):
        if any_rank(bool(_received), getattr(args, "device", None)):
            self.stopped = True
            control.should_save = True
            control.should_log = True  # flush the metrics buffered since the last logging step
            control.should_training_stop = True
        return control
