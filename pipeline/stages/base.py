"""The stage contract: a dataclass config plus one class with a `type` name (found by pipeline.stages.discover).

A stage never imports its ML framework at module level: the planner imports every stage module to know the stage
types, and the core must stay free of torch, TensorFlow and ONNX Runtime (tests/test_core_imports.py proves it).
A stage module is a thin adapter: parameters, checks, and a `run` that calls library functions below the stages.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from pipeline.core.artifacts import Artifact
from pipeline.core.bounds import PositiveInt
from pipeline.core.results import Findings
from pipeline.core.settings import Settings, UndeclaredSetting


DECLARABLE = frozenset({"type", "accepts", "produces", "per_input", "reads", "libraries", "implements"})


@dataclass
class Int8Config:
    """The parameters every post-training int8 stage shares: its calibration images and the remedies it tries when
    the int8 model is outside parity's budget."""

    calibration_samples: PositiveInt = 128  # training images used to calibrate activation ranges (100-500 is usual)
    remedies: bool = True  # int8 outside parity's budget: try the remedies (pipeline.convert.remedies), cheapest first
    remedy_samples: PositiveInt = 128  # training images (not the calibration ones) each int8 attempt is judged on


@dataclass
class StageResult:
    """What a stage hands back to the runner."""

    artifact: Artifact | None = None  # the model it produced (path inside the stage's work directory)
    metrics: dict[str, float] = field(default_factory=dict)  # numbers for MLflow and the summary
    info: dict[str, Any] = field(default_factory=dict)  # JSON-able details for the summary (runtime, measured_on ...)
    files: list[str] = field(default_factory=list)  # extra files in the work directory to keep and log (plots ...)
    about: dict[str, Findings] = field(default_factory=dict)  # analysis stages: artifact name -> what they found


# A stage that fails may leave a diagnosis in ctx.workdir / FAILURE_DIR: the runner keeps those files in the run
# folder (reports/<task>/) and logs them to MLflow before it discards the rest of the partial output.
FAILURE_DIR = "failure"


@dataclass
class StageContext:
    """Everything a stage may read. Built by the runner; stages never look at global state."""

    name: str  # stage name in the recipe (for per-input stages: "evaluate[quantize]")
    params: Any  # the validated parameters (an instance of the stage's Config dataclass)
    settings: Settings  # the config values the stage declares in `reads`, and nothing else (its cache key holds them)
    inputs: dict[str, Artifact]  # upstream artifacts by stage name
    workdir: Path  # where the stage writes; moved into the cache atomically on success
    lineage: Callable[[str], list[Artifact]]  # artifacts upstream of a stage, nearest first
    log: logging.Logger
    _data: Any = None
    _data_loader: Callable[[], Any] | None = None

    def data(self):
        """The dataset, loaded once per process and shared by all stages of a run (the stage must read "data")."""
        if not self.settings.reads_data:
            raise UndeclaredSetting(f"stage type {self.settings.stage!r} loads the data set without declaring it: add "
                                    f"\"data\" to its `reads` so that the cache key holds the data fingerprint")
        if self._data is None:
            assert self._data_loader is not None
            self._data = self._data_loader()
        return self._data

    @property
    def input(self) -> Artifact:
        """The single input artifact of a stage that takes exactly one."""
        if len(self.inputs) != 1:
            raise ValueError(f"stage {self.name!r} expects one input, got {sorted(self.inputs)}")
        return next(iter(self.inputs.values()))


