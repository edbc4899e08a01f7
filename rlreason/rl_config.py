"""Training arguments of the on-policy algorithms: TRL's GRPOConfig, plus the few knobs TRL does not have."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Literal

from trl import GRPOConfig

from rlreason.tools import DEFAULT_OPEN, DEFAULT_STOPS, DEFAULT_TEMPLATE


@dataclass
class RLConfig(GRPOConfig):
    """GRPOConfig (every TRL name means what it means in TRL) extended for rlreason's engine.

    Batch semantics follow TRL: `per_device_train_batch_size` counts completions, so each micro-batch
    holds per_device_train_batch_size / num_generations prompts, and one rollout is sampled per
    optimizer step for all gradient-accumulation micro-batches (TRL's steps_per_generation)."""

    advantage_estimator: str = field(default="grpo", metadata={
        "help": "grpo | dr_grpo | rloo | gae (registry); dr_grpo and rloo read scale_rewards group as none"})
    log_completions_steps: int = field(default=50, metadata={"help": "log a completions table every N steps"})
    rollout_engine: Literal["generate", "static"] = field(default="static", metadata={
        "help": "generate (transformers' model.generate) | static (rlreason.rollout_engine: static KV cache, "
                "finished rows leave the batch; same sampling distribution, faster)"})
    rollout_compile: bool | None = field(default=None, metadata={
        "help": "static engine: torch.compile its decode step (default: on a GPU only; the compilation takes "
                "20-70 s on a CPU)"})
    monitors: dict | None = field(default=None, metadata={
        "help": "thresholds of the run monitors, {name: {key: value} | false} (rlreason.monitors; defaults there)"})
    stop_on_alarm: bool = field(default=False, metadata={"help": "a monitor alarm saves a checkpoint and stops"})
    # PPO (value head and GAE); unused by GRPO
    gamma: float = 1.0
    lam: float = 0.95
    vf_coef: float = 0.1
    cliprange_value: float = 0.2
    kl_in_reward: bool = False
    whiten_advantages: bool = True
    value_model: str | None = field(default=None, metadata={
        "help": "PPO: a separate critic network (a model path, or 'policy' for a copy of the policy's weights) "
                "instead of the value head on the policy's trunk"})
    value_learning_rate: float | None = field(default=None, metadata={
        "help": "PPO: learning rate of the value head (default: learning_rate); a fresh head needs a larger one"})
    critic_warmup_steps: int = field(default=0, metadata={
        "help": "PPO: first optimizer steps that train only the value head (the policy and trunk stay fixed)"})
    # SCoRe (two-attempt self-correction); unused by GRPO and PPO
    stage_one_steps: int = field(default=0, metadata={"help": "SCoRe: optimizer steps of stage I; stage II after"})
    beta_first: float = field(default=0.1, metadata={"help": "SCoRe stage I: KL weight on attempt 1's tokens"})
    alpha: float = field(default=10.0, metadata={"help": "SCoRe stage II: bonus alpha * (r(y2) - r(y1))"})
    correction_instruction: str | None = field(default=None, metadata={
        "help": "SCoRe: the turn between the attempts (default: rlreason.rollout.SELF_CORRECTION_INSTRUCTION)"})
    evaluate_start: bool = field(default=True, metadata={
        "help": "SCoRe: also evaluate the two attempts of the start model (stage.json's before); off when another "
                "run from the same start already did"})

    # tools (rlreason/tools.py, rlreason/tool_rollout.py): multi-turn rollouts in which the model's code runs in the
    # code reward's sandbox and its output comes back as observation tokens, masked out of the loss
    tools: list[str] | None = field(default=None, metadata={
        "help": "[python]: the model may call Python during its rollouts (a ```python fenced block; off by default)"})
    max_tool_calls: int = field(default=4, metadata={"help": "tools: calls per trajectory at most"})
    tool_timeout: float = field(default=5.0, metadata={"help": "tools: wall-clock seconds of one call"})
    max_tool_output_tokens: int = field(default=64, metadata={
        "help": "tools: tokens of a call's output (stdout, or the error's last line) that are shown to the model"})
    tool_call_open: str = field(default=DEFAULT_OPEN, metadata={"help": "tools: the text that opens a tool call"})
    tool_stop_strings: list[str] = field(default_factory=lambda: list(DEFAULT_STOPS), metadata={
        "help": "tools: a call ends at the first of these after tool_call_open"})
    observation_template: str = field(default=DEFAULT_TEMPLATE, metadata={
        "help": "tools: the observation appended after a call; {output} is the call's (truncated) output"})
    tool_persistent_state: bool = field(default=False, metadata={
        "help": "tools: a call sees the variables of the trajectory's earlier calls (they are run again first)"})

    def __post_init__(self):
        if self.advantage_estimator in ("dr_grpo", "rloo") and self.scale_rewards == "group":
            self.scale_rewards = "none"  # Dr. GRPO and RLOO do not divide by the group's std (set batch to scale)
        super().__post_init__()
        from rlreason.monitors import check_monitors

        check_monitors(self.monitors)


def trl_grpo_config(args: RLConfig) -> GRPOConfig:
    """The same run as a plain TRL GRPOConfig (for `backend: trl`)."""
    names = {f.name for f in fields(GRPOConfig) if f.init}
    values = {f.name: getattr(args, f.name) for f in fields(args) if f.init and f.name in names}
    values["generation_batch_size"] = None  # derived again from steps_per_generation
    return GRPOConfig(**values)
