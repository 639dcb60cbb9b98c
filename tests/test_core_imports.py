"""The core (plan, runner, cache, tracking, report) must not import an ML framework: start-up and --help stay fast."""
import subprocess
import sys

from conftest import ROOT

HEAVY = ("torch", "tensorflow", "onnxruntime", "coremltools", "litert_torch", "ai_edge_litert", "onnx", "mlflow")


def test_planning_imports_no_ml_framework():
    code = f"""
import sys
sys.path.insert(0, {str(ROOT / 'tests')!r})
from conftest import compose_cfg
from pipeline import app
from pipeline.core import runner, cache
from pipeline.report import summary
from pipeline.tracking import tracker as tracking
from pipeline.core.plan import build_plan
for recipe in ("mobilenet_int8", "tiny_int8"):
    build_plan(compose_cfg(["recipe=" + recipe, "device=pixel7"]))
heavy = [m for m in {HEAVY!r} if m in sys.modules]
print("HEAVY:", heavy)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "HEAVY: []" in out.stdout, out.stdout


def test_help_lists_choices_and_imports_no_ml_framework():
    code = f"""
import sys
sys.argv = ["pipeline", "--help"]
from pipeline.cli.run import main
try:
    main()
except SystemExit:
    pass
print("HEAVY:", [m for m in {HEAVY!r} if m in sys.modules])
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "Recipes (recipe=NAME)" in out.stdout and "HEAVY: []" in out.stdout, out.stdout
    lines = out.stdout.splitlines()
    # one line per recipe and per device, with what it is for / what it deploys
    assert any(l.split()[:1] == ["mobilenet_int8"] and "quantize to int8" in l for l in lines)
    assert any(l.split()[:1] == ["pixel7"] and "Google Pixel 7: deploys litert" in l for l in lines)
    assert "--plan" in out.stdout and "edge-pipeline compare" in out.stdout
