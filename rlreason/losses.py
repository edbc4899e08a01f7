"""Policy losses (a registry: `register_policy_loss` / `get_policy_loss`), the k3 KL estimator, PPO's value loss.

Every registered policy loss is the clipped surrogate of PPO/GRPO with a per-token KL penalty, and differs
only in how the per-token losses are aggregated (`loss_type`, with TRL 1.16 GRPOTrainer's definitions):

    grpo     mean over each sequence's tokens, then mean over sequences        (Shao et al. 2024)
    bnpo     sum over all tokens / number of tokens in the micro-batch
    dapo     sum over all tokens / number of tokens in the global batch        (Yu et al. 2025)
    dr_grpo  sum over all tokens / (B * max_completion_length)                  (Liu et al. 2025)

Call: `loss, stats = get_policy_loss("dapo")(logps, old_logps, advantages, mask, ref_logps=..., beta=...,
epsilon_low=..., epsilon_high=..., num_items_in_batch=..., ...)`. The loss is already divided for gradient
accumulation as TRL's is (set `loss_is_scaled_for_ga = True` on a transformers.Trainer that returns it).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

POLICY_LOSSES: dict[str, Callable] = {}


def register_policy_loss(name: str):
    """Decorator adding a policy loss to the registry under `name`."""

    def wrap(fn: Callable) -> Callable:
        if name in POLICY_LOSSES:
            raise ValueError(f"policy loss '{name}' is already registered")
        POLICY_LOSSES[name] = fn
        return fn

    return wrap


def get_policy_loss(name: str) -> Callable:
    """The policy loss registered as `name`; an unknown name raises ValueError listing the valid ones."""
    if name not in POLICY_LOSSES:
        raise ValueError(f"unknown loss_type '{name}'; choose one of {', '.join(sorted(POLICY_LOSSES))}")
    return POLICY_LOSSES[name]


def kl_k3(logps: torch.Tensor, ref_logps: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimator of KL(pi || ref): exp(ref - logp) - (ref - logp) - 1 (>= 0, unbiased, Schulman 2020)."""
    diff = ref_logps - logps
    return torch.exp(diff) - diff - 1


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x where mask is 1; entries outside the mask are ignored even if NaN (0 for an empty mask)."""
    x = torch.where(mask.bool(), x, torch.zeros_like(x))
    mask = mask.to(x.dtype)
    if dim is None:
        return x.sum() / mask.sum().clamp(min=1.0)
    return x.sum(dim) / mask.sum(dim).clamp(min=1.0)


def clipped_surrogate(logps: torch.Tensor, old_logps: torch.Tensor | None, advantages: torch.Tensor,
                      mask: torch.Tensor, *, loss_type: str = "grpo", ref_logps: torch.Tensor | None = None,
                      beta: float | torch.Tensor = 0.0, epsilon_low: float = 0.2, epsilon_high: float | None = None,
                      delta: float | None = None, max_completion_length: int | None = None,
                      num_items_in_batch: int | torch.Tensor | None = None, num_processes: int = 1,
                      gradient_accumulation_steps: int = 1, steps_per_generation: int | None = None,
                      use_bias_correction_kl: bool = True, entropy: torch.Tensor | None = None,
                      importance_sampling_level: str = "token") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped importance-weighted policy loss plus beta * k3 KL, aggregated by `loss_type`.

    logps, old_logps, ref_logps, mask: (B, C) per completion token (old_logps None: logps.detach(), i.e. one
    policy update per rollout). advantages: (B,) or (B, C). beta: a float or a per-token weight broadcastable
    to (B, C) (e.g. (B, C) so SCoRe pins the first attempt harder). epsilon_high defaults to epsilon_low
    (> epsilon_low is DAPO's clip-higher); delta is TRL's optional upper clamp of the ratio.
    use_bias_correction_kl (TRL's default, True) multiplies the per-token KL by the differentiable ratio
    pi/pi_old, which makes its gradient the unbiased reverse-KL gradient (DeepSeek-V3.2), even on-policy.
    dapo divides by num_items_in_batch (completion tokens of the whole rollout, over all processes and
    micro-batches) / num_processes * gradient_accumulation_steps / steps_per_generation (TRL's rule;
    steps_per_generation defaults to gradient_accumulation_steps). dr_grpo's max_completion_length
    defaults to C. importance_sampling_level "sequence" is GSPO (Zheng et al. 2025), as TRL computes it: one
    ratio per sequence, exp(mean of its token log-ratios), clipped per sequence (its clip ratios count sequences).
    Returns the loss and detached metrics (clip ratios, kl, entropy: masked means)."""
    if loss_type not in ("grpo", "bnpo", "dapo", "dr_grpo"):
        raise ValueError(f"unknown loss_type '{loss_type}'; choose one of bnpo, dapo, dr_grpo, grpo")
    if logps.shape != mask.shape:
        raise ValueError(f"logps {tuple(logps.shape)} and mask {tuple(mask.shape)} must have the same (B, C) shape")
    epsilon_high = epsilon_low if epsilon_high is None else epsilon_high
    keep = mask.bool()
    mask = mask.to(logps.dtype)
    # Padding positions may hold anything (even inf); zero them so they cannot reach the loss or its gradient.
    logps = logps.masked_fill(~keep, 0.0)
    old = logps.detach() if old_logps is None else old_logps.detach().masked_fill(~keep, 0.0)
    adv = advantages.unsqueeze(1) if advantages.dim() == 1 else advantages
    adv = adv.to(logps.dtype)

    if importance_sampling_level not in ("token", "sequence"):
        raise ValueError(f"importance_sampling_level must be token or sequence, got '{importance_sampling_level}'")
    log_ratio = logps - old
    if importance_sampling_level == "sequence":  # (B, 1): one ratio per sequence
        log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    ratio = torch.exp(log_ratio)
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)
    stats: dict[str, torch.Tensor] = {}
    kl = None
    if ref_logps is not None:
        kl = kl_k3(logps, ref_logps.detach().masked_fill(~keep, 0.0))
        if use_bias_correction_kl:
            kl = kl * ratio  # the ratio before delta's clamp, as in TRL
        stats["kl"] = masked_mean(kl.detach(), mask)
    if delta is not None:
        ratio = torch.clamp(ratio, max=delta)
    per_token = -torch.min(ratio * adv, clipped * adv)
    if _nonzero(beta):
        if kl is None:
            raise ValueError("beta != 0 needs ref_logps (the reference model's per-token log-probs)")
        weight = beta.to(logps.dtype).unsqueeze(1) if torch.is_tensor(beta) and beta.dim() == 1 else beta
        per_token = per_token + weight * kl

    loss = _aggregate(per_token, mask, loss_type, max_completion_length, num_items_in_batch, num_processes,
                      gradient_accumulation_steps, steps_per_generation)

    with torch.no_grad():
        low = (ratio < 1 - epsilon_low) & (adv < 0)
        high = (ratio > 1 + epsilon_high) & (adv > 0)
        # per sequence (every row counts, as in TRL) at the sequence level, per completion token otherwise
        clip_mean = (lambda x: x.to(mask.dtype).mean()) if low.size(-1) == 1 else \
            (lambda x: masked_mean(x.to(mask.dtype), mask))
        stats["clip_ratio/low_mean"] = clip_mean(low)
        stats["clip_ratio/high_mean"] = clip_mean(high)
        stats["clip_ratio/region_mean"] = clip_mean(low | high)
        stats["policy_loss"] = loss.detach() * (1 if loss_type == "dapo" else gradient_accumulation_steps)
        if entropy is not None:
            stats["entropy"] = masked_mean(entropy.detach(), mask)
    return loss, stats


