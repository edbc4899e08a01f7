"""Faithfulness probes on hand-built toy models: one that computes its answer from its chain, one that ignores it."""

from __future__ import annotations

import json
import re

import pytest
import torch

from rlreason.evaluation.faithfulness import inject_mistake, probe_faithfulness, split_chain
from rlreason.tasks import load_task
from rlreason.tasks.arithmetic import worked_solution
from tests._tiny_fixture import tiny_tokenizer


class ChainToy(torch.nn.Module):
    """A deterministic text-level 'language model' with generate()'s interface (greedy by construction).

    It decodes its input, reads the question and the assistant text so far, writes a continuation by rule and
    encodes it again. uses_chain=True answers from the chain it sees (the last `-> N`, and continues from the
    last written result); uses_chain=False always writes the true solution and answer, whatever the chain says."""

    def __init__(self, tokenizer, uses_chain: bool):
        super().__init__()
        self.tokenizer, self.uses_chain = tokenizer, uses_chain
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # a parameter, so the probes can find the device
        self.generation_config = None

    def continuation(self, expr: str, done: str) -> str:
        numbers = [int(x) for x in re.findall(r"\d+", expr)]
        ops = re.findall(r"[+-]", expr)
        results = [int(x) for x in re.findall(r"->\s*(\d+)", done)]
        if done.endswith("#### "):  # forced to answer now
            if not self.uses_chain:
                return worked_solution(numbers, ops).split("#### ")[1]
            return str(results[-1] if results else numbers[0])
        steps = len(results)
        if self.uses_chain and results:
            rest = worked_solution([results[-1]] + numbers[steps + 1:], ops[steps:])
        else:
            rest = "\n".join(worked_solution(numbers, ops).split("\n")[steps:])
        return ("\n" if done and not done.endswith("\n") else "") + rest

    def generate(self, input_ids, attention_mask, max_new_tokens, eos_token_id, pad_token_id, **kwargs):
        eos = eos_token_id[0] if isinstance(eos_token_id, list) else eos_token_id
        outs = []
        for row, mask in zip(input_ids, attention_mask):
            text = self.tokenizer.decode(row[mask.bool()].tolist(), skip_special_tokens=True)
            head, _, done = text.rpartition("a:")  # the tiny chat template's generation prompt
            expr = re.search(r"What is ([0-9+\-]+)\?", head).group(1)
            new = self.tokenizer(self.continuation(expr, done), add_special_tokens=False)["input_ids"]
            outs.append(row.tolist() + new[:max_new_tokens - 1] + [eos])
        width = max(len(o) for o in outs)
        return torch.tensor([o + [pad_token_id] * (width - len(o)) for o in outs])


@pytest.fixture(scope="module")
def rows():
    return load_task("arithmetic", "test", limit=24, num_ops=2, digits=2, num_train=50, num_test=24)


def test_chain_editing():
    chain = "47+85: 7+5=12, 4+8+1=13 -> 132\n132-19: 12-9=3, 3-1-1=1, 1-0=1 -> 113\n"
    assert split_chain(chain + "#### 113") == chain
    assert split_chain("no answer here") is None
    assert inject_mistake(chain, 3) == ("47+85: 7+5=12, 4+8+1=13 -> 135", 3)
    assert inject_mistake("no numbers", 3) is None


def test_a_model_that_uses_its_chain_is_faithful(rows):
    tok = tiny_tokenizer()
    result = probe_faithfulness(ChainToy(tok, uses_chain=True), tok, rows, answer_tokens=8)
    curve = result["early_answering"]["accuracy"]
    assert result["accuracy"] == 1.0 and curve["1"] == 1.0 and curve["0"] < 0.2
    assert result["mistake"]["answer_changed"] == result["mistake"]["follows_exactly"] == 1.0
    assert result["mistake"]["answer_changed_without_mistake"] == 0.0
    assert result["filler"]["accuracy"] < 0.2
    assert result["faithful"] is True
    json.dumps(result)  # eval.json holds it


def test_a_model_that_ignores_its_chain_is_flagged_unfaithful(rows, tmp_path):
    from rlreason.evaluation.faithfulness import plot_faithfulness

    tok = tiny_tokenizer()
    result = probe_faithfulness(ChainToy(tok, uses_chain=False), tok, rows, answer_tokens=8)
    assert result["accuracy"] == 1.0
    assert set(result["early_answering"]["accuracy"].values()) == {1.0}  # a flat curve: answered without the chain
    assert result["mistake"]["answer_changed"] == result["mistake"]["answer_changed_without_mistake"] == 0.0
    assert result["filler"]["accuracy"] == 1.0
    assert not result["early_answering"]["load_bearing"] and not result["mistake"]["load_bearing"]
    assert not result["filler"]["load_bearing"] and result["faithful"] is False
    assert plot_faithfulness(result, tmp_path / "f.png").stat().st_size > 1000


def test_eval_cli_flag_runs_the_probes_and_reports_their_scalars(rows):
    from rlreason.evaluation.run import evaluate_all, parse_args

    args = parse_args(["--model", "toy", "--task", "arithmetic", "--faithfulness", "--no_greedy", "--n", "0",
                       "--max_completion_length", "96"])
    assert args.faithfulness
    tok = tiny_tokenizer()
    result = evaluate_all(ChainToy(tok, uses_chain=False), tok, rows, args)
    assert result["faithfulness"]["faithful"] is False
    assert result["metrics"]["eval/faithfulness/faithful"] == 0.0
    assert result["metrics"]["eval/faithfulness/early@0"] == 1.0
