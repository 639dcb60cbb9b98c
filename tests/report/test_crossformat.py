"""The cross-format table as printed and as on the card, from hand-made rows: within 120 columns, statuses with their
reasons as shared numbered notes, peer defaults marked, a metric that cannot be computed shown as n/a (never 0)."""
from __future__ import annotations

from pipeline.report import crossformat
from pipeline.report.table import display_width


def row(name, backend, precision, p50, ci, speed, sci, size=2_000_000, peer=False, acc=None):
    return {"name": name, "backend": backend, "format": backend, "precision": precision, "status": "ran",
            "peer_default": peer, "size_bytes": size, "accuracy": acc, "latency_p50_ms": p50, "latency_p50_ci": ci,
            "fps": 1000 / p50, "speedup_vs_fastest_fp32": speed, "speedup_vs_fastest_fp32_ci": sci}


DOC = {"task": "formats", "title": "mobilenet_v2 (3x64x64) in every format this host runs", "metric": "top-1",
       "metric_na": "untrained head: random weights", "reference": "ort_fp32", "cpu": "Xeon", "threads": 2,
       "load_average": {"before": {"1min": 1.5, "cpus": 2}},
       "rows": [row("ort_fp32", "onnxruntime", "fp32", 2.0, [1.9, 2.1], 1.0, [1.0, 1.0], 14_000_000),
                row("ort_per_channel_u8_float_add", "onnxruntime", "int8", 1.0, [0.9, 1.1], 2.0, [1.8, 2.2]),
                row("litert_int8", "litert", "int8", 1.2, [1.1, 1.3], 1.67, [1.5, 1.8], peer=True),
                {"name": "ort_nncf_int8", "backend": "onnxruntime", "format": "onnx", "precision": "int8",
                 "status": "failed", "reason": "does not run here: QLinearConv zero point"},
                {"name": "coreml_fp16", "backend": "coreml", "format": "coreml", "precision": "fp16",
                 "status": "not_runnable", "reason": "Core ML needs macOS", "size_bytes": 7_000_000,
                 "peer_default": True},
                {"name": "coreml_int8", "backend": "coreml", "format": "coreml", "precision": "int8-weights",
                 "status": "not_runnable", "reason": "Core ML needs macOS", "size_bytes": 3_600_000}]}


def test_console_table_fits_and_says_why_each_candidate_did_not_run():
    text = crossformat.console(DOC, 120)
    lines = text.splitlines()
    assert max(display_width(l) for l in lines) <= 120
    body = {l.split()[0]: l for l in lines[3:9]}
    assert "ORT fp32" in body["ort_fp32"] and "✅" in body["ort_fp32"] and "1.00x (ref.)" in body["ort_fp32"]
    assert "❌ [1]" in body["ort_nncf_int8"] and "❎ [2]" in body["coreml_fp16†"] and "❎ [2]" in body["coreml_int8"]
    assert "1.00 (0.900-1.10)" in body["ort_per_channel_u8_float_add"] and "2.00x (1.80-2.20)" in text
    assert " n/a " in body["litert_int8†"] and " 0.00 " not in text  # never a 0% for a metric that does not exist
    assert "[1] does not run here: QLinearConv zero point" in text and "[2] Core ML needs macOS" in text
    assert "top-1 n/a: untrained head" in text and "†: peer default" in text and "load average 1.50" in text
    # the columns line up although ✅ takes two terminal columns
    def mb_column(line: str) -> int:  # where the value after the status symbol starts, in terminal columns
        k = line.index("✅") + 1
        return display_width(line[:k]) + line[k:].index(line[k:].split()[0])

    assert len({mb_column(l) for l in lines[3:6]}) == 1, lines[3:6]


def test_card_uses_words_every_font_draws():
    md = crossformat.markdown(DOC)
    html = crossformat.html(DOC)
    for glyph in "✅❎❌":
        assert glyph not in md and glyph not in html
    assert "| coreml_fp16† | Core ML fp16 | – not run [2] | 7.00 |" in md
    assert "<table class='formats'>" in html and "✗ failed [1]" in html


def test_a_measured_choice_reads_as_a_cross_format_table():
    sel = {"chosen": "ort_per_channel_u8", "fastest_fp32": "ort_fp32", "cpu": "Xeon", "threads": 2,
           "candidates": [{**row("ort_fp32", "onnxruntime", "fp32", 2.0, [1.9, 2.1], 1.0, [1.0, 1.0], acc=0.97),
                           "kind": "float"},
                          {**row("ort_per_channel_u8", "onnxruntime", "int8", 1.0, [0.9, 1.1], 2.0, [1.8, 2.2],
                                 acc=0.965), "kind": "int8", "chosen": True}],
           "not_runnable": [{"name": "litert_int8", "backend": "litert", "format": "tflite", "precision": "int8",
                             "reason": "not built: no PyTorch model upstream"}]}
    doc = crossformat.from_selection(sel, "quantize")
    text = crossformat.console(doc, 120)
    assert "✅ chosen" in text and "96.50" in text and "❎ [1]" in text and "measured int8 choice" in text
