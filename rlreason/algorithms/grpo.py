"""`grpo` (and its variants through loss_type / advantage_estimator): on-policy RL with group advantages."""

from __future__ import annotations

from pathlib import Path

from rlreason.algorithms.common import finish_run, load_rows, prepare_model_path, run_training, start_run


def train(recipe) -> str:
    """Run GRPO as the recipe says (our engine, or TRL's GRPOTrainer with `backend: trl`)."""
    from rlreason.models.loading import load_policy_for_training, lora_config
    from rlreason.sampling import check_training_sampling
    from rlreason.tracking import MetricsJsonlCallback

    args, targs = recipe.args, recipe.training_args
    if args.backend == "rlreason":
        check_training_sampling(targs)  # before the model loads: one line for what the loss cannot follow
    start_run(recipe)
    model, tokenizer = load_policy_for_training(args, targs, prepare_model_path(args, targs.output_dir))
    rows = load_rows(args, args.dataset_train_split, args.max_train_samples)
    eval_rows = None  # eval_strategy: steps -> greedy accuracy on the test split every eval_steps
    if targs.eval_strategy != "no":
        eval_rows = load_rows(args, args.dataset_test_split, args.max_eval_samples)
    callbacks = [MetricsJsonlCallback(targs.output_dir)]
    if args.backend == "trl":
        trainer = _trl_trainer(recipe, model, tokenizer, rows, callbacks)
    elif args.backend == "rlreason":
        from rlreason.trainer import OnlineRLTrainer

        trainer = OnlineRLTrainer(model, targs, rows, tokenizer, args.reward_funcs, args.reward_weights,
                                  peft_config=lora_config(args), callbacks=callbacks, eval_dataset=eval_rows,
                                  eval_max_completion_length=args.eval_max_completion_length)
    else:
        raise ValueError(f"backend '{args.backend}' is not one of rlreason, trl")
    run_training(trainer, targs)
    trainer.save_model(targs.output_dir)
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(targs.output_dir)
    return finish_run(recipe, trainer, Path(targs.output_dir))


def _trl_trainer(recipe, model, tokenizer, rows, callbacks):
    """The same recipe on TRL's GRPOTrainer: same rows, reward functions, weights, LoRA, KL and lengths."""
    import rewards
    from trl import GRPOTrainer

    from rlreason.models.loading import lora_config
    from rlreason.rl_config import trl_grpo_config

    args = recipe.args
    funcs = [rewards.get_reward(name) for name in args.reward_funcs]
    config = trl_grpo_config(recipe.training_args)
    config.reward_weights = args.reward_weights
    return GRPOTrainer(model=model, reward_funcs=funcs, args=config, train_dataset=rows,
                       processing_class=tokenizer, peft_config=lora_config(args), callbacks=callbacks)
