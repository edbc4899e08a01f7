"""The `static` rollout engine: a lean decode loop over the model's forward with a preallocated KV cache.

`model.generate` spends most of a small model's decode step outside the model (argument preparation, cache
bookkeeping, stopping criteria). `static_decode` does only what a rollout needs:

- the prompt is encoded once per group (`rollout.shared_prompt_cache`: all but its last token, repeated for the
  k samples) and copied into transformers' `StaticCache`, sized for prompt + max_new_tokens;
- each step is one forward of one token per row through that cache, optionally `torch.compile`d with dynamic
  shapes (one compilation serves every batch and prompt length; weights, LoRA adapters included, are inputs of
  the compiled graph, not constants, so an optimizer step does not recompile);
- tokens are drawn from the distribution `generate` draws them from: float32 logits, transformers' own warpers in
  generate's order (temperature, top_k, top_p, min_p), softmax, then one uniform draw per row through the CDF
  (`draw`); greedy is argmax of the raw logits;
- rows that reach EOS stop costing: when at most half the batch is still running, the finished rows leave it
  (the batch and every cache layer are compacted), so the batch halves at most log2(rows) times.

Options that change the distribution in other ways (repetition_penalty, generation_kwargs that are not about the
cache or compilation) are refused: use `rollout_engine: generate` for those.
"""

from __future__ import annotations

import time

import torch
from transformers import StaticCache
from transformers.cache_utils import StaticLayer

from rlreason.sampling import SAFE_GENERATION_KWARGS

ENGINES = ("generate", "static")
# compile time of the decode step, per (model class, device type): seconds of the first compiled call
COMPILE_SECONDS: dict[str, float] = {}
_COMPILED = {}


def check_engine(engine: str) -> str:
    if engine not in ENGINES:
        raise ValueError(f"rollout_engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    return engine


def check_static_options(repetition_penalty: float | None, generation_kwargs: dict | None) -> None:
    """Refuse sampling settings the static engine does not reproduce (one line naming the way out)."""
    if repetition_penalty not in (None, 1.0):
        raise ValueError(f"rollout_engine static: repetition_penalty {repetition_penalty} is not supported; "
                         f"use rollout_engine: generate (or repetition_penalty 1.0)")
    other = sorted(set(generation_kwargs or {}) - SAFE_GENERATION_KWARGS)
    if other:
        raise ValueError(f"rollout_engine static: generation_kwargs {', '.join(other)} are not supported; "
                         f"use rollout_engine: generate")


def logits_warpers(config):
    """transformers' own warpers for `config`, in the order `generate` applies them (empty for greedy)."""
    from transformers import (LogitsProcessorList, MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper,
                              TopPLogitsWarper)

    warpers = LogitsProcessorList()
    if not config.do_sample:
        return warpers
    if config.temperature is not None and config.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(config.temperature))
    if config.top_k is not None and config.top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=config.top_k, min_tokens_to_keep=1))
    if config.top_p is not None and config.top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=config.top_p, min_tokens_to_keep=1))
    if config.min_p is not None:
        warpers.append(MinPLogitsWarper(min_p=config.min_p, min_tokens_to_keep=1))
    return warpers


