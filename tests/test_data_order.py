"""Prompt order of the on-policy trainer: num_iterations reuses a rollout without skipping prompts, one rollout
serves steps_per_generation micro-batches, shuffle_dataset, and a resumed run sees the uninterrupted run's prompts."""

import json

import pytest

from rlreason.data_order import RepeatRolloutSampler

from .test_grpo import grpo_recipe


def test_sampler_repeats_each_rollout_and_covers_every_prompt():
    sampler = RepeatRolloutSampler(8, chunk=2, repeats=3, shuffle=True, seed=1)
    order = list(sampler)
    chunks = [order[i:i + 2] for i in range(0, len(order), 2)]
    assert len(order) == len(sampler) == 24
    assert all(chunks[i] == chunks[i + 1] == chunks[i + 2] for i in range(0, len(chunks), 3))
    assert sorted(sum(chunks[::3], [])) == list(range(8))  # one epoch: every prompt, once per rollout
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first  # epoch 1 has its own permutation (seed + epoch) ...
    sampler.set_epoch(0)
    assert list(sampler) == first  # ... and epoch 0's is the same again (a resumed run)
    assert list(RepeatRolloutSampler(4, chunk=2, repeats=1, shuffle=False)) == [0, 1, 2, 3]


def train_and_record(model_dir, out, monkeypatch, log, resume=None, **overrides):
    """Train a GRPO recipe in this process with RLREASON_PROMPT_LOG; returns (trainer, {step: prompt ids})."""
    from rlreason.algorithms.common import load_rows
    from rlreason.models.loading import load_policy
    from rlreason.trainer import OnlineRLTrainer

    monkeypatch.setenv("RLREASON_PROMPT_LOG", str(log))
    recipe = grpo_recipe(model_dir, out, max_completion_length=6, beta=0.0, per_device_train_batch_size=4,
                         max_train_samples=8, **overrides)
    model, tok = load_policy(model_dir)
    trainer = OnlineRLTrainer(model, recipe.training_args, load_rows(recipe.args, "train", 8), tok,
                              recipe.args.reward_funcs)
    rollouts = []
    make = trainer.make_experience
    trainer.make_experience = lambda micro: (rollouts.append(trainer.state.global_step), make(micro))[1]
    trainer.train(resume_from_checkpoint=resume)
    steps = {}
    for line in log.read_text().splitlines():
        row = json.loads(line)
        steps[row["step"]] = row["ids"]  # the last record of a step wins (a resumed run records it again)
    return trainer, steps, rollouts


def test_num_iterations_reuses_each_rollout_without_skipping_prompts(tiny_model_dir, tmp_path, monkeypatch):
    # 8 prompts, 1 per rollout (batch 4 = one group of 4), each rollout used twice: one epoch is 16 steps
    trainer, steps, rollouts = train_and_record(tiny_model_dir, tmp_path / "run", monkeypatch, tmp_path / "ids",
                                                num_iterations=2, max_steps=16)
    assert len(rollouts) == 8 and rollouts == list(range(0, 16, 2))
    assert all(steps[s] == steps[s + 1] for s in range(1, 17, 2))  # a rollout's second pass: the same prompt
    seen = [steps[s][0] for s in range(1, 17, 2)]
    assert sorted(seen) == sorted(set(seen)) and len(seen) == 8  # every prompt of the split, none skipped
    assert trainer.state.epoch == pytest.approx(1.0)  # one pass over the data, not two


def test_steps_per_generation_one_rollout_serves_several_steps(tiny_model_dir, tmp_path, monkeypatch):
    trainer, steps, rollouts = train_and_record(tiny_model_dir, tmp_path / "run", monkeypatch, tmp_path / "ids",
                                                steps_per_generation=2, max_steps=4)
    assert rollouts == [0, 2]  # a rollout of 2 micro-batches every 2 optimizer steps
    assert steps[1] != steps[2] and steps[3] != steps[4]  # each step trains on its own slice of the rollout
    assert trainer.args.generation_batch_size == 8  # TRL's: per_device_train_batch_size x steps_per_generation
    assert len({i for s in steps.values() for i in s}) == 4


def test_shuffle_dataset_false_keeps_the_split_order(tiny_model_dir, tmp_path, monkeypatch):
    from rlreason.algorithms.common import load_rows

    _, steps, _ = train_and_record(tiny_model_dir, tmp_path / "a", monkeypatch, tmp_path / "a.ids",
                                   shuffle_dataset=False, max_steps=4)
    recipe = grpo_recipe(tiny_model_dir, tmp_path / "a", max_train_samples=8)
    ids = load_rows(recipe.args, "train", 8)["id"]
    assert [steps[s][0] for s in range(1, 5)] == ids[:4]
    _, shuffled, _ = train_and_record(tiny_model_dir, tmp_path / "b", monkeypatch, tmp_path / "b.ids", max_steps=4)
    assert [shuffled[s][0] for s in range(1, 5)] != ids[:4]


def test_resumed_run_sees_the_uninterrupted_runs_prompts(tiny_model_dir, tmp_path, monkeypatch):
    """num_iterations 2, 8 prompts: 12 steps cross an epoch; the resume lands inside a rollout's reuse (step 5)."""
    kw = dict(num_iterations=2, max_steps=20, save_steps=5)
    _, whole, _ = train_and_record(tiny_model_dir, tmp_path / "whole", monkeypatch, tmp_path / "whole.ids", **kw)
    log = tmp_path / "parts.ids"
    train_and_record(tiny_model_dir, tmp_path / "parts", monkeypatch, log, **{**kw, "max_steps": 5})
    _, parts, _ = train_and_record(tiny_model_dir, tmp_path / "parts", monkeypatch, log,
                                   resume=str(tmp_path / "parts" / "checkpoint-5"), **kw)
    assert sorted(parts) == sorted(whole) == list(range(1, 21))
    assert parts == whole
    assert [whole[s] for s in range(17, 21)] != [whole[s] for s in range(1, 5)]  # epoch 2: a new permutation


def test_two_processes_get_different_prompts_each_repeated():
    """accelerate's per-process sharding of the batches: each rank gets its own prompts of a rollout, repeated."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler

    per_process, repeats = 2, 3  # 2 prompts per process per rollout, each rollout serving 3 batches
    sampler = RepeatRolloutSampler(16, chunk=per_process * 2, repeats=repeats, shuffle=True, seed=0)
    ranks = [list(BatchSamplerShard(BatchSampler(sampler, per_process, drop_last=True), num_processes=2,
                                    process_index=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 16 // 4 * repeats
    for i in range(0, len(ranks[0]), repeats):
        mine, theirs = ranks[0][i:i + repeats], ranks[1][i:i + repeats]
        assert all(b == mine[0] for b in mine) and all(b == theirs[0] for b in theirs)
        assert not set(mine[0]) & set(theirs[0])
    assert sorted(sum(ranks[0][::repeats] + ranks[1][::repeats], [])) == list(range(16))
