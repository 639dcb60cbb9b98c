"""The run card's pictures (PNG, matplotlib imported lazily with the Agg backend):

- `tradeoff`: the run's models as points, accuracy against host latency (bars: the p50's 95% interval) and against
  size, the Pareto front of each panel drawn (report.leaderboard's front); without a metric (an untrained model), size
  against latency. The models are the cross-format candidates when the run has a table of them (timed side by side in
  one process), else every artifact timed by the benchmark stage.
- `top_layers`: the 10 costliest layers of the fp32 model and of the int8 model, side by side on one scale, from what
  the profile stage wrote (estimated ms per fused kernel for the device; where there is no estimate, the bytes each
  layer reads and writes).
"""
from __future__ import annotations

import json
from pathlib import Path

from pipeline.report import crossformat
from pipeline.report.leaderboard import pareto_front
from pipeline.report.schema import Summary

SHAPES = {"fp32": "o", "fp16": "s", "bf16": "s", "int8": "^"}


def points(summary: Summary) -> list[dict]:
    """{label, precision, accuracy (0-1 or None), p50, ci, size_mb, ok} of every model to plot."""
    out = []
    for doc in crossformat.tables(summary):
        for r in doc["rows"]:
            if r.get("status", "ran") == "ran" and r.get("latency_p50_ms") is not None:
                out.append({"label": r["name"], "precision": r["precision"], "accuracy": r.get("accuracy"),
                            "p50": r["latency_p50_ms"], "ci": (r.get("latency_p50_ci") or [None, None])[:2],
                            "size_mb": r["size_bytes"] / 1e6, "ok": r.get("passed", True)})
    if out:
        return out
    for a in summary.artifacts:
        if a.latency_ms and a.latency_ms.get("p50") is not None:
            out.append({"label": f"{a.name} ({a.format} {a.precision})", "precision": a.precision,
                        "accuracy": a.accuracy, "p50": a.latency_ms["p50"],
                        "ci": (a.latency_ms.get("p50_ci") or [None, None])[:2], "size_mb": a.size_bytes / 1e6,
                        "ok": a.verdict.ok})
    return out