def should_compile(model, compile: bool | None) -> bool:
    """compile None (auto) compiles on a GPU only: on a CPU the compilation (20-90 s on 2 cores) costs more than
    it saves in runs of a few hundred steps (README, Benchmarks). Never under ZeRO-3, whose gathered parameters
    and hooks are DeepSpeed's to manage."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        return False
    if compile is None:
        return next(model.parameters()).device.type == "cuda"
    return bool(compile)


def static_decode(model, ids: torch.Tensor, mask: torch.Tensor, k: int, config, eos_ids: list[int],
                  compile: bool | None = None, on_token=None) -> torch.Tensor:
    """(B*k, C) completion ids for left-padded prompts (B, P), rows grouped by prompt, padded with pad_token_id
    after each row's EOS; C is the longest completion (at most config.max_new_tokens), as `generate` returns it.
    compile: torch.compile the decode step (None: on a GPU only, see should_compile).
    on_token(rows, tokens, logits), after each step: the output rows that drew a token at this step, those tokens
    and their float32 logits; it may return a bool tensor (one per such row) of the rows that stop here, as at an
    EOS (the tool rollout, rlreason/tool_rollout.py, stops a row at the end of a tool call)."""
    from rlreason.rollout import shared_prompt_cache

    check_static_options(config.repetition_penalty, None)
    compile = should_compile(model, compile)
    device, pad_id = ids.device, int(config.pad_token_id)
    max_new = int(config.max_new_tokens)
    rows = ids.size(0) * k
    prefix = ids.size(1) - 1
    # eager for a batch of one (it would be compiled again, for size 1) and for one-token prompts (the cache would
    # be allocated inside the compiled step)
    step = _decode_step(model, compile and rows >= 2 and prefix > 0)
    prompt_cache = shared_prompt_cache(model, ids, mask, k) if prefix > 0 else None
    if prefix > 0 and prompt_cache is None:
        raise ValueError(f"rollout_engine static decodes decoder-only models; {type(model).__name__} is not one: "
                         f"use rollout_engine: generate")
    cache = _static_cache(model, prompt_cache, rows, prefix + max_new, filled_only=step is _forward_last_logits)
    attention = torch.zeros((rows, prefix + max_new), dtype=mask.dtype, device=device)
    attention[:, :prefix + 1] = mask.repeat_interleave(k, 0)
    # inputs of the compiled step are never views (a view's base would be guarded on too)
    positions = (mask.long().cumsum(-1) - 1).clamp(min=0)[:, -1:].repeat_interleave(k, 0).clone()
    tokens = ids[:, -1:].repeat_interleave(k, 0).clone()
    warpers = logits_warpers(config)
    eos = torch.tensor(eos_ids, device=device)
    out = torch.full((rows, max_new), pad_id, dtype=torch.long, device=device)
    index = torch.arange(rows, device=device)  # batch row -> output row
    running = torch.ones(rows, dtype=torch.bool, device=device)
    width = 0
    for t in range(max_new):
        seen = attention if step is not _forward_last_logits else attention[:, :prefix + 1 + t]
        logits = step(model, tokens, seen, positions, cache)
        scores = warpers(tokens, logits.to(dtype=torch.float32))
        chosen = draw(torch.softmax(scores, -1)) if config.do_sample else scores.argmax(-1)
        chosen = torch.where(running, chosen, pad_id)
        out[index, t] = chosen
        width = t + 1
        drew = running.clone()
        running &= ~torch.isin(chosen, eos)
        if on_token is not None:
            stop = on_token(index[drew], chosen[drew], logits[drew].to(dtype=torch.float32))
            if stop is not None:
                running[drew] &= ~stop
        alive = int(running.sum())
        if alive == 0 or t == max_new - 1:
            break
        if 2 * alive <= running.numel() and alive >= 2:  # compact: finished rows leave the batch
            keep = running.nonzero().squeeze(1)
            _select_rows(cache, keep)
            index, running, attention, positions = index[keep], running[keep], attention[keep], positions[keep]
            chosen = chosen[keep]
        attention[:, prefix + 1 + t] = 1
        positions = positions + 1
        tokens = chosen.unsqueeze(1).clone()
    return out[:, :width]


def draw(probs: torch.Tensor) -> torch.Tensor:
    """One token per row from the categorical `probs` (B, V), by inverting its CDF at one uniform draw per row:
    the distribution torch.multinomial samples, at a fraction of its cost on a CPU (it draws B numbers, not B*V).
    A token of probability 0 is never drawn (the first index whose CDF exceeds u * total)."""
    cdf = probs.cumsum(-1)
    u = torch.rand((probs.size(0), 1), device=probs.device, dtype=cdf.dtype) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).squeeze(1).clamp_(max=probs.size(1) - 1)


def _forward_last_logits(model, tokens, attention, positions, cache):
    return model(input_ids=tokens, attention_mask=attention, position_ids=positions, past_key_values=cache,
                 use_cache=True).logits[:, -1]


def _decode_step(model, compile: bool):
    if not compile:
        return _forward_last_logits
    if "fn" not in _COMPILED:
        _COMPILED["fn"] = torch.compile(_forward_last_logits, dynamic=True)
    compiled = _COMPILED["fn"]
    key = f"{type(model).__name__}/{next(model.parameters()).device.type}"

    def timed(*args):
        if key in COMPILE_SECONDS:
            return compiled(*args)
        start = time.perf_counter()
        result = compiled(*args)
        COMPILE_SECONDS[key] = time.perf_counter() - start
        return result
    return timed


def _static_cache(model, prompt_cache, rows: int, length: int, filled_only: bool):
    """A StaticCache of `rows` x `length` positions holding the prompt cache's keys and values at the start.
    filled_only (eager decoding): attention sees the positions written so far, not the empty tail."""
    cache = StaticCache(config=model.config, max_cache_len=length)
    if any(type(layer) is not StaticLayer for layer in cache.layers):
        raise ValueError(f"rollout_engine static supports full-attention models only ({type(model).__name__} has "
                         f"sliding-window or other cache layers); use rollout_engine: generate")
    if filled_only:
        cache.layers = [FilledStaticLayer(max_cache_len=length) for _ in cache.layers]
    if prompt_cache is None:
        return cache
    for layer, source in zip(cache.layers, prompt_cache.layers):
        keys, values = source.keys, source.values
        layer.lazy_initialization(keys[:, :, :1], values[:, :, :1])
        layer.keys[:, :, :keys.size(2)] = keys
        layer.values[:, :, :values.size(2)] = values
        layer.cumulative_length.fill_(keys.size(2))
        layer.filled = keys.size(2)
    return cache


class FilledStaticLayer(StaticLayer):
    """A StaticLayer that hands attention only the positions written so far (a view, no copy): eager decoding
    then attends over prompt + tokens so far, not over the empty tail of the preallocated cache."""

    filled = 0

    def update(self, key_states, value_states, *args, **kwargs):
        keys, values = super().update(key_states, value_states, *args, **kwargs)
        self.filled += key_states.shape[-2]
        return keys[:, :, :self.filled], values[:, :, :self.filled]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        return self.filled + query_length, 0

    def get_seq_length(self) -> int:
        return self.filled


def _select_rows(cache, keep: torch.Tensor) -> None:
    for layer in cache.layers:
        if getattr(layer, "is_initialized", False):
            layer.keys, layer.values = layer.keys[keep], layer.values[keep]
            layer.batch_size = int(keep.numel())
