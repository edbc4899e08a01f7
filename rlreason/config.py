"""Recipes: YAML files parsed into typed dataclasses, with TRL's option names and one-line errors."""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import sys
import types
import typing
import warnings
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import yaml

from rlreason.trl_options import check_trl_options


class RecipeError(ValueError):
    """A recipe problem the user can fix; the CLI prints it as one line and exits with code 2."""


@dataclass
class RecipeArgs:
    """What a recipe says beyond the trainer's own arguments: algorithm, model, task, rewards."""

    algorithm: str = "sft"
    # model (names as in TRL's ModelConfig)
    model_name_or_path: str | None = None
    dtype: str = "auto"
    attn_implementation: str | None = None
    use_peft: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = None
    # build a tiny model from scratch instead of loading one (the offline demo); options of build_tiny
    tiny_model: dict | None = None
    # task and data (names as in TRL's ScriptArguments where they exist)
    task: str = "arithmetic"
    dataset_name: str | None = None
    eval_dataset_name: str | None = None  # the test split's data set when it is another one (MATH-500 after MATH train)
    dataset_train_split: str = "train"
    dataset_test_split: str = "test"
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    system_prompt: str | None = None
    answer_instruction: str | None = None
    task_options: dict = field(default_factory=dict)
    # rewards (names as in TRL's GRPOConfig)
    reward_funcs: list[str] = field(default_factory=lambda: ["rewards.math.accuracy"])
    reward_weights: list[float] | None = None
    # code rewards' sandbox: None = bubblewrap (required); "rlimits" or "unshare" opt in to a weaker layer
    sandbox: str | None = None
    # evaluation after training: greedy accuracy on the test split, written to eval.json
    eval_after_train: bool = True
    eval_max_completion_length: int = 256
    # for `backend: trl` in RL recipes; "rlreason" is our engine
    backend: str = "rlreason"
    # output_dir holding another recipe's run: move it aside to <output_dir>.old-<time> (else refused)
    overwrite_output_dir: bool = False


RL_ALGORITHMS = ("grpo", "ppo", "score")  # the on-policy ones: RLConfig, sampling, rewards per completion


def _algorithms() -> dict[str, tuple[type, typing.Callable]]:
    """Algorithm name -> (its training-arguments dataclass, its train function); imported lazily."""
    from rlreason.algorithms import ALGORITHMS

    return ALGORITHMS


# ---------------------------------------------------------------------------------------------
# type checking of recipe values


def _is_optional(tp) -> bool:
    return type(None) in typing.get_args(tp)


