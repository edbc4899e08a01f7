"""Evaluation during training: a transformers TrainerCallback that evaluates every `eval_steps` and logs eval/*."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from transformers import TrainerCallback

from rlreason.evaluation.evaluate import DEFAULT_REWARD


class PeriodicEvalCallback(TrainerCallback):
    """Greedy accuracy (and, with n > 0, pass@k / maj@k) on held-out rows every `eval_steps` optimizer steps.

    The scalars go through `trainer.log`, so they reach every logging integration the trainer has (wandb,
    metrics.jsonl) at the right global step. Give the trainer after constructing it:
    `trainer.add_callback(PeriodicEvalCallback(rows, eval_steps=50, trainer=trainer, ...))`. Generation runs
    on the main process only: fine for one process or DDP, not for DeepSpeed ZeRO-3 (sharded weights)."""

    def __init__(self, rows, *, eval_steps: int, trainer=None, reward: str | Callable = DEFAULT_REWARD,
                 max_completion_length: int = 256, batch_size: int = 64, n: int = 0, ks: Sequence[int] = (1,),
                 temperature: float = 1.0, at_start: bool = False):
        if eval_steps < 1:
            raise ValueError(f"eval_steps must be >= 1, got {eval_steps}")
        self.rows = [dict(r) for r in rows]
        self.eval_steps, self.trainer, self.at_start = eval_steps, trainer, at_start
        self.options = dict(reward=reward, max_completion_length=max_completion_length, batch_size=batch_size,
                            progress=False)
        self.n, self.ks, self.temperature = n, tuple(ks), temperature
        self.history: list[tuple[int, dict[str, float]]] = []  # (global step, scalars)

    def evaluate(self, model, tokenizer, step: int) -> dict[str, float]:
        from rlreason.evaluation.evaluate import evaluate_greedy, evaluate_sampled
        from rlreason.evaluation.run import scalar_metrics

        result = {"greedy": evaluate_greedy(model, tokenizer, self.rows, **self.options)}
        if self.n > 0:
            result["sampled"] = evaluate_sampled(model, tokenizer, self.rows, n=self.n, ks=self.ks,
                                                 temperature=self.temperature, **self.options)
        scalars = scalar_metrics(result)
        self.history.append((step, scalars))
        if self.trainer is not None:
            self.trainer.log(dict(scalars))
        return scalars

    def _maybe(self, state, model, processing_class, due: bool) -> None:
        if due and state.is_world_process_zero and model is not None and processing_class is not None:
            self.evaluate(model, processing_class, state.global_step)

    def on_train_begin(self, args, state, control, model=None, processing_class=None, **kwargs):
        self._maybe(state, model, processing_class, self.at_start and state.global_step == 0)

    def on_step_end(self, args, state, control, model=None, processing_class=None, **kwargs):
        self._maybe(state, model, processing_class, state.global_step % self.eval_steps == 0)