def _panel(ax, pts: list[dict], x_of, y_of, xlabel: str, ylabel: str, errors: bool) -> None:
    """One scatter panel: lower x and higher y are better; the Pareto front ringed and joined."""
    front = pareto_front([(x_of(p), y_of(p)) for p in pts])
    if front:
        fx, fy = [x_of(pts[i]) for i in front], [y_of(pts[i]) for i in front]
        ax.step(fx, fy, where="post", color="crimson", lw=2, alpha=0.85, zorder=1)
        ax.scatter(fx, fy, s=230, facecolors="none", edgecolors="crimson", linewidths=1.8, zorder=2)
    for k, p in enumerate(pts, start=1):
        x, y = x_of(p), y_of(p)
        lo, hi = p["ci"]
        if errors and lo is not None:
            ax.errorbar(x, y, xerr=[[max(x - lo, 0)], [max(hi - x, 0)]], fmt="none", ecolor="0.45", lw=1, capsize=3,
                        zorder=2)
        ax.scatter(x, y, s=70, marker=SHAPES.get(p["precision"], "D"), zorder=3, edgecolors="black",
                   facecolors="#4477aa" if p["ok"] else "white")
        ax.annotate(str(k), (x, y), xytext=(5, 4), textcoords="offset points", fontsize=8, zorder=4)
    lo, hi = ax.get_ylim()
    if ylabel.endswith("(%)") and hi > 100:  # a percentage axis stops at 100
        ax.set_ylim(lo, 100.5)
    ax.set_xlabel(xlabel, fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.grid(True, alpha=0.3)
    ax.tick_params(labelsize=7)


def tradeoff(summary: Summary, path: Path) -> Path | None:
    """The accuracy-vs-latency-and-size picture, or None when no model of the run was timed."""
    pts = points(summary)
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    metric = summary.task.get("metric") or "top-1"
    scored = [p for p in pts if p["accuracy"] is not None]
    lat = "latency p50 (ms), measured on this host; bars: 95% interval"
    fig_h = 4.9 + 0.14 * len(pts)
    fig = plt.figure(figsize=(11, fig_h), dpi=100)
    top = 1 - 0.5 / fig_h
    height = 3.3 / fig_h
    if scored:
        acc = lambda p: 100 * p["accuracy"]
        ax1 = fig.add_axes([0.07, top - height, 0.42, height])
        ax2 = fig.add_axes([0.56, top - height, 0.42, height], sharey=ax1)
        _panel(ax1, scored, lambda p: p["p50"], acc, lat, f"{metric} (%)", True)
        _panel(ax2, scored, lambda p: p["size_mb"], acc, "size on disk (MB)", f"{metric} (%)", False)
        fig.suptitle(f"{summary.recipe}: {metric} against latency and size (ringed: Pareto front)", fontsize=10)
        listed = scored
    else:
        ax = fig.add_axes([0.07, top - height, 0.9, height])
        # lower size and lower latency are both better: the front of (latency, -size), drawn with size upside down
        _panel(ax, pts, lambda p: p["p50"], lambda p: -p["size_mb"], lat, "size on disk (MB, smaller upwards)", True)
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{-v:g}"))
        fig.suptitle(f"{summary.recipe}: size against latency ({metric} n/a; ringed: Pareto front)", fontsize=10)
        listed = pts
    lines = [f"{k:>2}  {p['label']}: " + ("" if p["accuracy"] is None else f"{100 * p['accuracy']:.2f}%, ")
             + f"{p['p50']:.3g} ms, {p['size_mb']:.2f} MB" for k, p in enumerate(listed, start=1)]
    fig.text(0.07, top - height - 0.75 / fig_h, "\n".join(lines), va="top", fontsize=7.5, family="monospace")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _profile(run_dir: Path, name: str) -> dict | None:
    p = run_dir / "reports" / f"profile[{name}]" / "profile.json"
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def _costs(doc: dict, use_estimate: bool) -> list[tuple[str, float]]:
    if use_estimate:
        return [(f"{k['kernel'][:26]} ({'+'.join(k['ops'])[:22]})", k["latency_ms"]) for k in doc["kernels"]]
    return [(f"{l['name'][:26]} ({l['op'][:22]})", (l["weight_bytes"] + l["input_bytes"] + l["output_bytes"]) / 1e6)
            for l in doc["layers"]]


def top_layers(summary: Summary, run_dir: Path, path: Path, n: int = 10) -> Path | None:
    """The n costliest layers of the judged int8 model and of its fp32 baseline, side by side on one scale; None when
    the run has no such pair with profiles."""
    row = summary.judged
    base = summary.row(row.verdict.baseline) if row else None
    if row is None or base is None or base is row:
        return None
    docs = {a.name: _profile(run_dir, a.name) for a in (base, row)}
    if not all(d and (d.get("kernels") or d.get("layers")) for d in docs.values()):
        return None
    use_estimate = all(d.get("kernels") for d in docs.values())
    costs = {k: sorted(_costs(d, use_estimate), key=lambda c: -c[1])[:n] for k, d in docs.items()}
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 1.6 + 0.3 * n), sharex=True, dpi=100)
    for ax, a in zip(axes, (base, row)):
        c = costs[a.name]
        ax.barh(range(len(c)), [v for _, v in c], color="#4477aa" if a.precision == "fp32" else "#ee7733")
        ax.set_yticks(range(len(c)))
        ax.set_yticklabels([label for label, _ in c], fontsize=7)
        ax.invert_yaxis()
        total = sum(v for _, v in _costs(docs[a.name], use_estimate))
        ax.set_title(f"{a.name} ({a.format} {a.precision}): top {len(c)} of {total:.3g} "
                     + ("ms" if use_estimate else "MB"), fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
        ax.grid(True, axis="x", alpha=0.3)
    unit = (f"estimated ms per fused kernel on {summary.device.get('display_name')} (an estimate, not a measurement)"
            if use_estimate else "MB each layer reads and writes (weights + activations; no latency estimate for "
                                 f"{summary.device.get('display_name')})")
    fig.supxlabel(unit, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
