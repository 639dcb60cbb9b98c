"""The measured corpus and the cached profiles of its networks: every row cites its source, the AI Hub ids map to
the zoo at the corpus' resolutions, duplicates of one physical device are merged, and each network's profile totals
match the published multiply-accumulates and parameters. Reads the files beside the code only (seconds)."""
from __future__ import annotations

import csv

import pytest

from pipeline.devices import corpus, networks
from pipeline.devices.corpus import profiles

# torchvision's model documentation ("GFLOPS", which count multiply-accumulates, and "Params"), at the resolution the
# corpus profiles: 224 unless said. Inception-v3: 27.16 M published includes the 3.33 M auxiliary classifier that
# deployed graphs drop; its MACs are published at 299 only. EfficientNet-B4 at 380, V2-S at 384.
PUBLISHED = {"mobilenet_v2": (0.30, 3.50), "mobilenet_v3_large": (0.22, 5.48), "mobilenet_v3_small": (0.06, 2.54),
             "resnet18": (1.81, 11.69), "resnet50": (4.09, 25.56), "resnet101": (7.80, 44.55),
             "resnext50_32x4d": (4.23, 25.03), "resnext101_32x8d": (16.41, 88.79), "wide_resnet50_2": (11.40, 68.88),
             "shufflenet_v2_x0_5": (0.04, 1.37), "mnasnet0_5": (0.10, 2.22), "regnet_x_3_2gf": (3.18, 15.30),
             "regnet_y_800mf": (0.83, 6.43), "googlenet": (1.50, 6.62), "inception_v3": (None, 27.16 - 3.33),
             "squeezenet1_1": (0.35, 1.24), "densenet121": (2.83, 7.98), "efficientnet_b0": (0.39, 5.29),
             "efficientnet_b4": (4.39, 19.34), "efficientnet_v2_s": (8.37, 21.46), "convnext_tiny": (4.46, 28.59),
             "vit_b_16": (17.56, 86.57)}


@pytest.mark.parametrize("model_id", sorted(networks.CORPUS))
def test_profile_totals_match_the_published_figures(model_id):
    net, side = networks.CORPUS[model_id]
    cached = profiles.load()
    assert networks.key(net, side) in cached, f"{net}@{side}: run python -m pipeline.devices.networks"
    t = cached[networks.key(net, side)].totals()
    gmacs, mparams = PUBLISHED[net]
    if gmacs is not None:  # published to 2 decimals: half a digit of rounding plus 1%
        assert abs(t["macs"] / 1e9 - gmacs) <= 0.005 + 0.01 * gmacs, f"{net}: {t['macs'] / 1e9:.3f} G MACs"
    # batch norms folded by the exporter (or, pre-activation in DenseNet, kept with 4 values per channel) and
    # LayerNorm scales not counted as weights: within 1%
    assert abs(t["params"] / 1e6 / mparams - 1) <= 0.01, f"{net}: {t['params'] / 1e6:.2f} M parameters"


def test_corpus_ids_map_to_the_corpus_resolutions():
    with open(corpus.DIR / "aihub_models.csv", newline="") as f:
        res = {r["model_id"]: r["input_resolution"] for r in csv.DictReader(f)}
    for model_id, (_, side) in networks.CORPUS.items():
        # regnet_y_800mf's info.yaml is cut short ("1x3x224"): torchvision's 224x224 classifier
        assert res[model_id] in (f"{side}x{side}", f"1x3x{side}"), model_id


def test_every_row_cites_its_source_and_one_device_is_one_catalog_entry():
    rows = corpus.load()
    assert len(rows) > 1100 and all(r.source and r.runtime_version for r in rows)
    aihub = [r for r in rows if r.source.startswith(corpus.AIHUB)]
    assert {r.unit for r in aihub} == {"npu", "cpu", "gpu"}
    assert all(f"{r.model_id}, " in r.source for r in aihub)  # cite a row by model id, device, runtime, precision
    cases = [(r.network, r.device, r.unit, r.runtime, r.precision) for r in aihub]
    assert len(cases) == len(set(cases))  # the QCS8275 proxy's copies of the SA7255P rows are merged
    assert corpus.excluded()["same case on the same physical device (QCS8275 proxy = SA7255P)"] > 0
    published = corpus.published()
    assert {r.runtime for r in published if r.unit == "cpu"} == {"tflite-2019"}  # 2019 kernels, never pooled blindly
    readme = (corpus.DIR / "README.md").read_text()
    assert "52c080d" in readme and "BSD-3-Clause" in readme
