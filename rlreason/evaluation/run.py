"""`rlreason eval`: load a model (or base + LoRA adapter), evaluate it on a task, write eval.json and plots.

    rlreason eval --model PATH [--adapter PATH] --task NAME [--path FILE] [--split test] [--limit N]
                  [--n 8] [--ks 1,2,4,8] [--cot] [--two_attempts [--correction_instruction TEXT]]
                  [--faithfulness] [--output_dir DIR] [--tools python [--max_tool_calls 4] [--tool_timeout 5]]
                  [--strategy greedy,majority,best_of_n,weighted_majority,revise [--verifier PATH]
                   [--revise_rounds K]]
    rlreason eval --preset gsm8k|math500|humaneval --model PATH [...]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

# Benchmark presets: task, scorer and budgets; any flag given on the command line wins.
PRESETS: dict[str, dict] = {
    "gsm8k": {"task": "gsm8k", "reward": "rewards.math.accuracy", "max_completion_length": 512,
              "n": 8, "ks": (1, 2, 4, 8)},
    "math500": {"task": "math", "reward": "rewards.math.accuracy", "max_completion_length": 1024,
                "n": 8, "ks": (1, 2, 4, 8)},
    "humaneval": {"task": "humaneval", "reward": "rewards.code.unit_tests", "max_completion_length": 512,
                  "n": 10, "ks": (1, 5, 10), "temperature": 0.8},
}
CODE_TASKS = {"humaneval", "mbpp"}


@dataclass
class EvalArgs:
    """What `rlreason eval` does; the field names are its flags."""

    model: str
    task: str = "arithmetic"
    adapter: str | None = None
    path: str | None = None
    split: str = "test"
    limit: int | None = None
    reward: str | None = None  # default: rewards.code.unit_tests for code tasks, else rewards.math.accuracy
    max_completion_length: int = 256
    batch_size: int = 64
    greedy: bool = True
    sampled: bool = True  # the pass@k / maj@k section (off: --no_sampled, e.g. when --strategy samples anyway)
    n: int = 8  # samples per problem for pass@k / maj@k; 0 turns sampling off
    ks: tuple[int, ...] = (1, 2, 4, 8)
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float | None = None
    repetition_penalty: float = 1.0  # sampled evaluation only; greedy stays argmax decoding
    cot: bool = False
    branches: int = 5
    two_attempts: bool = False
    correction_instruction: str | None = None  # two_attempts: the words before attempt 2 (default: SCoRe's)
    faithfulness: bool = False  # early answering, injected mistake, filler (evaluation/faithfulness.py)
    merge: bool = False  # merge the adapter into the base weights before evaluating
    dtype: str = "auto"
    seed: int = 0
    system_prompt: str | None = None
    answer_instruction: str | None = None
    task_options: dict = field(default_factory=dict)
    output_dir: str = "runs/eval"
    tools: tuple[str, ...] = ()  # (python,): greedy and sampled decoding may call the sandboxed Python tool
    max_tool_calls: int = 4
    tool_timeout: float = 5.0
    progress: bool = True
    strategy: tuple[str, ...] = ()  # test-time strategies at budgets up to n (evaluation/strategies.py)
    verifier: str | None = None  # verifier folder for best_of_n / weighted_majority (algorithm: verifier)
    revise_rounds: int = 2  # --strategy revise: self-correction rounds after the greedy attempt


def load_for_eval(model: str, adapter: str | None = None, dtype: str = "auto", merge: bool = False):
    """(model, tokenizer): a full model, or `model` as the base with the peft adapter at `adapter` on top, on
    this process's accelerator device (rlreason.models.loading.place_on_accelerator)."""
    from transformers import AutoModelForCausalLM

    from rlreason.models.loading import load_model, load_tokenizer, place_on_accelerator, resolve_dtype

    if model.startswith((".", "/", "~")) and not Path(model).expanduser().exists():
        raise FileNotFoundError(f"--model: no model folder at {model} (give a local folder or a hub name)")
    if adapter is None:
        net = load_model(model, dtype, merge_adapter=merge)  # `model` may itself be an adapter folder
    else:
        if not (Path(adapter) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"--adapter: no adapter_config.json in {adapter} (save it with save_pretrained)")
        from peft import PeftModel

        base = AutoModelForCausalLM.from_pretrained(model, dtype=resolve_dtype(dtype))
        net = PeftModel.from_pretrained(base, adapter)
        net = net.merge_and_unload() if merge else net
    tokenizer = load_tokenizer(_tokenizer_source(model, adapter))
    if net.generation_config is not None and net.generation_config.pad_token_id is None:
        net.generation_config.pad_token_id = tokenizer.pad_token_id
    return place_on_accelerator(net).eval(), tokenizer


