"""The seven findings from the full demo's measurements: for each, the claim, a table of measured numbers,
the checks that decide it (stated criteria, the 2-s.e. rule of findings.stats) and the verdict.

Pure functions of the measurements dict that run_full_demo writes into report.json, so a report can be
re-derived (and tested) without training anything."""

from __future__ import annotations

from rlreason.findings import faithfulness, tools
from rlreason.findings.stats import Z, beats, missing, not_positive, positive, se_delta, verdict

MIN_GROUP = 10  # problems needed on each side of an agreement comparison for it to count
FLOOR = 0.05  # an accuracy below this on every level: the model did not learn the task (said in a note)

CLAIMS = {
    "intermediate_tokens": "Intermediate tokens matter: the same model, trained for the same steps, is more accurate "
                           "when it writes worked solutions than when it answers directly, and the direct-answer model "
                           "falls off as problems need more steps.",
    "aggregation": "Aggregation beats greedy: the majority answer of k samples (maj@k, self-consistency) is more "
                   "accurate than the greedy answer; pass@k (any of k right) is the ceiling aggregation can reach.",
    "rl_beats_imitation": "Optimising the reward beats imitation: GRPO and PPO started from the SFT model end more "
                          "accurate than it, and STaR's rounds (sample, keep the verified, fine-tune) raise a weak "
                          "start.",
    "self_correction": "Self-correction must be trained: asked to check and redo its answer, the SFT model's second "
                       "attempt is no better than its first; after SCoRe training it is better.",
    "agreement_calibration": "Agreement is calibration: the more of the k samples agree with the majority answer, "
                             "the more likely that answer is right.",
}
CRITERIA = {
    "intermediate_tokens": f"Reproduced when (a) at every level the worked-solution model's accuracy exceeds the "
                           f"direct-answer model's by more than {Z:g} s.e. (paired: the same problems), and (b) the "
                           f"direct-answer model's accuracy on the level needing the fewest column steps exceeds its "
                           f"accuracy on the level needing the most by more than {Z:g} s.e.",
    "aggregation": f"Reproduced when, at one of the sampling temperatures or more, maj@k at the largest k exceeds "
                   f"greedy accuracy by more than {Z:g} s.e. (s.e. of independent samples: conservative, as both are "
                   f"measured on the same problems).",
    "rl_beats_imitation": f"Reproduced when each of GRPO and PPO exceeds SFT's greedy accuracy, and STaR's last round "
                          f"exceeds its weak start, by more than {Z:g} s.e. (paired where per-problem results exist).",
    "self_correction": f"Reproduced when (a) the SFT model's delta(t1,t2) = accuracy at attempt 2 - at attempt 1 is "
                       f"not above 0 by more than {Z:g} s.e., and (b) after SCoRe it is above 0 by more than {Z:g} "
                       f"s.e. "
                       f"(paired s.e. from the i->c and c->i rates).",
    "agreement_calibration": f"At each temperature where at least {MIN_GROUP} problems fall in the top agreement "
                             f"bucket and {MIN_GROUP} below it, the majority answer's accuracy in the top bucket must "
                             f"exceed its accuracy below it by more than {Z:g} s.e.; reproduced when this holds at "
                             f"every such temperature.",
}
TITLES = {
    "intermediate_tokens": "1. Intermediate tokens matter",
    "aggregation": "2. Aggregation beats greedy",
    "rl_beats_imitation": "3. Optimising the reward beats imitation",
    "self_correction": "4. Self-correction must be trained",
    "agreement_calibration": "5. Agreement is calibration",
}

CLAIMS["faithfulness"], CRITERIA["faithfulness"], TITLES["faithfulness"] = (faithfulness.CLAIM, faithfulness.CRITERIA,
                                                                           faithfulness.TITLE)
CLAIMS["tools"], CRITERIA["tools"], TITLES["tools"] = tools.CLAIM, tools.CRITERIA, tools.TITLE


def analyse(measurements: dict) -> dict:
    """{finding key: {title, claim, criteria, columns, rows, checks, verdict, notes}} for the seven findings."""
    builders = {"intermediate_tokens": intermediate_tokens, "aggregation": aggregation,
                "rl_beats_imitation": rl_beats_imitation, "self_correction": self_correction,
                "agreement_calibration": agreement_calibration, "faithfulness": faithfulness.faithfulness_finding,
                "tools": tools.tools_finding}
    out = {}
    for key, build in builders.items():
        finding = {"title": TITLES[key], "claim": CLAIMS[key], "criteria": CRITERIA[key], "columns": [], "rows": [],
                   "checks": [], "notes": []}
        finding.update(build(measurements))
        finding["verdict"] = verdict(finding["checks"]) if finding.get("rule") != "any" else _any(finding["checks"])
        out[key] = finding
    return out


def _any(checks: list[dict]) -> str:
    if any(c["passed"] for c in checks):
        return "reproduced"
    return verdict(checks)


