"""MLflow as a report: what the tracking listener logs so that a run reads like one. Pure functions over the
resolved config and summary.json, plus two that write through an MlflowClient. mlflow is imported lazily.

- `curated_params`: at most ~30 parameters: the recipe's knobs (model, data, seed, each stage's settings), the
  command-line overrides, the device by name and a few facts; `device_catalog_json` holds the whole device entry as
  one artifact instead of 40-60 `device.*` strings.
- `run_name`: the recipe, the device and the overrides that make this run different (`mobilenet_int8@pixel7
  calib=64`), so the jobs of a sweep are told apart in every MLflow list.
- `card_markdown` / `card_html`: the summary table (every artifact: format, precision, size, top-1 %, host p50 with
  its interval, device estimate, gate, file) and the plots, for the parent run; `log_card` logs both and sets the run
  description.
- `log_logged_models`: one MLflow 3 LoggedModel per artifact with its metrics linked (searchable per model:
  `client.search_logged_models([exp], filter_string="metrics.top1_pct > 95")`).
Accuracy is a percentage everywhere here (`top1_pct`), like on the console.
"""
from __future__ import annotations

import base64
import html as html_mod
import json
import mimetypes
import re
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from pipeline.report.schema import ArtifactRow, Summary

MAX_PARAMS = 30
# Short names for the run name; anything else keeps its last key component.
ABBREV = {"calibration_samples": "calib", "width_mult": "width", "input_size": "px", "learning_rate": "lr",
          "per_channel": "per_ch", "activation_type": "act", "weight_type": "w", "max_accuracy_drop": "max_drop",
          "epochs": "ep", "batch_size": "bs", "temperature": "T"}
DEVICE_FACTS = ("name", "display_name", "runtime", "soc", "threads", "formats", "estimate_unit")
IGNORED_OVERRIDES = ("paths.", "hydra.", "tracking.", "verbose")


