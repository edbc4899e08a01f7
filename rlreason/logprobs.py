"""Per-token log-probs and entropies of completion tokens without the full-vocabulary logits of the micro-batch.

The model runs once with `logits_to_keep=1`; a forward hook on its final norm keeps the hidden states. The
lm_head and the log-softmax then run on chunks of completion tokens (`tokens_per_chunk`: LOGIT_CHUNK_ELEMENTS
logits at a time, 110 tokens for a 151,936-token vocabulary), each chunk under activation checkpointing, so
backward recomputes one chunk's logits at a time instead of keeping every chunk's. Masked positions are not
scored. The lm_head is called as a module (LoRA on it, DeepSpeed ZeRO-3's parameter gathering and DDP's
gradient hooks all see it), and the forward pass goes through the model's own __call__ (so DDP and DeepSpeed
wrappers run their hooks). Models whose logits are transformed after the lm_head (softcapping, logit scales)
or that have no recognisable final norm take the plain path: full logits of the completion positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

LOGIT_CHUNK_ELEMENTS = 2 ** 24  # logits held at once per chunk: 64 MiB in float32
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                     "logits_scaling")


def tokens_per_chunk(vocab_size: int) -> int:
    """Completion tokens whose logits make one chunk (at least 1)."""
    return max(1, LOGIT_CHUNK_ELEMENTS // max(1, vocab_size))


def chunked_head_logprobs(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int,
                          temperature: float, return_entropy: bool):
    """(log-probs (B, C), entropies (B, C) or None) of the last `logits_to_keep` tokens, or None when the model
    needs the plain path (see the module docstring). Entropies are detached; masked positions are 0."""
    from rlreason.models.value_head import capture_hidden

    head = _output_head(model)
    if head is None:
        return None
    try:
        capture = capture_hidden(model)
        box = capture.__enter__()
    except ValueError:  # no final norm to read the hidden states from
        return None
    try:
        model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=1, use_cache=False)
    finally:
        capture.__exit__(None, None, None)
    C = logits_to_keep
    hidden = box["hidden"][:, -C - 1:-1, :]  # position t predicts token t + 1
    targets = input_ids[:, -C:]
    valid = attention_mask[:, -C:].bool()
    logps, entropy = head_logprobs(head, hidden[valid], targets[valid], temperature, return_entropy)
    out_logps = hidden.new_zeros(valid.shape, dtype=torch.float32).masked_scatter(valid, logps)
    out_entropy = None
    if return_entropy:
        out_entropy = torch.zeros(valid.shape, dtype=torch.float32, device=hidden.device).masked_scatter(valid, entropy)
    return out_logps, out_entropy


def head_logprobs(head, hidden: torch.Tensor, targets: torch.Tensor, temperature: float, return_entropy: bool):
    """log softmax(head(hidden) / temperature)[targets] for N hidden states (N, H), chunk by chunk; and the
    (detached) entropies. With gradients on and more than one chunk, each chunk is checkpointed."""
    n = tokens_per_chunk(head.weight.size(0) if hasattr(head, "weight") else head.out_features)
    recompute = torch.is_grad_enabled() and hidden.requires_grad and hidden.size(0) > n  # one chunk: keep it
    logps, entropies = [], []
    for start in range(0, hidden.size(0), n):
        h, t = hidden[start:start + n], targets[start:start + n]
        if recompute:
            lp, ent = checkpoint(_chunk, head, h, t, temperature, return_entropy, use_reentrant=False)
        else:
            lp, ent = _chunk(head, h, t, temperature, return_entropy)
        logps.append(lp)
        entropies.append(ent)
    if not logps:
        empty = hidden.new_zeros((0,), dtype=torch.float32) + hidden.sum() * 0  # keeps the graph connected
        return empty, (empty.detach() if return_entropy else None)
    return torch.cat(logps), (torch.cat(entropies) if return_entropy else None)


def _chunk(head, h, targets, temperature, return_entropy):
    logits = head(h).float()
    if temperature != 1.0:
        logits = logits / temperature
    logps = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, -1)
    entropy = None
    if return_entropy:
        with torch.no_grad():
            log_p = F.log_softmax(logits, -1)
            entropy = -(log_p.exp() * log_p).sum(-1)
    return logps, entropy


def _output_head(model):
    """The lm_head module, or None where the logits are transformed after it (or there is none)."""
    inner = model
    for attr in ("module", "base_model", "model"):  # DDP / DeepSpeed, then peft, to reach the causal LM's config
        config = getattr(inner, "config", None)
        if config is not None and hasattr(inner, "get_output_embeddings"):
            break
        inner = getattr(inner, attr, inner)
    config = getattr(inner, "config", None)
    if config is None or not hasattr(inner, "get_output_embeddings"):
        return None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    if any(getattr(text, name, None) is not None for name in _LOGIT_TRANSFORMS):
        return None
    head = inner.get_output_embeddings()
    return head if isinstance(head, torch.nn.Module) else None
