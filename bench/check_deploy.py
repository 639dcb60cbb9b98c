"""Checks the deploy-format claims on the real recipes, as a user runs them, and prints one PASS/FAIL line per claim.

    python bench/check_deploy.py [--outputs outputs/check] [--only pixel7 iphone15 keras]

- recipe=mobilenet_int8 device=pixel7: every operator of the int8 .tflite computes in integers (read from the
  flatbuffer), the file is <= 0.30x the fp32 .tflite, top-1 drops <= 1.0 point, top-1 agreement with fp32 >= 97%.
- recipe=mobilenet_int8 device=iphone15: the .mlpackage stores its weights as int8 (read back from the package), is
  <= 0.55x the fp16 package, and the summary says it was not run on this host (on Linux).
- recipe=keras_mobilenet_int8 device=pixel7: the same checks as the first point.
The three runs share one outputs folder, so the PyTorch model is trained once. Exit status 1 if any claim fails.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def tflite_claims(s: dict) -> list[tuple[str, bool, str]]:
    from pipeline.runtimes import tflite_rt

    arts = {a["name"]: a for a in s["artifacts"]}
    f, q = arts["export"], arts["quantize"]
    info = tflite_rt.inspect(Path(s["run_dir"]) / q["path"])  # read again here, not taken from the summary
    ratio = q["size_bytes"] / f["size_bytes"]
    drop = 100 * (f["accuracy"] - q["accuracy"])
    agree = q["parity"]["top1_agreement"]
    return [
        ("int8 .tflite: every operator computes in integers (flatbuffer)", info["integer_only"] and
         q["precision"] == "int8", f"{info['operator_count']} operators, float ones: {info['float_operators'] or 'none'}"
         f", input {info['inputs'][0]['dtype']}, output {info['outputs'][0]['dtype']}"),
        ("int8 file <= 0.30x the fp32 .tflite", ratio <= 0.30, f"{ratio:.3f}x ({q['size_bytes']} / {f['size_bytes']} B)"),
        ("top-1 drop <= 1.0 point", drop <= 1.0, f"fp32 {100 * f['accuracy']:.2f}%, int8 {100 * q['accuracy']:.2f}%, "
                                                 f"drop {drop:+.2f} points"),
        ("top-1 agreement with fp32 >= 97%", agree >= 0.97, f"{100 * agree:.2f}% on {q['parity']['samples']} images"),
    ]


def coreml_claims(s: dict) -> list[tuple[str, bool, str]]:
    from pipeline.runtimes import coreml_rt

    arts = {a["name"]: a for a in s["artifacts"]}
    f, q = arts["export"], arts["quantize"]
    info = coreml_rt.inspect(Path(s["run_dir"]) / q["path"])
    share = info["weight_share_by_dtype"].get("int8", 0.0)
    ratio = q["size_bytes"] / f["size_bytes"]
    claims = [
        ("the .mlpackage's weights are stored as int8 (read back from the package)", share > 0.9 and
         f["precision"] == "fp16", f"{share:.1%} of weight elements int8 ({info['weight_elements_by_dtype']}); "
                                   f"{info['compressed_weight_ops']}"),
        ("int8 package <= 0.55x the fp16 package", ratio <= 0.55, f"{ratio:.3f}x"),
    ]
    if sys.platform != "darwin":
        said = q.get("not_runnable") or ""
        claims.append(("the summary says it was not run on this host", said.startswith("not runnable on this host")
                       and q["accuracy"] is None and q["latency_ms"] is None, repr(said)))
    return claims


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outputs", default=str(ROOT / "outputs" / "check"))
    ap.add_argument("--only", nargs="+", default=["pixel7", "iphone15", "keras"])
    args = ap.parse_args()

    from conftest import compose_cfg
    from pipeline import app

    runs = {"pixel7": (["recipe=mobilenet_int8", "device=pixel7"], tflite_claims),
            "iphone15": (["recipe=mobilenet_int8", "device=iphone15"], coreml_claims),
            "keras": (["recipe=keras_mobilenet_int8", "device=pixel7"], tflite_claims)}
    failed = 0
    lines = []
    for name in args.only:
        overrides, claims = runs[name]
        s = app.run(compose_cfg([*overrides, f"paths.outputs={args.outputs}"]))
        for text, ok, detail in claims(s):
            failed += not ok
            lines.append(f"{'PASS' if ok else 'FAIL'}  {' '.join(overrides)}: {text} — {detail}")
    print("\n" + "\n".join(lines))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
