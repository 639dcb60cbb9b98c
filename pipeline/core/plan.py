"""Recipe -> validated DAG. Checks the whole plan before anything runs; imports no ML framework.

Edges are derived from each stage's declared `inputs`; the order is a topological sort; analysis stages
(`per_input`) are expanded into one task per input so that each is cached on its own.
"""
from __future__ import annotations

import difflib
import graphlib
from dataclasses import dataclass, field
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from pipeline.core import bounds, config
from pipeline import data as data_mod
from pipeline import devices
from pipeline import models
from pipeline.core.artifacts import FORMATS
from pipeline.core.errors import ConfigError
from pipeline.core import settings as settings_mod
from pipeline.core.settings import Settings
from pipeline.stages import Stage, discover

RESERVED = ("type", "inputs")
# The deployment runtime a device profile names -> the artifact format it loads.
RUNTIME_FORMAT = {"litert": "tflite", "coreml": "coreml", "onnxruntime": "onnx", "openvino": "openvino",
                  "executorch": "executorch"}
MEASURED = "measured"  # pseudo-format of a generic stage that builds several candidates and keeps the fastest here


@dataclass
class Task:
    """One unit of execution: a stage, or one input of a per-input analysis stage."""

    name: str  # "quantize", or "evaluate[quantize]" for per-input stages
    stage: str  # the recipe's stage name
    cls: type[Stage]
    params: Any  # validated Config dataclass instance
    params_dict: dict  # the same, as plain data (for keys and logging)
    inputs: list[str]  # upstream stage names whose artifacts it reads
    output_format: str | None
    settings: Settings  # the config values the stage declares in `reads`, resolved; all the config it ever sees


@dataclass
class Plan:
    recipe: str
    tasks: list[Task]  # topological order
    registry: dict[str, type[Stage]] = field(default_factory=dict)  # the stage types this plan was built with
    children: dict[str, set[str]] = field(default_factory=dict)  # stage -> stages reading it

    def descendants(self, stages: set[str]) -> set[str]:
        out, todo = set(), list(stages)
        while todo:
            s = todo.pop()
            for c in self.children.get(s, ()):
                if c not in out:
                    out.add(c)
                    todo.append(c)
        return out

    def producers(self) -> list[Task]:
        return [t for t in self.tasks if t.output_format]

    def formats_reaching(self, task: Task) -> frozenset[str]:
        """The formats of the models `task` makes and of every model upstream of it (its inputs and their sources,
        which parity and lineage readers load): the runtimes its result can depend on."""
        made = {t.stage: _formats(t.output_format) for t in self.tasks}
        deps = {t.stage: t.inputs for t in self.tasks}
        out, todo, seen = set(_formats(task.output_format)), list(task.inputs), set()
        while todo:
            s = todo.pop()
            if s not in seen:
                seen.add(s)
                out.update(made.get(s, ()))
                todo.extend(deps.get(s, ()))
        return frozenset(out)


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def deploy_format(generic: str, impls: dict[str, type[Stage]], device) -> str | None:
    """The format a generic stage (`type: export`, `type: quantize`) builds for `device`: the device's deployment
    runtime decides (Pixel -> tflite, iPhone -> coreml, Jetson -> onnx); on this host, where it lists several formats
    and a measuring implementation exists, the fastest passing candidate is measured instead."""
    formats = [str(f) for f in device.formats]
    if MEASURED in impls and devices.catalog.measured_here(device) and len(formats) > 1:
        return MEASURED
    return RUNTIME_FORMAT.get(str(device.runtime), formats[0] if formats else None)


