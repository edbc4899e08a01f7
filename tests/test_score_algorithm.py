"""SCoRe checked part by part on a tiny model, through ScoreTrainer's own rollout and loss (Kumar et al. 2024):
stage I's gradient on attempt 1 is the KL term alone; stage II's bonus orders i->c > c->c > c->i; attempt 2 is
conditioned on the sampled attempt 1; the training batch's log-probs of both turns are the sampler's."""

import pytest
import torch

from rlreason.scoring import Scores

from .conftest import ARITH

INSTRUCTION = "Check it."


def score_trainer(model_dir, out, **overrides):
    """A ScoreTrainer (no LoRA: the reference is a frozen copy) over 2 prompts x 2 first attempts per rollout."""
    from rlreason.algorithms.common import load_rows
    from rlreason.algorithms.score import ScoreTrainer
    from rlreason.config import load_recipe
    from rlreason.models.loading import load_policy

    raw = {"algorithm": "score", "model_name_or_path": model_dir, "task": "arithmetic", "task_options": ARITH,
           "reward_funcs": ["rewards.math.accuracy"], "num_generations": 2, "per_device_train_batch_size": 4,
           "max_completion_length": 10, "temperature": 0.7, "beta": 0.01, "beta_first": 0.5, "alpha": 10.0,
           "stage_one_steps": 1, "max_steps": 2, "report_to": "none", "gradient_checkpointing": False,
           "eval_after_train": False, "correction_instruction": INSTRUCTION, "output_dir": str(out),
           "disable_tqdm": True, "seed": 0, **overrides}
    recipe = load_recipe(None, base=raw)
    model, tok = load_policy(model_dir)
    rows = load_rows(recipe.args, "train", 8)
    trainer = ScoreTrainer(model, recipe.training_args, rows, tok, recipe.args.reward_funcs)
    trainer.current_gradient_accumulation_steps = 1  # set by transformers' loop; compute_loss reads it
    return trainer, [[rows[0], rows[1]]]


class FixedRewards:
    """Stands in for the scorer: the given attempt-1 rewards on its first call, attempt-2 rewards on its second."""

    def __init__(self, r1, r2):
        self.calls = [torch.tensor(r1, dtype=torch.float32), torch.tensor(r2, dtype=torch.float32)]
        self.names = ["accuracy"]

    def __call__(self, rows, completions):
        values = self.calls.pop(0)
        assert len(values) == len(completions)
        return Scores({"accuracy": values}, values, values.mean().item(), 0)


def rollout(trainer, r1, r2, seed=0):
    """One stage-dependent make_experience with fixed rewards; the batch rows alternate attempt 1, attempt 2."""
    trainer.scorer = FixedRewards(r1, r2)
    torch.manual_seed(seed)
    (batch,) = trainer.make_experience(trainer._micro)
    return batch


def logp_grads(trainer, batch, monkeypatch):
    """d loss / d (per-token log-probs) of trainer.compute_loss on the batch, (rows, C)."""
    seen = []
    original = trainer.policy_logprobs

    def keep(*args, **kwargs):
        logps, entropy = original(*args, **kwargs)
        logps.retain_grad()
        seen.append(logps)
        return logps, entropy

    monkeypatch.setattr(trainer, "policy_logprobs", keep)
    trainer.model.zero_grad()
    trainer.compute_loss(trainer.model, batch, num_items_in_batch=batch["completion_mask"].sum()).backward()
    monkeypatch.setattr(trainer, "policy_logprobs", original)
    return seen[-1].grad * batch["completion_mask"]


@pytest.fixture
def trainer(tiny_model_dir, tmp_path):
    t, micro = score_trainer(tiny_model_dir, tmp_path / "run")
    t._micro = micro
    return t


def test_stage_one_gradient_on_attempt_one_is_the_kl_term_alone(trainer, tiny_model_dir, tmp_path, monkeypatch):
    with torch.no_grad():  # move the policy off the reference, so the KL term has a gradient
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    a = rollout(trainer, r1=[0.0, 1.0, 0.0, 1.0], r2=[1.0, 0.0, 0.0, 1.0])
    b = rollout(trainer, r1=[1.0, 1.0, 0.0, 0.0], r2=[0.0, 1.0, 1.0, 0.0])  # other rewards, the same samples
    assert torch.equal(a["input_ids"], b["input_ids"])
    first, second = slice(0, None, 2), slice(1, None, 2)
    assert a["kl_weight"][first].eq(0.5).all() and a["kl_weight"][second].eq(0.01).all()  # beta_first, beta
    assert a["advantages"][first].eq(0).all()  # stage I: attempt 1 is not rewarded
    kl_only = dict(a, advantages=torch.zeros_like(a["advantages"]))
    ga, gb, gk = (logp_grads(trainer, x, monkeypatch) for x in (a, b, kl_only))
    assert ga[first].abs().max() > 1e-6  # the KL pulls attempt 1 back to the reference ...
    torch.testing.assert_close(ga[first], gk[first], rtol=1e-5, atol=1e-9)  # ... and nothing else moves it
    torch.testing.assert_close(gb[first], gk[first], rtol=1e-5, atol=1e-9)
    assert not torch.allclose(ga[second], gb[second])  # the rewards do reach attempt 2

    still, micro = score_trainer(tiny_model_dir, tmp_path / "at_ref", beta_first=0.0)  # policy == reference
    still._micro = micro
    c = rollout(still, r1=[0.0, 1.0, 0.0, 1.0], r2=[1.0, 0.0, 0.0, 1.0])
    gc = logp_grads(still, c, monkeypatch)
    assert gc[first].abs().max() == 0 and gc[second].abs().max() > 0