def _aggregate(per_token, mask, loss_type, max_completion_length, num_items_in_batch, num_processes, ga, spg):
    total = (per_token * mask).sum()
    if loss_type == "grpo":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean() / ga
    if loss_type == "bnpo":
        return total / mask.sum().clamp(min=1.0) / ga
    if loss_type == "dr_grpo":
        length = max_completion_length or mask.size(1)
        return total / (per_token.size(0) * length) / ga
    # dapo: the token count of the global batch, rescaled to one accumulation window as TRL does
    if num_items_in_batch is None:
        return total / mask.sum().clamp(min=1.0) / ga
    items = torch.as_tensor(num_items_in_batch, dtype=per_token.dtype, device=per_token.device).clamp(min=1.0)
    normalizer = items / num_processes * ga / (spg or ga)
    return total / normalizer


def _nonzero(beta) -> bool:
    return bool((beta != 0).any()) if torch.is_tensor(beta) else beta != 0.0


def _register(name: str) -> None:
    def loss(logps, old_logps, advantages, mask, **options):
        return clipped_surrogate(logps, old_logps, advantages, mask, loss_type=name, **options)

    loss.__name__ = f"{name}_loss"
    loss.__doc__ = f"clipped_surrogate with loss_type='{name}' (see clipped_surrogate for the options)."
    register_policy_loss(name)(loss)


for _name in ("grpo", "bnpo", "dapo", "dr_grpo"):
    _register(_name)


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, *,
               cliprange_value: float = 0.2, vf_coef: float = 0.1) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped value loss: vf_coef * 0.5 * masked mean of max((V - R)^2, (V_clipped - R)^2).

    V_clipped = old_values + clamp(values - old_values, -cliprange_value, cliprange_value); all (B, C)."""
    mask = mask.to(values.dtype)
    old_values, returns = old_values.detach(), returns.detach()
    clipped = old_values + torch.clamp(values - old_values, -cliprange_value, cliprange_value)
    unclipped_loss, clipped_loss = (values - returns) ** 2, (clipped - returns) ** 2
    loss = vf_coef * 0.5 * masked_mean(torch.max(unclipped_loss, clipped_loss), mask)
    stats = {"value/loss": loss.detach(),
             "value/clipfrac": masked_mean((clipped_loss > unclipped_loss).to(mask.dtype), mask).detach(),
             "value/mean": masked_mean(values.detach(), mask)}
    return loss, stats


def whiten(x: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True,
           eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked-in entries (Bessel-corrected variance); 0 outside the mask.

    shift_mean=False adds the mean back (only rescales), as TRL's PPO does for rewards."""
    if mask is None:
        mask = torch.ones_like(x)
    mask = mask.to(x.dtype)
    n = mask.sum()
    mean = masked_mean(x, mask)
    var = ((x - mean) ** 2 * mask).sum() / (n - 1).clamp(min=1.0)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask
