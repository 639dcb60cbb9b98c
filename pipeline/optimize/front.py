"""The Pareto front of accuracy (higher is better), latency and size (lower is better): which points no other point
beats on all three, as a table (Markdown) and a picture (PNG). Pure functions; matplotlib only inside `plot`."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

AXES = (("accuracy", True), ("latency_ms", False), ("size_mb", False))  # (key, higher is better)


def dominates(a: dict, b: dict, axes=AXES) -> bool:
    """a is at least as good as b on every axis and better on one."""
    better = False
    for key, up in axes:
        x, y = a[key], b[key]
        if (x < y) if up else (x > y):
            return False
        if x != y:
            better = True
    return better


def non_dominated(points: Sequence[dict], axes=AXES) -> list[int]:
    """Indices of the points no other point dominates (ties: both stay)."""
    return [i for i, p in enumerate(points) if not any(dominates(q, p, axes) for j, q in enumerate(points) if j != i)]


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def trials_markdown(trials: list[dict]) -> str:
    head = ["trial", "blocks removed", "channels", "allocation", "MACs M", "params M", "search top-1 %", "drop pts",
            "latency ms (proxy)", "int8 MB (est.)", "feasible", "front", "step"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for t in trials:
        cells = [t["number"], t["params"]["blocks"], f"-{100 * t['params']['ratio']:.0f}%", t["params"]["allocation"],
                 f"{t['macs'] / 1e6:.1f}", f"{t['parameters'] / 1e6:.3f}", f"{100 * t['accuracy']:.2f}",
                 f"{t['drop']:.2f}", f"{t['latency_ms']:.3f}", f"{t['size_mb']:.2f}", "yes" if t["feasible"] else "no",
                 "yes" if t.get("front") else "", t.get("step", "")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def final_markdown(rows: list[dict], latency_word: str) -> str:
    head = ["model", "candidate", "backend", "settings", "MB", "top-1 %", "drop pts", f"{latency_word} ms (interval)",
            "vs fastest peer int8", "front", "within budget", "chosen"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in sorted(rows, key=lambda r: (r.get("latency_ms") is None, r.get("latency_ms") or 0)):
        if r.get("not_runnable"):
            lines.append("| " + " | ".join([r["model"], r["name"], r.get("backend", ""), "", "-", "-", "-", "-", "-",
                                            "", "-", str(r["not_runnable"]).replace("|", "/")]) + " |")
            continue
        iv = r.get("latency_interval")
        lat = _fmt(r.get("latency_ms"), ".3f") + (f" ({iv[0]:.3f}-{iv[1]:.3f})" if iv else "")
        sp, spi = r.get("speedup_vs_peer"), r.get("speedup_vs_peer_interval")
        vs = "-" if sp is None else f"{sp:.2f}x" + (f" ({spi[0]:.2f}-{spi[1]:.2f})" if spi else "")
        chosen = "**chosen**" if r.get("chosen") else ("peer default" if r.get("peer") else r.get("why_not", ""))
        lines.append("| " + " | ".join([r["model"], r["name"], r.get("backend", ""), r.get("settings", ""),
                                        f"{r['size_bytes'] / 1e6:.3g}", f"{100 * r['accuracy']:.2f}",
                                        f"{r['drop']:.2f}", lat, vs, "yes" if r.get("front") else "",
                                        "yes" if r.get("within_budget") else "no", chosen]) + " |")
    return "\n".join(lines) + "\n"


def plot(path: Path, trials: list[dict], rows: list[dict], reference_accuracy: float, budget_points: float,
         latency_word: str, title: str) -> None:
    """Two panels: the search (proxy accuracy vs proxy latency per trial) and the finalists' deployed models
    (validation accuracy vs latency, marker area ~ size, peers and the chosen model marked), front joined."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5.2))
    for feasible, color, label in ((True, "#4477aa", "feasible"), (False, "#bbbbbb", "misses a budget")):
        pts = [t for t in trials if t["feasible"] == feasible]
        ax1.scatter([t["latency_ms"] for t in pts], [100 * t["accuracy"] for t in pts], c=color, label=label, s=30)
    front = sorted((t for t in trials if t.get("front")), key=lambda t: t["latency_ms"])
    ax1.plot([t["latency_ms"] for t in front], [100 * t["accuracy"] for t in front], "-", c="#4477aa", lw=1)
    for t in trials:
        ax1.annotate(str(t["number"]), (t["latency_ms"], 100 * t["accuracy"]), fontsize=7, alpha=0.7)
    ax1.set(xlabel="latency ms (proxy)", ylabel="top-1 % (search split, short fine-tune)", title="search (proxies)")
    ax1.legend(fontsize=8)
    timed = [r for r in rows if r.get("latency_ms") is not None and r.get("accuracy") is not None]
    for r in timed:
        style = ("*", "#ee6677", 220) if r.get("chosen") else ("s", "#999933", 60) if r.get("peer") else \
            ("o", "#228833" if r.get("front") else "#88ccee", 20 + 40 * r["size_bytes"] / 1e6)
        ax2.scatter([r["latency_ms"]], [100 * r["accuracy"]], marker=style[0], c=style[1], s=min(style[2], 400),
                    edgecolors="k", linewidths=0.4)
        ax2.annotate(f"{r['model']}/{r['name']}", (r["latency_ms"], 100 * r["accuracy"]), fontsize=6, alpha=0.8)
    fr = sorted((r for r in timed if r.get("front")), key=lambda r: r["latency_ms"])
    ax2.plot([r["latency_ms"] for r in fr], [100 * r["accuracy"] for r in fr], "-", c="#228833", lw=1)
    ax2.axhline(100 * reference_accuracy - budget_points, ls="--", c="#ee6677", lw=0.8,
                label=f"budget: {budget_points:g} pts below the unmodified fp32")
    ax2.set(xlabel=f"latency ms ({latency_word})", ylabel="top-1 % (validation split)",
            title="deployed (star: chosen, squares: peer defaults of the unmodified model)")
    ax2.legend(fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
