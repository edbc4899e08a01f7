"""Tracking: metrics.jsonl in the output directory, and Weights & Biases (offline without an API key)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

from transformers import TrainerCallback


def wants_wandb(report_to) -> bool:
    if report_to is None:
        return False
    items = [report_to] if isinstance(report_to, str) else list(report_to)
    return "wandb" in items or "all" in items


def setup_wandb(report_to, output_dir: str, run_name: str | None = None) -> None:
    """Before the trainer starts: offline mode without credentials, run files under output_dir."""
    if not wants_wandb(report_to):
        return
    os.environ.setdefault("WANDB_PROJECT", "rlreason")
    os.environ.setdefault("WANDB_DIR", str(Path(output_dir).resolve()))
    Path(os.environ["WANDB_DIR"]).mkdir(parents=True, exist_ok=True)
    if not os.environ.get("WANDB_API_KEY") and not os.environ.get("WANDB_MODE") and not _netrc_has_wandb():
        os.environ["WANDB_MODE"] = "offline"
    if run_name:
        os.environ.setdefault("WANDB_NAME", run_name)


def _netrc_has_wandb() -> bool:
    netrc = Path.home() / ".netrc"
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def wandb_run_dir() -> str | None:
    try:
        import wandb
    except ImportError:
        return None
    run = wandb.run
    return getattr(run, "dir", None) and str(Path(run.dir).parent)


def announce_wandb(run_dir: str | None) -> None:
    """One line saying where the run is and, offline, how to upload it."""
    if not run_dir:
        return
    if os.environ.get("WANDB_MODE") == "offline":
        print(f"wandb: offline run saved in {run_dir}; upload it with `wandb sync {run_dir}`", file=sys.stderr)
    else:
        print(f"wandb: run files in {run_dir}", file=sys.stderr)


class MetricsJsonl:
    """Append-only metrics.jsonl: one JSON object per logging step, on the main process only."""

    def __init__(self, path: str | os.PathLike, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, step: int, metrics: dict, **extra) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), "time": round(time.time(), 3), **extra}
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
                row[key] = value
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def read_metrics(path: str | os.PathLike) -> list[dict]:
    p = Path(path)
    if not p.is_file():
        return []
    rows = []
    for line in p.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # empty, or the last line cut short by a kill
    return rows


def truncate_metrics(path: str | os.PathLike, step: int) -> int:
    """Drop the rows logged after `step` (a resume from checkpoint-`step` logs them again); returns how many."""
    p = Path(path)
    if not p.is_file():
        return 0
    lines = [line for line in p.read_text().splitlines() if line.strip()]
    kept = []
    for line in lines:
        try:
            if json.loads(line)["step"] <= step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by a kill
    if len(kept) != len(lines):
        tmp = p.with_name(p.name + ".tmp")
        tmp.write_text("".join(line + "\n" for line in kept))
        tmp.replace(p)
    return len(lines) - len(kept)


class MetricsJsonlCallback(TrainerCallback):
    """transformers callback writing every log event to output_dir/metrics.jsonl."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.sink: MetricsJsonl | None = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.sink is None:
            self.sink = MetricsJsonl(Path(self.output_dir) / "metrics.jsonl", enabled=state.is_world_process_zero)
        self.sink.write(state.global_step, logs or {}, epoch=state.epoch)


def read_wandb_history(run_dir: str | os.PathLike) -> list[dict]:
    """The history rows logged to an offline wandb run, read from its .wandb file (no server needed).

    The file is wandb's record log: a 7-byte header, then leveldb-log framing (32 KiB blocks,
    each record chunk behind a 7-byte crc/length/type header) around protobuf `Record`s."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(Path(run_dir).glob("*.wandb"))
    if not files:
        raise FileNotFoundError(f"no .wandb file in {run_dir}")
    data, block, pos, pending, records = files[0].read_bytes(), 32768, 7, b"", []
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 0:
            break
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            records.append(pending)
    rows = []
    for raw in records:
        record = pb.Record()
        record.ParseFromString(raw)
        if record.WhichOneof("record_type") == "history":
            rows.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
    return rows
