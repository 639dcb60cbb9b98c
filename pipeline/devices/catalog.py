"""The device catalog (conf/device/*.yaml): every figure has a value and a source, or says it is unpublished.

`check` runs at plan time: a device file with a missing figure is refused (exit 2) with the full key path.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

CATALOG_DIR = Path(__file__).resolve().parent.parent.parent / "conf" / "device"
UNIT_KINDS = ("cpu", "gpu", "npu", "edgetpu")
PRECISIONS = ("fp32", "fp16", "int8")
DELEGATES = ("none", "gpu", "nnapi", "edgetpu", "coreml_ane", "tensorrt")
RUNTIMES = ("litert", "onnxruntime", "coreml", "openvino", "executorch")


def figure_value(fig: Any) -> float | None:
    """The figure's value, or None when it is unpublished (or absent)."""
    if fig is None:
        return None
    v = fig.get("value") if hasattr(fig, "get") else getattr(fig, "value", None)
    return None if v is None else float(v)


def _figure_problems(fig: Any, path: str, where: str) -> list[str]:
    fix = ("give the figure with its source (`value: N, source: \"[P|S|E] ...\"`) or mark it "
           "`unpublished: true` with where it was looked for")
    if fig is None:
        return [f"{path}: required figure is missing in {where}; {fix}"]
    value, source, unpub = fig.get("value"), fig.get("source"), bool(fig.get("unpublished", False))
    if value is None and not unpub:
        return [f"{path}.value: required figure is missing in {where}; {fix}"]
    if value is not None and unpub:
        return [f"{path}: has a value and `unpublished: true` in {where}; keep one of them"]
    if not source:
        return [f"{path}.source: the figure has no source in {where}; say where it comes from ([P] vendor, "
                f"[S] third-party, [E] derived and how) or why it is unpublished"]
    if value is not None and not float(value) > 0:
        return [f"{path}.value: must be > 0, got {value} in {where}"]
    return []


def check(device: Any) -> list[str]:
    """Problems with a device profile, one sentence each with its full key path (empty list: valid)."""
    d = OmegaConf.to_container(device, resolve=True) if OmegaConf.is_config(device) else dict(device)
    name = d.get("name", "?")
    where = f"conf/device/{name}.yaml"
    problems: list[str] = []
    if d.get("runtime") not in RUNTIMES:
        problems.append(f"device.runtime: {d.get('runtime')!r} is not one of {', '.join(RUNTIMES)} ({where})")
    problems += _figure_problems(d.get("ram_gb"), "device.ram_gb", where)
    problems += _figure_problems(d.get("memory_bandwidth_gbps"), "device.memory_bandwidth_gbps", where)
    units = d.get("compute_units") or {}
    if not units:
        problems.append(f"device.compute_units: {where} lists no compute unit; add at least the CPU "
                        f"(kind, description, peak_gops per precision with sources)")
    for uname, u in units.items():
        base = f"device.compute_units.{uname}"
        if u.get("kind") not in UNIT_KINDS:
            problems.append(f"{base}.kind: {u.get('kind')!r} is not one of {', '.join(UNIT_KINDS)} ({where})")
        peaks = u.get("peak_gops") or {}
        if not peaks:
            problems.append(f"{base}.peak_gops: required figure is missing in {where}; give the peak throughput for "
                            f"at least one precision ({', '.join(PRECISIONS)}), or mark it `unpublished: true`")
        for prec, fig in peaks.items():
            if prec not in PRECISIONS:
                problems.append(f"{base}.peak_gops.{prec}: unknown precision; use {', '.join(PRECISIONS)} ({where})")
            problems += _figure_problems(fig, f"{base}.peak_gops.{prec}", where)
        if int(u.get("cores", 1)) < 1:
            problems.append(f"{base}.cores: must be >= 1 ({where})")
    est = d.get("estimate_unit")
    if est is not None and est not in units:
        problems.append(f"device.estimate_unit: {est!r} is not a compute unit of {where} "
                        f"(units: {', '.join(units) or 'none'})")
    acc = d.get("accelerator") or {}
    if acc.get("delegate", "none") not in DELEGATES:
        problems.append(f"device.accelerator.delegate: {acc.get('delegate')!r} is not one of {', '.join(DELEGATES)}")
    elif acc.get("delegate", "none") != "none" and acc.get("unit") not in units:
        problems.append(f"device.accelerator.unit: {acc.get('unit')!r} is not a compute unit of {where} "
                        f"(units: {', '.join(units) or 'none'})")
    if d.get("connection") is not None:
        from pipeline.remote.connection import ConnectionError_, parse

        try:
            parse(d["connection"])
        except ConnectionError_ as e:
            problems.append(str(e))
        else:
            if d.get("measured_here"):
                problems.append(f"device.connection: {where} is measured here (measured_here: true); a connection "
                                f"makes no sense for it. Pick the board's profile (device=rpi4 ...) instead")
            problems += _remote_words(d)
    for k, v in (d.get("budgets") or {}).items():
        if v is not None and not float(v) > 0:
            problems.append(f"device.budgets.{k}: must be > 0 or null, got {v}")
    return problems