def _tokenizer_source(model: str, adapter: str | None) -> str:
    """The adapter folder when it holds a tokenizer, else the model (or, for an adapter folder, its base)."""
    from rlreason.models.loading import adapter_base, is_adapter

    for path in (adapter, model):
        if path and any((Path(path) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
            return path
    return adapter_base(model) if is_adapter(model) else model


def default_reward(task: str) -> str:
    return "rewards.code.unit_tests" if task in CODE_TASKS else "rewards.math.accuracy"


def evaluate_all(model, tokenizer, rows, args: EvalArgs) -> dict:
    """Every evaluation `args` asks for, on loaded rows: sections greedy, sampled, cot_decoding, two_attempts."""
    import transformers

    from rlreason.evaluation.cot_decoding import cot_decoding
    from rlreason.evaluation.evaluate import evaluate_greedy, evaluate_sampled
    from rlreason.evaluation.two_attempts import evaluate_two_attempts

    reward = args.reward or default_reward(args.task)
    common = dict(max_completion_length=args.max_completion_length, batch_size=args.batch_size, reward=reward,
                  progress=args.progress)
    result: dict = {}
    tools = eval_tools(args)
    if args.greedy:
        result["greedy"] = evaluate_greedy(model, tokenizer, rows, tools=tools, **common)
    if args.n > 0 and args.sampled:
        transformers.set_seed(args.seed)
        result["sampled"] = evaluate_sampled(model, tokenizer, rows, n=args.n, ks=args.ks, temperature=args.temperature,
                                             top_p=args.top_p, top_k=args.top_k, min_p=args.min_p,
                                             repetition_penalty=args.repetition_penalty, tools=tools, **common)
    if args.cot:
        result["cot_decoding"] = cot_decoding(model, tokenizer, rows, branches=args.branches, **common)
    if args.two_attempts:
        result["two_attempts"] = evaluate_two_attempts(model, tokenizer, rows, instruction=args.correction_instruction,
                                                       **common)
    if args.strategy:
        from rlreason.evaluation.strategies import evaluate_strategies

        transformers.set_seed(args.seed)
        result["strategies"] = evaluate_strategies(
            model, tokenizer, rows, strategies=args.strategy, n=args.n, verifier=args.verifier,
            revise_rounds=args.revise_rounds, instruction=args.correction_instruction, temperature=args.temperature,
            top_p=args.top_p, top_k=args.top_k, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
            **common)
    if args.faithfulness:
        from rlreason.evaluation.faithfulness import probe_faithfulness

        result["faithfulness"] = probe_faithfulness(model, tokenizer, rows, reward=reward, seed=args.seed,
                                                    max_completion_length=args.max_completion_length,
                                                    batch_size=args.batch_size)
    result["metrics"] = scalar_metrics(result)
    if "greedy" in result:  # the top-level keys the demo and the training runs also write
        result["accuracy"], result["n"] = result["greedy"]["accuracy"], result["greedy"]["n"]
    return result


def eval_tools(args: EvalArgs):
    """The ToolConfig of --tools (None without it); --cot, --two_attempts, --faithfulness and --strategy do not take
    tools."""
    from rlreason.tools import ToolConfig

    if not args.tools:
        return None
    if args.cot or args.two_attempts or args.faithfulness or args.strategy:
        raise ValueError("--tools applies to greedy and sampled decoding only; drop --cot, --two_attempts, "
                         "--faithfulness and --strategy")
    return ToolConfig(tools=tuple(args.tools), max_tool_calls=args.max_tool_calls, tool_timeout=args.tool_timeout)


def scalar_metrics(result: dict, prefix: str = "eval/") -> dict[str, float]:
    """The loggable scalars of evaluate_all's result: eval/accuracy, eval/pass@k, eval/maj@k, eval/cot_accuracy, ..."""
    out: dict[str, float] = {}
    greedy, sampled = result.get("greedy") or {}, result.get("sampled") or {}
    if "accuracy" in greedy:
        out[prefix + "accuracy"] = greedy["accuracy"]
    if "tool_calls_per_problem" in greedy:
        out[prefix + "tool_calls_per_problem"] = greedy["tool_calls_per_problem"]
    for name, key in (("pass", "pass_at_k"), ("maj", "maj_at_k")):
        for k, v in (sampled.get(key) or {}).items():
            out[f"{prefix}{name}@{k}"] = v
    for key in ("sample_accuracy", "mean_agreement"):
        if key in sampled:
            out[prefix + key] = sampled[key]
    if "cot_decoding" in result:
        out[prefix + "cot_accuracy"] = result["cot_decoding"]["accuracy"]
    from rlreason.evaluation.two_attempts import TWO_ATTEMPT_KEYS

    for key in TWO_ATTEMPT_KEYS:
        if key in (result.get("two_attempts") or {}) and key != "n":
            out[prefix + key] = result["two_attempts"][key]
    for name, points in ((result.get("strategies") or {}).get("curves") or {}).items():
        for point in points:
            out[f"{prefix}{name}@{point['budget']}"] = point["accuracy"]
    if "faithfulness" in result:
        from rlreason.evaluation.faithfulness import faithfulness_scalars

        out.update(faithfulness_scalars(result["faithfulness"], prefix))
    return {k: float(v) for k, v in out.items()}


def run_eval(args: EvalArgs) -> dict:
    """Load, evaluate, print the table, write eval.json and accuracy_vs_k.png under args.output_dir.

    Under `accelerate launch` the processes share the problems (rlreason.ranks); the first one writes."""
    from rlreason.evaluation.plots import plot_accuracy_vs_k
    from rlreason.ranks import is_main
    from rlreason.tasks import load_task

    started = time.time()
    model, tokenizer = load_for_eval(args.model, args.adapter, args.dtype, args.merge)
    rows = load_task(args.task, args.split, path=args.path, limit=args.limit, system_prompt=args.system_prompt,
                     answer_instruction=args.answer_instruction, **args.task_options)
    result = {"model": args.model, "adapter": args.adapter, "task": args.task, "split": args.split,
              "config": asdict(args)}
    result.update(evaluate_all(model, tokenizer, rows, args))
    result["seconds"] = round(time.time() - started, 1)
    if not is_main():
        return result
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    title = f"{Path(args.adapter or args.model).name} on {args.task}"
    if any(key in result for key in ("greedy", "sampled", "cot_decoding")):  # else the plot would be empty
        result["plot"] = str(plot_accuracy_vs_k(result, out / "accuracy_vs_k.png", title=title))
    if "strategies" in result:
        from rlreason.evaluation.plots import plot_accuracy_vs_tokens

        result["strategies_plot"] = str(plot_accuracy_vs_tokens(result["strategies"], out / "accuracy_vs_tokens.png",
                                                                title=title))
    if "faithfulness" in result:
        from rlreason.evaluation.faithfulness import plot_faithfulness

        result["faithfulness_plot"] = str(plot_faithfulness(result["faithfulness"], out / "faithfulness.png"))
    print_table(result, title)
    print("wrote", " and ".join([str(out / "eval.json")] + [result[key] for key in ("plot", "strategies_plot",
                                                                                 "faithfulness_plot") if key in result]))
    return result


def print_table(result: dict, title: str = "evaluation") -> None:
    """The metrics as a rich table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result["metrics"].items():
        table.add_row(key.removeprefix("eval/"), f"{value:.3f}")
    for bucket in (result.get("sampled") or {}).get("agreement_buckets", []):
        acc = "-" if bucket["accuracy"] is None else f"{bucket['accuracy']:.3f}"
        table.add_row(f"maj accuracy | agreement {bucket['bucket']}", f"{acc} (n={bucket['count']})")
    for name, points in ((result.get("strategies") or {}).get("curves") or {}).items():
        for point in points:
            table.add_row(f"{name}@{point['budget']} | generated tokens per problem",
                          f"{point['tokens_per_problem']:.1f}")
    Console().print(table)


def _ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(",") if k.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--ks: expected comma-separated integers like 1,2,4,8, got '{text}'")
    if not ks or min(ks) < 1:
        raise argparse.ArgumentTypeError(f"--ks: every k must be >= 1, got '{text}'")
    return ks


def _strategies(text: str) -> tuple[str, ...]:
    from rlreason.evaluation.strategies import parse_strategies

    try:
        return parse_strategies(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("--strategy: "))


def _json_dict(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object like '{{\"digits\": 2}}', got '{text}'")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlreason eval", description="Greedy accuracy, pass@k, maj@k, CoT-decoding.")
    p.add_argument("--model", required=True, help="model folder or hub name (the base model when --adapter is given)")
    p.add_argument("--adapter", help="a saved peft LoRA adapter folder to put on top of --model")
    p.add_argument("--merge", action="store_true", help="merge the adapter into the weights before evaluating")
    p.add_argument("--preset", choices=sorted(PRESETS), help="task, scorer and budgets for a benchmark")
    p.add_argument("--task", help="task name (arithmetic, gsm8k, math, humaneval, mbpp)")
    p.add_argument("--path", help="local data file (JSONL / parquet) or hub name for the task")
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, help="evaluate on the first N problems")
    p.add_argument("--reward", help="scorer: reward name or module:function (default by task)")
    p.add_argument("--max_completion_length", type=int)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--no_greedy", action="store_true", help="skip greedy decoding")
    p.add_argument("--no_sampled", action="store_true",
                   help="skip the pass@k / maj@k section (--strategy samples its own --n completions)")
    p.add_argument("--n", type=int, help="samples per problem for pass@k / maj@k (0: no sampling)")
    p.add_argument("--ks", type=_ks, help="comma-separated k values, each <= --n")
    p.add_argument("--temperature", type=float)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--top_k", type=int, default=0, help="sampled evaluation: keep the k likeliest tokens (0: off)")
    p.add_argument("--min_p", type=float, help="sampled evaluation: drop tokens below min_p * p(top token)")
    p.add_argument("--repetition_penalty", type=float, default=1.0, help="sampled evaluation (1.0: off)")
    p.add_argument("--cot", action="store_true", help="also run CoT-decoding (branch on the first token)")
    p.add_argument("--branches", type=int, default=5, help="first-token branches for CoT-decoding")
    p.add_argument("--two_attempts", action="store_true", help="SCoRe two-attempt self-correction metrics")
    p.add_argument("--correction_instruction",
                   help="--two_attempts: the instruction before attempt 2, as the recipe's correction_instruction "
                        "(default: the paper's)")
    p.add_argument("--faithfulness", action="store_true",
                   help="faithfulness probes: early answering, an injected mistake, filler (faithfulness.png)")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--system_prompt")
    p.add_argument("--answer_instruction")
    p.add_argument("--task_options", type=_json_dict, default={}, help='JSON, e.g. \'{"digits": 2}\'')
    p.add_argument("--output_dir", default="runs/eval")
    p.add_argument("--tools", type=lambda text: tuple(t for t in text.split(",") if t), default=(),
                   help="tools the model may call while decoding, e.g. python (rlreason.tools)")
    p.add_argument("--max_tool_calls", type=int, default=4, help="with --tools: calls per completion at most")
    p.add_argument("--tool_timeout", type=float, default=5.0, help="with --tools: seconds per call")
    p.add_argument("--strategy", type=_strategies, default=(),
                   help="test-time strategies, comma-separated: greedy, majority, best_of_n, weighted_majority, "
                        "revise; "
                        "accuracy at budgets 1, 2, 4, ..., --n samples (revise: rounds 0..--revise_rounds) against "
                        "generated tokens (accuracy_vs_tokens.png, eval.json's strategies)")
    p.add_argument("--verifier",
                   help="--strategy best_of_n / weighted_majority: a verifier folder (algorithm: verifier)")
    p.add_argument("--revise_rounds", type=int, default=2, help="--strategy revise: self-correction rounds")
    p.add_argument("--no_progress", action="store_true")
    return p


def parse_args(argv: list[str]) -> EvalArgs:
    ns = build_parser().parse_args(argv)
    values = dict(PRESETS.get(ns.preset, {}))
    for key in ("task", "reward", "max_completion_length", "n", "ks", "temperature"):
        if getattr(ns, key) is not None:
            values[key] = getattr(ns, key)
    if "task" not in values:
        build_parser().error("give --task NAME or --preset NAME")
    args = EvalArgs(model=ns.model, adapter=ns.adapter, merge=ns.merge, path=ns.path, split=ns.split, limit=ns.limit,
                    batch_size=ns.batch_size, greedy=not ns.no_greedy, sampled=not ns.no_sampled, top_p=ns.top_p,
                    top_k=ns.top_k, min_p=ns.min_p, repetition_penalty=ns.repetition_penalty, cot=ns.cot,
                    branches=ns.branches, two_attempts=ns.two_attempts,
                    correction_instruction=ns.correction_instruction, dtype=ns.dtype, seed=ns.seed,
                    system_prompt=ns.system_prompt, answer_instruction=ns.answer_instruction,
                    task_options=ns.task_options, output_dir=ns.output_dir, progress=not ns.no_progress,
                    faithfulness=ns.faithfulness, tools=ns.tools, max_tool_calls=ns.max_tool_calls,
                    tool_timeout=ns.tool_timeout, strategy=ns.strategy, verifier=ns.verifier,
                    revise_rounds=ns.revise_rounds, **values)
    if args.n > 0 and max(args.ks) > args.n:
        if ns.ks is not None:
            build_parser().error(f"--ks {','.join(map(str, args.ks))}: every k must be <= --n {args.n}")
        args.ks = tuple(k for k in args.ks if k <= args.n) or (1,)  # default ks, smaller --n
    if args.strategy:
        _check_strategy_flags(args)
    elif args.verifier:
        build_parser().error("--verifier scores samples for --strategy best_of_n or weighted_majority; add one")
    return args


def _check_strategy_flags(args: EvalArgs) -> None:
    """--strategy with what it needs (--verifier, a verifier folder there, --n, --revise_rounds), before any load."""
    from rlreason.evaluation.strategies import check_strategies

    try:
        check_strategies(args.strategy, n=args.n, verifier=args.verifier, revise_rounds=args.revise_rounds)
        if args.verifier:
            from rewards.model import check_verifier_folder

            check_verifier_folder(args.verifier)
    except (ValueError, FileNotFoundError) as e:
        message = str(e)
        build_parser().error(message if message.startswith("--") else f"--verifier: {message}")


def main(argv: list[str] | None = None) -> dict:
    """Entry point of `rlreason eval`: one-line errors for problems the user can fix."""
    import sys

    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return run_eval(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"rlreason eval: error: {e}", file=sys.stderr)
        raise SystemExit(2)
