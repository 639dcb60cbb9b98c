"""summary.json as types: written once by pipeline.report.summary, read by everything else (console, MLflow, registry,
compare, verify, sweeps) through `Summary.load` / `Summary.from_dict`. Imports no ML framework.

The facts about a model (`ArtifactRow`: what it is and what the stages measured) and the judge's decision about it
(`Verdict`, made by pipeline.report.judge) are separate types: nothing mutates a row after it is built. Every field
has a one-line description in its `metadata["doc"]`; `field_table()` renders them for the docs, so the documented
contract is the code's.
"""
from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 3  # 3: verdicts under `verdict` (status pass/fail/n/a, checks), `accuracy_na`, no row-level `ok`
PASS, FAIL, NA = "pass", "fail", "n/a"


class SchemaError(ValueError):
    """A summary.json this version cannot read (another schema_version, or not a summary at all)."""


def doc(text: str, default: Any = MISSING, factory: Any = MISSING):
    kw = {"metadata": {"doc": text}}
    if factory is not MISSING:
        kw["default_factory"] = factory
    elif default is not MISSING:
        kw["default"] = default
    return field(**kw)


@dataclass(frozen=True)
class Check:
    """One rule applied to one model."""

    name: str = doc("accuracy_drop | speed | parity | metric | latency_ms | fps | model_mb | ram_mb")
    ok: bool = doc("whether the model meets it")
    message: str = doc("what was compared, in words (the reason when it failed)")
    value: float | None = doc("the model's number", None)
    limit: float | None = doc("the budget or threshold", None)
    unit: str = doc("unit of value and limit", "")
    source: str = doc("where the value comes from (measured on ..., estimate for ..., parity against ...)", "")


@dataclass(frozen=True)
class Verdict:
    """The judge's decision about one model (pipeline.report.judge): every check, and one status."""

    status: str = doc("pass (every check holds) | fail (a check failed) | n/a (its task metric cannot be computed "
                      "here; never a pass)")
    problems: list[str] = doc("why it is not a pass: each failed check's message, or the n/a reason", factory=list)
    checks: list[Check] = doc("every rule applied to it", factory=list)
    not_checked: list[str] = doc("budgets with no number to check (e.g. no latency for the device)", factory=list)
    baseline: str | None = doc("the model its ratios and accuracy drop are taken against", None)
    speedup: float | None = doc("baseline p50 / this p50, measured side by side on this host", None)
    speedup_ci: list[float] | None = doc("interval of the speed-up from interleaved trials", None)
    speed_verdict: str | None = doc("faster | slower | no measurable difference (from the interval)", None)
    size_ratio: float | None = doc("this file's size / the baseline's", None)
    accuracy_delta: float | None = doc("points of the task metric against the baseline (negative: a loss)", None)

    @property
    def ok(self) -> bool:
        return self.status == PASS


@dataclass(frozen=True)
class Release:
    """The release gate's decision (pipeline.report.release): this run's deployable model against a registry version
    (the champion), each quantity with its noise; a regression only where the interval says so."""

    against: str = doc("what it was compared with, e.g. champion v3 of tiny_int8-host")
    status: str = doc("pass (no regression beyond the noise) | fail (a regression) | n/a (nothing to compare with)")
    headline: str = doc("no measurable change | improved: ... | regression: ... (one phrase)")
    checks: list[Check] = doc("accuracy, latency, size, device estimate: each compared, with the interval used",
                              factory=list)
    regressions: list[str] = doc("what got worse beyond the noise", factory=list)
    improvements: list[str] = doc("what got better beyond the noise", factory=list)
    not_checked: list[str] = doc("quantities with no number on one side, and why", factory=list)
    report: str | None = doc("the Markdown report (a pull-request comment)", None)

    @property
    def passed(self) -> bool:
        return self.status != FAIL


