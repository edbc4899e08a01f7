"""The evaluation plot: accuracy against k for pass@k and maj@k, with greedy and CoT-decoding as lines."""

from __future__ import annotations

from pathlib import Path


def plot_accuracy_vs_k(result: dict, path: str | Path, title: str | None = None) -> Path:
    """Write a PNG of pass@k and maj@k against k (log2 axis) from an eval result; returns the path.

    `result` is run_eval's dict: optional sections "greedy", "sampled" and "cot_decoding"."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sampled = result.get("sampled") or {}
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
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
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title or "accuracy against k")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
