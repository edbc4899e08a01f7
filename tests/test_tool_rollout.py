"""Tool-integrated rollouts: the sandboxed Python tool, multi-turn decoding, observation masking, tool metrics.

Loop tests script the policy (decode_turn writes fixed text through the same stop hook the engine uses); the
log-prob, gradient and trainer tests sample a real tiny Llama whose tool call opens at "a" and closes at one of
several common characters, so that random weights make calls."""

from __future__ import annotations

import pytest
import torch

from rlreason.rollout import completion_logprobs
from rlreason.tool_rollout import OBSERVATION_MARKS, generate_with_tools
from rlreason.tools import ToolConfig, observation_ids

from ._tiny_fixture import tiny_model, tiny_tokenizer

RANDOM_CALLS = dict(tool_call_open="a", tool_stop_strings=tuple("bcdefgh"))  # a random model calls the tool often


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tok):
    return tiny_model(tok, seed=0, eos_scale=3.0)


def scripted(tok, scripts: list[list[str]]):
    """A decode_turn writing scripts[row][turn] token by token through the turn's hook ("<eos>" at a segment's
    end is the EOS token); the hook decides where the turn stops, as in the real engine."""
    turns: dict[int, int] = {}

    def decode(contexts, turn):
        for r, j in enumerate(turn.rows):
            n = turns.get(j, 0)
            turns[j] = n + 1
            text = scripts[j][min(n, len(scripts[j]) - 1)]
            ids = tok(text.removesuffix("<eos>"), add_special_tokens=False)["input_ids"]
            ids += [tok.eos_token_id] if text.endswith("<eos>") else []
            for token in ids:
                stop = turn.on_token(torch.tensor([r]), torch.tensor([token]), torch.zeros(1, len(tok)))
                if bool(stop[0]) or token == tok.eos_token_id:
                    break
    return decode


def run_scripted(model, tok, scripts, prompts=None, **options):
    tools = ToolConfig(**{k: options.pop(k) for k in list(options) if k in ToolConfig.__dataclass_fields__})
    prompts = prompts or ["q:"] * len(scripts)
    return generate_with_tools(model, tok, prompts, tools, max_completion_length=options.pop("limit", 300),
                               decode_turn=scripted(tok, scripts), **options)


def segments(rollout, j: int) -> list[tuple[int, str]]:
    """Row j as [(is_observation, text)] runs."""
    tok = tiny_tokenizer()
    ids, obs = rollout.completion_ids[j], rollout.observation_mask[j]
    n = int(rollout.completion_mask[j].sum())
    runs, start = [], 0
    for i in range(1, n + 1):
        if i == n or obs[i] != obs[start]:
            runs.append((int(obs[start]), tok.decode(ids[start:i].tolist(), skip_special_tokens=True)))
            start = i
    return runs