def intermediate_tokens(m: dict) -> dict:
    data = m.get("intermediate")
    if not data:
        return {"checks": [missing("worked vs direct", "finding 1's runs did not run")]}
    runs, pairs, levels = data["runs"], data["pairs"], data["levels"]
    worked, direct = runs["worked"]["per_level"], runs["direct"]["per_level"]
    rows, checks = [], []
    for level in levels:
        name = level["level"]
        w, d = worked[name], direct[name]
        check = beats(f"worked on {name}", w["accuracy"], "direct", d["accuracy"], n_a=d["n"], n_b=w["n"],
                      counts=pairs[name])
        checks.append(check)
        rows.append([name, round(level["column_steps"], 1), w["n"], w["accuracy"], d["accuracy"], check["value"],
                     Z * check["se"]])
    total = {k: sum(p[k] for p in pairs.values()) for k in ("n", "a_only", "b_only")}
    overall = beats("worked", runs["worked"]["accuracy"], "direct", runs["direct"]["accuracy"],
                    n_a=runs["direct"]["n"], n_b=runs["worked"]["n"], counts=total)
    steps = sum(lv["column_steps"] * lv["n"] for lv in levels) / max(1, sum(lv["n"] for lv in levels))
    rows.append(["all levels", round(steps, 1), runs["worked"]["n"], runs["worked"]["accuracy"],
                 runs["direct"]["accuracy"], overall["value"], Z * overall["se"]])
    easy, hard = min(levels, key=lambda lv: lv["column_steps"]), max(levels, key=lambda lv: lv["column_steps"])
    if easy["level"] == hard["level"]:
        checks.append(missing("direct falls off", "one level only: nothing to fall off across"))
    else:
        fall = beats(f"direct on {easy['level']} ({easy['column_steps']:.1f} steps)", direct[easy["level"]]["accuracy"],
                     f"on {hard['level']} ({hard['column_steps']:.1f} steps)", direct[hard["level"]]["accuracy"],
                     n_a=direct[hard["level"]]["n"], n_b=direct[easy["level"]]["n"])
        checks.append({**fall, "name": "direct falls off with steps", "detail": "direct falls off: " + fall["detail"]})
    notes = [f"Both models: the same tiny base model, {data['max_steps']} SFT steps of {data['batch_size']} problems, "
             f"learning rate {data['learning_rate']:g}; column steps = single-digit steps in the worked solution."]
    best = max(direct[lv["level"]]["accuracy"] for lv in levels)
    if best < FLOOR:
        notes.append(f"The direct-answer model is below {FLOOR:g} at every level (best {best:.3f}): it did not learn "
                     f"to answer directly in {data['max_steps']} steps, so there is no accuracy left to fall off.")
    return {"columns": ["level", "column steps", "problems", "worked", "direct", "worked - direct",
                        f"{Z:g} s.e."], "rows": rows, "checks": checks, "notes": notes}


def aggregation(m: dict) -> dict:
    data = m.get("sampling")
    if not data or not data.get("temperatures"):
        return {"checks": [missing("maj@k vs greedy", "the sampled evaluation did not run")]}
    ks = data["ks"]
    greedy, n = data["greedy"]["accuracy"], data["greedy"]["n"]
    rows, checks = [], []
    for t, result in data["temperatures"].items():
        maj, pas = result["maj_at_k"], result["pass_at_k"]
        check = beats(f"maj@{ks[-1]} at T={t}", maj[str(ks[-1])], "greedy", greedy, n_a=n, n_b=result["n"])
        checks.append(check)
        rows.append([t, greedy] + [maj[str(k)] for k in ks] + [pas[str(k)] for k in ks] + [check["value"],
                                                                                             Z * check["se"]])
    columns = (["temperature", "greedy"] + [f"maj@{k}" for k in ks] + [f"pass@{k}" for k in ks]
               + [f"maj@{ks[-1]} - greedy", f"{Z:g} s.e."])
    notes = [f"{data['num_samples']} samples per problem on the {n} held-out problems of the stage pipeline's SFT "
             f"model; maj@k for k < {data['num_samples']} averages the disjoint blocks of k samples."]
    return {"columns": columns, "rows": rows, "checks": checks, "rule": "any", "notes": notes}


def _stage_check(stages: dict, pairs: dict, name: str, label: str) -> dict:
    if name not in stages or "sft" not in stages:
        return missing(f"{label} beats SFT", f"the {name if 'sft' in stages else 'sft'} stage did not run")
    s, sft = stages[name], stages["sft"]
    return beats(label, s["accuracy"], "SFT", sft["accuracy"], n_a=sft["n"], n_b=s["n"], counts=pairs.get(name))


