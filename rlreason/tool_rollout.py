"""Multi-turn rollouts with tools: the model writes code, the sandbox runs it, the output comes back as tokens.

Each turn decodes every unfinished trajectory (prompt + everything so far, as token ids) with the static engine
(rlreason.rollout_engine.static_decode) until it samples EOS, closes a tool call (rlreason.tools.find_tool_call),
or reaches max_completion_length, which counts every token of the trajectory, observations included. The calls of
a turn run in parallel in the sandbox; each observation is appended as token ids, and the next turn continues.
After max_tool_calls calls a trajectory is no longer stopped at a call: it decodes on to EOS or the limit.

Token in, token out: the sampled ids are kept as sampled (never decoded and encoded again), and the log-prob of
each one is taken from the logits it was drawn from, at the sampling temperature (1.0 for greedy).
`Rollout.observation_mask` is 1 on the inserted tokens; the trainer drops them from the loss, the log-probs, the
KL and the entropy. `Rollout.texts` holds the policy's tokens only (what the rewards score, so a number the tool
printed is never read as the final answer); `Rollout.display_texts` shows the observations, marked."""

from __future__ import annotations

import copy

import torch

from rlreason.rollout import Rollout, _check_options, _pad_id, encode_prompts, eos_token_ids
from rlreason.tools import ToolConfig, find_tool_call, observation_ids, run_tool_calls

OBSERVATION_MARKS = ("[observation]", "[/observation]")  # around observations in display_texts


