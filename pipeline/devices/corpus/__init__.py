"""The estimator's measured corpus: published latencies (and peak memory) of known networks on catalog devices.

Two sources, each row citing its own:
- `aihub_perf.csv` / `aihub_models.csv`: Qualcomm AI Hub profile jobs on physical Qualcomm devices, extracted from
  quic/ai-hub-models (BSD-3-Clause) at commit 52c080d, files qai_hub_models/models/<id>/perf.yaml and info.yaml,
  no value changed (README.md beside this file);
- `published.csv`: the CPU/GPU/NPU/Edge TPU tables the project cites (pipeline/devices/SOURCES.md).

`load()` returns the rows the estimator can use: a network the zoo profiles (CORPUS), a device of the
catalog (DEVICES), one compute unit for the whole graph. `excluded()` says how many rows were left out and why.
Imports no ML framework.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# Qualcomm AI Hub model id -> (zoo network, input side). Ids and sides as in the corpus' aihub_models.csv; the AI Hub
# model code builds each from torchvision (e.g. `regnet` is regnet_x_3_2gf, `shufflenet_v2` is x0.5).
CORPUS = {"mobilenet_v2": ("mobilenet_v2", 224), "mobilenet_v3_large": ("mobilenet_v3_large", 224),
          "mobilenet_v3_small": ("mobilenet_v3_small", 224), "resnet18": ("resnet18", 224),
          "resnet50": ("resnet50", 224), "resnet101": ("resnet101", 224), "resnext50": ("resnext50_32x4d", 224),
          "resnext101": ("resnext101_32x8d", 224), "wideresnet50": ("wide_resnet50_2", 224),
          "shufflenet_v2": ("shufflenet_v2_x0_5", 224), "mnasnet05": ("mnasnet0_5", 224),
          "regnet": ("regnet_x_3_2gf", 224), "regnet_y_800mf": ("regnet_y_800mf", 224),
          "googlenet": ("googlenet", 224), "inception_v3": ("inception_v3", 224),
          "squeezenet1_1": ("squeezenet1_1", 224), "densenet121": ("densenet121", 224),
          "efficientnet_b0": ("efficientnet_b0", 224), "efficientnet_b4": ("efficientnet_b4", 380),
          "efficientnet_v2_s": ("efficientnet_v2_s", 384), "convnext_tiny": ("convnext_tiny", 224),
          "vit": ("vit_b_16", 224)}
# The published tables' networks (corpus/published.csv): (network, side) pairs to profile.
PUBLISHED = [*((f"mobilenet_v1_{w}", 224) for w in ("1.0", "0.75", "0.5", "0.25")),
             *((f"mobilenet_v1_1.0", r) for r in (192, 160, 128)), ("mobilenet_v2", 224),
             ("efficientnet_lite0", 224)]


DIR = Path(__file__).resolve().parent
AIHUB = "Qualcomm AI Hub profile job, quic/ai-hub-models@52c080d"
# AI Hub device name -> catalog device (conf/device/<name>.yaml). "QCS8275 (Proxy)" reports the very same latency as
# "SA7255P ADP" on all 357 cases both have: one physical device, one catalog entry (else holding one out leaks it).
DEVICES = {"Samsung Galaxy S24": "galaxy_s24", "Samsung Galaxy S25": "galaxy_s25",
           "Snapdragon 8 Elite Gen 5 QRD": "sd8_elite_gen5_qrd", "Snapdragon 7 Gen 4 QRD": "sd7_gen4_qrd",
           "Snapdragon X Elite CRD": "x_elite_crd", "QCS8550 (Proxy)": "qcs8550_proxy",
           "QCS8450 (Proxy)": "qcs8450_proxy", "QCS8275 (Proxy)": "sa7255p_adp", "SA7255P ADP": "sa7255p_adp",
           "Dragonwing IQ-9075 EVK": "iq9075_evk", "Dragonwing RB3 Gen 2 Vision Kit": "rb3_gen2",
           "Dragonwing Q-6690 MTP": "q6690_mtp", "SA8775P ADP": "sa8775p_adp", "SA8295P ADP": "sa8295p_adp"}
# AI Hub precision -> the precision the estimator computes in. Float runs in fp16 on the NPU and GPU, fp32 on the CPU
# (estimator.unit_precision); w8a16 (8-bit weights, 16-bit activations) is a class of its own. The mixed variants
# (a few layers in int16 or fp16) have too few rows to fit a class of their own (< 70 in all): left out.
PRECISIONS = {"float": "float", "w8a8": "int8", "w8a16": "w8a16"}
UNITS = {"NPU": "npu", "GPU": "gpu", "CPU": "cpu"}
# AI Hub runtime -> runtime of the latency model. TensorFlow Lite 2.17 runs the NPU through the QNN delegate, the
# GPU through its GPU delegate and the CPU through XNNPACK (its default since 2.3). The two QNN-compiled ONNX flavours
# have < 150 rows: left out.
RUNTIMES = {"tflite": "tflite", "qnn_dlc": "qnn", "onnx": "onnxruntime"}
TFLITE_ON = {"npu": "tflite", "gpu": "gpu-delegate", "cpu": "xnnpack"}


@dataclass(frozen=True)
class Row:
    network: str  # zoo / networks name
    resolution: int
    device: str  # catalog name
    unit: str  # compute-unit kind: cpu | gpu | npu | edgetpu
    runtime: str  # tflite | qnn | onnxruntime | tflite-2019 | gpu-delegate | edgetpu
    runtime_version: str  # e.g. "tflite=2.17.0;qairt=2.42.0", "2019 TFLite kernels"
    precision: str  # float | int8 | w8a16 | fp16 (as measured)
    threads: int | None
    latency_ms: float
    mem_min_mb: float | None
    mem_max_mb: float | None
    source: str  # citation of this row
    model_id: str = ""  # the source's own model name

    @property
    def case(self) -> tuple:
        return self.device, self.unit, self.runtime, self.precision

    @property
    def label(self) -> str:
        t = f", {self.threads} thr" if self.threads else ""
        return (f"{self.device} {self.unit}{t} {self.runtime}: {self.network}@{self.resolution} {self.precision} "
                f"{self.latency_ms:g} ms")


def _num(s: str) -> float | None:
    return float(s) if s not in ("", None) else None


@lru_cache(maxsize=1)
def _aihub() -> tuple[list[Row], dict[str, int]]:
    rows, seen, skipped = [], set(), {}

    def skip(why: str) -> None:
        skipped[why] = skipped.get(why, 0) + 1

    with open(DIR / "aihub_perf.csv", newline="") as f:
        for r in csv.DictReader(f):
            if r["model_id"] not in CORPUS:
                skip("network not in the zoo (no profile)")
                continue
            unit = UNITS[r["compute_unit"]]
            if r["precision"] not in PRECISIONS:
                skip(f"precision {r['precision']} (too few rows to fit)")
                continue
            if r["runtime"] not in RUNTIMES:
                skip(f"runtime {r['runtime']} (too few rows to fit)")
                continue
            if any(r[f"layers_{u}"] for u in ("npu", "gpu", "cpu") if u != unit):
                skip("graph split over several compute units")
                continue
            dev = DEVICES[r["device"]]
            key = (r["model_id"], dev, r["runtime"], r["precision"], unit)
            if key in seen:
                skip("same case on the same physical device (QCS8275 proxy = SA7255P)")
                continue
            seen.add(key)
            net, side = CORPUS[r["model_id"]]
            runtime = TFLITE_ON[unit] if r["runtime"] == "tflite" else RUNTIMES[r["runtime"]]
            rows.append(Row(net, side, dev, unit, runtime, r["tool_versions"],
                            PRECISIONS[r["precision"]], None, float(r["inference_ms"]), _num(r["peak_mem_min_mb"]),
                            _num(r["peak_mem_max_mb"]),
                            f"{AIHUB}: {r['model_id']}, {r['device']}, {r['runtime']}, {r['precision']}",
                            r["model_id"]))
    return rows, skipped


@lru_cache(maxsize=1)
def published() -> list[Row]:
    """The published tables of SOURCES.md (published.csv)."""
    out = []
    with open(DIR / "published.csv", newline="") as f:
        for r in csv.DictReader(f):
            out.append(Row(r["network"], int(r["resolution"]), r["device"], r["unit"], r["runtime"],
                           r["runtime_version"], r["precision"], int(r["threads"]) if r["threads"] else None,
                           float(r["latency_ms"]), None, None, r["source"], r["network"]))
    return out


def load() -> list[Row]:
    """Every usable row: AI Hub's then the published tables'."""
    return [*_aihub()[0], *published()]


def excluded() -> dict[str, int]:
    """AI Hub rows left out, by reason."""
    return dict(_aihub()[1])
