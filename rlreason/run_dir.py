"""One run per output_dir: run.json holds a fingerprint of the resolved recipe; another recipe is refused, a
resume must match it (except the keys that may change on resume), and overwrite_output_dir moves the old run aside.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

from rlreason.checkpoints import checkpoint_step, checkpoints, last_complete
from rlreason.config import RecipeError, _plain

RUN_FILE = "run.json"
# may change when a run is resumed: its length and the save / eval / logging cadence
RESUMABLE = {"max_steps", "save_steps", "save_strategy", "save_total_limit", "eval_steps", "eval_strategy",
             "logging_steps", "logging_strategy", "logging_first_step", "log_completions_steps", "eval_on_start",
             "resume_from_checkpoint", "overwrite_output_dir"}
# say where and how a run reports, not what it trains
ENVIRONMENT = {"output_dir", "logging_dir", "local_rank", "report_to", "run_name", "disable_tqdm", "log_level",
               "log_level_replica", "log_on_each_node", "hub_token", "push_to_hub_token", "dataloader_num_workers",
               "dataloader_persistent_workers", "dataloader_prefetch_factor", "ddp_timeout", "project"}


def identity(recipe) -> dict:
    """The resolved recipe values that make a run this run (every key but RESUMABLE and ENVIRONMENT)."""
    values = {f"recipe.{k}": v for k, v in _plain(dataclasses.asdict(recipe.args)).items()}
    values.update({f"train.{k}": _plain(v) for k, v in recipe.training_args.to_dict().items()})
    return {k: v for k, v in sorted(values.items()) if k.split(".", 1)[1] not in RESUMABLE | ENVIRONMENT}


def fingerprint(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def wants_resume(value) -> bool:
    return value is not None and str(value).lower() not in ("false", "no", "none", "")


def _differences(old: dict, new: dict, limit: int = 3) -> str:
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    shown = ", ".join(f"{k.split('.', 1)[1]} {old.get(k)!r} there, {new.get(k)!r} here" for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _holds_a_run(out: Path) -> bool:
    return (out / RUN_FILE).is_file() or (out / "metrics.jsonl").is_file() or bool(checkpoints(out))


def _say(message: str) -> None:
    print(f"rlreason: {message}", file=sys.stderr, flush=True)


def _read(out: Path) -> dict | None:
    if not (out / RUN_FILE).is_file():
        return None
    try:
        return json.loads((out / RUN_FILE).read_text())
    except ValueError:
        return {}


def check(recipe) -> None:
    """Refuse another run's output_dir (read only, on every process, before anything is written)."""
    targs = recipe.training_args
    out = Path(targs.output_dir)
    values = identity(recipe)
    record = _read(out)
    if _holds_a_run(out) and (record is None or record.get("fingerprint") != fingerprint(values)) \
            and not recipe.args.overwrite_output_dir:
        what = (f"a run of another recipe ({_differences(record.get('values', {}), values)})" if record
                else "a run without run.json (an older rlreason or another tool)")
        verb = "resume" if wants_resume(targs.resume_from_checkpoint) else "start"
        raise RecipeError(f"output_dir {out} holds {what}: cannot {verb} this recipe there; pick another "
                          f"output_dir, or set overwrite_output_dir: true to move the old run aside")


def prepare(recipe) -> None:
    """Main process, after `check`: make output_dir this run's.

    Another recipe's run (overwrite_output_dir): moved aside to <output_dir>.old-<time>. Same recipe, resuming:
    partial checkpoints newer than the newest complete one are removed and metrics.jsonl loses the rows logged
    after its step. Same recipe, not resuming: its checkpoints and metrics.jsonl go (the run starts again; not
    for STaR, whose rerun continues at the first unfinished round).
    Then run.json is (re)written."""
    targs = recipe.training_args
    out = Path(targs.output_dir)
    values = identity(recipe)
    new_fp = fingerprint(values)
    record = _read(out)
    if _holds_a_run(out) and (record is None or record.get("fingerprint") != new_fp):
        aside = out.with_name(f"{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
        out.rename(aside)
        _say(f"overwrite_output_dir: moved the previous run in {out} to {aside}")
        record = None
    elif record is not None:
        if wants_resume(targs.resume_from_checkpoint):
            from rlreason.tracking import truncate_metrics

            value = str(targs.resume_from_checkpoint)
            done = last_complete(out, remove_partial=True) if value.lower() in ("true", "yes", "last") \
                else Path(value)
            step = (checkpoint_step(done) or 0) if done is not None else 0
            dropped = truncate_metrics(out / "metrics.jsonl", step)
            if dropped:
                _say(f"resuming at step {step}: dropped {dropped} metrics.jsonl row(s) logged after it")
        elif _holds_a_run(out) and recipe.args.algorithm != "star":  # a STaR rerun resumes at its next round
            old = checkpoints(out)
            for path in old:
                shutil.rmtree(path, ignore_errors=True)
            (out / "metrics.jsonl").unlink(missing_ok=True)
            _say(f"output_dir {out} held an earlier run of this recipe: starting again "
                 f"(removed {len(old)} checkpoint(s) and metrics.jsonl; resume_from_checkpoint=last continues it)")
    out.mkdir(parents=True, exist_ok=True)
    resumable = {k: _plain(getattr(targs, k, None)) for k in sorted(RESUMABLE) if hasattr(targs, k)}
    tmp = out / (RUN_FILE + ".tmp")
    tmp.write_text(json.dumps({"fingerprint": new_fp, "values": values, "resumable": resumable,
                               "created": (record or {}).get("created", time.strftime("%Y-%m-%dT%H:%M:%S"))},
                              indent=1, default=str))
    tmp.replace(out / RUN_FILE)
