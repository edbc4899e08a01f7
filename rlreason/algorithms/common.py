"""What every algorithm does around its training loop: data, model path, resume, config, eval, tracking."""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from rlreason.config import dump_json
from rlreason.tracking import announce_wandb, setup_wandb, wandb_run_dir


_ROWS: dict = {}  # (task, split, ...) -> rows, so that the check before loading the model loads them once


def load_rows(args, split: str, limit: int | None = None):
    """The recipe's task rows for one split (hub name or local file in dataset_name).

    The task's own seed lives in task_options, apart from the training seed, so that every stage
    of a run is evaluated on the same held-out problems. The test split comes from eval_dataset_name when
    the recipe names one (train on MATH's train set, evaluate on MATH-500)."""
    import json

    from rlreason.tasks import load_task

    evaluating = split == args.dataset_test_split and getattr(args, "eval_dataset_name", None)
    path = args.eval_dataset_name if evaluating else args.dataset_name
    key = (args.task, split, path, limit, args.system_prompt, args.answer_instruction,
           json.dumps(args.task_options, sort_keys=True, default=str))
    if key not in _ROWS:
        _ROWS[key] = load_task(args.task, split, path=path, limit=limit,
                               system_prompt=args.system_prompt, answer_instruction=args.answer_instruction,
                               **args.task_options)
    return _ROWS[key]


def check_data(recipe) -> None:
    """Load the splits the run uses and refuse, in one line naming the split or column, data it cannot use."""
    from rlreason.config import RL_ALGORITHMS, RecipeError
    from rlreason.validation import check_rows, reward_columns

    args, targs = recipe.args, recipe.training_args
    columns = reward_columns(args.reward_funcs) if args.reward_funcs else {}
    needs = {c: f"reward {name}" for name, cols in columns.items() for c in cols}
    gold = columns.get(args.reward_funcs[0], []) if args.reward_funcs else []
    train_needs = dict(needs) if args.algorithm in (*RL_ALGORITHMS, "star", "verifier") else {}
    if args.algorithm == "sft":
        train_needs["solution"] = "sft (worked solutions)"
    splits = [(args.dataset_train_split, args.max_train_samples, train_needs)]
    evaluates = args.eval_after_train or getattr(targs, "eval_strategy", "no") != "no"
    if args.algorithm != "verifier" and (evaluates or args.algorithm in ("score", "star")):  # verifier: held-out train
        splits.append((args.dataset_test_split, args.max_eval_samples, needs))
    for split, limit, required in splits:
        try:
            rows = load_rows(args, split, limit)
        except (ValueError, FileNotFoundError, KeyError) as e:
            raise RecipeError(f"dataset split '{split}': {str(e).splitlines()[0] if str(e) else type(e).__name__}") \
                from None
        check_rows(rows, split, required, gold if required else [])


def prepare_model_path(args, output_dir: str) -> str:
    """model_name_or_path, or a tiny model built once under output_dir/base-model when the recipe asks."""
    if args.model_name_or_path:
        return args.model_name_or_path
    from rlreason.models.tiny import build_tiny, task_texts

    path = Path(output_dir) / "base-model"
    if not (path / "config.json").is_file():
        data = {"path": args.dataset_name} if args.dataset_name else {}  # the tokenizer learns the task's text
        build_tiny(str(path), texts=task_texts(args.task, **data, **args.task_options), **(args.tiny_model or {}))
    return str(path)


def build_base_model(recipe, out: Path, seed: int, needed_by: str) -> str:
    """The untrained tiny model (the recipe's tiny_model, its task's texts) that several runs start from, built
    afresh under out/base-model with the run's seed; `needed_by` names those runs in the error."""
    from rlreason.config import RecipeError
    from rlreason.models.tiny import build_tiny, task_texts

    args = recipe.args
    if not args.tiny_model:
        raise RecipeError(f"{needed_by} need tiny_model: the runs start from one freshly built tiny model")
    path = Path(out) / "base-model"
    build_tiny(str(path), texts=task_texts(args.task, **args.task_options), **{**args.tiny_model, "seed": seed})
    return str(path)


def resolve_resume(targs) -> str | None:
    """resume_from_checkpoint: a path, or true/last for the newest complete checkpoint in output_dir (if any)."""
    from rlreason.checkpoints import last_complete

    value = targs.resume_from_checkpoint
    if value is None or str(value).lower() in ("false", "no", "none", ""):
        return None
    if str(value).lower() in ("true", "yes", "last"):
        found = last_complete(targs.output_dir)
        return str(found) if found is not None else None
    if not Path(value).is_dir():
        raise FileNotFoundError(f"resume_from_checkpoint: no checkpoint folder at {value}")
    return value


def start_run(recipe) -> None:
    """Before the model loads: check the data, claim output_dir for this run, save the resolved configuration."""
    from rlreason import run_dir

    targs = recipe.training_args
    check_data(recipe)
    run_dir.check(recipe)
    with targs.main_process_first(local=False, desc="claim output_dir"):
        if targs.process_index == 0:
            run_dir.prepare(recipe)
            recipe.save(targs.output_dir)
    setup_wandb(targs.report_to, targs.output_dir, targs.run_name)


