"""The full demo's PNG plots: accuracy per difficulty level (finding 1), accuracy against k (finding 2, the
evaluation package's plot), stage accuracies (finding 3), accuracy by agreement bucket (finding 5), the tools
stage by level (finding 7)."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path.name


def plot_levels(data: dict, path: Path) -> str:
    """Grouped bars: worked vs direct held-out accuracy per level, levels labelled with their column steps."""
    plt = _pyplot()
    levels = data["levels"]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    width = 0.38
    for j, (fmt, color) in enumerate((("worked", "tab:blue"), ("direct", "tab:orange"))):
        per = data["runs"][fmt]["per_level"]
        xs = [i + (j - 0.5) * width for i in range(len(levels))]
        ax.bar(xs, [per[lv["level"]]["accuracy"] for lv in levels], width, label=f"{fmt} solutions", color=color)
    ax.set_xticks(range(len(levels)), [f"{lv['level']}\n({lv['column_steps']:.1f} steps)" for lv in levels],
                  fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("held-out greedy accuracy")
    ax.set_title(f"same model, {data['max_steps']} SFT steps: worked vs direct")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_stages(stages: list[dict], path: Path) -> str:
    """Bars of greedy accuracy after each stage, STaR's weak start and rounds in their own colour."""
    from rlreason.demo import OWN_PROBLEMS

    plt = _pyplot()
    names, values, colors = [], [], []
    for s in stages:
        if s["name"] in OWN_PROBLEMS:  # their own problems: plot_tools, finding 4's table
            continue
        if s["name"] == "star" and "start_accuracy" in s:
            names.append("star start")
            values.append(s["start_accuracy"])
            colors.append("tab:green")
            for r in s.get("rounds", []):
                if r.get("eval_accuracy") is not None:
                    names.append(f"star r{r['round']}")
                    values.append(r["eval_accuracy"])
                    colors.append("tab:green")
        else:
            names.append(s["name"])
            values.append(s["accuracy"])
            colors.append("tab:gray" if s["name"] in ("base", "sft") else "tab:blue")
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    ax.bar(names, values, color=colors)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("held-out greedy accuracy")
    ax.set_title("stage pipeline: imitation (gray), RL from SFT (blue), STaR (green)")
    ax.tick_params(axis="x", labelsize=8)
    return _save(fig, path)


def plot_tools(stage: dict, path: Path) -> str:
    """Grouped bars per level and over all problems: the no-tool baseline, the cold start and GRPO, with the tool."""
    plt = _pyplot()
    groups = {"all problems": {k: stage[k] for k in ("no_tool_accuracy", "start_accuracy", "accuracy")},
              **(stage.get("per_level") or {})}
    runs = (("no_tool_accuracy", "no tool (worked solutions)", "tab:gray"),
            ("start_accuracy", "cold start, with the tool", "tab:orange"),
            ("accuracy", "after GRPO, with the tool", "tab:blue"))
    fig, ax = plt.subplots(figsize=(6.5, 3.4))
    width = 0.27
    for j, (key, label, color) in enumerate(runs):
        xs = [i + (j - 1) * width for i in range(len(groups))]
        ax.bar(xs, [g.get(key) or 0.0 for g in groups.values()], width, label=label, color=color)
    ax.set_xticks(range(len(groups)), list(groups), fontsize=8)
    ax.set_ylim(0, 1.25)  # room for the legend above the bars
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("held-out greedy accuracy")
    ax.set_title("tools stage: the same tiny model with and without Python")
    ax.legend(fontsize=7, ncol=3, loc="upper center")
    return _save(fig, path)


def plot_agreement(sampling: dict, path: Path) -> str:
    """Grouped bars: accuracy of the majority answer per agreement bucket, one colour per temperature."""
    plt = _pyplot()
    temps = list(sampling["temperatures"].items())
    buckets = [b["bucket"] for b in temps[0][1].get("agreement_buckets", [])]
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    width = 0.8 / max(1, len(temps))
    for j, (t, result) in enumerate(temps):
        rows = result.get("agreement_buckets", [])
        xs = [i + (j - (len(temps) - 1) / 2) * width for i in range(len(rows))]
        bars = ax.bar(xs, [b["accuracy"] or 0.0 for b in rows], width, label=f"T={t}")
        for bar, b in zip(bars, rows):
            ax.annotate(f"n={b['count']}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                        va="bottom", fontsize=6)
    ax.set_xticks(range(len(buckets)), buckets, fontsize=8)
    ax.set_xlabel("agreement (share of samples giving the majority answer)")
    ax.set_ylabel("accuracy of the majority answer")
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=8)
    ax.set_title("self-consistency agreement as calibration")
    return _save(fig, path)


def draw_all(out: Path, measurements: dict) -> dict[str, list[str]]:
    """Every plot the measurements allow, as {finding key: [file names under out]}."""
    from rlreason.evaluation.plots import plot_accuracy_vs_k

    plots: dict[str, list[str]] = {}
    if measurements.get("intermediate"):
        plots["intermediate_tokens"] = [plot_levels(measurements["intermediate"], out / "intermediate_tokens.png")]
    sampling = measurements.get("sampling")
    if sampling and sampling.get("temperatures"):
        names = []
        for t, result in sampling["temperatures"].items():
            path = out / f"accuracy_vs_k_T{t}.png"
            plot_accuracy_vs_k({"greedy": sampling["greedy"], "sampled": result}, path,
                               title=f"SFT model, {sampling['num_samples']} samples at T={t}")
            names.append(path.name)
        plots["aggregation"] = names
        plots["agreement_calibration"] = [plot_agreement(sampling, out / "agreement.png")]
    if measurements.get("stages"):
        plots["rl_beats_imitation"] = [plot_stages(measurements["stages"], out / "stages.png")]
    tools = next((s for s in measurements.get("stages", []) if s["name"] == "tools"), None)
    if tools and "no_tool_accuracy" in tools:
        plots["tools"] = [plot_tools(tools, out / "tools.png")]
    return plots