def test_stage_two_bonus_orders_i_to_c_above_c_to_c_above_c_to_i(tiny_model_dir, tmp_path):
    trainer, _ = score_trainer(tiny_model_dir, tmp_path / "run", num_generations=4)
    trainer._micro = [[trainer.train_dataset[0]]]  # one prompt, its four samples one group
    pairs = {"i->c": (0.0, 1.0), "c->c": (1.0, 1.0), "c->i": (1.0, 0.0), "i->i": (0.0, 0.0)}
    r1, r2 = zip(*pairs.values())
    trainer.state.global_step = trainer.args.stage_one_steps  # stage II
    adv = dict(zip(pairs, rollout(trainer, r1, r2)["advantages"][1::2].tolist()))  # attempt 2's advantages
    assert adv["i->c"] > adv["c->c"] > adv["i->i"] > adv["c->i"]
    assert adv["c->c"] > 0 > adv["i->i"]
    trainer.state.global_step = 0  # stage I on the same pairs: attempt 2 is scored on r2 alone, no bonus
    stage_one = dict(zip(pairs, rollout(trainer, r1, r2)["advantages"][1::2].tolist()))
    assert stage_one["i->c"] == pytest.approx(stage_one["c->c"]) and stage_one["c->i"] == pytest.approx(
        stage_one["i->i"]) and stage_one["c->c"] > stage_one["c->i"]


