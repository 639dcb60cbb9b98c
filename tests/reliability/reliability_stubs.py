"""Stub stages for the reliability tests (stubs are right only here: they test the runner, cache and tracking).

They write their files in chunks with pauses, so that a kill can land in the middle of a write, and append one line
per computation to $RELIABILITY_COMPUTE_LOG ("<key prefix> <stage> <pid>"), so that a test can prove each cache key was
computed once. The in-process tests hand them to the planner (`STAGES`); the command line (stub_pipeline.py) finds them
as a plug-in: plugin/ holds the entry-point metadata of a tiny installed distribution naming this module.
"""
from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.artifacts import Artifact
from pipeline.stages.base import Stage, StageContext, StageResult


def _record(ctx: StageContext) -> None:
    log = os.environ.get("RELIABILITY_COMPUTE_LOG")
    if log:
        key16 = ctx.workdir.parent.name.split(".")[0]  # work dirs are named <key[:16]>.<host>.<pid>.<rand>
        with open(log, "a") as f:  # O_APPEND: one short line per write, safe across processes
            f.write(f"{key16} {ctx.name} {os.getpid()}\n")


def _write_slowly(path: Path, data: bytes, chunks: int, seconds: float) -> None:
    step = max(1, len(data) // max(chunks, 1))
    with open(path, "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i : i + step])
            f.flush()
            time.sleep(seconds / max(chunks, 1))


def _marker(ctx: StageContext) -> None:
    d = os.environ.get("RELIABILITY_MARKERS")
    if d:
        Path(d, f"{ctx.name}.started").write_text(str(os.getpid()))


@dataclass
class SourceConfig:
    value: int = 1  # byte the model file is filled with
    size_kb: int = 256  # size of the written file
    seconds: float = 0.0  # time spent writing it (in `chunks` pieces)
    chunks: int = 8
    salt: str = ""  # changes the key (and every key below) without changing the output
    fail: bool = False


class RelSource(Stage):
    type = "rel_source"
    Config = SourceConfig
    produces = "torch"

    def run(self, ctx):
        _marker(ctx)
        _record(ctx)
        p: SourceConfig = ctx.params
        if p.fail:
            raise RuntimeError("source exploded")
        path = ctx.workdir / "model.bin"
        _write_slowly(path, bytes([p.value % 256]) * (p.size_kb * 1024), p.chunks, p.seconds)
        return StageResult(Artifact(ctx.name, "torch", "fp32", path, {"input_shape": [1, 3, 8, 8]}),
                           metrics={"size": path.stat().st_size})


@dataclass
class StepConfig:
    factor: int = 2  # output = input repeated `factor` times (capped at 4 MB)
    seconds: float = 0.0
    chunks: int = 8
    fail: bool = False


class RelStep(Stage):
    type = "rel_step"
    Config = StepConfig
    accepts = ("torch",)
    produces = "torch"
    min_inputs = max_inputs = 1

    def run(self, ctx):
        _marker(ctx)
        _record(ctx)
        p: StepConfig = ctx.params
        if p.fail:
            raise RuntimeError("step exploded")
        data = (ctx.input.path.read_bytes() * p.factor)[: 4 << 20]
        path = ctx.workdir / "model.bin"
        _write_slowly(path, data, p.chunks, p.seconds)
        (ctx.workdir / "notes.txt").write_text(f"factor {p.factor}\n")
        return StageResult(Artifact(ctx.name, "torch", "fp32", path, ctx.input.meta), metrics={"size": len(data)},
                           files=["notes.txt"])


@dataclass
class ReportConfig:
    seconds: float = 0.0


class RelReport(Stage):
    """An analysis stage (one task per input), like evaluate."""

    type = "rel_report"
    Config = ReportConfig
    accepts = ("torch", "onnx")
    per_input = True

    def run(self, ctx):
        _marker(ctx)
        _record(ctx)
        time.sleep(ctx.params.seconds)
        a = ctx.input
        return StageResult(metrics={"bytes": a.size_bytes}, about={a.stage: {"bytes": a.size_bytes}})


@dataclass
class FileConfig:
    src: str = ""  # a model file to hand on as this stage's artifact ("bring your own model")
    format: str = "onnx"  # its format
    input_size: int = 16  # the input resolution it declares


class RelFile(Stage):
    """Stands in for a bring-your-own-model stage until one lands: copies a user's file (and the model.json next to
    a .pt) into its work folder, so that the real runtimes and evaluate read it."""

    type = "rel_file"
    Config = FileConfig
    produces = "onnx"

    @classmethod
    def output_format(cls, params, device):
        return params.format if params is not None else cls.produces

    def run(self, ctx):
        p: FileConfig = ctx.params
        src = Path(p.src)
        dest = ctx.workdir / src.name
        shutil.copyfile(src, dest)
        if (src.parent / "model.json").exists():
            shutil.copyfile(src.parent / "model.json", ctx.workdir / "model.json")
        meta = {"input_shape": [1, 3, p.input_size, p.input_size], "num_classes": 3}
        return StageResult(Artifact(ctx.name, p.format, "fp32", dest, meta))


@dataclass
class MischiefConfig:
    how: str = "artifact"  # artifact | extra_file | symlink: three ways to point outside the work folder
    target: str = "/etc/hostname"


class RelMischief(Stage):
    """A stage that tries to make the runner publish or cache something outside its work folder."""

    type = "rel_mischief"
    Config = MischiefConfig
    produces = "torch"

    def run(self, ctx):
        p: MischiefConfig = ctx.params
        own = ctx.workdir / "model.bin"
        own.write_bytes(b"x" * 64)
        if p.how == "artifact":
            return StageResult(Artifact(ctx.name, "torch", "fp32", Path(p.target), {}))
        if p.how == "extra_file":
            return StageResult(Artifact(ctx.name, "torch", "fp32", own, {}), files=[p.target])
        os.symlink(p.target, ctx.workdir / "link.bin")
        return StageResult(Artifact(ctx.name, "torch", "fp32", own, {}))


STAGES = (RelSource, RelStep, RelReport, RelFile, RelMischief)