def _plain(cfg: Any) -> Any:
    """A DictConfig (resolved) or a dict -> plain containers."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf

        if isinstance(cfg, (DictConfig, ListConfig)):
            return OmegaConf.to_container(cfg, resolve=True)
    except ImportError:  # pragma: no cover - omegaconf is a core dependency
        pass
    return cfg


def _value(v: Any) -> Any:
    """A device figure is often {value, source}: its value is the parameter."""
    if isinstance(v, dict) and "value" in v:
        return v["value"]
    return v


def _override_tokens(overrides: Iterable[str] | str | None) -> list[str]:
    if not overrides:
        return []
    tokens = overrides.split() if isinstance(overrides, str) else list(overrides)
    return [t for t in tokens if "=" in t and not t.lstrip("+~").startswith(IGNORED_OVERRIDES)]


def curated_params(cfg: Any, overrides: Iterable[str] | str | None = None,
                   max_params: int = MAX_PARAMS) -> tuple[dict[str, str], dict[str, Any]]:
    """(params for the run, the rest): the recipe's knobs and the device by name, at most `max_params`.

    Order of precedence when there are more: the overrides of this run, recipe/model/data/seed, the device facts,
    then each stage's settings in recipe order. What does not fit goes into the second dict (log it as one JSON
    artifact with the device catalogue). Values are strings (what MLflow stores).
    """
    c = _plain(cfg) or {}
    picked: dict[str, Any] = {}
    shown = {"recipe", "seed", "device", "model", "data", "model.name", "device.name", "data.name", "model.input_size",
             "model.width_mult", "data.path", "data.max_per_class"}
    for t in _override_tokens(overrides):
        k, _, v = t.lstrip("+~").partition("=")
        if k not in shown and not k.startswith("stages."):  # those are parameters of their own already
            picked[f"override.{k}"] = v
    picked["recipe"] = c.get("recipe")
    model = c.get("model") or {}
    for k in ("name", "input_size", "width_mult"):
        if k in model:
            picked[f"model.{k}"] = model[k]
    data = c.get("data") or {}
    for k in ("name", "path", "max_per_class"):
        if data.get(k) is not None:
            picked[f"data.{k}"] = data[k]
    if "seed" in c:
        picked["seed"] = c["seed"]
    device = c.get("device") or {}
    for k in DEVICE_FACTS:
        if device.get(k) is not None:
            picked[f"device.{k}"] = _value(device[k])
    if device.get("ram_gb") is not None:
        picked["device.ram_gb"] = _value(device["ram_gb"])
    stages = c.get("stages") or {}
    stage_params: dict[str, Any] = {}
    for name, st in stages.items():
        if not isinstance(st, dict):
            continue
        for k, v in st.items():
            if k == "inputs":
                continue
            stage_params[f"stages.{name}.{k}"] = v
    params: dict[str, str] = {}
    rest: dict[str, Any] = {}
    for k, v in list(picked.items()) + list(stage_params.items()):
        if v is None:
            continue
        s = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
        if len(params) < max_params:
            params[k] = s[:6000]
        else:
            rest[k] = v
    return params, rest


def device_catalog_json(cfg: Any, rest: dict[str, Any] | None = None) -> str:
    """The whole device entry (every figure with its source) and the parameters that did not fit, as one JSON
    document: log it as the artifact `device.json` instead of one parameter per figure."""
    c = _plain(cfg) or {}
    return json.dumps({"device": c.get("device"), "gate": c.get("gate"), "more_params": rest or {}}, indent=2,
                      default=str, sort_keys=False)


def run_name(recipe: str, device: str, overrides: Iterable[str] | str | None = None, max_len: int = 100,
             run_id: str | None = None) -> str:
    """`mobilenet_int8@pixel7 calib=64 method=entropy #02408d`: the overrides that make this run different, shortened,
    and the id of its run folder (outputs/runs/<recipe>/<stamp>-<device>-<id>), so that repeated runs differ."""
    parts = []
    for t in _override_tokens(overrides):
        key, _, value = t.lstrip("+~").partition("=")
        if key in ("recipe", "device"):
            continue
        last = key.rsplit(".", 1)[-1]
        parts.append(f"{ABBREV.get(last, last)}={value}")
    name = f"{recipe}@{device}" + ("" if not parts else " " + " ".join(parts))
    tail = f" #{run_id}" if run_id else ""
    return name + tail if len(name + tail) <= max_len else name[: max_len - 1 - len(tail)] + "…" + tail


def description(summary: Summary, recipe_description: str | None = None) -> str:
    """The run description (Markdown, MLflow's `mlflow.note.content`): what the recipe does and what came out."""
    lines = []
    if recipe_description:
        lines.append(recipe_description.strip())
    dev, final = summary.device, summary.judged
    lines.append(f"Recipe `{summary.recipe}` for {dev.get('display_name') or dev.get('name')} "
                 f"({dev.get('runtime', '-')}), status **{summary.status}**.")
    if final:
        lines.append(f"Judged artifact: `{final.name}` ({final.format} {final.precision}, {_mb(final)} MB) at "
                     f"`{final.path}`, verdict **{final.verdict.status}**"
                     + "".join(f"; {p}" for p in final.verdict.problems) + ".")
    lines.append("The summary card (summary_card.html, summary_card.md) lists every artifact.")
    return "\n\n".join(lines)


# --- the summary card -------------------------------------------------------------------------------------------
def card_head(summary: Summary) -> list[str]:
    metric = summary.task.get("metric") or "top-1"
    return ["stage", "format", "precision", "size MB", f"{metric} %", "host p50 ms (95% CI)", "speed-up",
            "device est. ms*", "verdict", "file"]


def _mb(a: ArtifactRow) -> str:
    return f"{a.size_bytes / 1e6:.2f}"


def _p50(a: ArtifactRow) -> str:
    lat = a.latency_ms or {}
    if lat.get("p50") is None:
        return "not run here" if a.not_runnable else "-"
    ci = lat.get("p50_ci")
    return f"{lat['p50']:.3g}" + (f" ({ci[0]:.3g}-{ci[1]:.3g})" if ci else "")


def card_rows(summary: Summary) -> list[list[str]]:
    rows = []
    for a in summary.artifacts:
        est = (a.estimate or {}).get("latency_ms")
        v = a.verdict
        status = {"pass": "✓ pass", "fail": "✗ FAIL: ", "n/a": "n/a: "}[v.status] + "; ".join(v.problems)
        rows.append([a.name, a.format, a.precision, _mb(a), a.metric_text(), _p50(a),
                     "" if not v.speedup else f"{v.speedup:.2f}x", "-" if est is None else f"{est:.3g}", status,
                     a.path or "-"])
    return rows


def _notes(summary: Summary) -> list[str]:
    arts = summary.artifacts
    out = [f"latency: measured on {m}" for m in sorted({a.measured_on for a in arts if a.measured_on})]
    out += [f"* device est. ms: {l}" for l in sorted({a.estimate["label"] for a in arts
                                                       if a.estimate and a.estimate.get("label")})]
    final = summary.judged
    if final:
        out.append(f"judged artifact: {final.name} -> {final.path} (verdict {final.verdict.status})")
    return out


def card_markdown(summary: Summary, plots: dict[str, str] | None = None) -> str:
    """The summary as Markdown: a title, the table and its notes, the cross-format tables, and the plots as relative
    links to their files (written and logged next to the card under names of their own)."""
    from pipeline.report import crossformat

    def esc(c: str) -> str:
        return c.replace("|", "\\|")

    dev, head = summary.device, card_head(summary)
    lines = [f"# {summary.recipe} @ {dev.get('display_name') or dev.get('name')}", "", f"status: **{summary.status}**"]
    if summary.artifacts:
        lines += ["", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in card_rows(summary)]
    lines += [""] + [f"- {n}" for n in _notes(summary)]
    for doc in crossformat.tables(summary):
        lines += ["", crossformat.markdown(doc)]
    for title, path in (plots or {}).items():
        lines += ["", f"## {title}", "", f"![{title}]({Path(path).name})"]
    return "\n".join(lines) + "\n"


CARD_CSS = """body{font-family:"DejaVu Sans",Arial,sans-serif;margin:1.5em;color:#222}h1{font-size:20px}
table{border-collapse:collapse;font-size:13px}th,td{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}tr.bad td{color:#b00020}.note{color:#555;font-size:12px;margin:2px 0}
img{max-width:100%;border:1px solid #ddd;margin-top:.5em}"""


def card_html(summary: Summary, plots: dict[str, str] | None = None) -> str:
    """The summary as one self-contained HTML page (MLflow shows HTML artifacts inline): the cross-format tables, the
    plots embedded."""
    from pipeline.report import crossformat

    e = html_mod.escape
    dev = summary.device
    trs = []
    for a, r in zip(summary.artifacts, card_rows(summary)):
        cls = "" if a.verdict.ok else " class='bad'"
        trs.append(f"<tr{cls}>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>")
    imgs = []
    for title, path in (plots or {}).items():
        p = Path(path)
        if p.exists():
            mime = mimetypes.guess_type(p.name)[0] or "image/png"
            data = base64.b64encode(p.read_bytes()).decode()
            imgs.append(f"<h2>{e(title)}</h2><img alt='{e(title)}' src='data:{mime};base64,{data}'>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(summary.recipe)}</title>"
            f"<style>{CARD_CSS}</style></head><body>"
            f"<h1>{e(summary.recipe)} @ {e(str(dev.get('display_name') or dev.get('name')))}</h1>"
            f"<p>status: <b>{e(summary.status)}</b></p>"
            + (f"<table><thead><tr>{''.join(f'<th>{e(h)}</th>' for h in card_head(summary))}</tr></thead>"
               f"<tbody>{''.join(trs)}</tbody></table>" if summary.artifacts else "")
            + "".join(f"<p class='note'>{e(n)}</p>" for n in _notes(summary))
            + "".join(crossformat.html(doc) for doc in crossformat.tables(summary))
            + "".join(imgs) + "</body></html>")


CARD_DIR = "card"  # <run folder>/card: the card and its pictures, as logged on the parent run


def write_card(summary: Summary, run_dir: Path) -> dict[str, str]:
    """Draw the card's pictures into <run_dir>/card (the accuracy-vs-latency-and-size plot, the costliest layers of
    fp32 and int8, one profile picture per model named for it, the optimize stage's front) and write summary_card.md
    and .html beside them.
    Returns {title: picture path} (what `log_card` logs). A picture that cannot be drawn is left out, with a warning."""
    import logging
    import shutil

    from pipeline.report import figures

    out = Path(run_dir) / CARD_DIR
    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, str] = {}
    for title, draw in (("accuracy vs latency and size", lambda: figures.tradeoff(summary, out / "tradeoff.png")),
                        ("the 10 costliest layers, fp32 and int8",
                         lambda: figures.top_layers(summary, Path(run_dir), out / "top_layers.png"))):
        try:
            path = draw()
        except Exception as e:  # a picture is a by-product: the run and its numbers stand without it
            logging.getLogger("pipeline").warning("run card: could not draw %r: %s", title, e)
            continue
        if path is not None:
            plots[title] = str(path)
    for png in sorted(Path(run_dir).glob("reports/profile[[]*[]]/profile.png")):
        model = png.parent.name[len("profile["):-1]
        dest = out / f"profile_{re.sub(r'[^A-Za-z0-9_.-]+', '_', model)}.png"
        shutil.copyfile(png, dest)
        plots[f"profile of {model}"] = str(dest)
    for png in sorted(Path(run_dir).glob("artifacts/*/optimize_front.png")):  # the optimize stage's search front
        dest = out / f"optimize_front_{png.parent.name}.png"
        shutil.copyfile(png, dest)
        plots[f"{png.parent.name}: accuracy, latency and size front of the search"] = str(dest)
    (out / "summary_card.md").write_text(card_markdown(summary, plots))
    (out / "summary_card.html").write_text(card_html(summary, plots))
    return plots


