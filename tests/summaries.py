"""summary.json documents for tests that need one without a run: built through the typed contract
(pipeline.report.schema), so a test can never hand a reader a shape the pipeline would not write."""
from __future__ import annotations

from dataclasses import asdict, fields

from pipeline.report.schema import SCHEMA_VERSION, ArtifactRow, Gate, Verdict

VERDICT_KEYS = {f.name for f in fields(Verdict)}
ROW_KEYS = {f.name for f in fields(ArtifactRow)}


def row(name: str, fmt: str, precision: str, size_bytes: int, accuracy=None, ok: bool = True, problems=(),
        **kw) -> dict:
    """One artifact row as summary.json holds it; verdict fields (speedup, size_ratio, baseline ...) may be passed
    flat and land under `verdict`."""
    verdict = {k: kw.pop(k) for k in list(kw) if k in VERDICT_KEYS}
    problems = list(problems) or ([] if ok else ["failed"])
    v = Verdict(**{"status": "pass" if ok else "fail", "problems": problems, **verdict})
    kw.setdefault("path", f"artifacts/{name}/model.{fmt}")
    unknown = set(kw) - ROW_KEYS
    assert not unknown, f"not summary.json row fields: {unknown}"
    return asdict(ArtifactRow(name=name, stage=name, type=name, format=fmt, precision=precision,
                              size_bytes=size_bytes, accuracy=accuracy, verdict=v, **kw))


def summary(artifacts: list[dict], judged: str | None = None, **kw) -> dict:
    """A whole summary.json: the run's gate is the judged (default: last) row's verdict."""
    judged = judged or (artifacts[-1]["name"] if artifacts else None)
    j = next((a for a in artifacts if a["name"] == judged), None)
    gate = Gate(artifact=judged, status=j["verdict"]["status"] if j else "n/a",
                failed=list(j["verdict"]["problems"]) if j else [])
    out = {"schema_version": SCHEMA_VERSION, "recipe": "demo", "task": {"name": "classification", "metric": "top-1"},
           "device": {"name": "host"}, "status": "success", "run_dir": "/x", "artifacts": artifacts,
           "stages": [], "gate": asdict(gate), "objective": {}, "mlflow": {}, "error": None, "registry": None}
    out.update(kw)
    return out
