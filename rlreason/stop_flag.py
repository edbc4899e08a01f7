"""The stop signals a run received (SIGTERM / SIGUSR1), recorded from the first moment of `rlreason train`.

Kept apart from preemption.py so that installing the handlers imports nothing heavy: a signal that lands while
torch and the model load is recorded, not fatal, and acted on at the first step end."""

from __future__ import annotations

import signal

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
received: list[int] = []


def _record(signum, frame):
    received.append(signum)


def ignore_from_now(signals=SIGNALS) -> None:
    """After the run's last save: a stop signal has nothing left to stop, and ignoring it keeps it from killing the
    process while the interpreter exits (Python puts the default, fatal action back for handled signals then)."""
    for sig in signals:
        try:
            signal.signal(sig, signal.SIG_IGN)
        except ValueError:
            pass


def install(signals=SIGNALS) -> None:
    """Record these signals instead of dying (main thread only; elsewhere the default behaviour stays)."""
    for sig in signals:
        try:
            signal.signal(sig, _record)
        except ValueError:
            pass
