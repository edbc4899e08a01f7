"""The evaluation plots: accuracy against k for pass@k and maj@k (greedy and CoT-decoding as lines), and accuracy
against generated tokens for the test-time strategies."""

from __future__ import annotations

from pathlib import Path


def new_figure():
    """A (fig, ax) for one accuracy plot, drawn off-screen (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(5.5, 3.6))


def finish_accuracy_plot(fig, ax, path: str | Path, xlabel: str, title: str, legend_loc: str = "lower right",
                         title_size: int | None = None) -> Path:
    """Label the accuracy axis (0 to 1), grid, title and legend, then write the PNG at `path`; returns the path."""
    import matplotlib.pyplot as plt

    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title, fontsize=title_size)
    ax.legend(loc=legend_loc, fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_accuracy_vs_k(result: dict, path: str | Path, title: str | None = None) -> Path:
    """Write a PNG of pass@k and maj@k against k (log2 axis) from an eval result; returns the path.

    `result` is run_eval's dict: optional sections "greedy", "sampled" and "cot_decoding"."""
    sampled = result.get("sampled") or {}
    fig, ax = new_figure()
    for key, label, marker in (("pass_at_k", "pass@k", "o"), ("maj_at_k", "maj@k", "s")):
        table = sampled.get(key)
        if table:
            ks = sorted(int(k) for k in table)
            ax.plot(ks, [table[str(k)] for k in ks], marker=marker, label=label)
    greedy = (result.get("greedy") or {}).get("accuracy")
    if greedy is not None:
        ax.axhline(greedy, color="gray", linestyle="--", label=f"greedy ({greedy:.2f})")
    cot = (result.get("cot_decoding") or {}).get("accuracy")
    if cot is not None:
        ax.axhline(cot, color="tab:green", linestyle=":", label=f"CoT-decoding ({cot:.2f})")
    if sampled.get("ks"):
        ax.set_xscale("log", base=2)
        ax.set_xticks(sampled["ks"], [str(k) for k in sampled["ks"]])
    return finish_accuracy_plot(fig, ax, path, "k (samples per problem)", title or "accuracy against k")


def plot_accuracy_vs_tokens(strategies: dict, path: str | Path, title: str | None = None) -> Path:
    """Write a PNG of accuracy against generated tokens per problem (log2 axis), one line per strategy, from
    evaluate_strategies' result; each point is labelled with its budget (samples, or revise rounds)."""
    markers = {"greedy": "D", "majority": "s", "best_of_n": "o", "weighted_majority": "^", "revise": "v"}
    fig, ax = new_figure()
    for name, points in (strategies.get("curves") or {}).items():
        xs = [max(p["tokens_per_problem"], 1e-9) for p in points]
        ys = [p["accuracy"] for p in points]
        ax.plot(xs, ys, marker=markers.get(name, "o"), label=name.replace("_", "-"))
        for x, y, p in zip(xs, ys, points):
            ax.annotate(str(p["budget"]), (x, y), textcoords="offset points", xytext=(3, 3), fontsize=6)
    ax.set_xscale("log", base=2)
    return finish_accuracy_plot(fig, ax, path, "generated tokens per problem",
                                title or "accuracy against generated tokens")