def _resolve_generic(name: str, raw: dict, cfg, registry: dict[str, type[Stage]],
                     pinned_upstream: dict[str, str] | None = None) -> tuple[str | None, dict, list[str]]:
    """`type: quantize` -> the stage type that quantizes for the device's format, with the recipe's parameters.

    Parameters may belong to any implementation (`method` is ONNX Runtime's, `io` LiteRT's): each is type-checked
    against every implementation that has it and passed only to the chosen one, so one recipe serves every device.
    `format: tflite` pins the format instead of taking the device's; a generic stage whose first input was pinned to
    a format it also builds follows that input (`stages.export.format=executorch` gives an ExecuTorch quantize)."""
    generic = raw["type"]
    impls = {c.implements[1]: c for c in registry.values() if c.implements and c.implements[0] == generic}
    pinned = raw.get("format") or "auto"
    inputs = raw.get("inputs")
    first = inputs if isinstance(inputs, str) else inputs[0] if isinstance(inputs, list) and inputs else None
    upstream = (pinned_upstream or {}).get(first) if isinstance(first, str) else None
    if pinned == "auto" and upstream in impls:
        fmt = upstream
    else:
        fmt = deploy_format(generic, impls, cfg.device) if pinned == "auto" else pinned
    params = {k: v for k, v in raw.items() if k not in (*RESERVED, "format")}
    if fmt not in impls:
        why = (f"format: {pinned!r} was pinned" if pinned != "auto"
               else f"device {cfg.device.name!r} deploys with {cfg.device.runtime!r}")
        return None, params, [f"stages.{name}: no {generic!r} stage builds {fmt!r} models ({why}). Formats with one: "
                              f"{', '.join(sorted(impls))}; pin one with stages.{name}.format=FORMAT"]
    owned: dict[str, list[str]] = {}
    for c in impls.values():
        for k in OmegaConf.structured(c.Config).keys():
            owned.setdefault(str(k), []).append(c.type)
    problems = []
    for key in params:
        if key not in owned:
            problems.append(f"stages.{name}.{key}: unknown parameter of stage type {generic!r} (any of "
                            f"{', '.join(sorted(c.type for c in impls.values()))}).{_suggest(key, owned)} "
                            f"Parameters: {', '.join(sorted(owned))}.")
    chosen = impls[fmt]
    for c in impls.values():  # wrong types are refused whichever device the recipe is run for
        if c is not chosen:  # (the chosen type validates its own keys below)
            own = {k: v for k, v in params.items() if c.type in owned.get(k, ()) and chosen.type not in owned[k]}
            problems += [p for p in _validate_params(name, c.type, c, own)[1] if "required parameter" not in p]
    problems = list(dict.fromkeys(problems))
    return chosen.type, {"type": chosen.type, **{k: v for k, v in params.items() if chosen.type in owned.get(k, ())},
                         **({"inputs": raw["inputs"]} if "inputs" in raw else {})}, problems


def _formats(fmt) -> tuple[str, ...]:
    """A stage's planned output: one format, or several when it is decided at run time (measured choice)."""
    return () if fmt is None else (fmt,) if isinstance(fmt, str) else tuple(fmt)


def _validate_params(name: str, stage_type: str, cls: type[Stage], raw: dict) -> tuple[Any, list[str]]:
    """Merge the recipe's parameters over the stage's dataclass; unknown keys and wrong types name the full path."""
    schema = OmegaConf.structured(cls.Config)
    fields = list(schema.keys())
    problems = []
    for key in raw:
        if key not in fields:
            problems.append(
                f"stages.{name}.{key}: unknown parameter of stage type {stage_type!r}.{_suggest(key, fields)} "
                f"Parameters of {stage_type!r}: {', '.join(fields) or '(none)'}."
            )
    if problems:
        return None, problems
    try:
        merged = OmegaConf.merge(schema, raw)
        missing = sorted(k for k in fields if OmegaConf.is_missing(merged, k))
        if missing:
            return None, [f"stages.{name}.{k}: required parameter of stage type {stage_type!r} is not set" for k in missing]
        return OmegaConf.to_object(merged), []
    except OmegaConfBaseException as e:
        key = getattr(e, "key", None) or getattr(e, "full_key", "")
        msg = str(e).splitlines()[0]
        return None, [f"stages.{name}.{key}: {msg}"]


