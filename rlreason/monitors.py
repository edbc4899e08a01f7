"""Run monitors: alarms for reward hacking and degenerate training, read from the logged metric stream.

Every logging step of an on-policy run (GRPO, PPO, SCoRe: OnlineRLTrainer.log) hands its metrics to a
MonitorBoard. Each registered monitor reduces the stream so far to one number, logged as `monitor/<name>`,
and compares it with its thresholds (recipe key `monitors:`, defaults below). A monitor that crosses a
threshold raises an alarm once (again only after it has gone quiet): a line in output_dir/alarms.jsonl
({step, monitor, value, threshold, message}), one printed line, and a W&B alert when wandb is on.
Alarms never stop training unless the recipe sets `stop_on_alarm: true`; then the run saves a checkpoint
and stops cleanly after the step. Trend monitors compare against the first logging steps of the process, so a
resumed run measures from its checkpoint on.

Recipe example:

    monitors:
      length: {min_ratio: 0.6}
      answer_without_reasoning: {min_reasoning_tokens: 8, max_share: 0.3}
      kl: false            # switched off
    stop_on_alarm: false
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

MONITORS: dict[str, type[Monitor]] = {}
ANSWER_MARKER = re.compile(r"####|\\boxed\{|<answer>")  # where a completion starts stating its final answer


@dataclass
class Reading:
    """One monitor's statistic at one logging step, and whether it crosses `threshold`."""

    value: float
    threshold: float
    fired: bool
    message: str


def register(name: str):
    def wrap(cls):
        cls.name = name
        MONITORS[name] = cls
        return cls

    return wrap


class Monitor:
    """A statistic of the metric history with numeric thresholds; `read` returns None while it has no data."""

    name = ""
    defaults: dict[str, float] = {}

    def __init__(self, **options):
        self.options = {**self.defaults, **options}

    def read(self, history: list[dict]) -> Reading | None:
        raise NotImplementedError


# --------------------------------------------------------------------------------- stream helpers
def series(history: list[dict], key: str) -> list[tuple[int, float]]:
    """(step, value) of every row that has `key` (NaN dropped)."""
    return [(row["step"], float(row[key])) for row in history if key in row and row[key] == row[key]]


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def _change(points: list[tuple[int, float]], window: int) -> float | None:
    """Mean of the last `window` values minus the mean of the first `window` (None without 2 windows)."""
    window = max(1, int(window))
    if len(points) < 2 * window:
        return None
    return _mean(v for _, v in points[-window:]) - _mean(v for _, v in points[:window])


def _ratio_to_start(points: list[tuple[int, float]], window: int) -> float | None:
    window = max(1, int(window))
    if len(points) < 2 * window:
        return None
    start = _mean(v for _, v in points[:window])
    return _mean(v for _, v in points[-window:]) / start if start > 0 else None


# --------------------------------------------------------------------------------- the monitors
@register("reward_vs_heldout")
class RewardVersusHeldout(Monitor):
    """Training reward rising while held-out accuracy (eval_accuracy, eval_strategy: steps) is flat or falling."""

    defaults = {"reward_gain": 0.1, "accuracy_gain": 0.0, "window": 2}

    def read(self, history):
        evals, rewards = series(history, "eval_accuracy"), series(history, "reward")
        if len(evals) < 2 or not rewards:
            return None
        window = int(self.options["window"])
        before = [v for s, v in rewards if s <= evals[0][0]][-window:]
        now = [v for _, v in rewards[-window:]]
        if not before or rewards[-1][0] <= evals[0][0]:
            return None
        gain, held_out = _mean(now) - _mean(before), evals[-1][1] - evals[0][1]
        fired = gain >= self.options["reward_gain"] and held_out <= self.options["accuracy_gain"]
        return Reading(gain, self.options["reward_gain"], fired,
                       f"training reward rose {gain:+.3f} since step {evals[0][0]} while held-out accuracy went "
                       f"{evals[0][1]:.3f} -> {evals[-1][1]:.3f}")


