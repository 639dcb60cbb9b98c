"""A stage type from a user's own package: installed with pip into a throw-away folder, found through the
`edge_pipeline.stages` entry-point group, and run in a recipe by the real command line."""
from __future__ import annotations

import pytest

import json
import os
import subprocess
import sys
import textwrap

from conftest import ROOT, run_cli

PLUGIN = '''
from dataclasses import dataclass

from pipeline.stages import Stage, StageResult


@dataclass
class HelloConfig:
    times: int = 2  # how many times to count the seed


class Hello(Stage):
    """Reports a number computed from a declared setting: proves the plug-in ran with its own settings."""

    type = "hello_plugin"
    Config = HelloConfig
    reads = ("seed",)

    def run(self, ctx):
        return StageResult(metrics={"answer": float(ctx.settings.seed * ctx.params.times + 42)})
'''


@pytest.mark.slow
def test_stage_type_from_an_installed_package_runs_in_a_recipe(tmp_path):
    pkg = tmp_path / "src"
    (pkg / "hello_stage").mkdir(parents=True)
    (pkg / "hello_stage" / "__init__.py").write_text(PLUGIN)
    (pkg / "pyproject.toml").write_text(textwrap.dedent('''
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "hello-stage"
        version = "0.1"
        [project.entry-points."edge_pipeline.stages"]
        hello = "hello_stage:Hello"
        [tool.setuptools]
        packages = ["hello_stage"]
        '''))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--no-index", "--target", str(site), str(pkg)], check=True, capture_output=True, text=True)
    assert list(site.glob("hello_stage-0.1.dist-info/entry_points.txt"))
    out = tmp_path / "outputs"
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    r = run_cli("recipe=tiny_int8", "tracking=none", "seed=5", "~stages", "+stages.hello.type=hello_plugin",
                "+stages.hello.times=3", f"paths.outputs={out}", env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(next(out.glob("runs/tiny_int8/*/summary.json")).read_text())
    stage = {s["name"]: s for s in summary["stages"]}["hello"]
    assert stage["type"] == "hello_plugin" and stage["status"] == "ran" and stage["metrics"]["answer"] == 57.0
    # without the package on the path the type is unknown, and the message lists only real types
    r = run_cli("recipe=tiny_int8", "tracking=none", "~stages", "+stages.hello.type=hello_plugin",
                f"paths.outputs={out}", timeout=300)
    text = r.stdout + r.stderr
    assert r.returncode == 2 and "unknown stage type 'hello_plugin'" in text and "select_int8" in text
    assert "test_source" not in text and "rel_source" not in text
