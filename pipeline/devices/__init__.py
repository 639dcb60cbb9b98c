"""Device catalog, per-layer profiler, latency estimator, accelerator coverage and budgets.

Importing this package is cheap (no ML framework): planning validates the device through `catalog.check`. The
profiler imports onnx / LiteRT / torch inside its functions only.
"""
from pipeline.devices.catalog import check, figure_value  # noqa: F401