def evaluate_after_train(recipe, model, tokenizer, record: bool = True) -> dict | None:
    """Greedy accuracy of the trained model on the recipe's test split (with the recipe's tools, if any), written
    to eval.json (when `record`)."""
    args, targs = recipe.args, recipe.training_args
    if not args.eval_after_train:
        return None
    from rlreason.evaluation import evaluate_greedy
    from rlreason.tools import ToolConfig

    rows = load_rows(args, args.dataset_test_split, args.max_eval_samples)
    reward = args.reward_funcs[0] if args.reward_funcs else "rewards.math.accuracy"
    result = evaluate_greedy(model, tokenizer, rows, max_completion_length=args.eval_max_completion_length,
                             reward=reward, progress=record,
                             chat_template_kwargs=getattr(targs, "chat_template_kwargs", None),
                             tools=ToolConfig.from_args(targs))
    if not record:
        return result
    dump_json(result, Path(targs.output_dir) / "eval.json")
    log_eval(targs.output_dir, {"eval/accuracy": result["accuracy"], "eval/n": result["n"]})
    print(f"held-out greedy accuracy: {result['accuracy']:.3f} on {result['n']} problems")
    return result


def evaluate_saved(model_path: str, recipe, label: str, tools=None) -> dict:
    """Greedy accuracy of a saved model on `recipe`'s held-out problems (calling `tools`, a ToolConfig, if given)."""
    from rlreason.evaluation import evaluate_greedy
    from rlreason.models.loading import load_for_generation

    model, tokenizer = load_for_generation(model_path)
    rows = load_rows(recipe.args, recipe.args.dataset_test_split, recipe.args.max_eval_samples)
    print(f"[demo] evaluating {label} on {len(rows)} held-out problems", flush=True)
    return evaluate_greedy(model, tokenizer, rows, max_completion_length=recipe.args.eval_max_completion_length,
                           reward=recipe.args.reward_funcs[0], tools=tools)


def log_eval(output_dir: str, metrics: dict) -> None:
    """Evaluation scalars go where the training scalars went: metrics.jsonl and the wandb run."""
    from rlreason.tracking import MetricsJsonl, read_metrics

    history = read_metrics(Path(output_dir) / "metrics.jsonl")
    step = history[-1]["step"] if history else 0
    MetricsJsonl(Path(output_dir) / "metrics.jsonl").write(step, metrics)
    try:
        import wandb
    except ImportError:
        return
    if wandb.run is not None:
        wandb.log(metrics)


def run_training(trainer, targs) -> None:
    """trainer.train with resume; complete checkpoints are marked; on SIGTERM/SIGUSR1 (any rank) every rank saves
    after the same step and exits with 143."""
    from rlreason.checkpoints import MarkCompleteCheckpoints
    from rlreason.preemption import EXIT_CODE, SaveOnSignal

    guard = SaveOnSignal()
    trainer.add_callback(MarkCompleteCheckpoints())
    trainer.add_callback(guard)
    trainer.add_callback(_NoStepPastMax())
    try:
        trainer.train(resume_from_checkpoint=resolve_resume(targs))
    except _AlreadyFinished:
        print(f"rlreason: the resumed checkpoint is at max_steps ({trainer.state.global_step}): nothing to train",
              flush=True)
    if guard.stopped:
        sig = guard.received if guard.received is not None else "(on another rank)"
        print(f"rlreason: stopped by signal {sig} at step {trainer.state.global_step}; checkpoint saved, "
              f"resume with resume_from_checkpoint=true", flush=True)
        from rlreason.ranks import leave_process_group

        leave_process_group()  # the ranks leave together: none is still in a collective when another exits
        raise SystemExit(EXIT_CODE)


class _AlreadyFinished(Exception):
    pass


class _NoStepPastMax(TrainerCallback):
    """transformers.Trainer resumed at max_steps trains one step more (its loop checks only after a step): stop
    before it, so a requeue after the last checkpoint (e.g. killed while saving the final model) adds nothing."""

    def on_step_begin(self, args, state, control, **kwargs):
        if 0 < state.max_steps <= state.global_step:
            raise _AlreadyFinished()
        return control


def finish_run(recipe, trainer, output_dir: Path) -> str:
    """After training: evaluate (rank 0 records it), close wandb with the one line saying where it is."""
    if recipe.args.eval_after_train:
        from rlreason.models.parallel import model_for_evaluation

        with model_for_evaluation(trainer) as model:
            if model is not None:
                evaluate_after_train(recipe, model.eval(), trainer.processing_class,
                                     record=trainer.is_world_process_zero())
    run_dir = wandb_run_dir()
    if run_dir and trainer.is_world_process_zero():
        import wandb

        wandb.finish()
        announce_wandb(run_dir)
    return str(output_dir)