def log_card(client, run_id: str, summary: Summary, plots: dict[str, str] | None = None,
             recipe_description: str | None = None) -> list[str]:
    """Log summary_card.html and .md (with the plots as files next to them) on a run and set its description.
    Returns the artifact paths written."""
    written = []
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "summary_card.html").write_text(card_html(summary, plots))
        (Path(d) / "summary_card.md").write_text(card_markdown(summary, plots))
        for name in ("summary_card.html", "summary_card.md"):
            client.log_artifact(run_id, str(Path(d) / name))
            written.append(name)
    for path in (plots or {}).values():
        if Path(path).exists():
            client.log_artifact(run_id, str(path))
            written.append(Path(path).name)
    client.set_tag(run_id, "mlflow.note.content", description(summary, recipe_description))
    return written


# --- MLflow 3 LoggedModels ------------------------------------------------------------------------------------------
def model_metrics(a: ArtifactRow) -> dict[str, float]:
    """The numbers of one artifact under plain names (the task metric in %, like the console)."""
    lat = a.latency_ms or {}
    est = (a.estimate or {}).get("latency_ms")
    v = a.verdict
    vals = {"top1_pct": None if a.accuracy is None else 100.0 * a.accuracy, "size_mb": a.size_bytes / 1e6,
            "latency_p50_ms": lat.get("p50"), "latency_p90_ms": lat.get("p90"),
            "latency_p50_ci_low_ms": (lat.get("p50_ci") or [None, None])[0],
            "latency_p50_ci_high_ms": (lat.get("p50_ci") or [None, None])[1],
            "speedup": v.speedup, "size_ratio": v.size_ratio,
            "device_estimate_ms": est if isinstance(est, (int, float)) else None, "verdict_pass": float(v.ok)}
    return {k: float(x) for k, x in vals.items() if isinstance(x, (int, float))}


