"""Recipe values checked before anything loads: ranges, finite numbers, known names, YAML pitfalls.

Each check raises RecipeError with one line naming the key and what it accepts. The rules are by key name
(`*_batch_size` >= 1, `*_steps` >= 0, ...), so keys added later are covered too; `check_values` runs on the
values the training-arguments dataclass would get, before it is built (its __post_init__ can divide by them).
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import typing
from pathlib import Path
from typing import Any

import yaml

from rlreason.config import RecipeError

# ---------------------------------------------------------------------------------------------
# YAML: duplicate keys are an error (yaml.safe_load keeps the last one silently)


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a mapping holding the same key twice."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                hash(key)
            except TypeError:
                continue
            if key in seen:
                raise RecipeError(f"duplicate key '{key}' (lines {seen[key]} and {key_node.start_mark.line + 1}): "
                                  f"keep one of them")
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str):
    return yaml.load(text, Loader=UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


# ---------------------------------------------------------------------------------------------
# raw values: YAML booleans where a string is expected

PATH_KEYS = ("output_dir", "model_name_or_path", "dataset_name", "logging_dir")
_BOOLISH = ("true", "yes", "on", "false", "no", "off", "y", "n")


def _is_plain_str(tp) -> bool:
    """str or str | None, without an Enum, list or dict arm (those take YAML's `no` as a choice)."""
    if tp is str:
        return True
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType")) and args == [str]


def _enum_arm(tp):
    from enum import Enum

    for arm in (tp, *typing.get_args(tp)):
        if isinstance(arm, type) and issubclass(arm, Enum):
            return arm
    return None


def check_raw(key: str, value: Any, tp: Any) -> None:
    """Refuse a YAML boolean or number given to a string key (`output_dir: on` reads as true), and a string
    that is not one of the choices of a key with choices (save_strategy, lr_scheduler_type, optim, ...)."""
    enum = _enum_arm(tp)
    if enum is not None and isinstance(value, str):
        choices = [m.value for m in enum]
        if value not in choices:
            raise RecipeError(f"{key}: '{value}' is not one of {', '.join(map(str, choices))}")
        return
    if key in ("resume_from_checkpoint", "scale_rewards") or not _is_plain_str(tp):
        return
    if isinstance(value, bool):
        raise RecipeError(f"{key}: expected a string, got the YAML boolean {str(value).lower()} "
                          f"(YAML reads on/off/yes/no/true/false as booleans): quote it, e.g. {key}: \"on\"")
    if key in PATH_KEYS and isinstance(value, (int, float)):
        raise RecipeError(f"{key}: expected a path or name, got the number {value!r}: quote it if you mean it")


# ---------------------------------------------------------------------------------------------
# numeric ranges, by key

# key -> (lower, lower inclusive, upper, upper inclusive); None: unbounded
RANGES: dict[str, tuple] = {
    "learning_rate": (0, False, None, False),
    "value_learning_rate": (0, False, None, False),
    "weak_start_learning_rate": (0, False, None, False),
    "weight_decay": (0, True, None, False),
    "adam_beta1": (0, True, 1, False),
    "adam_beta2": (0, True, 1, False),
    "adam_epsilon": (0, False, None, False),
    "max_grad_norm": (0, True, None, False),
    "warmup_ratio": (0, True, 1, True),
    "num_train_epochs": (0, False, None, False),
    "beta": (0, True, None, False),
    "beta_first": (0, True, None, False),
    "alpha": (0, True, None, False),
    "epsilon": (0, False, None, False),
    "epsilon_high": (0, False, None, False),
    "delta": (1, False, None, False),
    "temperature": (0, False, None, False),
    "sampling_temperature": (0, False, None, False),
    "correction_temperature": (0, False, None, False),
    "top_p": (0, False, 1, True),
    "top_k": (0, True, None, False),
    "min_p": (0, True, 1, True),
    "repetition_penalty": (0, False, None, False),
    "lora_r": (1, True, None, False),
    "lora_alpha": (0, False, None, False),
    "lora_dropout": (0, True, 1, False),
    "gamma": (0, True, 1, True),
    "lam": (0, True, 1, True),
    "vf_coef": (0, True, None, False),
    "cliprange_value": (0, False, None, False),
    "steps_growth": (0, False, None, False),
    "seed": (0, True, None, False),
    "data_seed": (0, True, None, False),
    "save_total_limit": (0, True, None, False),
    "max_steps": None,  # -1 (epochs decide) or >= 1: checked below
}
_AT_LEAST_ONE = re.compile(r"(_batch_size|_length|_samples|^num_generations.*|^num_iterations|^iterations|^k"
                           r"|^gradient_accumulation_steps|^eval_accumulation_steps|^steps_per_generation"
                           r"|^max_per_problem)$")
_CADENCE = ("logging_steps", "save_steps", "eval_steps")  # > 0 (a float below 1 is a fraction of the run)
_NOT_NEGATIVE = re.compile(r"(_steps|_workers)$")


def _range_text(lo, lo_inc, hi, hi_inc) -> str:
    if hi is None:
        return f"{'>=' if lo_inc else '>'} {lo}"
    return f"in {'[' if lo_inc else '('}{lo}, {hi}{']' if hi_inc else ')'}"


def check_number(key: str, value: Any) -> None:
    """One numeric value against the rules for its key."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise RecipeError(f"{key}: {value} is not a finite number")
    if key == "max_steps":
        if value == 0 or value < -1:
            raise RecipeError(f"max_steps: {value} is neither a step count >= 1 nor -1 (train num_train_epochs)")
        return
    rule = RANGES.get(key)
    if rule is not None:
        lo, lo_inc, hi, hi_inc = rule
        ok = (value >= lo if lo_inc else value > lo) and (hi is None or (value <= hi if hi_inc else value < hi))
        if not ok:
            raise RecipeError(f"{key}: {value} is out of range: it must be {_range_text(*rule)}")
    elif key in _CADENCE:
        if value <= 0:
            raise RecipeError(f"{key}: {value} must be > 0 (a step count, or a fraction of the run below 1)")
    elif _AT_LEAST_ONE.search(key):
        if value < 1:
            raise RecipeError(f"{key}: {value} must be >= 1")
    elif _NOT_NEGATIVE.search(key) and value < 0:
        raise RecipeError(f"{key}: {value} must be >= 0")


# ---------------------------------------------------------------------------------------------
# names and cross-key rules

SCALE_REWARDS = ("group", "batch", "none")
ATTENTION = ("eager", "sdpa", "flash_attention_2", "flash_attention_3", "flex_attention")
DTYPES = ("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16")
BACKENDS = ("rlreason", "trl")
ENGINE_COLUMNS = {"completion_ids", "trainer_state", "log_extra", "log_metric"}  # passed by trainers, not rows


def effective_values(cls, given: dict) -> dict:
    """The values a dataclass would be built with: its defaults, then `given`."""
    out = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    out.update(given)
    return out


def check_values(algorithm: str, args, targs_cls, targs_kw: dict, rl: bool) -> None:
    """Every recipe value (recipe args and the training arguments about to be built) is usable."""
    for key, value in {**dataclasses.asdict(args), **targs_kw}.items():
        if isinstance(value, list):
            for item in value:
                check_number(key, item)
        else:
            check_number(key, value)
    if targs_kw.get("scale_rewards") in ("yes", "no"):  # TRL's boolean form (YAML true/false)
        targs_kw["scale_rewards"] = {"yes": "group", "no": "none"}[targs_kw["scale_rewards"]]
    if args.dtype not in DTYPES:
        raise RecipeError(f"dtype: '{args.dtype}' is not one of {', '.join(DTYPES)}")
    attn = args.attn_implementation
    if attn is not None and attn not in ATTENTION and "/" not in attn and not attn.startswith("paged"):
        raise RecipeError(f"attn_implementation: '{attn}' is not one of {', '.join(ATTENTION)} (or a hub kernel "
                          f"such as kernels-community/flash-attn)")
    if args.lora_target_modules is not None and not args.lora_target_modules:
        raise RecipeError("lora_target_modules: an empty list adapts nothing; leave it out for peft's default")
    t = effective_values(targs_cls, targs_kw)
    if t.get("value_model") not in (None, "policy"):
        check_location("value_model", t["value_model"])
    if args.backend not in BACKENDS:
        raise RecipeError(f"backend: '{args.backend}' is not one of {', '.join(BACKENDS)}")
    if args.backend == "trl" and algorithm != "grpo":
        raise RecipeError(f"backend: 'trl' runs TRL's GRPOTrainer and is only for algorithm grpo, not {algorithm}")
    _check_task_options(args)
    _check_tiny_model(args)
    _check_output_dir(t.get("output_dir"))
    if t.get("max_steps", -1) == -1 and "num_train_epochs" in t:
        check_number("num_train_epochs", t["num_train_epochs"])
    if rl:
        _check_rl(algorithm, args, t)


def _check_rl(algorithm: str, args, t: dict) -> None:
    from rlreason.advantages import ADVANTAGES
    from rlreason.losses import POLICY_LOSSES

    if not args.reward_funcs:
        raise RecipeError("reward_funcs: an RL recipe needs at least one reward function")
    if t.get("max_completion_length") is None:
        raise RecipeError("max_completion_length: an RL recipe needs a completion token limit (>= 1)")
    k = t.get("num_generations")
    if k is None or k < 1:
        raise RecipeError(f"num_generations: {k} must be >= 1 (completions sampled per prompt)")
    if args.backend == "rlreason":
        if t.get("loss_type") not in POLICY_LOSSES:
            raise RecipeError(f"loss_type: '{t.get('loss_type')}' is not one of {', '.join(sorted(POLICY_LOSSES))}")
        if t.get("advantage_estimator") not in ADVANTAGES:
            raise RecipeError(f"advantage_estimator: '{t.get('advantage_estimator')}' is not one of "
                              f"{', '.join(sorted(ADVANTAGES))}")
        if algorithm != "ppo" and k < 2:
            raise RecipeError(f"num_generations: {k} must be >= 2 for {algorithm}: group advantages compare "
                              f"completions of the same prompt")
        bs = t.get("per_device_train_batch_size", 8)
        if bs % k:
            raise RecipeError(f"num_generations: {k} does not divide per_device_train_batch_size ({bs}): each "
                              f"micro-batch holds whole groups")
        spg, ga = t.get("steps_per_generation"), t.get("gradient_accumulation_steps", 1)
        if spg is not None and spg % ga:
            raise RecipeError(f"steps_per_generation: {spg} must be a multiple of gradient_accumulation_steps "
                              f"({ga}): one rollout serves whole optimizer steps")
    from rlreason.tools import check_tool_options

    check_tool_options(t.get("tools"), t.get("max_tool_calls"), t.get("tool_timeout"), t.get("max_tool_output_tokens"),
                       t.get("tool_call_open"), t.get("tool_stop_strings"), t.get("observation_template"))
    if t.get("tools"):
        if t.get("rollout_engine") != "static":
            raise RecipeError("rollout_engine: tools decode with the static engine; use rollout_engine: static")
        if algorithm not in ("grpo", "ppo"):
            raise RecipeError(f"tools: algorithm {algorithm} has no tool rollouts (grpo and ppo have); drop tools")
        if args.backend != "rlreason":
            raise RecipeError("tools: the tool rollouts are the native engine's; use backend: rlreason")
    scale = t.get("scale_rewards")
    if not isinstance(scale, bool) and scale not in SCALE_REWARDS:
        raise RecipeError(f"scale_rewards: '{scale}' is not one of {', '.join(SCALE_REWARDS)}")
    eps, eps_high = t.get("epsilon"), t.get("epsilon_high")
    if eps_high is not None and eps is not None and eps_high < eps:
        raise RecipeError(f"epsilon_high: {eps_high} is below epsilon ({eps}); the upper clip is 1 + epsilon_high")
    if args.reward_weights is not None:
        for w in args.reward_weights:
            if not math.isfinite(w):
                raise RecipeError(f"reward_weights: {w} is not a finite number")


def check_built(algorithm: str, args, targs) -> None:
    """What only the built training arguments know: TRL derives steps_per_generation from generation_batch_size."""
    if algorithm in ("grpo", "ppo", "score") and args.backend == "rlreason":
        spg, ga = targs.steps_per_generation, targs.gradient_accumulation_steps
        if spg and spg % ga:
            raise RecipeError(f"generation_batch_size: {targs.generation_batch_size} gives steps_per_generation "
                              f"{spg}, not a multiple of gradient_accumulation_steps ({ga}): one rollout serves "
                              f"whole optimizer steps")


def _check_task_options(args) -> None:
    from rlreason.tasks import TASKS, task_options

    loader = TASKS[args.task]
    params = inspect.signature(loader).parameters
    valid = set(task_options(args.task)) | ({"seed"} & set(params))
    for key, value in args.task_options.items():
        if key not in valid:
            raise RecipeError(f"task_options: '{key}' is not an option of task {args.task} "
                              f"(its options: {', '.join(sorted(valid)) or 'none'})")
        check_number(f"task_options.{key}", value)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and key != "seed" and value < 1 \
                and params[key].annotation in ("int", "int | None", int):
            raise RecipeError(f"task_options.{key}: {value} must be >= 1")
    if args.dataset_name and "path" not in params:
        raise RecipeError(f"dataset_name: task {args.task} is generated and reads no data (drop dataset_name)")


def _check_tiny_model(args) -> None:
    if args.tiny_model is None:
        return
    from rlreason.models.tiny import build_tiny

    params = set(inspect.signature(build_tiny).parameters) - {"output_dir", "texts"}
    for key, value in args.tiny_model.items():
        if key not in params:
            raise RecipeError(f"tiny_model: '{key}' is not an option (its options: {', '.join(sorted(params))})")
        if isinstance(value, bool) or (value is not None and not isinstance(value, int)):
            raise RecipeError(f"tiny_model.{key}: expected an integer, got {value!r}")
        if key != "seed" and value is not None and value < 1:
            raise RecipeError(f"tiny_model.{key}: {value} must be >= 1")


def _check_output_dir(value) -> None:
    if not isinstance(value, str) or not value.strip():
        raise RecipeError(f"output_dir: expected a folder path, got {value!r}")
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise RecipeError(f"output_dir: {value} exists and is not a folder")


# ---------------------------------------------------------------------------------------------
# local paths and hub names

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_local(value: str) -> bool:
    """A path rather than a hub id: starts with / . ~, has a data-file suffix, or more than one '/'."""
    return (value.startswith(("/", "./", "../", "~", "."))
            or value.lower().endswith((".jsonl", ".json", ".parquet", ".gz", ".csv", ".txt"))
            or value.count("/") > 1 or "\\" in value)


def check_location(key: str, value: str | None, split: str | None = None) -> None:
    """A local-looking name must exist (never looked up on the hub); anything else must be a valid hub id."""
    if not value:
        return
    name = value.replace("{split}", split) if split else value
    if looks_local(name):
        if not Path(name).expanduser().exists():
            raise RecipeError(f"{key}: file or folder not found: {name}")
    elif not Path(name).expanduser().exists() and not _HUB_ID.match(name):
        raise RecipeError(f"{key}: '{value}' is neither an existing path nor a hub id like owner/name")


def check_resume(value, output_dir: str) -> None:
    """resume_from_checkpoint: true/last/false or a complete checkpoint folder."""
    if value is None or isinstance(value, bool) or str(value).lower() in ("true", "yes", "last", "false", "no",
                                                                           "none", ""):
        return
    from rlreason.checkpoints import is_complete

    path = Path(str(value)).expanduser()
    if not path.is_dir():
        raise RecipeError(f"resume_from_checkpoint: no checkpoint folder at {value} (or use last for the newest "
                          f"in output_dir)")
    if not is_complete(path):
        raise RecipeError(f"resume_from_checkpoint: {value} is not a complete checkpoint (no trainer_state.json "
                          f"or no weights)")


# ---------------------------------------------------------------------------------------------
# data: after the rows load, before the model does


def reward_columns(names: list[str]) -> dict[str, list[str]]:
    """Reward name -> the row columns it takes (parameters after prompts, completions; not the engine's)."""
    import rewards

    out = {}
    for name in names:
        fn = rewards.get_reward(name)
        try:
            params = list(inspect.signature(fn).parameters.values())
        except (TypeError, ValueError):
            out[name] = []
            continue
        positional = [p for p in params if p.kind == p.POSITIONAL_OR_KEYWORD]
        out[name] = [p.name for p in positional[2:] if p.name not in ENGINE_COLUMNS]
    return out


def check_rows(rows, split: str, required: dict[str, str], gold: list[str]) -> None:
    """`rows` (a datasets.Dataset) has every required column (column -> who needs it); gold columns are filled."""
    if len(rows) == 0:
        raise RecipeError(f"dataset split '{split}' is empty")
    for column, who in required.items():
        if column not in rows.column_names:
            raise RecipeError(f"dataset split '{split}' has no column '{column}', which {who} needs "
                              f"(columns: {', '.join(rows.column_names)})")
    for column in gold:
        if column not in rows.column_names:
            continue
        values = rows[column]
        empty = [i for i, v in enumerate(values) if v is None or (isinstance(v, str) and not v.strip())]
        if empty:
            ids = rows["id"] if "id" in rows.column_names else list(range(len(rows)))
            raise RecipeError(f"dataset split '{split}': {len(empty)} row(s) have no '{column}' (the gold field), "
                              f"first {ids[empty[0]]}: fix or drop them")