class Turn:
    """One decoding pass over some trajectories: records each row's tokens and log-probs and says when it stops."""

    def __init__(self, tokenizer, rows: list[int], budgets: list[int], may_call: list[bool], config: ToolConfig,
                 temperature: float):
        self.tokenizer, self.rows, self.budgets, self.may_call = tokenizer, rows, budgets, may_call
        self.config, self.temperature = config, temperature
        self.tokens: list[list[int]] = [[] for _ in rows]
        self.logps: list[list[float]] = [[] for _ in rows]

    def on_token(self, index: torch.Tensor, tokens: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """static_decode's hook: `index` are positions in `rows`; True where the row stops after this token."""
        logps = torch.log_softmax(logits / self.temperature, -1).gather(1, tokens.long().unsqueeze(1)).squeeze(1)
        stop = torch.zeros(len(index), dtype=torch.bool)
        for n, (i, token, logp) in enumerate(zip(index.tolist(), tokens.tolist(), logps.tolist())):
            self.tokens[i].append(token)
            self.logps[i].append(logp)
            if len(self.tokens[i]) >= self.budgets[i] or (self.may_call[i] and self.code(i) is not None):
                stop[n] = True
        return stop.to(tokens.device)

    def code(self, i: int) -> str | None:
        """The code of the tool call row i's turn closes, if any."""
        return find_tool_call(self.tokenizer.decode(self.tokens[i], skip_special_tokens=True), self.config)


def static_turn(model, contexts: list[list[int]], turn: Turn, config, eos_ids: list[int], pad_id: int,
                compile: bool | None) -> None:
    """Decode one turn of `contexts` (token ids, one per row of `turn`) with the static engine."""
    from rlreason.rollout_engine import static_decode

    width = max(len(c) for c in contexts)
    ids = torch.full((len(contexts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(contexts), width), dtype=torch.long)
    for r, context in enumerate(contexts):
        ids[r, width - len(context):] = torch.tensor(context, dtype=torch.long)
        mask[r, width - len(context):] = 1
    device = next(model.parameters()).device
    step_config = copy.copy(config)
    step_config.max_new_tokens = max(turn.budgets)
    static_decode(model, ids.to(device), mask.to(device), 1, step_config, eos_ids, compile, on_token=turn.on_token)


def generate_with_tools(model, tokenizer, prompts: list, tools: ToolConfig, *, num_generations: int = 1,
                        max_completion_length: int = 64, temperature: float = 1.0, top_p: float = 1.0,
                        top_k: int = 0, do_sample: bool = True, min_p: float | None = None,
                        chat_template_kwargs: dict | None = None, batch_size: int | None = None,
                        compile: bool | None = None, decode_turn=None, **ignored) -> Rollout:
    """Sample `num_generations` tool-using trajectories per prompt (rows grouped by prompt, as `generate`).

    The Rollout's completion is the whole trajectory (policy tokens and observations, right-padded), its
    completion_mask 1 on every token of it, observation_mask 1 on the observations, logprobs the sampling-time
    log-probs (0 on observations and padding), tool_stats per-row counts (tool_calls, tool_errors,
    tool_timeouts, turns). batch_size: trajectories per decoding call are batch_size * num_generations (None:
    all). decode_turn(contexts, turn) replaces the model's decoding (tests script the policy with it).
    Sampling options the static engine does not reproduce (repetition_penalty, generation_kwargs) are refused."""
    from rlreason.models.parallel import unwrap_parallel
    from rlreason.rollout_engine import check_static_options
    from rlreason.sampling import build_generation_config, recipe_generation

    top_p, top_k = 1.0 if top_p is None else top_p, top_k or 0
    _check_options(num_generations, max_completion_length, temperature, top_p, top_k, do_sample, batch_size)
    check_static_options(ignored.pop("repetition_penalty", None), ignored.pop("generation_kwargs", None))
    model = unwrap_parallel(model)
    k, limit = num_generations, max_completion_length
    prompt_ids, prompt_mask = encode_prompts(tokenizer, prompts, chat_template_kwargs)
    prompt_rows = [row[m.bool()].tolist() for row, m in zip(prompt_ids, prompt_mask)]
    eos_ids, pad_id = eos_token_ids(model, tokenizer), _pad_id(tokenizer)
    config = build_generation_config(do_sample=do_sample, temperature=temperature, top_p=top_p, top_k=top_k,
                                     min_p=min_p, repetition_penalty=1.0, max_new_tokens=limit, eos_token_id=eos_ids,
                                     pad_token_id=pad_id, bos_token_id=tokenizer.bos_token_id)
    n = len(prompts) * k
    traj: list[list[int]] = [[] for _ in range(n)]
    observed: list[list[int]] = [[] for _ in range(n)]
    logps: list[list[float]] = [[] for _ in range(n)]
    cells: list[list[str]] = [[] for _ in range(n)]
    stats = {key: [0] * n for key in ("tool_calls", "tool_errors", "tool_timeouts", "turns")}
    done, ended = [False] * n, [False] * n
    per_call = (batch_size or len(prompts)) * k
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), recipe_generation(model, config):
            while not all(done):
                active = [j for j in range(n) if not done[j]]
                calls = []
                for start in range(0, len(active), per_call):
                    rows = active[start:start + per_call]
                    turn = Turn(tokenizer, rows, [limit - len(traj[j]) for j in rows],
                                [stats["tool_calls"][j] < tools.max_tool_calls for j in rows], tools,
                                temperature if do_sample else 1.0)
                    contexts = [prompt_rows[j // k] + traj[j] for j in rows]
                    if decode_turn is not None:
                        decode_turn(contexts, turn)
                    else:
                        static_turn(model, contexts, turn, config, eos_ids, pad_id, compile)
                    for r, j in enumerate(rows):
                        calls.extend(_end_turn(j, r, turn, traj, observed, logps, stats, done, ended, eos_ids, limit))
                _observe(calls, tokenizer, tools, traj, observed, logps, cells, stats, done, limit)
    finally:
        model.train(was_training)
    return _assemble(tokenizer, prompt_ids, prompt_mask, traj, observed, logps, stats, ended, pad_id, k)


def _end_turn(j, r, turn, traj, observed, logps, stats, done, ended, eos_ids, limit) -> list[tuple[int, str]]:
    """Append row j's turn to its trajectory; [(j, code)] when it ended at a tool call, else [] (and j is done
    when it sampled EOS or reached the limit)."""
    tokens = turn.tokens[r]
    traj[j] += tokens
    observed[j] += [0] * len(tokens)
    logps[j] += turn.logps[r]
    stats["turns"][j] += 1
    if tokens and tokens[-1] in eos_ids:
        done[j] = ended[j] = True
        return []
    code = turn.code(r) if turn.may_call[r] else None
    if len(traj[j]) >= limit or code is None:
        done[j] = True
        return []
    return [(j, code)]


def _observe(calls, tokenizer, tools: ToolConfig, traj, observed, logps, cells, stats, done, limit) -> None:
    """Run this turn's calls (in parallel) and append each observation; one that does not fit ends its row."""
    if not calls:
        return
    jobs = [(cells[j] if tools.tool_persistent_state else []) + [code] for j, code in calls]
    for (j, code), result in zip(calls, run_tool_calls(jobs, tools)):
        cells[j].append(code)
        stats["tool_calls"][j] += 1
        stats["tool_timeouts"][j] += int(bool(result["timeout"]))
        stats["tool_errors"][j] += int(bool(result["error"]) and not result["timeout"])
        ids = observation_ids(tokenizer, result, tools)
        room = limit - len(traj[j])
        if len(ids) >= room:  # the limit counts every token: a cut observation ends the trajectory
            ids, done[j] = ids[:room], True
        traj[j] += ids
        observed[j] += [1] * len(ids)
        logps[j] += [0.0] * len(ids)


def _assemble(tokenizer, prompt_ids, prompt_mask, traj, observed, logps, stats, ended, pad_id, k) -> Rollout:
    """Right-padded tensors of the trajectories, their texts and per-row tool counts."""
    n, width = len(traj), max(1, max(len(t) for t in traj))
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    obs = torch.zeros((n, width), dtype=torch.long)
    lp = torch.zeros((n, width), dtype=torch.float32)
    for j in range(n):
        length = len(traj[j])
        ids[j, :length] = torch.tensor(traj[j], dtype=torch.long)
        mask[j, :length] = 1
        obs[j, :length] = torch.tensor(observed[j], dtype=torch.long)
        lp[j, :length] = torch.tensor(logps[j], dtype=torch.float32)
    texts = [tokenizer.decode([t for t, o in zip(traj[j], observed[j]) if not o], skip_special_tokens=True)
             for j in range(n)]
    display = [_display_text(tokenizer, traj[j], observed[j]) for j in range(n)]
    tool_stats = {key: torch.tensor(values, dtype=torch.long) for key, values in stats.items()}
    tool_stats["observation_tokens"] = obs.sum(1)
    return Rollout(prompt_ids, prompt_mask, ids, mask, texts, torch.tensor([not e for e in ended]), lp, k,
                   observation_mask=obs, tool_stats=tool_stats, display_texts=display)


def _display_text(tokenizer, tokens: list[int], observed: list[int]) -> str:
    """The trajectory as text, each observation between OBSERVATION_MARKS."""
    parts, start = [], 0
    for i in range(1, len(tokens) + 1):
        if i == len(tokens) or observed[i] != observed[start]:
            text = tokenizer.decode(tokens[start:i], skip_special_tokens=True)
            parts.append(f"{OBSERVATION_MARKS[0]}{text}{OBSERVATION_MARKS[1]}" if observed[start] else text)
            start = i
    return "".join(parts)
