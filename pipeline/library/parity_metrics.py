"""Agreement of two models output by output: cosine, max and mean absolute error, SNR in dB.

Works for any number of outputs of any shape (logits, heatmaps, box regressions, masks): every output tensor is
compared element by element with the one of the same name from the reference model. numpy only; no ML framework.
Written here because no maintained library computes these four per tensor (they are one line each of numpy).
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

METRICS = ("cosine", "cosine_min", "max_abs_error", "mean_abs_error", "snr_db")
# What the metrics mean for a threshold check: True = higher is better.
HIGHER_IS_BETTER = {"cosine": True, "cosine_min": True, "max_abs_error": False, "mean_abs_error": False,
                    "snr_db": True}


def compare_tensor(ref: np.ndarray, got: np.ndarray, name: str = "output") -> dict[str, float]:
    """Compare one output: per-sample cosine (mean and min over the batch), max and mean |ref - got|, and the
    signal-to-noise ratio 10*log10(sum ref^2 / sum (ref - got)^2) in dB (inf when identical)."""
    ref, got = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if ref.shape != got.shape:
        raise ValueError(f"output {name!r}: the reference has shape {list(ref.shape)} but the model gives "
                         f"{list(got.shape)}; compare models with the same signature (same input size and outputs)")
    n = ref.shape[0] if ref.ndim > 1 else 1
    r, g = ref.reshape(n, -1), got.reshape(n, -1)
    norms = np.linalg.norm(r, axis=1) * np.linalg.norm(g, axis=1)
    same = np.all(r == g, axis=1)
    cos = np.where(same, 1.0, (r * g).sum(1) / np.maximum(norms, 1e-30))
    err = ref - got
    noise = float((err ** 2).sum())
    signal = float((ref ** 2).sum())
    snr = float("inf") if noise == 0 else (float("-inf") if signal == 0 else 10.0 * np.log10(signal / noise))
    return {"cosine": float(cos.mean()), "cosine_min": float(cos.min()), "max_abs_error": float(np.abs(err).max()),
            "mean_abs_error": float(np.abs(err).mean()), "snr_db": snr}


def _named(outputs, names: Sequence[str] | None) -> dict[str, np.ndarray]:
    if isinstance(outputs, Mapping):
        return dict(outputs)
    if isinstance(outputs, np.ndarray):
        outputs = [outputs]
    outputs = list(outputs)
    names = list(names) if names else [f"output_{i}" for i in range(len(outputs))]
    if len(names) != len(outputs):
        raise ValueError(f"{len(outputs)} outputs but {len(names)} names ({names})")
    return dict(zip(names, outputs))


def compare_outputs(ref, got, names: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """Per-output metrics for two models' outputs: a dict {name: array}, a list (named by `names` or by position)
    or one array. Both sides must hold the same outputs."""
    r, g = _named(ref, names), _named(got, names)
    if set(r) != set(g):
        raise ValueError(f"the models have different outputs: reference {sorted(r)}, model {sorted(g)}; parity "
                         f"compares outputs of the same name (check both signatures)")
    return {k: compare_tensor(r[k], g[k], k) for k in r}


def worst(per_output: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
    """One summary over all outputs: the worst value of every metric (lowest cosine/SNR, largest error)."""
    out: dict[str, float] = {}
    for m in METRICS:
        vals = [v[m] for v in per_output.values() if m in v]
        if vals:
            out[m] = min(vals) if HIGHER_IS_BETTER[m] else max(vals)
    return out


# Thresholds on every output tensor (the others bound a task's agreement metrics).
OUTPUT_THRESHOLDS = ("min_cosine", "min_snr_db", "max_abs_error")


def violations(per_output: Mapping[str, Mapping[str, float]], min_cosine: float | None = None,
               min_snr_db: float | None = None, max_abs_error: float | None = None) -> list[str]:
    """Thresholds broken, one sentence each naming the output, the value and the threshold."""
    out = []
    for name, m in per_output.items():
        if min_cosine is not None and m["cosine"] < min_cosine:
            out.append(f"output {name!r}: cosine {m['cosine']:.4f} < min_cosine {min_cosine:g}")
        if min_snr_db is not None and m["snr_db"] < min_snr_db:
            out.append(f"output {name!r}: SNR {m['snr_db']:.1f} dB < min_snr_db {min_snr_db:g}")
        if max_abs_error is not None and m["max_abs_error"] > max_abs_error:
            out.append(f"output {name!r}: max abs error {m['max_abs_error']:.4g} > max_abs_error {max_abs_error:g}")
    return out


# What to try when a quantized model diverges from its source, in the order worth trying.
FIXES = ("per-channel weights (per_channel=true)", "more calibration images (calibration_samples)",
         "another calibration method (method=entropy or percentile for ONNX Runtime)",
         "keep the sensitive layers in float (the first convolution, the last layers, the detection/segmentation head)")


def failure_message(stage: str, source: str, problems: Sequence[str], samples: int) -> str:
    """The parity failure sentence: the stage, its source, what broke, and the fixes worth trying."""
    return (f"parity: stage '{stage}' diverged from its source '{source}' on {samples} validation images: "
            f"{'; '.join(problems)}. Fixes worth trying at stage '{stage}': " + "; ".join(FIXES) + ".")