def _remote_words(d: dict) -> list[str]:
    """device.remote_python and device.benchmark_model become words of a command line on the device, and
    device.known_hosts an ssh option: each must be a plain path (no leading '-', no spaces, quotes or shell syntax)."""
    from pipeline.remote.device import PLAIN_WORD

    problems = []
    for key in ("remote_python", "benchmark_model", "known_hosts"):
        v = d.get(key)
        if v is not None and not PLAIN_WORD.fullmatch(str(v)):
            problems.append(f"device.{key}: {str(v)!r} is not a plain path (letters, digits and . _ / + ~ -, not "
                            f"starting with '-'); it is handed to "
                            + ("ssh" if key == "known_hosts" else "the device's shell")
                            + ": give the path without spaces, quotes or shell syntax")
    return problems


def load(name: str) -> Any:
    """A catalog entry merged over the schema (for scripts and tests; runs get it from Hydra)."""
    from pipeline.core.config import DeviceConfig

    path = CATALOG_DIR / f"{name}.yaml"
    if not path.exists():
        raise FileNotFoundError(f"no device {name!r} in {CATALOG_DIR} (devices: {', '.join(names())})")
    return OmegaConf.merge(OmegaConf.structured(DeviceConfig), OmegaConf.load(path))


def measured_here(device: Any) -> bool:
    """The device is this machine: its candidates can be timed where they will run, so a choice between formats can
    be measured instead of assumed, and its latency budget is checked against the measurement. Timing x86 candidates
    to choose for an ARM phone would be wrong. A device says so with `measured_here: true` (conf/device/host.yaml); a
    profile copied from it for another board keeps it only when the pipeline runs on that board."""
    return bool(device.get("measured_here", False))


def names() -> list[str]:
    return sorted(p.stem for p in CATALOG_DIR.glob("*.yaml"))


def plan_problems(cfg: Any, producers: list[str]) -> list[str]:
    """Plan-time checks of the device profile and the gate (called by plan.build_plan)."""
    problems = check(cfg.device)
    gate = cfg.get("gate") or {}
    for k in ("latency_ms", "fps", "model_mb", "ram_mb"):
        v = gate.get(k)
        if v is not None and not float(v) > 0:
            problems.append(f"gate.{k}: a budget must be > 0 (or null for the device's default), got {v}")
    if gate.get("judge", "point") not in ("point", "upper"):
        problems.append(f"gate.judge: {gate.get('judge')!r} is not one of point, upper (point: the estimate's value; "
                        f"upper: the top of its 80% interval)")
    art = gate.get("artifact")
    if art is not None and art not in producers:
        problems.append(f"gate.artifact: {art!r} is not a model of this recipe (models: {', '.join(producers)})")
    if gate.get("enforce") and not producers:
        problems.append("gate.enforce: the recipe produces no model to judge; remove gate.enforce=true")
    return problems


def merge_error_hint(text: str, dirs: list[Path] | None = None) -> str | None:
    """OmegaConf reports a scalar where a device file needs a mapping (`ram_gb: 8`) as "Merge error: int is not a
    subclass of FigureConfig" with an empty key. Name the key, the file and the shape it needs instead; None if `text`
    is not such an error. `dirs`: where device files are looked for (default: the catalog; add Hydra search paths)."""
    import dataclasses
    import re
    import typing

    from pipeline.core import config

    m = re.search(r"In 'device/([\w.-]+)'.*?Merge error: (\w+) is not a subclass of (\w+)\. value: (.*)", text, re.S)
    if not m:
        return None
    name, got, want, value = m.group(1), m.group(2), m.group(3), m.group(4).splitlines()[0].strip()
    schema = getattr(config, want, None)
    files = [d / "device" / f"{name}.yaml" for d in (dirs or [])] + [CATALOG_DIR / f"{name}.yaml"]
    path = next((f for f in files if f.is_file()), None)
    keys: list[str] = []

    def walk(node: Any, cls: type, prefix: str) -> None:  # fields of type `want` holding something else
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if not isinstance(node, dict) or f.name not in node:
                continue
            v, t = node[f.name], hints[f.name]
            args = typing.get_args(t)
            if t is schema and not isinstance(v, dict):
                keys.append(f"{prefix}{f.name}")
            elif typing.get_origin(t) is dict and args and args[1] is schema and isinstance(v, dict):
                keys.extend(f"{prefix}{f.name}.{k}" for k, x in v.items() if not isinstance(x, dict))
            elif dataclasses.is_dataclass(t) and isinstance(v, dict):
                walk(v, t, f"{prefix}{f.name}.")
            elif typing.get_origin(t) is dict and args and dataclasses.is_dataclass(args[1]) and isinstance(v, dict):
                for k, x in v.items():
                    walk(x, args[1], f"{prefix}{f.name}.{k}.")

    if path is not None and schema is not None:
        walk(OmegaConf.to_container(OmegaConf.load(path)), config.DeviceConfig, "device.")
    fields = ", ".join(f.name for f in dataclasses.fields(schema)) if dataclasses.is_dataclass(schema) else want
    where = f"{', '.join(keys) or 'a key'} in {path or f'device/{name}.yaml'}"
    example = " (e.g. {value: 8, source: \"[P] vendor datasheet\"})" if want == "FigureConfig" else ""
    return (f"{where}: expects a mapping of {want} ({fields}), got the {got} {value}. Write it as a mapping"
            f"{example}, then re-run.")