@register("length")
class CompletionLength(Monitor):
    """Mean completion length against its start: blowing up (or mostly truncated), or collapsing."""

    defaults = {"max_ratio": 2.0, "min_ratio": 0.5, "max_clipped": 0.5, "window": 2}

    def read(self, history):
        ratio = _ratio_to_start(series(history, "completions/mean_length"), self.options["window"])
        clipped = series(history, "completions/clipped_ratio")
        if clipped and clipped[-1][1] > self.options["max_clipped"]:
            return Reading(clipped[-1][1], self.options["max_clipped"], True,
                           f"{clipped[-1][1]:.0%} of completions hit max_completion_length")
        if ratio is None:
            return None
        if ratio > self.options["max_ratio"]:
            return Reading(ratio, self.options["max_ratio"], True,
                           f"mean completion length is {ratio:.2f}x its start (blowing up)")
        collapsed = ratio < self.options["min_ratio"]
        return Reading(ratio, self.options["min_ratio"], collapsed,
                       f"mean completion length is {ratio:.2f}x its start" + (" (collapsing)" if collapsed else ""))


@register("answer_without_reasoning")
class AnswerWithoutReasoning(Monitor):
    """Share of completions that reach an answer marker after fewer than min_reasoning_tokens tokens."""

    defaults = {"min_reasoning_tokens": 10, "max_share": 0.2}
    key = "completions/answer_without_reasoning"

    def read(self, history):
        points = series(history, self.key)
        if not points:
            return None
        share, limit = points[-1][1], self.options["max_share"]
        return Reading(share, limit, share > limit,
                       f"{share:.0%} of completions answer after < {int(self.options['min_reasoning_tokens'])} "
                       f"reasoning tokens")


def _format_keys(row: dict) -> list[str]:
    return [k for k in row if k.startswith("rewards/") and k.endswith("/mean")
            and ("format" in k or "think_answer" in k)]


@register("format_only")
class FormatOnlyGains(Monitor):
    """A format reward (rewards/*format*/mean, rewards/think_answer/mean) rising while accuracy does not."""

    defaults = {"format_gain": 0.1, "accuracy_gain": 0.02, "window": 2}

    def read(self, history):
        keys = sorted({k for row in history for k in _format_keys(row)})
        accuracy = _change(series(history, "accuracy"), self.options["window"])
        gains = [(g, k) for k in keys if (g := _change(series(history, k), self.options["window"])) is not None]
        if not gains or accuracy is None:
            return None
        gain, key = max(gains)
        fired = gain >= self.options["format_gain"] and accuracy <= self.options["accuracy_gain"]
        return Reading(gain, self.options["format_gain"], fired,
                       f"{key.split('/')[1]} rose {gain:+.3f} while accuracy changed {accuracy:+.3f}")


@register("repetition")
class Repetition(Monitor):
    """Mean share of repeated word n-grams within a completion."""

    defaults = {"max_fraction": 0.3, "ngram": 4}
    key = "completions/repetition"

    def read(self, history):
        points = series(history, self.key)
        if not points:
            return None
        value, limit = points[-1][1], self.options["max_fraction"]
        return Reading(value, limit, value > limit, f"{value:.0%} of word {int(self.options['ngram'])}-grams repeat")


@register("reward_errors")
class RewardErrors(Monitor):
    """Share of completions whose reward function raised or timed out."""

    defaults = {"max_share": 0.05}
    key = "completions/reward_error_share"

    def read(self, history):
        points = series(history, self.key)
        if not points:
            return None
        value, limit = points[-1][1], self.options["max_share"]
        return Reading(value, limit, value > limit, f"{value:.1%} of completions had a reward error or timeout")


@register("entropy")
class EntropyCollapse(Monitor):
    """Policy entropy on the sampled tokens against its start."""

    defaults = {"min_ratio": 0.2, "window": 2}

    def read(self, history):
        ratio = _ratio_to_start(series(history, "entropy"), self.options["window"])
        if ratio is None:
            return None
        limit = self.options["min_ratio"]
        return Reading(ratio, limit, ratio < limit, f"entropy is {ratio:.2f}x its start")


