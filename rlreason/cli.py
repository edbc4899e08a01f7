"""The command line: `rlreason train RECIPE [key=value ...]`, `rlreason eval ...`, `rlreason demo`."""

from __future__ import annotations

import argparse
import sys

from rlreason.config import RecipeError, fail, load_recipe

USAGE = """rlreason train RECIPE.yaml [key=value | --key value ...]
       rlreason train --config RECIPE.yaml [--key value | key=value ...]
       rlreason train --help ALGORITHM   (its keys, defaults and meanings)
       rlreason eval --model PATH --task NAME [options]   (rlreason eval --help)
       rlreason demo [--algorithms grpo,ppo,star,score] [--full] [--output_dir runs/demo]"""


def train(argv: list[str]) -> str:
    """Parse and check the whole recipe first; only then import the trainer and start."""
    if not argv or argv[0] in ("-h", "--help"):
        if len(argv) >= 2:
            _print_keys(argv[1])
            raise SystemExit(0)
        print(USAGE)
        raise SystemExit(0 if argv else 2)
    from rlreason.stop_flag import install

    install()  # from here on a SIGTERM/SIGUSR1 is recorded, and acted on at the next step end
    try:
        path, overrides = recipe_and_overrides(argv)
        recipe = load_recipe(path, overrides)
    except RecipeError as e:
        fail(str(e))
    from rlreason.algorithms import ALGORITHMS

    _, train_fn = ALGORITHMS[recipe.args.algorithm]
    try:
        path = train_fn(recipe)
    except (RecipeError, FileNotFoundError) as e:
        fail(str(e))
    from rlreason.stop_flag import ignore_from_now

    ignore_from_now()  # the run is saved and done: a late stop signal must not turn its exit into a crash
    return path


def recipe_and_overrides(argv: list[str]) -> tuple[str | None, list[str]]:
    """`RECIPE [overrides]` or TRL's `--config RECIPE [overrides]` (also `--config=RECIPE`, anywhere)."""
    rest, path = [], None
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--config":
            if i + 1 >= len(argv):
                raise RecipeError("--config needs a recipe file: rlreason train --config RECIPE.yaml")
            path, i = argv[i + 1], i + 2
            continue
        if a.startswith("--config="):
            path = a.split("=", 1)[1]
        else:
            rest.append(a)
        i += 1
    if path is None:
        if not rest or rest[0].startswith("-") or ("=" in rest[0] and not rest[0].endswith((".yaml", ".yml"))):
            raise RecipeError("give a recipe file: rlreason train RECIPE.yaml [key=value ...] "
                              "(or --config RECIPE.yaml)")
        path, rest = rest[0], rest[1:]
    return path, rest


def _print_keys(algorithm: str) -> None:
    """Every key of an algorithm's recipes with its default and one line of meaning."""
    from rlreason.recipe_help import describe_keys

    try:
        rows = describe_keys(algorithm)
    except RecipeError as e:
        fail(str(e))
    width = max(len(k) for k, _, _ in rows)
    print(f"keys of algorithm '{algorithm}' (recipe YAML or key=value; TRL's names and meanings):")
    for key, default, meaning in rows:
        print(f"  {key.ljust(width)}  default {default}  {meaning}")


def demo(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="rlreason demo", description="SFT cold start, then RL, on the offline task.")
    parser.add_argument("--algorithms", default=None,
                        help="comma-separated stages (default: grpo); SFT runs first when one of them starts from it")
    parser.add_argument("--output_dir", "--output-dir", default=None, help="default runs/demo (runs/demo-full with --full)")
    parser.add_argument("--full", action="store_true",
                        help="the full findings report (every stage, two lanes side by side)")
    parser.add_argument("--seed", type=int, default=0)
    ns = parser.parse_args(argv)
    try:
        if ns.full:
            from rlreason import findings

            findings.run_full_demo(ns.output_dir or "runs/demo-full", seed=ns.seed)
        else:
            from rlreason.demo import run_demo

            run_demo(algorithms=ns.algorithms, output_dir=ns.output_dir, seed=ns.seed)
    except RecipeError as e:
        fail(str(e))


def evaluate(argv: list[str]) -> None:
    from rlreason.evaluation import main as eval_main

    eval_main(argv)


COMMANDS = {"train": train, "eval": evaluate, "demo": demo}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        raise SystemExit(0 if argv else 2)
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        fail(f"unknown command '{command}': valid choices are {', '.join(COMMANDS)}")
    COMMANDS[command](rest)
    from rlreason.ranks import leave_process_group

    leave_process_group()


if __name__ == "__main__":
    main()