# ------------------------------------------------------------------------------------------- the sandboxed tool
def test_hostile_code_gives_bounded_observations_and_the_rollout_goes_on(model, tok, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host-secret-42")
    hostile = {
        "timeout": "while True:\n    pass\n",
        "raises": "x = 1\nraise ValueError('bad value ' * 3)\n",
        "megabyte": "print('y' * 1_000_000)\n",
        "escape": f"import socket\nprint(open({str(secret)!r}).read())\n",
        "network": "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)\nprint('connected')\n",
        "exits": "import os\nos._exit(0)\n",
    }
    names = list(hostile)
    scripts = [[f"let me run\n```python\n{code}```", "The answer is 7<eos>"] for code in hostile.values()]
    rollout = run_scripted(model, tok, scripts, max_tool_output_tokens=40, tool_timeout=1.5)
    frame = len(observation_ids(tok, {"output": "", "error": None}, ToolConfig()))
    for j, name in enumerate(names):
        runs = segments(rollout, j)
        assert [o for o, _ in runs] == [0, 1, 0], (name, runs)
        observation = runs[1][1]
        assert int(rollout.observation_mask[j].sum()) <= frame + 40, name
        assert runs[2][1] == "The answer is 7", name  # the rollout went on after the observation
        assert not rollout.truncated[j]
        if name != "megabyte":
            assert "y" * 10 not in observation
        assert "host-secret" not in observation and "connected" not in observation, name
    obs = {name: segments(rollout, j)[1][1] for j, name in enumerate(names)}
    assert "TimeoutError" in obs["timeout"]
    assert "ValueError: bad value" in obs["raises"]
    assert obs["megabyte"].count("y") == 40  # one token per character: the output's first 40 tokens
    assert "Error" in obs["escape"] and "Error" in obs["network"]
    stats = rollout.tool_stats
    assert stats["tool_calls"].tolist() == [1] * len(names)
    assert stats["tool_timeouts"].tolist() == [int(n == "timeout") for n in names]
    assert stats["tool_errors"][names.index("raises")] == 1 and stats["tool_errors"][names.index("megabyte")] == 0


def test_a_call_sees_stdout_and_earlier_calls_with_persistent_state(model, tok):
    scripts = [["```python\nx = 6 * 7\nprint(x)\n```", "```python\nprint(x + 1)\n```", "done<eos>"]] * 2
    fresh = run_scripted(model, tok, scripts[:1])
    kept = run_scripted(model, tok, scripts[:1], tool_persistent_state=True)
    assert [t for o, t in segments(fresh, 0) if o] == ["\n```output\n42\n```\n",
                                                       "\n```output\nNameError: name 'x' is not defined\n```\n"]
    assert [t for o, t in segments(kept, 0) if o] == ["\n```output\n42\n```\n", "\n```output\n43\n```\n"]


# ------------------------------------------------------------------------------------------- the rollout loop
def test_max_tool_calls_is_respected(model, tok):
    call = "```python\nprint(1)\n```"
    scripts = [[call, call, call, call, "end<eos>"], [call, "end<eos>"]]
    rollout = run_scripted(model, tok, scripts, max_tool_calls=2)
    assert rollout.tool_stats["tool_calls"].tolist() == [2, 1]
    first = segments(rollout, 0)
    assert [o for o, _ in first] == [0, 1, 0, 1, 0]
    assert first[-1][1] == call  # after the limit a call is plain text: the turn runs on (to the script's end)
    assert rollout.tool_stats["turns"].tolist() == [3, 2]


def test_the_limit_counts_every_token_of_the_trajectory(model, tok):
    scripts = [["```python\nprint('z' * 50)\n```", "more text that runs on and on and on<eos>"]]
    rollout = run_scripted(model, tok, scripts, limit=60, max_tool_output_tokens=30)
    assert int(rollout.completion_mask[0].sum()) == 60 and rollout.completion_ids.size(1) == 60
    assert bool(rollout.truncated[0])


def test_observations_are_never_scored_and_a_toolless_trajectory_scores_as_usual(model, tok):
    from rlreason.scoring import RewardScorer

    scripts = [["The answer is 12<eos>"],
               ["```python\nprint(3 * 4)\n```", "no idea<eos>"],
               ["```python\nprint(3 * 4)\n```", "The answer is 12<eos>"]]
    rollout = run_scripted(model, tok, scripts)
    assert rollout.observation_mask[0].sum() == 0 and rollout.texts[0] == "The answer is 12"
    assert "12\n" in rollout.display_texts[1] and OBSERVATION_MARKS[0] in rollout.display_texts[1]
    assert "12" not in rollout.texts[1]  # the observation is not part of what is scored
    rows = [{"prompt": "q:", "answer": "12"}] * 3
    scores = RewardScorer(["rewards.math.accuracy"])(rows, rollout.texts)
    assert scores.total.tolist() == [1.0, 0.0, 1.0]
    plain = RewardScorer(["rewards.math.accuracy"])(rows[:1], ["The answer is 12"])
    assert scores.total[0] == plain.total[0]


def test_batched_rows_end_at_different_turns_right_padded(model, tok):
    call = "```python\nprint(5)\n```"
    scripts = [["short<eos>"], [call, "longer answer<eos>"], [call, call, "the longest answer of all<eos>"]]
    rollout = run_scripted(model, tok, scripts)
    lengths = rollout.completion_mask.sum(1)
    assert rollout.tool_stats["turns"].tolist() == [1, 2, 3]
    assert len(set(lengths.tolist())) == 3 and rollout.completion_ids.size(1) == int(lengths.max())
    for j in range(3):
        n = int(lengths[j])
        assert (rollout.completion_ids[j, n:] == tok.pad_token_id).all()
        assert rollout.completion_mask[j, :n].all() and not rollout.completion_mask[j, n:].any()
        assert int(rollout.completion_ids[j, n - 1]) == tok.eos_token_id


# ------------------------------------------------------------------------------------------- a real model
@pytest.fixture(scope="module")
def sampled(model, tok):
    from ._tiny_fixture import CHAT_PROMPTS

    torch.manual_seed(3)
    tools = ToolConfig(max_tool_output_tokens=12, tool_timeout=2.0, **RANDOM_CALLS)
    rollout = generate_with_tools(model, tok, CHAT_PROMPTS, tools, num_generations=4, max_completion_length=48,
                                  temperature=1.0)
    assert rollout.observation_mask.sum() > 0, "no row called the tool: the tests below would check nothing"
    return rollout


def _batch(rollout):
    from rlreason.trainer import policy_token_mask

    prompt_ids, prompt_mask = rollout.expanded_prompts()
    ids = torch.cat([prompt_ids, rollout.completion_ids], 1)
    attention = torch.cat([prompt_mask, rollout.completion_mask], 1)
    return ids, attention, policy_token_mask(rollout.completion_mask, rollout)


def test_trainer_log_probs_of_a_multi_turn_trajectory_equal_the_samplers(model, sampled):
    ids, attention, policy = _batch(sampled)
    logps, _ = completion_logprobs(model, ids, attention, sampled.completion_ids.size(1), temperature=1.0)
    assert (sampled.tool_stats["turns"] > 1).any() and (sampled.tool_stats["turns"] == 1).any()
    keep = policy.bool()
    assert torch.allclose(logps[keep], sampled.logprobs[keep], atol=1e-4), \
        (logps[keep] - sampled.logprobs[keep]).abs().max()
    assert (sampled.logprobs[sampled.observation_mask.bool()] == 0).all()


def test_observation_tokens_get_exactly_zero_gradient(model, sampled):
    from rlreason.losses import get_policy_loss

    ids, attention, policy = _batch(sampled)
    C, obs = sampled.completion_ids.size(1), sampled.observation_mask.bool()
    old = sampled.logprobs.clone()
    base_adv = torch.randn(len(ids), 1).expand(-1, C).clone()

    def grads(huge: float):
        model.zero_grad()
        logps, entropy = completion_logprobs(model, ids, attention, C, temperature=1.0)
        logps.retain_grad()
        adv, o, ref = base_adv.clone(), old.clone(), old.clone()
        adv[obs], o[obs], ref[obs] = huge, -huge, huge  # absurd values where the policy sampled nothing
        loss, _ = get_policy_loss("grpo")(logps, o, adv, policy, ref_logps=ref, beta=0.5, epsilon_low=0.2,
                                          epsilon_high=0.2, entropy=entropy)
        loss.backward()
        return logps.grad.clone(), [p.grad.clone() for p in model.parameters()]

    token_grad, params_a = grads(1e4)
    assert (token_grad[obs] == 0).all() and (token_grad[policy.bool()] != 0).any()
    _, params_b = grads(-1e4)
    assert all(torch.equal(a, b) for a, b in zip(params_a, params_b))  # observation values change nothing
    model.zero_grad()


# ------------------------------------------------------------------------------------------- the trainer
def _train(model_factory, tok, tmp_path, trainer_cls=None, **overrides):
    from rlreason.rl_config import RLConfig
    from rlreason.trainer import OnlineRLTrainer

    rows = [{"prompt": [{"role": "user", "content": f"{a}*{b}"}], "answer": str(a * b)}
            for a, b in [(12, 34), (56, 78), (91, 23), (45, 67)]]
    options = dict(output_dir=str(tmp_path), num_generations=4, per_device_train_batch_size=8,
                   max_completion_length=40, learning_rate=1e-3, beta=0.04, max_steps=2, logging_steps=1,
                   save_strategy="no", report_to="none", disable_tqdm=True, seed=0, use_cpu=True, bf16=False,
                   tools=["python"], max_tool_output_tokens=8, tool_timeout=2.0, log_completions_steps=1,
                   tool_call_open=RANDOM_CALLS["tool_call_open"],
                   tool_stop_strings=list(RANDOM_CALLS["tool_stop_strings"]))
    options.update(overrides)
    args = RLConfig(**options)
    trainer = (trainer_cls or OnlineRLTrainer)(model_factory(), args, rows, tok, ["rewards.math.accuracy"])
    trainer.train()
    return trainer


TOOL_METRICS = ["tools/calls_per_completion", "tools/errors_per_completion", "tools/timeouts_per_completion",
                "tools/error_rate", "tools/timeout_rate", "tools/turns", "tools/observation_share"]


def test_a_short_grpo_run_with_tools_completes_and_logs_the_tool_metrics(tok, tmp_path):
    from peft import LoraConfig

    from rlreason.rl_config import RLConfig
    from rlreason.trainer import OnlineRLTrainer

    torch.manual_seed(0)
    trainer = _train(lambda: tiny_model(tok, seed=1, eos_scale=2.0), tok, tmp_path)
    logged = [m for m in trainer.state.log_history if "reward" in m]
    assert len(logged) == 2 and all(k in logged[0] for k in TOOL_METRICS), sorted(logged[0])
    assert max(m["tools/calls_per_completion"] for m in logged) > 0
    assert all(0 <= m["tools/observation_share"] < 1 for m in logged)
    torch.manual_seed(5)
    batch, rollout, _ = trainer.sample(trainer.train_dataset)  # how the masks reach the loss
    obs, P = rollout.observation_mask, rollout.prompt_ids.size(1)
    assert obs.sum() > 0
    assert torch.equal(batch["completion_mask"], rollout.completion_mask * (1 - obs))  # loss, log-probs, KL
    assert torch.equal(batch["attention_mask"][:, P:], rollout.completion_mask)  # observations are still read
    # LoRA: the same loop on an adapter (the reference is the base network)
    args = RLConfig(output_dir=str(tmp_path / "lora"), num_generations=4, per_device_train_batch_size=8,
                    max_completion_length=32, max_steps=1, save_strategy="no", report_to="none", disable_tqdm=True,
                    use_cpu=True, bf16=False, beta=0.04, logging_steps=1, tools=["python"], tool_timeout=2.0,
                    tool_call_open=RANDOM_CALLS["tool_call_open"],
                    tool_stop_strings=list(RANDOM_CALLS["tool_stop_strings"]))
    rows = [{"prompt": "12*34=", "answer": "408"}] * 2
    lora = OnlineRLTrainer(tiny_model(tok, seed=2), args, rows, tok, ["rewards.math.accuracy"],
                           peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    lora.train()
    assert any("tools/turns" in m for m in lora.state.log_history)


def test_ppo_with_tools_runs(tok, tmp_path):
    from rlreason.algorithms.ppo import PPOTrainer

    torch.manual_seed(0)
    trainer = _train(lambda: tiny_model(tok, seed=1, eos_scale=2.0), tok, tmp_path, trainer_cls=PPOTrainer,
                     max_steps=1, advantage_estimator="gae", num_generations=2, per_device_train_batch_size=4)
    logged = [m for m in trainer.state.log_history if "reward" in m]
    assert logged and "tools/turns" in logged[0] and "explained_variance" in logged[0]


def test_gae_skips_observation_holes():
    from rlreason.advantages import gae

    values = torch.tensor([[0.1, 0.2, 9.0, 9.0, 0.3, 0.4, 0.0]])
    mask = torch.tensor([[1, 1, 0, 0, 1, 1, 0]])
    adv, extra = gae(torch.tensor([1.0]), values=values, mask=mask, gamma=0.9, lam=0.8)
    compact, _ = gae(torch.tensor([1.0]), values=values[:, [0, 1, 4, 5]], mask=torch.ones(1, 4), gamma=0.9, lam=0.8)
    assert torch.allclose(adv[0, [0, 1, 4, 5]], compact[0]) and (adv[0, [2, 3, 6]] == 0).all()


# ------------------------------------------------------------------------------------------- recipe keys
@pytest.mark.parametrize("bad, message", [
    ({"tools": ["bash"]}, "tools: 'bash' is not a tool"),
    ({"max_tool_calls": 0}, "max_tool_calls"),
    ({"tool_timeout": 0}, "tool_timeout"),
    ({"max_tool_output_tokens": 0}, "max_tool_output_tokens"),
    ({"observation_template": "no slot"}, "observation_template"),
    ({"tool_stop_strings": []}, "tool_stop_strings"),
    ({"rollout_engine": "generate"}, "rollout_engine"),
    ({"algorithm": "score"}, "tools: algorithm score has no tool rollouts"),
    ({"backend": "trl"}, "backend: rlreason"),
])
def test_bad_tool_options_fail_in_one_line(bad, message, tiny_model_dir, tmp_path):
    from rlreason.config import RecipeError, load_recipe

    raw = {"algorithm": "grpo", "model_name_or_path": tiny_model_dir, "task": "arithmetic",
           "reward_funcs": ["rewards.math.accuracy"], "num_generations": 2, "per_device_train_batch_size": 2,
           "max_completion_length": 16,
           "output_dir": str(tmp_path), "report_to": "none", "tools": ["python"], **bad}
    with pytest.raises(RecipeError) as error:
        load_recipe(None, base=raw)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_good_tool_options_reach_the_training_arguments(tiny_model_dir, tmp_path):
    from rlreason.config import load_recipe

    raw = {"algorithm": "ppo", "model_name_or_path": tiny_model_dir, "task": "arithmetic",
           "reward_funcs": ["rewards.math.accuracy"], "num_generations": 2, "per_device_train_batch_size": 2,
           "max_completion_length": 16,
           "output_dir": str(tmp_path), "report_to": "none", "tools": ["python"], "max_tool_calls": 2,
           "tool_stop_strings": ["</code>"], "tool_call_open": "<code>", "observation_template": "<out>{output}</out>"}
    config = ToolConfig.from_args(load_recipe(None, base=raw).training_args)
    assert config.max_tool_calls == 2 and config.tool_stop_strings == ("</code>",)
    assert config.observation_template == "<out>{output}</out>"


def test_eval_with_tools_reports_tool_calls(model, tok):
    from rlreason.evaluation.evaluate import evaluate_greedy
    from rlreason.evaluation.run import EvalArgs, eval_tools, parse_args

    args = parse_args(["--model", "m", "--task", "arithmetic", "--tools", "python", "--max_tool_calls", "2"])
    assert eval_tools(args) == ToolConfig(max_tool_calls=2)
    assert eval_tools(EvalArgs(model="m")) is None
    rows = [{"prompt": "12*34=", "answer": "408"}, {"prompt": "q:", "answer": "1"}]
    tools = ToolConfig(max_tool_output_tokens=8, tool_timeout=2.0, **RANDOM_CALLS)
    result = evaluate_greedy(model, tok, rows, max_completion_length=40, tools=tools, progress=False)
    assert result["n"] == 2 and result["tool_calls_per_problem"] >= 0
    assert "tool_calls_per_problem" not in evaluate_greedy(model, tok, rows, max_completion_length=8, progress=False)


def test_a_grpo_recipe_with_tools_writes_the_tool_metrics(tiny_model_dir, tmp_path):
    from pathlib import Path

    from rlreason.tracking import read_metrics

    from .test_grpo import grpo_recipe, run

    out = run(grpo_recipe(tiny_model_dir, tmp_path / "run", max_steps=1, reward_funcs=["rewards.math.accuracy"],
                          tools=["python"], tool_timeout=2.0, max_tool_output_tokens=8))
    rows = [m for m in read_metrics(Path(out) / "metrics.jsonl") if "reward" in m]
    assert rows and all(k in rows[0] for k in TOOL_METRICS), sorted(rows[0])