def test_attempt_two_is_conditioned_on_the_sampled_attempt_one(trainer):
    from rlreason.rollout import render_prompts

    tok = trainer.processing_class
    batch = rollout(trainer, [0.0] * 4, [0.0] * 4)
    C = batch["completion_ids"].size(1)
    prompt_part = lambda row: [t for t, m in zip(batch["input_ids"][row, :-C].tolist(),  # noqa: E731
                                                 batch["attention_mask"][row, :-C].tolist()) if m]
    rows = trainer._micro[0]
    texts_1 = []
    for j in range(4):  # sample j of prompt j // 2: batch rows 2j (attempt 1) and 2j + 1 (attempt 2)
        prompt = rows[j // 2]["prompt"]
        ids_1 = batch["completion_ids"][2 * j][batch["completion_mask"][2 * j].bool()].tolist()
        text_1 = tok.decode(ids_1, skip_special_tokens=True)
        texts_1.append(text_1)
        assert prompt_part(2 * j) == tok(render_prompts(tok, [prompt])[0], add_special_tokens=False)["input_ids"]
        conversation = list(prompt) + [{"role": "assistant", "content": text_1},
                                       {"role": "user", "content": INSTRUCTION}]
        second = tok(render_prompts(tok, [conversation])[0], add_special_tokens=False)["input_ids"]
        assert prompt_part(2 * j + 1) == second  # the problem, this sample's attempt 1, the instruction
        turn = tok.decode(prompt_part(2 * j + 1))
        assert text_1 in turn and INSTRUCTION in turn and turn.index(text_1) < turn.index(INSTRUCTION)
    assert len(set(texts_1)) > 1  # different attempts 1 ...
    assert len({tuple(prompt_part(2 * j + 1)) for j in range(4)}) == len(set(texts_1))  # ... different turns 2


@pytest.mark.parametrize("engine", ["static", "generate"])
def test_training_log_probs_of_both_turns_are_the_samplers(tiny_model_dir, tmp_path, engine):
    import rlreason.rollout_engine as engine_module

    trainer, micro = score_trainer(tiny_model_dir, tmp_path / "run", rollout_engine=engine, num_iterations=2)
    trainer._micro = micro  # num_iterations 2: the batch carries old_logps (the policy's), beta: ref_logps
    calls = []  # per generation call: (B, steps) log-probs of the drawn tokens under the sampling distribution
    if engine == "generate":
        model, generate = trainer.model, trainer.model.generate

        def recording(*args, **kwargs):
            out = generate(*args, **kwargs, output_scores=True, return_dict_in_generate=True)
            steps = out.sequences[:, -len(out.scores):]
            calls.append(torch.stack([torch.log_softmax(s.float(), -1).gather(1, steps[:, t:t + 1]).squeeze(1)
                                      for t, s in enumerate(out.scores)], 1))
            return out.sequences

        model.generate = recording
    else:  # the static engine: record every draw and every row compaction, replay them onto the output rows
        draw, select = engine_module.draw, engine_module._select_rows
        events = []

        def recording_draw(probs):
            chosen = draw(probs)
            events.append(("draw", probs.gather(1, chosen[:, None]).squeeze(1).log()))
            return chosen

        def recording_select(cache, keep):
            events.append(("select", keep.clone()))
            return select(cache, keep)

        def replay():
            rows = len(events[0][1])
            index, logps, t = torch.arange(rows), torch.zeros(rows, sum(e == "draw" for e, _ in events)), 0
            for kind, value in events:
                if kind == "draw":
                    logps[index, t], t = value, t + 1
                else:
                    index = index[value]
            events.clear()
            calls.append(logps)

        engine_module.draw, engine_module._select_rows = recording_draw, recording_select
        decode = engine_module.static_decode
        engine_module.static_decode = lambda *a, **k: (decode(*a, **k), replay())[0]
    try:
        batch = rollout(trainer, [0.0] * 4, [0.0] * 4)
    finally:
        if engine == "generate":
            del trainer.model.generate
        else:
            engine_module.draw, engine_module._select_rows, engine_module.static_decode = draw, select, decode
    assert len(calls) == 2  # turn 1 (2 prompts x 2), then turn 2 (one per attempt 1)
    mask = batch["completion_mask"].bool()
    for turn, sampled in enumerate(calls):
        rows = slice(turn, None, 2)
        width = sampled.size(1)
        assert not mask[rows, width:].any()
        for key in ("old_logps", "ref_logps"):  # the policy's and (still equal to it) the reference's pass
            trained = batch[key][rows, :width]
            torch.testing.assert_close(trained[mask[rows, :width]], sampled[mask[rows, :width]],
                                       rtol=0, atol=2e-4)


def test_the_loss_forward_per_attempt_equals_the_joined_forward(trainer):
    """policy_logprobs runs one forward per attempt without the joined batch's extra left padding; the log-probs and
    entropies are those of the one forward over the joined rows, and gradients reach both attempts."""
    from rlreason.rollout import completion_logprobs

    batch = rollout(trainer, r1=[0.0, 1.0, 0.0, 1.0], r2=[1.0, 0.0, 0.0, 1.0])
    assert batch["attempt"].tolist() == [0, 1] * 4
    pad = batch["attention_mask"][batch["attempt"] == 0].any(0).logical_not().sum()
    assert pad > 0  # attempt 1's rows share leading padding columns: what the split forward skips
    split, split_entropy = trainer.policy_logprobs(trainer.model, batch)
    joined, joined_entropy = completion_logprobs(trainer.model, batch["input_ids"], batch["attention_mask"],
                                                 batch["completion_ids"].size(1), temperature=trainer.args.temperature)
    mask = batch["completion_mask"].bool()
    torch.testing.assert_close(split[mask], joined[mask], rtol=0, atol=1e-5)
    torch.testing.assert_close(split_entropy[mask], joined_entropy[mask], rtol=0, atol=1e-5)
    (split * batch["completion_mask"]).sum().backward()
    assert all(p.grad is not None for p in trainer.model.parameters() if p.requires_grad)


def test_a_model_wrapped_for_several_processes_gets_one_joined_forward(trainer, monkeypatch):
    """DDP and DeepSpeed hook one forward per backward, so a wrapped model keeps the single joined pass."""
    import rlreason.models.parallel as parallel

    batch = rollout(trainer, r1=[0.0, 1.0, 0.0, 1.0], r2=[1.0, 0.0, 0.0, 1.0])
    widths = []
    hook = trainer.model.register_forward_pre_hook(lambda module, args, kwargs: widths.append(
        kwargs["input_ids"].shape), with_kwargs=True)
    try:
        trainer.policy_logprobs(trainer.model, batch)
        assert len(widths) == 2 and widths[0][1] < widths[1][1]  # alone: one narrower pass per attempt
        widths.clear()
        monkeypatch.setattr(parallel, "is_wrapped", lambda model: True)
        trainer.policy_logprobs(trainer.model, batch)
        assert widths == [batch["input_ids"].shape]  # wrapped: the joined batch, once
    finally:
        hook.remove()