class Stage:
    """Base class. Subclasses declare what they are in their class statement (or as class attributes of the same
    names; `config` is the attribute `Config`, `inputs` sets `min_inputs` and `max_inputs`):

        class Fuse(Stage, type="fuse", config=FuseConfig, accepts=("torch",), produces="torch", inputs=1,
                   reads=("data", "host"), libraries=("torch", "numpy")):

    type:      registered name used in recipes (`type: quantize_onnx`)
    Config:    dataclass of parameters (MISSING for required ones); validated with full key paths
    accepts:   formats the input artifacts may have; () = takes no model input (e.g. train)
    produces:  format of the produced artifact; None = an analysis stage (evaluate, benchmark) that only reports
    per_input: analysis stages run once per input, each cached on its own, so a new int8 model re-evaluates only itself
               (an analysis stage, produces=None, given no `inputs` reads every model the recipe produces)
    reads:     the config values `run` reads, by dotted path ("seed", "model.input_size", "device" for the whole
               section), plus "data" when it loads the data set; resolved per task into ctx.settings and hashed
               into the cache key (pipeline/settings.py). The code and library versions in the key are derived.
    libraries: distributions used without an import of their own, whose versions also go into the key
    implements: (generic type, format) this stage carries out, e.g. ("quantize", "tflite"): a recipe's `type: quantize`
               resolves to it when the device deploys that format (see pipeline/plan.py)
    inputs:    how many input stages it takes: n (exactly), or (least, most) with most None for no limit; default
               (0, None)
    """

    type: ClassVar[str]
    Config: ClassVar[type]
    accepts: ClassVar[tuple[str, ...]] = ()
    produces: ClassVar[str | None] = None
    per_input: ClassVar[bool] = False
    reads: ClassVar[tuple[str, ...]] = ()
    libraries: ClassVar[tuple[str, ...]] = ()
    min_inputs: ClassVar[int] = 0
    max_inputs: ClassVar[int | None] = None
    implements: ClassVar[tuple[str, str] | None] = None

    def __init_subclass__(cls, config: type | None = None, inputs: int | tuple[int, int | None] | None = None,
                          **declared: Any) -> None:
        super().__init_subclass__()
        unknown = sorted(set(declared) - DECLARABLE)
        if unknown:
            raise TypeError(f"stage class {cls.__name__}: unknown declaration(s) {', '.join(unknown)}; a stage "
                            f"declares config, inputs and {', '.join(sorted(DECLARABLE))}")
        if config is not None:
            cls.Config = config
        if inputs is not None:
            cls.min_inputs, cls.max_inputs = (inputs, inputs) if isinstance(inputs, int) else inputs
        for name, value in declared.items():
            setattr(cls, name, value)
    @classmethod
    def output_format(cls, params: Any, device: Any) -> str | None:
        """Format this stage will produce; override when it depends on parameters or the device."""
        return cls.produces

    @classmethod
    def planned_format(cls, params: Any, cfg: Any) -> str | tuple[str, ...] | None:
        """What the planner checks edges with: `output_format` unless the whole config matters (train: the model's
        framework). A tuple means one of these formats, decided at run time (a measured choice)."""
        return cls.output_format(params, cfg.device)

    @classmethod
    def input_formats(cls, params: Any, device: Any) -> tuple[str, ...]:
        """Formats this stage accepts; override when it depends on parameters or the device."""
        return cls.accepts

    @classmethod
    def key_extra(cls, params: Any, settings: Settings) -> dict:
        """More components of the cache key, e.g. the hash of a file a parameter names (import_model)."""
        return {}

    @classmethod
    def check(cls, params: Any, cfg: Any) -> list[str]:
        """Rules spanning several fields or the environment; return one sentence per problem."""
        return []

    @classmethod
    def calibrates(cls, params: Any) -> bool:
        """Whether this run draws `calibration_samples` training images (the plan checks there are that many)."""
        return hasattr(params, "calibration_samples")

    @classmethod
    def check_lineage(cls, params: Any, upstream: list[tuple[str, str, Any]], cfg: Any) -> list[str]:
        """Rules on the stages up the first-input chain ((stage, type, planned format), nearest first), e.g. an
        int8 re-conversion that needs a PyTorch model upstream; one sentence per problem."""
        return []

    def run(self, ctx: StageContext) -> StageResult:  # pragma: no cover - abstract
        raise NotImplementedError


def needs_source(upstream, formats, what: str, fix: str) -> list[str]:
    """Plan-time: a re-conversion needs a model of `formats` up its chain; an imported file of the target format
    (which cannot be re-quantized) is refused naming the way to a deployable file."""
    if not upstream or any(f in formats for _, _, f in upstream):
        return []
    chain = " <- ".join(f"{n} ({t}, {f})" for n, t, f in upstream)
    return [f"{what}, and none is upstream ({chain}). A file imported in its final format "
            f"cannot be re-quantized: import the model's source ({' or '.join(formats)}) and {fix}; or, if the "
            f"imported file is already what the device should run, remove this stage"]