def _model_name(recipe: str, artifact: str) -> str:
    """LoggedModel names: letters, digits, -, _ and . only."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{recipe}-{artifact}")[:200]


def log_logged_models(client, experiment_id: str, run_id: str, summary: Summary,
                      stage_runs: dict[str, str] | None = None) -> dict[str, str]:
    """One LoggedModel per artifact of `summary`: name `<recipe>-<artifact>`, tags (format, precision, device, stage,
    file, cache key), its metrics linked (logged to the artifact's stage run when `stage_runs` names it, else to
    `run_id`, each with model_id) and recorded as an output of `run_id`. Returns {artifact name: model_id}.

    The model files stay where the stage runs logged them (tag `artifact_path`); nothing is copied twice.
    """
    from mlflow.entities import LoggedModelOutput, Metric

    stage_runs = stage_runs or {}
    dev = summary.device.get("name", "")
    out: dict[str, str] = {}
    now = int(time.time() * 1000)
    outputs = []
    for a in summary.artifacts:
        source = stage_runs.get(a.stage)
        tags = {"format": a.format, "precision": a.precision, "device": dev, "stage": a.stage,
                "artifact_path": a.path or "", "cache_key": a.cache_key or "", "pipeline_run_id": run_id,
                "verdict": a.verdict.status, "recipe": summary.recipe}
        if a.measured_on:
            tags["measured_on"] = a.measured_on[:5000]
        params = {"format": a.format, "precision": a.precision, "runtime": str(a.runtime or "")}
        lm = client.create_logged_model(experiment_id, name=_model_name(summary.recipe, a.name),
                                        source_run_id=source or run_id, tags=tags, params=params,
                                        model_type=f"{a.format}-{a.precision}")
        metrics = model_metrics(a)
        target = source or run_id
        # on the shared parent run, plain names of several models would overwrite each other: prefix them there
        key = (lambda k: k) if source else (lambda k: f"{a.name}.{k}")
        ms = [Metric(key(k), v, now, 0, model_id=lm.model_id) for k, v in metrics.items()]
        if ms:
            client.log_batch(target, metrics=ms)
        client.finalize_logged_model(lm.model_id, "READY")
        outputs.append(LoggedModelOutput(lm.model_id, 0))
        out[a.name] = lm.model_id
    if outputs:
        client.log_outputs(run_id, outputs)
    return out
