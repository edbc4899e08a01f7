"""Checkpoints that are complete or ignored: a marker written after every rank finished its save, and resume
from the newest marked checkpoint only (a kill during a save leaves an unmarked, skipped one)."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

from transformers import TrainerCallback

MARKER = "rlreason-complete.json"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "adapter_model.safetensors", "adapter_model.bin",
            "model.safetensors.index.json", "pytorch_model.bin.index.json")


def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT.match(Path(path).name)
    return int(match.group(1)) if match else None


def _trainer_step(path: Path) -> int | None:
    try:
        return int(json.loads((path / "trainer_state.json").read_text())["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def has_files(path: Path) -> bool:
    """trainer_state.json (readable, its step the folder's) and model or adapter weights."""
    path = Path(path)
    step = _trainer_step(path)
    if step is None or (checkpoint_step(path) is not None and step != checkpoint_step(path)):
        return False
    return any((path / name).is_file() for name in _WEIGHTS)


def is_complete(path: Path) -> bool:
    """A checkpoint every rank finished writing (the marker), or one from elsewhere that holds its files."""
    path = Path(path)
    if (path / MARKER).is_file():
        return has_files(path)
    return has_files(path) and not _written_by_rlreason(path.parent)


def _written_by_rlreason(folder: Path) -> bool:
    """Checkpoints in this folder carry markers (so an unmarked one was cut short)."""
    return (folder / "run.json").is_file() or any(folder.glob(f"checkpoint-*/{MARKER}"))


def checkpoints(output_dir: str | Path) -> list[Path]:
    """checkpoint-N folders of output_dir, oldest step first."""
    out = Path(output_dir)
    found = [p for p in out.iterdir() if p.is_dir() and checkpoint_step(p) is not None] if out.is_dir() else []
    return sorted(found, key=checkpoint_step)


def last_complete(output_dir: str | Path, remove_partial: bool = False) -> Path | None:
    """The newest complete checkpoint; newer partial ones are reported (and removed when asked)."""
    newest = None
    for path in reversed(checkpoints(output_dir)):
        if is_complete(path):
            newest = path
            break
        print(f"rlreason: warning: skipping partial checkpoint {path} (cut short during its save)"
              + ("; removing it" if remove_partial else ""), file=sys.stderr, flush=True)
        if remove_partial:
            shutil.rmtree(path, ignore_errors=True)
    return newest


class MarkCompleteCheckpoints(TrainerCallback):
    """After a save: wait for every rank, then the main process marks the checkpoint complete."""

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()
        if state.is_world_process_zero:
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if folder.is_dir():
                tmp = folder / (MARKER + ".tmp")
                tmp.write_text(json.dumps({"global_step": state.global_step, "world_size": args.world_size}))
                tmp.replace(folder / MARKER)
        return control
