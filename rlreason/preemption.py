"""Stop cleanly on SIGTERM / SIGUSR1 (Slurm preemption, Ctrl-C on a cluster): save a checkpoint, then exit."""

from __future__ import annotations

import signal

from transformers import TrainerCallback

EXIT_CODE = 143  # what a process killed by SIGTERM reports; Slurm and shells read it as "terminated"


class SaveOnSignal(TrainerCallback):
    """After the optimizer step in flight, save a checkpoint and stop; `train` then exits with EXIT_CODE."""

    def __init__(self, signals=(signal.SIGTERM, signal.SIGUSR1)):
        self.received: int | None = None
        for sig in signals:
            try:
                signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave the default behaviour
                pass

    def _handle(self, signum, frame):
        self.received = signum

    def on_step_end(self, args, state, control, **kwargs):
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True
        return control
