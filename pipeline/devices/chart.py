"""Per-layer latency bar chart (PNG). matplotlib is imported here only, with the Agg backend (no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Any


def bar_chart(path: Path, title: str, labels: list[str], values: list[float], colors: list[str], xlabel: str,
              legend: dict[str, str] | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    n = max(len(values), 1)
    fig, ax = plt.subplots(figsize=(9, min(2 + 0.18 * n, 30)))
    y = list(range(len(values)))
    ax.barh(y, values, color=colors)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=6)
    ax.invert_yaxis()  # first layer at the top
    ax.set_xlabel(xlabel)
    ax.set_title(title, fontsize=9)
    if legend:
        ax.legend(handles=[Patch(color=c, label=l) for l, c in legend.items()], fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


CLASS_COLORS = {"conv": "#4477aa", "depthwise": "#66ccee", "memory": "#ccbb44"}


def latency_chart(path: Path, title: str, per_kernel: list[dict[str, Any]]) -> Path:
    labels = [f"{k['kernel'][:28]} ({'+'.join(k['ops'])[:30]})" for k in per_kernel]
    return bar_chart(path, title, labels, [k["latency_ms"] for k in per_kernel],
                     [CLASS_COLORS.get(k["class"], "#999999") for k in per_kernel],
                     "estimated latency per fused kernel (ms) - an estimate, not a measurement",
                     {"conv / fully connected": CLASS_COLORS["conv"], "depthwise conv": CLASS_COLORS["depthwise"],
                      "memory-bound (add, pool, softmax ...)": CLASS_COLORS["memory"]})


def macs_chart(path: Path, title: str, layers: list[dict[str, Any]]) -> Path:
    shown = [l for l in layers if l["macs"]]
    return bar_chart(path, title, [f"{l['name'][:28]} ({l['op']})" for l in shown], [l["macs"] / 1e6 for l in shown],
                     ["#4477aa"] * len(shown), "MMACs per layer (no device model: latency is measured by benchmark)")
