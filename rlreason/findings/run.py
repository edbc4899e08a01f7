"""run_full_demo: the stage pipeline (SFT, GRPO, PPO, STaR, SCoRe), finding 1's runs and the sampled
evaluation, then report.json / report.md / plots under output_dir, rewritten after every part."""

from __future__ import annotations

import json
import time
from pathlib import Path

from rlreason.findings.report import write_report
from rlreason.findings.stats import paired_counts

FULL_ALGORITHMS = ("grpo", "ppo", "star", "score")
TEMPERATURES = (0.3, 0.5, 0.7)


def stage_pairs(stages: list[dict]) -> dict:
    """Per-problem pairing of each stage with SFT (from the stages' eval.json), where both are on record."""
    def flags(stage: dict):
        path = Path(stage.get("model", "")) / "eval.json"
        return json.loads(path.read_text()).get("correct") if path.is_file() else None

    by_name = {s["name"]: s for s in stages}
    if "sft" not in by_name:
        return {}
    sft = flags(by_name["sft"])
    out = {}
    for name in ("grpo", "ppo"):
        other = flags(by_name[name]) if name in by_name else None
        if sft and other and len(sft) == len(other) and None not in sft + other:
            out[name] = paired_counts(sft, other)
    return out


def run_full_demo(output_dir: str = "runs/demo-full", seed: int = 0, *,
                  algorithms: tuple[str, ...] = FULL_ALGORITHMS, overrides: dict[str, list[str]] | None = None,
                  temperatures: tuple[float, ...] = TEMPERATURES, num_samples: int = 8,
                  stages_from: str | None = None) -> dict:
    """Measure the six findings and write the report; returns report.json's contents.

    overrides: recipe items per run name (sft, grpo, ppo, star, score: the stage pipeline; worked, direct:
    finding 1), for short runs in tests. stages_from: an existing `rlreason demo --algorithms ...` output
    folder to read the stage pipeline's results from instead of running it (it must hold report.json)."""
    from rlreason.demo import run_demo
    from rlreason.findings.intermediate import run_intermediate
    from rlreason.findings.faithfulness import run_faithfulness
    from rlreason.findings.sampling import run_sampling

    out = Path(output_dir)
    started = time.time()
    report = {"seed": seed, "command": f"rlreason demo --full --seed {seed} --output_dir {output_dir}",
              "settings": {"algorithms": list(algorithms), "temperatures": list(temperatures),
                           "num_samples": num_samples, "overrides": overrides or {}, "stages_from": stages_from},
              "seconds": {}, "measurements": {}}
    m, seconds = report["measurements"], report["seconds"]

    t = time.time()
    if stages_from:
        path = Path(stages_from) / "report.json"
        if not path.is_file():
            raise FileNotFoundError(f"stages_from: no report.json in {stages_from}; run `rlreason demo` there first")
        m["stages"] = json.loads(path.read_text())["stages"]
    else:
        print(f"[findings] stage pipeline: sft, {', '.join(algorithms)} under {out / 'stages'}", flush=True)
        m["stages"] = run_demo(algorithms=",".join(algorithms), output_dir=str(out / "stages"), seed=seed,
                               overrides=overrides)["stages"]
    m["stage_pairs"] = stage_pairs(m["stages"])
    seconds["stage pipeline"] = round(time.time() - t, 1)
    _write(out, report, started)

    t = time.time()
    m["intermediate"] = run_intermediate(out / "intermediate", seed, overrides)
    seconds["finding 1: worked vs direct SFT"] = round(time.time() - t, 1)
    _write(out, report, started)

    t = time.time()
    m["sampling"] = run_sampling(m["stages"], seed, temperatures, num_samples, overrides)
    seconds["findings 2 and 5: sampled evaluation"] = round(time.time() - t, 1)
    _write(out, report, started)

    t = time.time()
    m["faithfulness"] = run_faithfulness(m["stages"], seed, overrides)
    seconds["finding 6: faithfulness probes"] = round(time.time() - t, 1)
    report = _write(out, report, started)
    print((out / "report.md").read_text())
    return report


def _write(out: Path, report: dict, started: float) -> dict:
    report["seconds"].pop("total", None)  # kept last
    report["seconds"]["total"] = round(time.time() - started, 1)
    return write_report(out, report)
