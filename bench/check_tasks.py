"""Train the zoo's detector and segmenter on the composed digits, convert them to full-integer int8 TFLite and
int8 ONNX (ONNX Runtime), and score fp32 vs int8 with the task's own metric and per-output parity.

What the detector_int8 / segmenter_int8 recipes will do once the stages speak tasks; this runs the library layer
directly (no cache, no MLflow) to show the models train in minutes at one thread and what int8 costs them.

    python bench/check_tasks.py [--task detection|segmentation|both] [--epochs N] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SETUPS = {
    "detection": {"model": "centernet_mobilenet_v2", "data": "digits_detection", "size": 64, "width": 0.5,
                  "classes": 10},
    "segmentation": {"model": "lraspp_mobilenet_v3", "data": "digits_segmentation", "size": 64, "width": 0.5,
                     "classes": 11},
}


def fit(model, task, x, y, epochs: int, batch_size: int, lr: float, size: int, seed: int = 0) -> list[float]:
    """A plain AdamW + one-cycle loop driven by the task's loss (what the train stage's loop needs from a task)."""
    import torch

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    losses = []
    model.train()
    for _ in range(epochs):
        order = rng.permutation(len(x))
        total = 0.0
        for i in range(0, len(x), batch_size):
            idx = order[i : i + batch_size]
            out = model(torch.from_numpy(x[idx]))
            loss = task.loss(out, task.take(y, idx), (size, size))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss) * len(idx)
        losses.append(total / len(x))
    model.eval()
    return losses


def outputs_of(fmt: str, path: Path, x: np.ndarray, threads: int) -> list[np.ndarray]:
    """All outputs of a converted model, in signature order (the runtimes layer returns only the first today)."""
    if fmt == "onnx":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        name = s.get_inputs()[0].name
        outs = [s.run(None, {name: x[i : i + 1]}) for i in range(len(x))]
    else:
        from ai_edge_litert.interpreter import Interpreter

        it = Interpreter(model_path=str(path), num_threads=threads)
        it.allocate_tensors()
        inp, det = it.get_input_details()[0], it.get_output_details()
        outs = []
        for i in range(len(x)):
            xi = x[i : i + 1]
            if inp["dtype"] == np.int8:
                s, z = inp["quantization"]
                xi = np.clip(np.round(xi / s) + z, -128, 127).astype(np.int8)
            it.set_tensor(inp["index"], xi)
            it.invoke()
            row = []
            for d in det:
                v = it.get_tensor(d["index"]).astype(np.float32)
                if d["dtype"] == np.int8:
                    s, z = d["quantization"]
                    v = (v - z) * s
                row.append(v)
            outs.append(row)
        # litert-torch keeps the torch output order but names them by position; match shapes to the fp32 order
    return [np.concatenate([o[k] for o in outs]) for k in range(len(outs[0]))]


def run_task(name: str, args, work: Path) -> dict:
    import torch
    from omegaconf import OmegaConf

    from pipeline import tasks

    from pipeline.library import parity_metrics
    from pipeline.convert import tflite_int8
    from pipeline.models import build
    from pipeline.convert.tflite import quiet_converters

    s = SETUPS[name]
    cfg = OmegaConf.load(Path(__file__).resolve().parents[1] / "conf" / "data" / f"{s['data']}.yaml")
    if args.train_images:
        cfg.train_images = args.train_images
    data = tasks.data_module(s["data"]).load(cfg, s["size"])
    model = build(s["model"], s["classes"], width_mult=s["width"], dropout=0.0)
    task = tasks.get(name, **({"postprocess": model.postprocess(), "image_size": (s["size"],) * 2}
                              if name == "detection" else {}))
    t = time.time()
    losses = fit(model, task, data.train_x, data.train_y, args.epochs, 32, args.lr, s["size"])
    train_s = time.time() - t
    model.eval()
    with torch.inference_mode():
        ref = [np.concatenate(v) for v in zip(*[
            [o.numpy() for o in (lambda r: r if isinstance(r, tuple) else (r,))(model(torch.from_numpy(data.val_x[i:i + 64])))]
            for i in range(0, len(data.val_x), 64)])]
    rows = [{"model": "fp32 (PyTorch)", **task.evaluate(ref, data.val_y)}]
    rng = np.random.default_rng(0)
    calib = data.train_x[rng.choice(len(data.train_x), args.calib, replace=False)]
    x1 = data.val_x[:1]
    tfl = work / f"{name}.int8.tflite"
    with quiet_converters():
        facts = tflite_int8.convert(model, x1, tfl, calib)
    onnx_fp32 = work / f"{name}.onnx"
    torch.onnx.export(model, (torch.from_numpy(x1),), dynamo=True, input_names=["input"],
                      output_names=list(model.output_names), verbose=False).save(str(onnx_fp32))
    onnx_int8 = work / f"{name}.int8.onnx"
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = work / f"{name}.pre.onnx"
    quant_pre_process(str(onnx_fp32), str(pre), skip_symbolic_shape=True)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"input": calib[i:i + 1]} for i in range(len(calib))])

        def get_next(self):
            return next(self.it, None)

    quantize_static(str(pre), str(onnx_int8), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    for label, fmt, path in (("int8 TFLite (LiteRT)", "tflite", tfl), ("int8 ONNX (ONNX Runtime)", "onnx", onnx_int8)):
        got = outputs_of(fmt, path, data.val_x, args.threads)
        if fmt == "tflite":  # order the outputs like the torch model's by shape
            got = sorted(got, key=lambda a: [r.shape for r in ref].index(a.shape))
        per = parity_metrics.compare_outputs(dict(zip(model.output_names, ref)), dict(zip(model.output_names, got)))
        rows.append({"model": label, **task.evaluate(got, data.val_y),
                     "parity": {k: {m: round(v[m], 4) for m in ("cosine", "snr_db", "max_abs_error")} for k, v in per.items()},
                     **task.agreement(ref, got)})
    return {"task": name, "model": s["model"], "width_mult": s["width"], "input_size": s["size"],
            "train_images": len(data.train_x), "val_images": len(data.val_x), "epochs": args.epochs,
            "train_s": round(train_s), "loss": [round(l, 4) for l in losses], "integer_only": facts["integer_only"],
            "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", default="both", choices=["detection", "segmentation", "both"])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.005)
    ap.add_argument("--calib", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--train-images", type=int, default=None, help="override data.train_images")
    args = ap.parse_args()
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")
    import torch

    torch.set_num_threads(args.threads)
    names = ["detection", "segmentation"] if args.task == "both" else [args.task]
    with tempfile.TemporaryDirectory() as tmp:
        for n in names:
            print(json.dumps(run_task(n, args, Path(tmp))), flush=True)
    print(json.dumps({"load_average_end": os.getloadavg(), "threads": args.threads}))


if __name__ == "__main__":
    main()