@dataclass(frozen=True)
class ArtifactRow:
    """One model the run produced: what it is and what the stages found about it. Facts only."""

    name: str = doc("the stage that made it (also the artifact's name)")
    stage: str = doc("same as name")
    type: str = doc("the resolved stage type (e.g. quantize_tflite)")
    format: str = doc("torch | keras | onnx | tflite | coreml | executorch | openvino")
    precision: str = doc("fp32 | fp16 | bf16 | int8 | default ...")
    path: str = doc("the file (or package folder) relative to the run folder")
    size_bytes: int = doc("size on disk (an OpenVINO IR counts its .bin)")
    sha256: str | None = doc("sha256 of the file, or of a folder's files (edge-pipeline verify checks it)", None)
    cache_key: str = doc("the cache key of the stage that made it", "")
    accuracy: float | None = doc("the task's primary metric on the validation split, a fraction (top-1, mAP, mIoU)",
                                 None)
    accuracy_na: str | None = doc("why the metric cannot be computed for this model here (shown as n/a)", None)
    latency_ms: dict | None = doc("measured on this host: p50, p90, p50_ci", None)
    ratio_ci: dict | None = doc("interval of (other model's p50 / this p50), per model timed side by side", None)
    load_ms: float | None = doc("load time plus the first inference, host", None)
    load_rss_mb: float | None = doc("resident memory the load added, host", None)
    runtime: str | None = doc("the runtime that ran it (timing, else evaluation)", None)
    measured_on: str | None = doc("where the host latency was measured: CPU, runtime, threads, batch", None)
    latency_source: str | None = doc("host | device", None)
    device_latency_ms: dict | None = doc("measured on the device itself over device.connection: p50, p90 (None where "
                                         "the device's tool measures no percentiles), mean, min, max", None)
    device_load_ms: float | None = doc("load time on the device", None)
    measured_on_device: dict | None = doc("device, connection, runtime, version, threads of that measurement", None)
    estimate: dict | None = doc("latency estimate for the device (never a measurement): latency_ms, interval, label, "
                                "fitted_on", None)
    no_estimate: str | None = doc("why there is no estimate", None)
    coverage: str | None = doc("accelerator coverage in words", None)
    ram_estimate_mb: float | None = doc("inference memory estimate for the device", None)
    parity: dict | None = doc("agreement with the model it was made from (ok, problems, per-output metrics)", None)
    not_runnable: str | None = doc("why this host cannot run it (Core ML off macOS)", None)
    facts: dict = doc("format facts read from the file: integer_only, float_operators, weight_share_by_dtype",
                      factory=dict)
    selection: dict | None = doc("the measured choice: every candidate with its numbers", None)
    pruning: dict | None = doc("what pruning did to it (inherited by its exports)", None)
    optimization: dict | None = doc("the device-aware search's record for the chosen model", None)
    notes: list[str] = doc("facts in words (e.g. the pruning pay-off check)", factory=list)
    verdict: Verdict = doc("the judge's decision", factory=lambda: Verdict(status=NA))

    @property
    def ok(self) -> bool:
        return self.verdict.ok

    def metric_text(self, spec: str = ".2f") -> str:
        """The task metric as a percentage, "n/a" with no reason attached (the reason is a note), or "-"."""
        if self.accuracy is not None:
            return format(100 * self.accuracy, spec)
        return "n/a" if self.accuracy_na else "-"


@dataclass(frozen=True)
class StageRow:
    name: str = doc("task name (per-input stages: evaluate[quantize])")
    type: str = doc("resolved stage type")
    status: str = doc("ran | reused | failed | interrupted")
    seconds: float = doc("wall time")
    cache_key: str = doc("its cache key")
    reason: str = doc("why it ran or was reused")
    inputs: list[str] = doc("upstream stages", factory=list)
    metrics: dict = doc("its metrics as logged to MLflow", factory=dict)
    error: str | None = doc("the failure, if it failed", None)


@dataclass(frozen=True)
class Gate:
    """The run's verdict: the judged artifact's (gate.artifact, else the end of the chain)."""

    artifact: str | None = doc("the artifact the run is judged on")
    status: str = doc("its verdict status: pass | fail | n/a")
    failed: list[str] = doc("its problems", factory=list)
    budgets: dict = doc("the budgets in force (gate.* over the device's defaults)", factory=dict)
    enforce: bool = doc("gate.enforce: a run whose judged artifact is not a pass exits 1", False)

    @property
    def passed(self) -> bool:
        return self.status == PASS


