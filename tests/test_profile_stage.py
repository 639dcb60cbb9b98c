"""The `profile` stage end to end: accelerator coverage in the summary, profile JSON + PNG in the run
directory and in MLflow, an enforced gate exiting 1 naming the missed budget, a device file with a missing figure
refused at plan time (exit 2, nothing written)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, run_cli

PROFILE = "stages.profile.type=profile"
HERE = {"PYTHONPATH": str(ROOT)}  # run this checkout's pipeline even from another working directory


@pytest.fixture(scope="module")
def shared_outputs(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("profile") / "outputs"


def latest_summary(outputs: Path) -> dict:
    runs = sorted((outputs / "runs" / "tiny_int8").iterdir())
    return json.loads((runs[-1] / "summary.json").read_text())


@pytest.fixture(scope="module")
def coral_run(shared_outputs):
    out = run_cli("recipe=tiny_int8", "device=coral_edgetpu", PROFILE, f"paths.outputs={shared_outputs}")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return latest_summary(shared_outputs), out


@pytest.mark.slow
def test_coral_reports_accelerator_coverage_and_estimates(coral_run):
    summary, out = coral_run
    arts = {a["name"]: a for a in summary["artifacts"]}
    q, e = arts["quantize"], arts["export"]
    assert q["coverage"].startswith("Edge TPU: ") and "/" in q["coverage"]
    cov = q["coverage"].split(":")[1].split("ops")[0].strip()
    assert cov.split("/")[0] == cov.split("/")[1]  # full-integer MobileNetV2: every op maps (as coral.ai lists it)
    assert "on CPU" in e["coverage"] and e["coverage"].startswith("Edge TPU: 0/")  # fp32: the Edge TPU runs none
    # one published Edge TPU figure: too few to fit and validate, so no estimate (never a number without an interval)
    assert q["estimate"] is None and "1 measurement(s) of a edgetpu unit, too few" in q["no_estimate"]
    assert e["estimate"] is None and "int8 only" in e["no_estimate"]
    assert q["measured_on"].startswith("this host")  # the host measurement stays separate from the estimate
    assert q["verdict"]["status"] == "pass" and summary["gate"]["artifact"] == "quantize"
    assert "coverage quantize: Edge TPU" in out.stdout and "* est. ms: none for quantize" in out.stdout


@pytest.mark.slow
def test_profile_json_and_png_in_run_dir_and_mlflow(coral_run):
    summary, _ = coral_run
    run_dir = Path(summary["run_dir"])
    for art in ("train", "export", "quantize"):
        d = run_dir / "reports" / f"profile[{art}]"
        doc = json.loads((d / "profile.json").read_text())
        assert doc["layers"] and {"op", "output_shape", "macs", "params", "weight_bytes", "input_bytes",
                                  "output_bytes", "precision"} <= set(doc["layers"][0])
        assert doc["summary"]["macs"] > 0 and (d / "profile.png").read_bytes()[:4] == b"\x89PNG"
    client = MlflowClient(summary["mlflow"]["tracking_uri"])
    parent = client.get_run(summary["mlflow"]["run_id"])
    child = client.search_runs([parent.info.experiment_id],
                               filter_string=f"tags.mlflow.parentRunId = '{parent.info.run_id}' "
                                             f"and attributes.run_name = 'profile[quantize]'")[0]
    assert {"profile.json", "profile.png"} <= {f.path for f in client.list_artifacts(child.info.run_id)}
    assert child.data.metrics["coverage_total"] > 0 and "estimate_latency_ms" not in child.data.metrics
    assert parent.data.metrics["quantize.verdict_pass"] == 1.0
    assert parent.data.tags["verdict.quantize"] == "pass"


@pytest.mark.slow
def test_enforced_gate_exits_1_naming_the_budget(coral_run, shared_outputs):
    out = run_cli("recipe=tiny_int8", "device=rpi4", PROFILE, "gate.enforce=true", "gate.latency_ms=0.001",
                  "gate.ram_mb=1", f"paths.outputs={shared_outputs}")
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    text = out.stdout + out.stderr
    assert "gate: artifact 'quantize' is not a pass on rpi4 (fail): latency_ms" in text and "over by" in text
    summary = latest_summary(shared_outputs)
    assert summary["status"] == "success" and summary["gate"]["status"] == "fail" and summary["gate"]["enforce"]
    assert summary["gate"]["failed"][0].startswith("latency_ms ")
    q = {a["name"]: a for a in summary["artifacts"]}["quantize"]
    est = q["estimate"]
    # every estimate carries its validated interval and what it rests on: XNNPACK is barely measured on a CPU, so the
    # leave-runtime-out interval is wide; the Pi 4 itself is known from its spec sheet only
    assert est["basis"] == "runtime unseen" and "leave-runtime-out residuals" in est["label"]
    assert est["upper_ms"] / est["interval_ms"][0] > 10 and any("rpi4: no measurement" in f for f in est["fitted_on"])
    # nor can the corpus validate XNNPACK's peak memory: no estimate, and the RAM budget says it was not checked
    assert est["memory"] is None and q["ram_estimate_mb"] is None
    assert any(n.startswith("ram_mb (no peak-memory estimate (xnnpack's peak memory") for n in q["verdict"]["not_checked"])


@pytest.mark.slow
def test_the_gate_judges_ram_on_the_peak_memory_estimate(coral_run, shared_outputs):
    out = run_cli("recipe=tiny_int8", "device=galaxy_s24", PROFILE, "gate.ram_mb=0.001", "gate.judge=upper",
                  f"paths.outputs={shared_outputs}")
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    q = {a["name"]: a for a in latest_summary(shared_outputs)["artifacts"]}["quantize"]
    est, mem = q["estimate"], q["estimate"]["memory"]
    assert est["basis"] == "fitted" and "leave-model-out residuals" in est["label"] and "on this device" in est["label"]
    lo, hi = mem["interval_mb"]
    assert lo <= mem["peak_mb"] <= hi and q["ram_estimate_mb"] == mem["peak_mb"]
    ram = next(c for c in q["verdict"]["checks"] if c["name"] == "ram_mb")
    assert ram["ok"] is False and ram["value"] == pytest.approx(hi, rel=1e-3)  # judge=upper: the interval's top
    assert ram["source"].startswith("upper end of the 80% interval") and "MB peak inference memory" in ram["source"]
    assert "* est. MB quantize: 80% interval" in out.stdout


@pytest.mark.bad_input
def test_device_file_with_a_missing_figure_is_refused(tmp_path):
    conf = tmp_path / "extra_conf" / "device"
    conf.mkdir(parents=True)
    rpi4 = (Path(__file__).resolve().parent.parent / "conf" / "device" / "rpi4.yaml").read_text()
    broken = "\n".join(l for l in rpi4.splitlines() if not l.startswith("memory_bandwidth_gbps")).replace(
        "name: rpi4", "name: broken_board")
    (conf / "broken_board.yaml").write_text(broken)
    work = tmp_path / "work"
    work.mkdir()
    out = run_cli("recipe=tiny_int8", "device=broken_board", f"hydra.searchpath=[file://{tmp_path / 'extra_conf'}]",
                  f"paths.outputs={work / 'outputs'}", cwd=work, env=HERE)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "device.memory_bandwidth_gbps.value: required figure is missing in conf/device/broken_board.yaml" in out.stdout + out.stderr
    assert list(work.iterdir()) == []


@pytest.mark.bad_input
@pytest.mark.slow
def test_bad_gate_override_is_refused(tmp_path):
    out = run_cli("recipe=tiny_int8", "gate.latency_ms=-5", "gate.artifact=nope", f"paths.outputs={tmp_path / 'o'}",
                  cwd=tmp_path, env=HERE)
    assert out.returncode == 2
    text = out.stdout + out.stderr
    assert "gate.latency_ms: must be a finite number > 0, got -5.0" in text  # bounds are checked first
    assert list(tmp_path.iterdir()) == []
