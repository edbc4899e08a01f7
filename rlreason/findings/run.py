"""run_full_demo: the stages (SFT, GRPO, PPO, STaR, SCoRe, tools), finding 1's runs, the sampled evaluation
and the faithfulness probes in two lanes side by side, then report.json / report.md / plots under output_dir."""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

from rlreason.findings.report import write_report
from rlreason.findings.stats import paired_counts

FULL_ALGORITHMS = ("grpo", "ppo", "star", "score", "tools")
TEMPERATURES = (0.3, 0.5, 0.7)


def stage_pairs(stages: list[dict]) -> dict:
    """Per-problem pairing (from the runs' eval.json) of GRPO and PPO with SFT, and of the tools stage with its
    no-tool baseline, where both sides are on record."""
    def flags(model: str | None):
        path = Path(model or "") / "eval.json"
        return json.loads(path.read_text()).get("correct") if model and path.is_file() else None

    def pair(a, b):
        return paired_counts(a, b) if a and b and len(a) == len(b) and None not in a + b else None

    by_name = {s["name"]: s for s in stages}
    sft = flags(by_name["sft"]["model"]) if "sft" in by_name else None
    found = {name: pair(sft, flags(by_name[name]["model"])) for name in ("grpo", "ppo") if name in by_name}
    if "tools" in by_name:
        tools = by_name["tools"]
        found["tools"] = pair(flags(tools.get("no_tool_model")), flags(tools["model"]))
    return {name: counts for name, counts in found.items() if counts}


def run_full_demo(output_dir: str = "runs/demo-full", seed: int = 0, *,
                  algorithms: tuple[str, ...] = FULL_ALGORITHMS, overrides: dict[str, list[str]] | None = None,
                  temperatures: tuple[float, ...] = TEMPERATURES, num_samples: int = 8,
                  stages_from: str | None = None, side_by_side: bool = True) -> dict:
    """Measure the seven findings and write the report; returns report.json's contents.

    Two lanes: what needs the demo's SFT model (SFT, GRPO, PPO, SCoRe, the sampled evaluation, the faithfulness
    probes; under output_dir/stages) and what starts from its own untrained model (STaR, the tools stage,
    finding 1; under output_dir/own-start), side by side (rlreason.lanes) unless side_by_side is false.
    overrides: recipe items per run name (sft, grpo, ppo, star, score_sft, score, tools_sft, tools_baseline,
    tools; worked, direct: finding 1), for short runs in tests. stages_from: an existing `rlreason demo
    --algorithms ...` output folder to read the stages' results from instead of running them (it must hold
    report.json)."""
    from rlreason.demo import FROM_BASE, OWN_BASE
    from rlreason.lanes import run_side_by_side

    out = Path(output_dir)
    started = time.time()
    report = {"seed": seed, "command": f"rlreason demo --full --seed {seed} --output_dir {output_dir}",
              "settings": {"algorithms": list(algorithms), "temperatures": list(temperatures),
                           "num_samples": num_samples, "overrides": overrides or {}, "stages_from": stages_from},
              "seconds": {}, "measurements": {}}
    out.mkdir(parents=True, exist_ok=True)
    given = None
    if stages_from:
        path = Path(stages_from) / "report.json"
        if not path.is_file():
            raise FileNotFoundError(f"stages_from: no report.json in {stages_from}; run `rlreason demo` there first")
        given = json.loads(path.read_text())["stages"]
    own = tuple(a for a in algorithms if a in FROM_BASE or a in OWN_BASE)
    from_sft = tuple(a for a in algorithms if a not in own)
    sft_lane = partial(run_sft_lane, str(out), seed, from_sft, overrides, temperatures, num_samples, given)
    own_lane = partial(run_own_start_lane, str(out), seed, own, overrides, given is not None)
    if side_by_side:
        mine, other = run_side_by_side(sft_lane, own_lane, out / "own-start.log")
    else:
        mine, other = sft_lane(), own_lane()
    m = report["measurements"]
    m["stages"] = given if given is not None else mine["stages"] + [s for s in other["stages"] if s["name"] != "base"]
    m["stage_pairs"] = stage_pairs(m["stages"])
    m["intermediate"], m["sampling"], m["faithfulness"] = other["intermediate"], mine["sampling"], mine["faithfulness"]
    report["seconds"] = {**mine["seconds"], **other["seconds"]}
    report["settings"]["side_by_side"] = side_by_side
    report = _write(out, report, started)
    print((out / "report.md").read_text())
    return report


def run_sft_lane(out: str, seed: int, algorithms: tuple[str, ...], overrides: dict | None,
                 temperatures: tuple[float, ...], num_samples: int, given: list[dict] | None) -> dict:
    """SFT and the stages that start from it, then the sampled evaluation and the faithfulness probes of the SFT
    model (findings 2, 5 and 6)."""
    from rlreason.demo import run_demo
    from rlreason.findings.faithfulness import run_faithfulness
    from rlreason.findings.sampling import run_sampling

    seconds, t = {}, time.time()
    if given is None:
        print(f"[findings] stage pipeline: sft, {', '.join(algorithms)} under {Path(out) / 'stages'}", flush=True)
        stages = run_demo(algorithms=",".join(algorithms), output_dir=str(Path(out) / "stages"), seed=seed,
                          overrides=overrides)["stages"]
        seconds["stages from SFT: " + ", ".join(("sft",) + algorithms)] = round(time.time() - t, 1)
    else:
        stages = given
    t = time.time()
    sampling = run_sampling(stages, seed, temperatures, num_samples, overrides)
    seconds["findings 2 and 5: sampled evaluation"] = round(time.time() - t, 1)
    t = time.time()
    faithful = run_faithfulness(stages, seed, overrides)
    seconds["finding 6: faithfulness probes"] = round(time.time() - t, 1)
    return {"stages": stages, "sampling": sampling, "faithfulness": faithful, "seconds": seconds}


def run_own_start_lane(out: str, seed: int, algorithms: tuple[str, ...], overrides: dict | None,
                       stages_given: bool) -> dict:
    """The stages with their own untrained start (STaR, tools), then finding 1's worked and direct SFT runs."""
    from rlreason.demo import run_demo
    from rlreason.findings.intermediate import run_intermediate

    seconds, stages, t = {}, [], time.time()
    if algorithms and not stages_given:
        print(f"[findings] own-start stages: {', '.join(algorithms)} under {Path(out) / 'own-start'}", flush=True)
        stages = run_demo(algorithms=",".join(algorithms), output_dir=str(Path(out) / "own-start"), seed=seed,
                          overrides=overrides)["stages"]
        seconds["stages from their own start: " + ", ".join(algorithms)] = round(time.time() - t, 1)
    t = time.time()
    intermediate = run_intermediate(Path(out) / "intermediate", seed, overrides)
    seconds["finding 1: worked vs direct SFT"] = round(time.time() - t, 1)
    return {"stages": stages, "intermediate": intermediate, "seconds": seconds}


def _write(out: Path, report: dict, started: float) -> dict:
    report["seconds"].pop("total", None)  # kept last
    report["seconds"]["total"] = round(time.time() - started, 1)
    return write_report(out, report)
