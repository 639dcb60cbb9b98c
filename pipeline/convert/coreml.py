"""PyTorch -> Core ML ML Program (coremltools from a torch.export ExportedProgram, not TorchScript) and Core ML
weight compression (coremltools.optimize). Both run on Linux; running a package needs macOS. Library functions for the
export_coreml and quantize_coreml stages."""
from __future__ import annotations

from pathlib import Path


def target(name: str):
    import coremltools as ct

    if not hasattr(ct.target, name):
        known = sorted(t for t in dir(ct.target) if not t.startswith("_"))
        raise ValueError(f"unknown Core ML deployment target {name!r}; one of {', '.join(known)}")
    return getattr(ct.target, name)


def package_facts(path) -> dict:
    from pipeline.runtimes.coreml_rt import inspect

    info = inspect(path)
    return {**{k: info[k] for k in ("model_type", "specification_version", "inputs", "outputs") if k in info},
            **{k: info.get(k) for k in ("opset", "operator_count", "operators", "weight_elements_by_dtype",
                                        "weight_share_by_dtype", "compressed_weight_ops")}}


def quiet_coremltools():
    """coremltools logs every missing native proxy on Linux and prints conversion progress bars."""
    from pipeline.core.console import quiet

    return quiet(("coremltools",))


def convert_torch(model, input_shape, path: Path, precision: str, deployment_target: str) -> str:
    """`model` (eval mode) -> an ML Program package at `path`; returns the converter's name and version.
    torch.export captures the graph (TorchScript tracing is deprecated since torch 2.11)."""
    import numpy as np
    import torch

    with quiet_coremltools():
        import coremltools as ct

        x = torch.zeros(input_shape)
        program = torch.export.export(model.eval(), (x,)).run_decompositions({})
        ml = ct.convert(program, inputs=[ct.TensorType(name="input", shape=tuple(x.shape), dtype=np.float32)],
                        outputs=[ct.TensorType(name="logits")], convert_to="mlprogram",
                        compute_precision=ct.precision.FLOAT16 if precision == "fp16" else ct.precision.FLOAT32,
                        minimum_deployment_target=target(deployment_target))
        ml.save(str(path))
    return f"coremltools {ct.__version__} (torch.export)"


def compress_weights(src: Path, path: Path, mode: str, nbits: int, per_channel: bool) -> str:
    """Weight-only compression of the package `src` into `path`: int8 linear or n-bit palettization. Returns the
    artifact's precision name. Data-free: needs no Core ML runtime and no images."""
    with quiet_coremltools():
        import coremltools as ct
        import coremltools.optimize.coreml as cto

        ml = ct.models.MLModel(str(src), skip_model_load=True)
        if mode == "int8":
            op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8",
                                             granularity="per_channel" if per_channel else "per_tensor")
            out = cto.linear_quantize_weights(ml, config=cto.OptimizationConfig(global_config=op))
            precision = "int8-weights"
        else:
            op = cto.OpPalettizerConfig(mode="kmeans", nbits=nbits)
            out = cto.palettize_weights(ml, config=cto.OptimizationConfig(global_config=op))
            precision = f"palettized-{nbits}bit"
        out.save(str(path))
    return precision