@register("kl")
class KLSpike(Monitor):
    """KL to the reference (or to the sampling policy): above max_kl, or spike_factor x its running median."""

    defaults = {"max_kl": 1.0, "spike_factor": 10.0, "min_kl": 0.05}

    def read(self, history):
        points = series(history, "kl") or series(history, "approx_kl")
        if not points:
            return None
        value, before = points[-1][1], sorted(v for _, v in points[:-1])
        limit = self.options["max_kl"]
        if len(before) >= 3:
            spike = self.options["spike_factor"] * before[len(before) // 2]
            limit = min(limit, max(spike, self.options["min_kl"]))
        return Reading(value, limit, value > limit, f"KL {value:.4f} (limit {limit:.4f})")


@register("tool_abuse")
class ToolAbuse(Monitor):
    """Tool calls per completion, or the share of failing calls (inert until tools log tools/* metrics)."""

    defaults = {"max_calls_per_completion": 8.0, "max_error_share": 0.5}

    def read(self, history):
        calls, errors = series(history, "tools/calls_per_completion"), series(history, "tools/error_share")
        if errors and errors[-1][1] > self.options["max_error_share"]:
            return Reading(errors[-1][1], self.options["max_error_share"], True,
                           f"{errors[-1][1]:.0%} of tool calls fail")
        if not calls:
            return None
        value, limit = calls[-1][1], self.options["max_calls_per_completion"]
        return Reading(value, limit, value > limit, f"{value:.1f} tool calls per completion")


# --------------------------------------------------------------------------------- configuration
def check_monitors(mapping) -> None:
    """Refuse unknown monitor names, unknown threshold keys and non-numeric thresholds (one-line ValueError)."""
    if mapping is None:
        return
    if not isinstance(mapping, dict):
        raise ValueError(f"monitors: expected a mapping of monitor name -> thresholds, got {mapping!r}")
    for name, options in mapping.items():
        if name not in MONITORS:
            raise ValueError(f"monitors: unknown monitor '{name}'; valid: {', '.join(MONITORS)}")
        if options is False or options is None or options is True:
            continue
        if not isinstance(options, dict):
            raise ValueError(f"monitors.{name}: expected a mapping of thresholds or false, got {options!r}")
        defaults = MONITORS[name].defaults
        for key, value in options.items():
            if key not in defaults:
                raise ValueError(f"monitors.{name}: unknown threshold '{key}'; valid: {', '.join(defaults)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"monitors.{name}.{key}: expected a number, got {value!r}")


def build_monitors(mapping=None) -> list[Monitor]:
    """Every registered monitor with the recipe's thresholds over the defaults; `name: false` leaves one out."""
    check_monitors(mapping)
    mapping = mapping or {}
    out = []
    for name, cls in MONITORS.items():
        options = mapping.get(name, {})
        if options is False:
            continue
        out.append(cls(**(options if isinstance(options, dict) else {})))
    return out


def _options(mapping, monitor: str, key: str) -> float:
    options = (mapping or {}).get(monitor)
    return (options if isinstance(options, dict) else {}).get(key, MONITORS[monitor].defaults[key])


# --------------------------------------------------------------------------------- per-rollout statistics
def rollout_statistics(texts: list[str], tokenizer, errors: int, mapping=None) -> dict[str, float]:
    """What the monitors need from one rollout's completions (logged next to the other completions/* metrics)."""
    from rewards.repetition import repeated_fraction

    if not texts:
        return {}
    min_tokens = _options(mapping, "answer_without_reasoning", "min_reasoning_tokens")
    ngram = int(_options(mapping, "repetition", "ngram"))
    short = 0
    for text in texts:
        match = ANSWER_MARKER.search(text)
        if match and len(tokenizer(text[:match.start()], add_special_tokens=False)["input_ids"]) < min_tokens:
            short += 1
    return {"completions/answer_without_reasoning": short / len(texts),
            "completions/repetition": _mean(repeated_fraction(t, ngram) for t in texts),
            "completions/reward_error_share": errors / len(texts)}


# --------------------------------------------------------------------------------- the board
class MonitorBoard:
    """The monitors of one run: reads each logging step, writes monitor/* metrics and raises alarms."""

    def __init__(self, mapping=None, output_dir: str | None = None, stop_on_alarm: bool = False,
                 main_process: bool = True, wandb_on: bool = False):
        self.monitors = build_monitors(mapping)
        self.path = Path(output_dir) / "alarms.jsonl" if output_dir else None
        self.stop_on_alarm = stop_on_alarm
        self.main_process = main_process
        self.wandb_on = wandb_on
        self.history: list[dict] = []
        self.firing: set[str] = set()
        self.alarms: list[dict] = []

    @classmethod
    def for_trainer(cls, trainer) -> MonitorBoard:
        from rlreason.tracking import wants_wandb

        args = trainer.args
        return cls(getattr(args, "monitors", None), args.output_dir, getattr(args, "stop_on_alarm", False),
                   trainer.is_world_process_zero(), wants_wandb(args.report_to))

    def observe(self, step: int, logs: dict) -> list[dict]:
        """Add a logging step's metrics; on rollout steps (those with `reward`) read every monitor, put
        monitor/<name> into `logs` and return the alarms raised now."""
        self.history.append({"step": int(step), **{k: v for k, v in logs.items() if isinstance(v, (int, float))}})
        if "reward" not in logs:
            return []
        raised = []
        for monitor in self.monitors:
            reading = monitor.read(self.history)
            if reading is None:
                continue
            logs[f"monitor/{monitor.name}"] = float(reading.value)
            if reading.fired and monitor.name not in self.firing:
                raised.append(self._alarm(step, monitor.name, reading))
            (self.firing.add if reading.fired else self.firing.discard)(monitor.name)
        logs["monitor/alarms"] = float(len(self.alarms))
        return raised

    def _alarm(self, step: int, name: str, reading: Reading) -> dict:
        alarm = {"step": int(step), "monitor": name, "value": round(float(reading.value), 6),
                 "threshold": float(reading.threshold), "message": reading.message}
        self.alarms.append(alarm)
        if not self.main_process:
            return alarm
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as f:
                f.write(json.dumps(alarm) + "\n")
        print(f"rlreason: ALARM step {step} {name}: {reading.value:.3f} (threshold {reading.threshold:g}): "
              f"{reading.message}", flush=True)
        if self.wandb_on:
            _wandb_alert(name, reading.message, step)
        return alarm

    def watch(self, trainer, logs: dict) -> None:
        """The trainer's hook: observe, and with stop_on_alarm save a checkpoint and stop (all ranks agree)."""
        raised = self.observe(trainer.state.global_step, logs)
        if not (self.stop_on_alarm and "reward" in logs):
            return
        stop = bool(raised)
        if trainer.accelerator.num_processes > 1:
            import torch

            flag = torch.tensor([float(stop)], device=trainer.accelerator.device)
            stop = bool(trainer.accelerator.gather(flag).max().item() > 0)
        if stop:
            trainer.control.should_save = True
            trainer.control.should_training_stop = True
            if self.main_process:
                print(f"rlreason: stop_on_alarm: stopping at step {trainer.state.global_step} with a checkpoint",
                      flush=True)


def _wandb_alert(name: str, message: str, step: int) -> None:
    try:
        import wandb

        if wandb.run is not None:
            wandb.alert(title=f"rlreason monitor {name}", text=f"step {step}: {message}", level=wandb.AlertLevel.WARN)
    except Exception as error:  # an alert is a courtesy; offline runs and old clients must not stop training
        print(f"rlreason: wandb alert not sent ({type(error).__name__}: {error})", flush=True)


def read_alarms(output_dir) -> list[dict]:
    path = Path(output_dir) / "alarms.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def replay(history: list[dict], mapping=None) -> list[dict]:
    """The alarms a metric stream (e.g. a run's metrics.jsonl) raises, without writing anything."""
    board = MonitorBoard(mapping, output_dir=None, main_process=False)
    for row in history:
        board.observe(row.get("step", 0), {k: v for k, v in row.items() if k != "step"})
    return board.alarms
