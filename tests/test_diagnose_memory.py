"""Bounded diagnosis: the per-layer comparison of a large model streams within its memory cap, and compares
activations only (a .tflite's weights, biases and int32 constants are never in the table)."""
from __future__ import annotations

import pytest

import json
import subprocess
import sys

import numpy as np
import torch

from conftest import ROOT
from pipeline.library import diagnose

SIZE, LAYERS, CHANNELS, IMAGES, CAP_MB = 192, 32, 16, 8, 200


class Deep(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.stem = torch.nn.Conv2d(3, CHANNELS, 3, padding=1)
        self.body = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1),
                                                              torch.nn.ReLU()) for _ in range(LAYERS)])
        self.head = torch.nn.Conv2d(CHANNELS, 2, 1)

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


PROBE = """
import json, sys, threading, time
import numpy as np
sys.path.insert(0, {root!r})
from pipeline import runtimes
from pipeline.library import diagnose

def rss_mb():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS:")).split()[1]) / 1024

x = np.load({x!r})
models = [runtimes.load("onnx", p, {{}}, threads=2) for p in ({fp32!r}, {int8!r})]
for m in models:  # the models themselves, loaded and run: what any comparison needs before its own memory
    m.predict(x[:1])
import onnx, onnxruntime.quantization.qdq_loss_debug  # (library code, not activations)
base, peak, done = rss_mb(), [0.0], threading.Event()

def watch():  # resident memory sampled every 5 ms while the diagnosis runs
    while not done.is_set():
        peak[0] = max(peak[0], rss_mb())
        time.sleep(0.005)

t = threading.Thread(target=watch)
t.start()
report = diagnose.first_diverging_layer("onnx", {fp32!r}, {int8!r}, x, memory_mb={cap})
done.set()
t.join()
print(json.dumps({{"base_mb": base, "peak_mb": peak[0], "layers": len(report["layers"])}}))
"""


@pytest.mark.slow
def test_diagnosis_of_a_large_model_stays_under_its_memory_cap(tmp_path):
    from pipeline.convert.onnx import QdqOptions, export_torch, quantize_qdq

    fp32, int8 = tmp_path / "deep.onnx", tmp_path / "deep.int8.onnx"
    export_torch(Deep().eval(), (1, 3, SIZE, SIZE), fp32)
    x = np.random.default_rng(0).standard_normal((IMAGES, 3, SIZE, SIZE)).astype(np.float32)
    quantize_qdq(fp32, int8, x[:4], QdqOptions())
    np.save(tmp_path / "x.npy", x)
    import onnx

    acts = diagnose._onnx_activation_tensors(onnx.shape_inference.infer_shapes(onnx.load(str(fp32))).graph)
    unbounded_mb = 2 * IMAGES * sum(b for *_, b in acts) / 2 ** 20  # every tensor, every image, both models
    assert unbounded_mb > 5 * CAP_MB  # what keeping everything at once would take
    out = subprocess.run([sys.executable, "-c", PROBE.format(root=str(ROOT), x=str(tmp_path / "x.npy"),
                                                             fp32=str(fp32), int8=str(int8), cap=CAP_MB)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["layers"] >= LAYERS  # every layer of the body compared (its conv + relu, fused by the quantizer)
    assert r["peak_mb"] - r["base_mb"] < CAP_MB, (r, unbounded_mb)


def test_tflite_comparison_holds_activations_only(tmp_path):
    import litert_torch

    from pipeline.convert import tflite_int8

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3)).eval()
    x = np.random.default_rng(0).standard_normal((12, 3, 16, 16)).astype(np.float32)
    fp32, int8 = tmp_path / "m.tflite", tmp_path / "m.int8.tflite"
    litert_torch.convert(model, (torch.from_numpy(x[:1]),)).export(str(fp32))
    tflite_int8.convert(model, x[:1], int8, x[:8], io="float")
    report = diagnose.first_diverging_layer("tflite", fp32, int8, x[8:], memory_mb=1)  # one tensor a pass
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(int8))
    constants = {d["name"] for d in it.get_tensor_details() if d["dtype"] == np.int32}
    names = [l["tensor"] for l in report["layers"]]
    assert names and not set(names) & constants, (names, constants)
    assert len(names) >= 4 and all(np.isfinite(l["cosine"]) for l in report["layers"])