def _check_value(key: str, value: Any, tp: Any) -> Any:
    """Return `value` converted to `tp` where that is unambiguous, else raise RecipeError."""
    if isinstance(tp, str):  # unresolved forward reference: trust the library to check it
        return value
    origin = typing.get_origin(tp)
    if tp is Any or tp is object:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and _is_optional(tp):
            return None
        errors = []
        for arm in typing.get_args(tp):
            if arm is type(None):
                continue
            try:
                return _check_value(key, value, arm)
            except RecipeError as e:
                errors.append(e)
        raise errors[0] if errors else RecipeError(f"{key}: bad value {value!r}")
    if origin is typing.Literal:
        if value in typing.get_args(tp):
            return value
        raise RecipeError(f"{key}: {value!r} is not one of {list(typing.get_args(tp))}")
    if origin in (list, tuple):
        if isinstance(value, str) and origin is list:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise RecipeError(f"{key}: expected a list, got {type(value).__name__} {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        return [_check_value(key, v, inner) for v in value]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise RecipeError(f"{key}: expected a mapping, got {type(value).__name__} {value!r}")
        return value
    if isinstance(value, bool) and (tp is str or (isinstance(tp, type) and issubclass(tp, Enum))):
        value = "yes" if value else "no"  # YAML 1.1 reads a bare `no` (save_strategy: no) as false
    if isinstance(tp, type) and issubclass(tp, Enum):
        valid = [m.value for m in tp]
        if value in valid or isinstance(value, tp):
            return value
        raise RecipeError(f"{key}: {value!r} is not one of {valid}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise RecipeError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise RecipeError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise RecipeError(f"{key}: expected an integer, got {type(value).__name__} {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise RecipeError(f"{key}: expected a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads 1e-4 as a string
            except ValueError:
                pass
        raise RecipeError(f"{key}: expected a number, got {type(value).__name__} {value!r}")
    if tp is str:
        if isinstance(value, (dict, list)):
            raise RecipeError(f"{key}: expected a string, got {type(value).__name__}")
        return str(value)
    return value


def _fields(cls) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(cls) if f.init}


def _unknown_key(key: str, valid: list[str], algorithm: str) -> RecipeError:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return RecipeError(
        f"unknown recipe key '{key}' for algorithm '{algorithm}': {hint}"
        f"valid keys: {', '.join(sorted(valid))}"
    )


# ---------------------------------------------------------------------------------------------
# loading


@dataclass
class Recipe:
    """A parsed recipe: the recipe-level arguments and the algorithm's training arguments."""

    args: RecipeArgs
    training_args: Any  # SFTConfig, or the RL config of the algorithm
    raw: dict

    def save(self, output_dir: str | os.PathLike) -> Path:
        """Write the resolved configuration (every value, defaults included) to output_dir/config.yaml."""
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        targs = {k: _plain(v) for k, v in self.training_args.to_dict().items()}
        doc = {"recipe": _plain(dataclasses.asdict(self.args)), "training_args": targs}
        path = out / "config.yaml"
        path.write_text(yaml.safe_dump(doc, sort_keys=True))
        return path


def _plain(value):
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def parse_override(item: str) -> tuple[str, Any]:
    """`key=value` or `--key=value` -> (key, YAML-parsed value)."""
    item = item.lstrip("-")
    if "=" not in item:
        raise RecipeError(f"override '{item}' must look like key=value (e.g. learning_rate=1e-4)")
    key, value = item.split("=", 1)
    if value == "":
        return key.strip(), None
    from rlreason.validation import load_yaml

    try:
        return key.strip(), load_yaml(value)
    except yaml.YAMLError as e:
        raise RecipeError(f"{key.strip()}: the value {value!r} is not valid YAML ({str(e).splitlines()[0]})"
                          f"{_yaml_hint(e)}") from None


def _split_overrides(argv: list[str]) -> list[str]:
    """Accept `key=value`, `--key value` and, as TRL's parser does, a bare `--flag` (true)."""
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--") and "=" not in a and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out.append(f"{a[2:]}={argv[i + 1]}")
            i += 2
        elif a.startswith("--") and "=" not in a:
            out.append(f"{a[2:]}=true")
            i += 1
        else:
            out.append(a)
            i += 1
    return out


def load_recipe(path: str | os.PathLike | None, overrides: list[str] | None = None,
                base: dict | None = None) -> Recipe:
    """Read a recipe file (or only `base`), apply overrides, check every key and type."""
    raw: dict = dict(base or {})
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise RecipeError(f"recipe file not found: {path} (see recipes/ for the shipped ones)")
        try:
            from rlreason.validation import load_yaml

            loaded = load_yaml(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise RecipeError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0]}{_yaml_hint(e)}") from None
        if not isinstance(loaded, dict):
            raise RecipeError(f"recipe {path} must be a mapping of key: value")
        raw.update(loaded)
    for item in _split_overrides(list(overrides or [])):
        key, value = parse_override(item)
        raw[key] = value
    return build_recipe(raw)


def _yaml_hint(error: Exception) -> str:
    """A reward name with options (`name?key=value`) inside a [flow, list] must be quoted: PyYAML reads '?' there."""
    if "got '?'" in str(error):
        return ("; quote a reward name with options inside [...], e.g. [rewards.math.accuracy, "
                "\"rewards.model.verifier?path=runs/demo/verifier\"], or write the list one '- name' per line")
    return ""


def build_recipe(raw: dict) -> Recipe:
    """Turn a flat dict of recipe keys into a Recipe, or raise RecipeError naming the bad key."""
    import torch

    from rlreason import validation

    algos = _algorithms()
    algorithm = raw.get("algorithm", "sft")
    if algorithm not in algos:
        raise RecipeError(f"unknown algorithm '{algorithm}': valid choices are {', '.join(sorted(algos))}")
    targs_cls, _ = algos[algorithm]
    recipe_fields, targs_fields = _fields(RecipeArgs), _fields(targs_cls)
    valid = sorted(set(recipe_fields) | set(targs_fields))
    recipe_kw, targs_kw = {}, {}
    for key, value in raw.items():
        if key in recipe_fields:
            validation.check_raw(key, value, recipe_fields[key])
            recipe_kw[key] = _check_value(key, value, recipe_fields[key])
        elif key in targs_fields:
            validation.check_raw(key, value, targs_fields[key])
            targs_kw[key] = _check_value(key, value, targs_fields[key])
        else:
            raise _unknown_key(key, valid, algorithm)
    args = RecipeArgs(**recipe_kw)
    check_trl_options(targs_cls, targs_kw, args.backend)  # TRL options the native engine would ignore
    _check_names(args)
    if not torch.cuda.is_available():  # TRL configs default to bf16, which the CPU path cannot use
        targs_kw.setdefault("bf16", False)
        targs_kw.setdefault("use_cpu", True)
    targs_kw.setdefault("output_dir", f"runs/{algorithm}")
    validation.check_values(algorithm, args, targs_cls, targs_kw, rl=algorithm in RL_ALGORITHMS)
    validation.check_resume(targs_kw.get("resume_from_checkpoint"), targs_kw["output_dir"])
    try:
        with warnings.catch_warnings():  # the libraries' own deprecations of their defaults: not the user's to fix
            warnings.simplefilter("ignore", FutureWarning)
            training_args = targs_cls(**targs_kw)
    except (ValueError, TypeError, ArithmeticError) as e:
        raise RecipeError(f"invalid training arguments: {str(e).splitlines()[0]}") from None
    validation.check_built(algorithm, args, training_args)
    return Recipe(args=args, training_args=training_args, raw=raw)


def _check_names(args: RecipeArgs) -> None:
    """Fail before anything starts: unknown task or reward, missing local files."""
    from rlreason.tasks import TASKS

    if args.task not in TASKS:
        raise RecipeError(f"unknown task '{args.task}': valid choices are {', '.join(sorted(TASKS))}")
    if args.model_name_or_path is None and args.tiny_model is None:
        raise RecipeError("the recipe needs model_name_or_path (a hub name or a local folder) or tiny_model")
    from rlreason.validation import check_location

    check_location("model_name_or_path", args.model_name_or_path)
    check_location("dataset_name", args.dataset_name, args.dataset_train_split)
    check_location("eval_dataset_name", args.eval_dataset_name, args.dataset_test_split)
    if args.reward_weights is not None and len(args.reward_weights) != len(args.reward_funcs):
        raise RecipeError(
            f"reward_weights has {len(args.reward_weights)} entries but reward_funcs has {len(args.reward_funcs)}"
        )
    if args.sandbox is not None:
        from rewards.sandbox import LAYERS

        if args.sandbox not in LAYERS:
            raise RecipeError(f"sandbox: {args.sandbox!r} is not a sandbox layer; use one of {', '.join(LAYERS)}")
        os.environ["REWARDS_SANDBOX"] = args.sandbox  # read by rewards.sandbox in this and every launched process
    if args.algorithm != "sft":
        import rewards

        for name in args.reward_funcs:
            try:
                rewards.get_reward(name)
            except (ValueError, ImportError, FileNotFoundError, AttributeError) as e:
                raise RecipeError(f"reward_funcs: {e}") from None


def dump_json(obj, path: str | os.PathLike) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=2, default=str))


def fail(message: str) -> typing.NoReturn:
    """Print a one-line error and exit with code 2."""
    print(f"rlreason: error: {message}", file=sys.stderr)
    raise SystemExit(2)