def _check_calibration(name: str, cls: type[Stage], params: Any, cfg: DictConfig, found: list[str]) -> list[str]:
    """Any stage that calibrates draws `calibration_samples` images from the training split, whose size is known
    cheaply (pipeline.data.split_sizes): a count that cannot be met is a plan error, not a failure minutes in. A stage
    that calibrates nothing with these parameters (an fp32 export) asks for no images."""
    n = getattr(params, "calibration_samples", None)
    if not cls.calibrates(params):
        return []
    if not isinstance(n, int) or any(f"stages.{name}" in p and "calibration_samples" in p for p in found):
        return []
    if n < 1:
        return [f"stages.{name}.calibration_samples: must be >= 1, got {n}"]
    sizes = data_mod.split_sizes(cfg.data)
    if sizes is not None and n > sizes[0]:
        return [f"stages.{name}.calibration_samples: {n} is more than the {sizes[0]} images of the training split of "
                f"data {cfg.data.name!r}; set stages.{name}.calibration_samples={sizes[0]} or less"]
    return []


def _chain(name: str, specs: dict, out_fmt: dict) -> list[tuple[str, str, Any]]:
    """(stage, type, planned format) of the stages up `name`'s first-input chain, nearest first."""
    out, seen = [], {name}
    cur = specs[name]["inputs"][0] if specs[name]["inputs"] else None
    while cur in specs and cur not in seen:
        seen.add(cur)
        out.append((cur, specs[cur]["type"], out_fmt.get(cur)))
        cur = specs[cur]["inputs"][0] if specs[cur]["inputs"] else None
    return out


def _find_cycle(deps: dict[str, list[str]]) -> list[str] | None:
    """A cycle of the inputs (first stage repeated last), or None: graphlib's CycleError carries it."""
    try:
        graphlib.TopologicalSorter(deps).prepare()
    except graphlib.CycleError as e:
        return list(reversed(e.args[1]))
    return None


def _toposort(deps: dict[str, list[str]]) -> list[str]:
    """Inputs first; among stages ready at once the recipe's order, so runs are predictable."""
    ts = graphlib.TopologicalSorter(deps)
    ts.prepare()
    position = {n: i for i, n in enumerate(deps)}
    ready: list[str] = []
    order = []
    while ts.is_active():
        ready = sorted({*ready, *ts.get_ready()}, key=position.__getitem__)
        order.append(ready.pop(0))
        ts.done(order[-1])
    return order