@dataclass
class Summary:
    """summary.json. Built once by pipeline.report.summary; `objective` and `registry` are filled in by the app and
    the registry listener before it is written."""

    recipe: str = doc("recipe name")
    task: dict = doc("name and metric: `accuracy` of every row is this metric")
    device: dict = doc("name, display_name, runtime")
    status: str = doc("success | failed | killed")
    run_dir: str = doc("the run folder")
    artifacts: list[ArtifactRow] = doc("one row per produced model, in plan order", factory=list)
    stages: list[StageRow] = doc("one entry per task", factory=list)
    gate: Gate | None = doc("the run's verdict", None)
    objective: dict = doc("metrics, directions and values of the judged artifact (what sweeps rank by)",
                          factory=dict)
    error: str | None = doc("why the run failed", None)
    mlflow: dict = doc("tracking_uri, experiment, run_id", factory=dict)
    registry: dict | None = doc("what the model registry did with the judged artifact", None)
    formats: list[dict] = doc("cross-format benchmarks (benchmark_formats): one model in every format and precision, "
                              "each candidate's status, size, metric, p50 with its interval, FPS and speed-up",
                              factory=list)
    release: Release | None = doc("the release gate against a registry version (gate.against): verdict, checks, "
                                  "report", None)
    summary_sha256: str | None = doc("digest of the other fields as written (verify tells an edited summary)", None)
    schema_version: int = doc("layout version of this file", SCHEMA_VERSION)

    def row(self, name: str | None) -> ArtifactRow | None:
        return next((a for a in self.artifacts if a.name == name), None)

    @property
    def judged(self) -> ArtifactRow | None:
        return self.row(self.gate.artifact) if self.gate else None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Any, where: str = "summary.json") -> "Summary":
        if not isinstance(d, dict) or "schema_version" not in d:
            raise SchemaError(f"{where}: not a pipeline summary (no schema_version)")
        if d["schema_version"] != SCHEMA_VERSION:
            raise SchemaError(f"{where}: schema_version {d['schema_version']!r}, this version reads "
                              f"{SCHEMA_VERSION}; it was written by another version of edge-pipeline: re-run the "
                              f"recipe to get a summary this version can read")
        try:
            kw = _known(cls, d)
            kw["artifacts"] = [_row(a) for a in d.get("artifacts") or []]
            kw["stages"] = [StageRow(**_known(StageRow, s)) for s in d.get("stages") or []]
            kw["gate"] = Gate(**_known(Gate, d["gate"])) if d.get("gate") else None
            kw["release"] = _release(d["release"]) if d.get("release") else None
            return cls(**kw)
        except (TypeError, KeyError, AttributeError) as e:
            raise SchemaError(f"{where}: malformed ({type(e).__name__}: {e})") from None

    @classmethod
    def load(cls, path: Path | str) -> "Summary":
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise SchemaError(f"{p}: unreadable ({e})") from None
        return cls.from_dict(d, str(p))


def _known(cls, d: dict) -> dict:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


def _row(a: dict) -> ArtifactRow:
    kw = _known(ArtifactRow, a)
    v = dict(a.get("verdict") or {"status": NA})
    v["checks"] = [Check(**_known(Check, c)) for c in v.get("checks") or []]
    kw["verdict"] = Verdict(**_known(Verdict, v))
    return ArtifactRow(**kw)


def _release(d: dict) -> Release:
    kw = _known(Release, d)
    kw["checks"] = [Check(**_known(Check, c)) for c in d.get("checks") or []]
    return Release(**kw)


def field_table(cls=ArtifactRow) -> str:
    """A Markdown table of a type's fields and their one-line docs (the docs' summary.json page is made of these)."""
    lines = ["| field | meaning |", "|---|---|"]
    lines += [f"| `{f.name}` | {f.metadata.get('doc', '')} |" for f in fields(cls)]
    return "\n".join(lines)


def field_tables() -> str:
    """Every table of summary.json's layout, as docs/summary-json.md holds it between its markers."""
    parts = [(Summary, "summary.json"), (ArtifactRow, "each entry of `artifacts`"), (Verdict, "`verdict`"),
             (Check, "each entry of `verdict.checks`"), (Gate, "`gate`"), (StageRow, "each entry of `stages`")]
    return "\n\n".join(f"{title}:\n\n{field_table(cls)}" for cls, title in parts)


if __name__ == "__main__":
    print(field_tables())
