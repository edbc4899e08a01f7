"""A value head on the policy's trunk: a linear layer over the final hidden state, one value per token.

The head is a submodule of the causal LM (`model.v_head`), so checkpoints, resume, DeepSpeed and
LoRA (`modules_to_save=["v_head"]`) handle it like any other weight. Values come from the same
forward pass as the log-probs: a hook on the trunk's final norm captures the hidden states.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

HEAD_NAME = "v_head"


def attach_value_head(model) -> nn.Module:
    """Add `v_head` (hidden_size -> 1, small init, float32) to a causal LM, once."""
    if not hasattr(model, HEAD_NAME):
        hidden = model.config.hidden_size
        head = nn.Linear(hidden, 1)
        nn.init.normal_(head.weight, std=1.0 / (hidden + 1) ** 0.5)
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
