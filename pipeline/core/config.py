"""Structured configs: the schema Hydra validates every composed config against.

Registered in Hydra's ConfigStore as `pipeline_schema`; `conf/config.yaml` lists it first in its defaults, so an unknown
top-level key or a wrong type is refused by Hydra with its full path. Stage parameters are validated by the planner
against each stage type's own dataclass (see pipeline/stages/base.py), because `stages` maps names to different types.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from pipeline.core import bounds
from pipeline.core.bounds import (Dropout, Finite, NonNegative, OpenUnitInterval, Positive, PositiveInt,
                             Seed, UnitInterval, at_least)


@dataclass
class DataConfig:
    name: str = MISSING  # digits | imagefolder
    path: Optional[str] = None  # imagefolder: a folder with one sub-folder of images per class
    val_fraction: OpenUnitInterval = 0.2  # share of each class held out for validation (fixed, seeded split)
    seed: Seed = 0  # split seed
    mean: List[Finite] = field(default_factory=lambda: [0.5, 0.5, 0.5])  # per-channel normalisation
    std: List[Positive] = field(default_factory=lambda: [0.5, 0.5, 0.5])  # per-channel divisor, > 0
    max_per_class: Optional[at_least(2, integer=True)] = None  # cap images per class (quick experiments on big folders;
    #                                                          fashion_mnist: training images per class)
    # an unreadable, truncated, oversized or unconvertible image: error = refuse the plan listing every such file;
    # skip = leave them out (each one and the count are logged)
    on_bad_image: str = "error"
    max_image_pixels: PositiveInt = 89_478_485  # larger images are refused as oversized (Pillow's bomb limit)
    # The task data sets' own keys (pipeline/data/{detection,segmentation,unlabelled,composed}.py); null elsewhere.
    annotations: Optional[str] = None  # coco: the instances JSON
    classes: Optional[List[str]] = None  # yolo / masks: class names in label order
    max_images: Optional[PositiveInt] = None  # images: cap on the images read
    # coco / yolo: how images meet the input size: letterbox (aspect kept, padded grey; boxes scaled and shifted
    # with them, and mapped back by pipeline.data._common.unletterbox) | stretch; null = letterbox
    resize: Optional[str] = None
    train_images: Optional[PositiveInt] = None  # digits_detection / digits_segmentation: composed training canvases
    val_images: Optional[PositiveInt] = None  # the same: composed validation canvases; fashion_mnist: test images used
    digits_per_image: Optional[List[PositiveInt]] = None  # the same: [min, max] digits per canvas
    digit_size: Optional[List[Positive]] = None  # the same: [min, max] digit side as a share of the canvas


@dataclass
class ModelConfig:
    name: str = MISSING  # a model of the zoo (pipeline/models)
    # input resolution: one side for a square (224), or [H, W] for another shape ([608, 800]); checked by
    # pipeline.data.size (a union of int and list is beyond the schema's types)
    input_size: Any = 224
    width_mult: Positive = 1.0  # channel width multiplier
    dropout: Dropout = 0.2  # dropout before the classifier


# --- device catalog. A figure carries its source; an unpublished one says so instead of a value. ----------
@dataclass
class FigureConfig:
    value: Optional[Positive] = None  # the figure; null only together with unpublished: true
    source: Optional[str] = None  # [P] vendor/official, [S] third-party, [E] derived (say how); required
    unpublished: bool = False  # true: no published figure exists (source says where one was looked for)


@dataclass
class ComputeUnitConfig:
    kind: str = MISSING  # cpu | gpu | npu | edgetpu
    description: str = ""  # e.g. "2x Cortex-X1 2.85 GHz + 2x A78 2.35 GHz"
    cores: PositiveInt = 1  # CPU: cores the peak figures count; threads beyond this add nothing
    peak_gops: Dict[str, FigureConfig] = field(default_factory=dict)  # precision (fp32|fp16|int8) -> peak G ops/s


@dataclass
class IdentityConfig:
    """What a measurement must report to be taken as coming from this device (the refit checks it)."""
    cpu_model: List[str] = field(default_factory=list)  # one of these must occur in the measured CPU name
    cores: Optional[PositiveInt] = None  # CPU cores the device's OS reports (all clusters)


@dataclass
class AcceleratorConfig:
    delegate: str = "none"  # none | gpu (TFLite GPU delegate) | nnapi | edgetpu | coreml_ane | tensorrt
    unit: Optional[str] = None  # the compute unit (key of compute_units) the delegate runs on


@dataclass
class BudgetConfig:
    latency_ms: Optional[Positive] = 50.0  # per-inference latency on the device (estimate; measured on `host`)
    fps: Optional[Positive] = 30.0  # sustained frames per second (1000 / latency)
    model_mb: Optional[Positive] = 20.0  # artifact size on disk
    ram_mb: Optional[Positive] = None  # inference peak memory (the estimate's); null = the device's RAM


@dataclass
class DeviceConfig:
    name: str = MISSING  # catalog id, e.g. pixel7
    display_name: str = MISSING  # human name
    runtime: str = MISSING  # deployment runtime: onnxruntime | litert | coreml
    formats: List[str] = field(default_factory=list)  # artifact formats the device can deploy, preferred first
    # CPU threads the deployed model runs with (benchmarks use this, capped to host cores); 0 = all cores
    threads: at_least(0, integer=True, note="0 = all cores") = 1
    measured_here: bool = False  # this machine is the device: latency is measured here, never estimated
    deployment_target: Optional[str] = None  # Core ML minimum deployment target (e.g. iOS17); null elsewhere
    # Hardware model (pipeline/devices): validated at plan time, every figure with its source.
    soc: str = ""  # system on chip
    ram_gb: FigureConfig = field(default_factory=FigureConfig)  # device RAM
    memory_bandwidth_gbps: FigureConfig = field(default_factory=FigureConfig)  # DRAM bandwidth, GB/s
    compute_units: Dict[str, ComputeUnitConfig] = field(default_factory=dict)  # cpu / gpu / npu ... with peak figures
    estimate_unit: Optional[str] = None  # compute unit the deployed model runs on (latency estimate); null = measured
    accelerator: AcceleratorConfig = field(default_factory=AcceleratorConfig)  # delegate whose op coverage is reported
    identity: IdentityConfig = field(default_factory=IdentityConfig)  # CPU name and core count its measurements show
    budgets: BudgetConfig = field(default_factory=BudgetConfig)  # default budgets; gate.* overrides them
    # Measuring on the device itself (pipeline/remote): null = latency is estimated (or measured here on `host`).
    connection: Optional[str] = None  # ssh://USER@HOST[:PORT] (a board) or adb://SERIAL (a phone); keys/agent only
    known_hosts: Optional[str] = None  # known_hosts file the board's host key is checked against; null = ~/.ssh's
    remote_python: str = "python3"  # interpreter on the device (with numpy and its runtime: LiteRT, onnxruntime ...)
    remote_timeout_s: Positive = 600.0  # longest a copy or a benchmark run on the device may take
    # LiteRT's benchmark_model binary on the device (a phone without Python over adb, or a board): it times .tflite
    # files instead of the pipeline's runner, and prints mean/min/max only (no p50/p90)
    benchmark_model: Optional[str] = None


@dataclass
class TrackingConfig:
    enabled: bool = True  # false: log nothing to MLflow (summary.json is still written)
    uri: Optional[str] = None  # MLflow tracking URI; null = embedded SQLite store under paths.outputs
    experiment: Optional[str] = None  # experiment name; null = the recipe name
    timeout_s: Positive = 10.0  # deadline of every call to the tracking server (health check and each API call)
    fallback_to_local: bool = False  # server unreachable: log to the embedded store instead of failing


@dataclass
class CacheConfig:
    enabled: bool = True  # false: run every stage and store nothing
    force: List[str] = field(default_factory=list)  # stage names to re-run (with their descendants) even if cached
    # the stage cache; null = <paths.outputs>/cache. Several outputs folders may share one (entries are addressed by
    # content and locked per key); timings are keyed by the machine, so hosts sharing a disk never swap latencies
    dir: Optional[str] = None


@dataclass
class GateConfig:
    max_accuracy_drop: NonNegative = 1.0  # points of the task metric a model may lose against its fp32 baseline
    # Budgets: null = the device's default (device.budgets); set to override per recipe or command line.
    enforce: bool = False  # true: exit 1 when the judged artifact's verdict is not a pass
    artifact: Optional[str] = None  # the artifact a run is judged on (gate, objective, registry); null = the last model
    latency_ms: Optional[Positive] = None  # max latency on the device (estimate for the device; measured on `host`)
    fps: Optional[Positive] = None  # min frames per second
    model_mb: Optional[Positive] = None  # max artifact size
    ram_mb: Optional[Positive] = None  # max inference memory
    judge: str = "point"  # point: the estimate's value; upper: its whole 80% interval within budget (a measured number wins)
    # release gate: judge the deployable model against this registry version before registering it (champion |
    # candidate | a version number; null = no release gate); a regression beyond the noise exits 1
    against: Optional[str] = None
    tolerance_pct: NonNegative = 5.0  # release gate: a slowdown or growth below this is no regression even when measurable


@dataclass
class OptimizeBudgetConfig:
    """What `recipe=optimize` must keep (pipeline/optimize); the recipe hands the same numbers to gate.*, so the run is
    judged on them too."""

    accuracy_drop: NonNegative = 1.0  # top-1 points the optimized model may lose against the unmodified fp32 model
    latency_ms: Optional[Positive] = None  # max latency on the device; null = the device's budget (no early stop)
    model_mb: Optional[Positive] = None  # max artifact size; null = the device's budget
    ram_mb: Optional[Positive] = None  # max inference memory (estimate); null = the device's RAM


# Sweeps and the registry: what a run is judged on, and where its final artifact is registered.
@dataclass
class ObjectiveConfig:
    # returned to sweepers in this order (accuracy | latency_ms | size_mb | device_latency_ms); the first one also
    # decides whether a new registry version beats the champion
    metrics: List[str] = field(default_factory=lambda: ["accuracy"])  # judged on the artifact gate.artifact names


@dataclass
class RegistryConfig:
    enabled: bool = True  # register the final artifact of a run whose gates pass in the MLflow Model Registry
    name: Optional[str] = None  # registered model name; null = "<recipe>-<device>" (one model per recipe and device)
    # the task metric (top-1, mAP, mIoU, 0-1) a model must beat to be registered; null = chance for its task
    # (1/classes beyond sampling noise; mAP 0.05 for a detector): pipeline/tasks/chance.py
    min_score: Optional[UnitInterval] = None


@dataclass
class PathsConfig:
    outputs: str = "outputs"  # run directories, the embedded MLflow store and the stage cache
    # a run does not start when the disk holding `outputs` has less free space than this (0: no check)
    min_free_mb: at_least(0, integer=True, note="0 = no check") = 200


@dataclass
class PipelineConfig:
    recipe: str = MISSING  # the recipe's name (set from the `recipe` group choice)
    description: str = ""  # one line on what the recipe is for
    task: str = "classification"  # what the model's outputs mean: classification | detection | segmentation | none
    seed: Seed = 0  # global seed for training and sampling
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    gate: GateConfig = field(default_factory=GateConfig)
    budget: OptimizeBudgetConfig = field(default_factory=OptimizeBudgetConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    verbose: bool = False  # true: every library's output on the console as it prints it (default: in pipeline.log)
    stages: Dict[str, Any] = field(default_factory=dict)  # stage name -> {type, inputs, parameters}


def problems(cfg: Any) -> list[str]:
    """Every number of a composed config outside the range its schema field declares (pipeline.core.bounds), each as
    'gate.max_accuracy_drop: must be a finite number >= 0, got nan'. Stage parameters are checked per stage."""
    return bounds.problems(cfg, "", PipelineConfig)


def _unique() -> str:
    """${unique:}: 8 random hex digits, the same wherever one composed config reads it (OmegaConf caches it, and Hydra
    copies the cache into each job's config): a sweep folder named by time alone is shared by two sweeps started in
    the same second."""
    import uuid

    return uuid.uuid4().hex[:8]


OmegaConf.register_new_resolver("unique", _unique, use_cache=True, replace=True)


def register() -> None:
    """Store the schema. `stages` is left open (not struct) so that any stage parameter can be overridden from the
    command line without Hydra's `+` prefix; the planner validates each stage against its own dataclass instead, and
    refuses unknown keys there with the full path and a suggestion."""
    node = OmegaConf.structured(PipelineConfig)
    OmegaConf.set_struct(node.stages, False)
    ConfigStore.instance().store(name="pipeline_schema", node=node)
