"""Token-level values for PPO: a linear head on the policy's trunk (default) or a separate critic network.

Either way the critic is a submodule of the causal LM (`model.v_head`, or `model.value_model` holding its own
trunk and `v_head`), so checkpoints, resume, DeepSpeed and LoRA (`modules_to_save`) handle it like any other
weight. With the shared trunk, values come from the same forward pass as the log-probs (a hook on the final
norm captures the hidden states); a separate critic runs its own trunk on the same tokens.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

HEAD_NAME = "v_head"
CRITIC_NAME = "value_model"


def attach_value_head(model) -> nn.Module:
    """Add `v_head` (hidden_size -> 1, zero init, float32) to a causal LM, once."""
    if not hasattr(model, HEAD_NAME):
        hidden = model.config.hidden_size
        head = nn.Linear(hidden, 1)
        nn.init.zeros_(head.weight)  # starts as a constant: no per-token noise for GAE to amplify
        nn.init.zeros_(head.bias)
        setattr(model, HEAD_NAME, head.to(next(model.parameters()).device))
    return getattr(model, HEAD_NAME)


def _find(model, suffix: str) -> nn.Module:
    """The shortest-named submodule whose name ends with `suffix` (works through peft and DDP wrappers)."""
    matches = [(name, m) for name, m in model.named_modules() if name == suffix or name.endswith("." + suffix)]
    if not matches:
        raise ValueError(f"the model has no '{suffix}' module: attach_value_head(model) first")
    return min(matches, key=lambda nm: len(nm[0]))[1]


def _final_norm(model) -> nn.Module:
    for suffix in ("model.norm", "transformer.ln_f", "gpt_neox.final_layer_norm", "model.final_layernorm"):
        try:
            return _find(model, suffix)
        except ValueError:
            continue
    raise ValueError("cannot find the trunk's final norm to read hidden states from; "
                     "set value_model to a separate model instead")


@contextlib.contextmanager
def capture_hidden(model):
    """Within the block, `box["hidden"]` holds the final hidden states of the last forward pass."""
    box: dict = {}
    handle = _final_norm(model).register_forward_hook(lambda mod, inp, out: box.__setitem__("hidden", out))
    try:
        yield box
    finally:
        handle.remove()


def completion_values(model, hidden: torch.Tensor, completion_length: int) -> torch.Tensor:
    """V(s_t) for each completion token t: the head on the hidden state that predicts token t. (B, C) float32."""
    head = _find(model, HEAD_NAME)
    states = hidden[:, -completion_length - 1:-1, :]
    return head(states.to(head.weight.dtype)).squeeze(-1).float()


def attach_value_model(model, source: str) -> nn.Module:
    """Add `value_model`: a separate critic (its own trunk + v_head) loaded from `source`, or a copy of the
    policy's weights when source is "policy"."""
    if not hasattr(model, CRITIC_NAME):
        if source == "policy":
            import copy

            critic = copy.deepcopy(model)
        else:
            from transformers import AutoModelForCausalLM

            critic = AutoModelForCausalLM.from_pretrained(source, dtype=next(model.parameters()).dtype)
        head = critic.get_output_embeddings()
        if head is not None and head.weight is not critic.get_input_embeddings().weight:
            head.requires_grad_(False)  # the critic never predicts tokens (a tied matrix stays: it embeds them)
        attach_value_head(critic)
        setattr(model, CRITIC_NAME, critic.to(next(model.parameters()).device))
    return getattr(model, CRITIC_NAME)


def critic_values(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_length: int):
    """V(s_t) for each completion token from the separate critic (its trunk's last hidden states). (B, C)."""
    critic = _find(model, CRITIC_NAME)
    hidden = critic.get_decoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return completion_values(critic, hidden, completion_length)


def is_critic_parameter(name: str) -> bool:
    """Parameters that belong to the value function (the head, or the whole separate critic)."""
    return HEAD_NAME in name or CRITIC_NAME in name


def critic_modules(model) -> list[nn.Module]:
    """The value head and the separate critic attached to `model` (empty for a plain causal LM)."""
    return [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in (HEAD_NAME, CRITIC_NAME)]