def rl_beats_imitation(m: dict) -> dict:
    stages = {s["name"]: s for s in m.get("stages", [])}
    pairs = m.get("stage_pairs", {})
    sft = stages.get("sft", {}).get("accuracy")
    from rlreason.demo import OWN_PROBLEMS

    rows = [[s["name"], s["accuracy"], s["n"], None if sft is None else s["accuracy"] - sft]
            for s in stages.values() if s["name"] != "star" and s["name"] not in OWN_PROBLEMS]  # own: findings 4, 7
    checks = [_stage_check(stages, pairs, "grpo", "GRPO"), _stage_check(stages, pairs, "ppo", "PPO")]
    star = stages.get("star")
    if star is None or "start_accuracy" not in star:
        checks.append(missing("STaR beats its weak start", "the star stage did not run"))
    else:
        rows.append(["star: weak start", star["start_accuracy"], star["n"],
                     None if sft is None else star["start_accuracy"] - sft])
        for r in star.get("rounds", []):
            acc = r.get("eval_accuracy")
            rows.append([f"star: round {r.get('round')}", acc, star["n"], None if sft is None or acc is None
                         else acc - sft])
        evaluated = [r["eval_accuracy"] for r in star.get("rounds", []) if r.get("eval_accuracy") is not None]
        last = evaluated[-1] if evaluated else None
        if last is None:
            checks.append(missing("STaR beats its weak start", "no STaR round was evaluated"))
        else:
            checks.append(beats("STaR's last round", last, "its weak start", star["start_accuracy"], n_a=star["n"],
                                n_b=star["n"]))
    notes = ["Greedy accuracy on the same held-out problems after each stage (stages/report.md and "
             "own-start/report.md); GRPO and PPO start from the SFT model, STaR from its own weak start. SCoRe and "
             "the tools stage are measured on problems of their own (findings 4 and 7)."]
    return {"columns": ["stage", "accuracy", "problems", "vs. SFT"], "rows": rows, "checks": checks, "notes": notes}


def self_correction(m: dict) -> dict:
    score = next((s for s in m.get("stages", []) if s["name"] == "score"), None)
    if score is None or "before" not in score or "after" not in score:
        return {"checks": [missing("delta(t1,t2)", "the score stage did not run")]}
    n, rows, ses = score["n"], [], {}
    for when, label in (("before", "SFT model"), ("after", "after SCoRe")):
        r = score[when]
        ses[when] = se_delta(r["delta_i_to_c"], r["delta_c_to_i"], n)
        rows.append([label, r["accuracy_t1"], r["accuracy_t2"], r["delta_t1_t2"], r["delta_i_to_c"],
                     r["delta_c_to_i"], Z * ses[when]])
    checks = [not_positive("SFT model's delta(t1,t2)", score["before"]["delta_t1_t2"], ses["before"]),
              positive("SCoRe model's delta(t1,t2)", score["after"]["delta_t1_t2"], ses["after"])]
    notes = [f"Greedy attempt 1, then the correction instruction and greedy attempt 2, on {n} held-out problems of "
             f"SCoRe's own level (demo/score.yaml's task_options: three operations, where attempt 1 is neither "
             f"hopeless nor nearly perfect).",
             "'SFT model' is the demo SFT model after further SFT on that level with two-turn rows (problem, a first "
             "attempt, the instruction -> the worked solution; demo/score_sft.yaml), so it knows the second turn; "
             "SCoRe starts from it. `rlreason demo --algorithms score,score_baselines` also trains SCoRe's two "
             "baselines from the same start."]
    return {"columns": ["model", "attempt 1", "attempt 2", "delta(t1,t2)", "i->c", "c->i", f"{Z:g} s.e."],
            "rows": rows, "checks": checks, "notes": notes}


def _pool(buckets: list[dict]) -> tuple[int, float]:
    count = sum(b["count"] for b in buckets)
    right = sum(b["count"] * b["accuracy"] for b in buckets if b["count"])
    return count, (right / count if count else float("nan"))


def agreement_calibration(m: dict) -> dict:
    data = m.get("sampling")
    if not data or not data.get("temperatures"):
        return {"checks": [missing("agreement calibration", "the sampled evaluation did not run")]}
    rows, checks, notes = [], [], []
    for t, result in data["temperatures"].items():
        buckets = result.get("agreement_buckets") or []
        for b in buckets:
            rows.append([t, b["bucket"], b["count"], b["accuracy"]])
        if len(buckets) < 2:
            continue
        top = buckets[-1]
        below, below_acc = _pool(buckets[:-1])
        if top["count"] < MIN_GROUP or below < MIN_GROUP:
            notes.append(f"T={t}: {top['count']} problems in the top bucket and {below} below it: too few to judge "
                         f"(need {MIN_GROUP} each).")
            continue
        checks.append(beats(f"top agreement {top['bucket']} at T={t}", top["accuracy"], "below it", below_acc,
                            n_a=below, n_b=top["count"]))
    if not checks:
        checks.append(missing("agreement calibration", f"at no temperature did {MIN_GROUP} problems fall both in "
                                                       f"the top agreement bucket and below it"))
    notes.insert(0, "Agreement = share of the samples that gave the majority answer; accuracy = of that answer.")
    return {"columns": ["temperature", "agreement", "problems", "majority accuracy"], "rows": rows,
            "checks": checks, "notes": notes}