def build_plan(cfg: DictConfig, registry: dict[str, type[Stage]] | None = None) -> Plan:
    """Validate the composed config and return the execution plan, or raise ConfigError listing every problem.
    `registry`: the stage types to plan with (default: pipeline.stages.discover(), built-in types and plug-ins)."""
    registry = discover() if registry is None else registry
    problems: list[str] = []
    recipe = str(cfg.get("recipe") or "?")
    stages_cfg = cfg.get("stages")
    if not stages_cfg:
        raise ConfigError(f"recipe {recipe!r} declares no stages: add a `stages:` mapping (see recipes/mobilenet_int8.yaml)")

    # Model and data exist before anything is planned on them.
    if cfg.model.name not in models.ZOO:
        problems.append(f"model.name: unknown model {cfg.model.name!r}.{_suggest(cfg.model.name, models.ZOO)} "
                        f"Available: {', '.join(sorted(models.ZOO))}.")
    problems += data_mod.check(cfg.data)
    problems += data_mod.size.problems(cfg.model.input_size, str(cfg.data.name))  # one side or [H, W]
    problems += config.problems(cfg)  # every number of the config within the range its field declares

    specs: dict[str, dict] = {}
    out_of_bounds: dict[str, list[str]] = {}
    deps: dict[str, list[str]] = {}
    generic_types = {c.implements[0] for c in registry.values() if c.implements}
    resolved: dict[str, str] = {}  # stage name -> concrete type a generic type resolved to
    pinned_formats: dict[str, str] = {}  # generic stage -> the format the recipe or command line pinned
    for name, raw in stages_cfg.items():
        name = str(name)
        if not isinstance(raw, DictConfig):
            problems.append(f"stages.{name}: expected a mapping with `type`, `inputs` and parameters, got {raw!r}")
            continue
        if not name.replace("_", "").replace("-", "").isalnum():
            problems.append(f"stages.{name}: stage names may hold letters, digits, '_' and '-' only")
            continue
        raw = OmegaConf.to_container(raw, resolve=True)
        stage_type = raw.get("type")
        if isinstance(stage_type, str) and stage_type in generic_types:
            fmt_pinned = raw.get("format")
            stage_type, raw, errs = _resolve_generic(name, raw, cfg, registry, pinned_formats)
            if fmt_pinned and fmt_pinned != "auto":
                pinned_formats[name] = str(fmt_pinned)
            problems += errs
            if stage_type is None:
                continue
            resolved[name] = stage_type
        if stage_type is None:  # only parameters: an override of a stage the recipe does not have (a typo)
            named = [str(n) for n, r in stages_cfg.items() if isinstance(r, DictConfig) and r.get("type") is not None]
            close = difflib.get_close_matches(name, named, n=1)
            problems.append(f"stages.{name}: the recipe has no stage {name!r}."
                            + (f" Did you mean {close[0]!r}?" if close else "")
                            + f" Its stages: {', '.join(named) or '(none)'}. To add a stage, give it a type: "
                              f"stages.{name}.type=TYPE (edge-pipeline stages lists the types).")
            continue
        if not isinstance(stage_type, str) or stage_type not in registry:  # (a list or mapping is not hashable)
            problems.append(
                f"stages.{name}.type: unknown stage type {stage_type!r}."
                f"{_suggest(str(stage_type), [*registry, *generic_types])} "
                f"Registered types: {', '.join(sorted(registry))}; generic types resolved from the device: "
                f"{', '.join(sorted(generic_types))}."
            )
            continue
        inputs = raw.get("inputs")
        if inputs is None:  # analysis stages default to every model of the recipe (filled in below)
            inputs = None if registry[stage_type].produces is None else []
        elif isinstance(inputs, str):
            inputs = [inputs]
        elif not isinstance(inputs, list) or not all(isinstance(i, str) for i in inputs):
            problems.append(f"stages.{name}.inputs: expected a list of stage names, got {inputs!r}")
            continue
        params, errs = _validate_params(name, stage_type, registry[stage_type], {k: v for k, v in raw.items() if k not in RESERVED})
        problems += errs
        if params is not None:
            out_of_bounds[name] = bounds.problems(params, f"stages.{name}")
        specs[name] = {"type": stage_type, "cls": registry[stage_type], "params": params, "inputs": inputs}

    names = list(specs)
    producers = [n for n, s in specs.items() if s["params"] is not None and s["cls"].planned_format(s["params"], cfg)]
    for name, spec in specs.items():
        if spec["inputs"] is None:  # analysis stage without inputs: every model the recipe produces
            spec["inputs"] = list(producers)
        for inp in spec["inputs"]:
            if inp not in stages_cfg:
                problems.append(f"stages.{name}.inputs: {inp!r} is not a stage of this recipe.{_suggest(inp, names)} "
                                f"Stages: {', '.join(names)}.")
        deps[name] = [i for i in spec["inputs"] if i in specs]
        cls = spec["cls"]
        n_in = len(spec["inputs"])
        if n_in < cls.min_inputs or (cls.max_inputs is not None and n_in > cls.max_inputs):
            want = f"exactly {cls.min_inputs}" if cls.min_inputs == cls.max_inputs else f"at least {cls.min_inputs}"
            problems.append(f"stages.{name}.inputs: stage type {spec['type']!r} takes {want} input(s), got {n_in}")
    cycle = _find_cycle(deps)
    if cycle:
        problems.append(f"stages: the inputs form a cycle: {' -> '.join(cycle)}. Remove one of these inputs.")
    if problems:
        raise ConfigError(problems + [p for ps in out_of_bounds.values() for p in ps])

    # Formats along every edge (reported together with any out-of-bounds number, so that one run names every problem), and the stages' own cross-field rules.
    out_fmt = {n: s["cls"].planned_format(s["params"], cfg) for n, s in specs.items()}
    for name, spec in specs.items():
        accepts = spec["cls"].input_formats(spec["params"], cfg.device)
        via = (f" (type {spec['type']!r} is what a generic stage resolved to for device {cfg.device.name!r}; pin "
               f"another with stages.{name}.format=FORMAT)") if name in resolved else ""
        before = len(problems)
        for inp in spec["inputs"]:
            fmt = out_fmt[inp]
            if fmt is None:
                problems.append(f"stages.{name}.inputs: {inp!r} ({specs[inp]['type']}) produces no model to read; "
                                f"take a stage that produces one of: {', '.join(accepts)}")
            elif any(f not in accepts for f in _formats(fmt)):
                shown = " or ".join(_formats(fmt))
                exporters = sorted(t for t, c in registry.items() if c.produces in accepts and shown in c.accepts)
                hint = (f" Add an export stage between them (type: {' or '.join(exporters)}, inputs: [{inp}])"
                        if exporters else "")
                if not exporters and name in resolved and name not in pinned_formats:
                    # (pinning another format would deploy what the device does not run)
                    via = (f" Device {cfg.device.name!r} runs {cfg.device.runtime} ({'/'.join(accepts)}), and no stage "
                           f"converts a {shown} model to it: import the model's PyTorch or Keras source (or a file "
                           f"of the device's format) instead, or plan for a device whose runtime takes {shown} models")
                problems.append(f"stages.{name}: stage type {spec['type']!r} takes {'/'.join(accepts)} models, but "
                                f"input {inp!r} produces a {shown} model.{hint}{via}")
        problems += out_of_bounds.get(name, [])
        problems += [f"stages.{name}: {p}" for p in spec["cls"].check(spec["params"], cfg)]
        problems += _check_calibration(name, spec["cls"], spec["params"], cfg, problems)
        if len(problems) == before:  # (a wrong input format already says what to change)
            problems += [f"stages.{name}: {p}"
                         for p in spec["cls"].check_lineage(spec["params"], _chain(name, specs, out_fmt), cfg)]
    for fmt in {f for v in out_fmt.values() for f in _formats(v)}:
        if fmt not in FORMATS:
            problems.append(f"internal: format {fmt!r} is not one of {FORMATS}")
    problems += devices.catalog.plan_problems(cfg, producers)  # device figures and gate budgets
    force = list(cfg.cache.force)
    for f in force:
        if f not in specs:
            problems.append(f"cache.force: {f!r} is not a stage of this recipe. Stages: {', '.join(names)}.")
    if problems:
        raise ConfigError(problems)

    children: dict[str, set[str]] = {n: set() for n in specs}
    for n, ds in deps.items():
        for d in ds:
            children[d].add(n)
    tasks = []
    for name in _toposort(deps):
        spec = specs[name]
        pdict = OmegaConf.to_container(OmegaConf.structured(spec["params"]))
        cls = spec["cls"]
        settings = settings_mod.resolve(cls.type, tuple(cls.reads), cfg)
        if cls.per_input:
            for inp in spec["inputs"]:
                tasks.append(Task(f"{name}[{inp}]", name, cls, spec["params"], pdict, [inp], None, settings))
        else:
            tasks.append(Task(name, name, cls, spec["params"], pdict, list(spec["inputs"]), out_fmt[name], settings))
    return Plan(recipe=recipe, tasks=tasks, children=children, registry=registry)
