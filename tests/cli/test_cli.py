"""`edge-pipeline`: one grammar, --help everywhere, typos answered with the closest name, nothing heavy imported."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

HEAVY = ("torch", "tensorflow", "onnxruntime", "coremltools", "mlflow")


def cli(*args: str, cwd: Path = ROOT):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=300)


def test_help_lists_every_subcommand_fast():
    from pipeline.cli import COMMANDS

    out = cli("--help")
    assert out.returncode == 0
    for name in ("run", "plan", "benchmark", "gate", "compare", "verify", "fit", "stages"):
        assert name in COMMANDS and f"  {name} " in out.stdout, out.stdout


@pytest.mark.parametrize("cmd", ["benchmark", "gate", "compare", "verify", "stages"])
def test_each_command_has_help(cmd):
    out = cli(cmd, "--help")
    assert out.returncode == 0 and f"edge-pipeline {cmd}" in out.stdout and "Keys:" in out.stdout, out.stdout


@pytest.mark.parametrize("cmd", ["run", "plan"])
def test_the_hydra_commands_have_help(cmd):
    out = cli(cmd, "--help")
    assert out.returncode == 0 and "Recipes (recipe=NAME):" in out.stdout, out.stdout + out.stderr


def test_benchmark_maps_onto_its_recipe():
    from pipeline.cli.benchmark import overrides

    assert overrides(["model=resnet18"]) == ["recipe=benchmark", "model=resnet18"]
    assert overrides(["path=m.onnx"]) == ["recipe=benchmark", "stages.import.type=import_model",
                                          "stages.import.path=m.onnx", "stages.formats.inputs=[import]"]
    out = cli("benchmark", "recipe=tiny_int8")
    assert out.returncode == 2 and "edge-pipeline run recipe=NAME" in out.stderr


def test_typos_get_the_closest_name_and_exit_2():
    out = cli("stagse")
    assert out.returncode == 2 and "Did you mean 'stages'?" in out.stderr
    out = cli("recipe=tiny_int8")
    assert out.returncode == 2 and "edge-pipeline run recipe=tiny_int8" in out.stderr
    out = cli("compare", "experimnt=x")
    assert out.returncode == 2 and "Did you mean 'experiment'?" in out.stderr
    out = cli("stages", "type=quantise")
    assert out.returncode == 2 and "Did you mean 'quantize'?" in out.stderr


def test_stages_prints_a_types_parameters_with_defaults_and_docs():
    out = cli("stages", "type=quantize_onnx")
    assert out.returncode == 0, out.stderr
    line = next(l for l in out.stdout.splitlines() if l.startswith("calibration_samples"))
    assert "128" in line and "calibrate" in line
    generic = cli("stages", "quantize")
    assert "quantize_tflite" in generic.stdout and "quantize_onnx" in generic.stdout


def test_plan_is_the_hydra_entry_with_plan(tmp_path):
    out = cli("plan", "recipe=tiny_int8", "device=host", f"paths.outputs={tmp_path}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "nothing runs" in out.stdout and "quantize" in out.stdout
    assert not (tmp_path / "runs").exists()


def test_the_command_imports_no_ml_framework():
    code = ("import sys; from pipeline.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print('HEAVY:', [m for m in {HEAVY!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "HEAVY: []" in out.stdout, out.stdout + out.stderr


def test_the_installed_script_points_here():
    """`pip install -e .` (make install) puts edge-pipeline beside the interpreter."""
    script = Path(sys.executable).parent / "edge-pipeline"
    if not script.exists():
        pytest.skip("edge-pipeline is not installed in this environment (make install installs it)")
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "Commands:" in out.stdout
