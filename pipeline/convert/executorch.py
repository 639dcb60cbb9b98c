"""PyTorch -> ExecuTorch `.pte`: torch.export, then `to_edge_transform_and_lower` with a partitioner.

- fp32: the XNNPACK partitioner (CPU; Android, iOS, Linux) or the Core ML partitioner (Apple devices);
- int8: PT2E with the XNNPACK quantizer (symmetric int8, per-channel weights), calibrated on images, then lowered to
  XNNPACK like fp32;
- coverage: which operators a delegate took and which were left to ExecuTorch's portable kernels, read back from the
  `.pte` file itself (the program's kernel calls and the XNNPACK graph inside each delegate blob).

The program is exported for batch 1 (what a phone runs); `pipeline.runtimes.executorch_rt` runs a batch image by image.
"""
from __future__ import annotations

import json
import logging
import re
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

PARTITIONERS = ("xnnpack", "coreml")
FORMAT = "executorch"


def quiet():
    """torch.export and the ExecuTorch passes warn about deprecated pytree registrations on every call."""
    from pipeline.core.console import quiet as quiet_loggers

    return quiet_loggers(("executorch",), logging.ERROR)


def _partitioner(name: str, deployment_target: str | None = None):
    if name == "xnnpack":
        from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

        return XnnpackPartitioner()
    if name == "coreml":
        try:
            from executorch.backends.apple.coreml.partition import CoreMLPartitioner
        except ImportError as e:  # coremltools is a project dependency; the partitioner imports it
            raise ValueError(f"the ExecuTorch Core ML partitioner cannot be imported ({e}); install coremltools") from e
        if not deployment_target:
            return CoreMLPartitioner()
        from executorch.backends.apple.coreml.compiler import CoreMLBackend

        from pipeline.convert.coreml import target

        specs = CoreMLBackend.generate_compile_specs(minimum_deployment_target=target(deployment_target))
        return CoreMLPartitioner(compile_specs=specs)
    raise ValueError(f"unknown ExecuTorch partitioner {name!r}; one of {', '.join(PARTITIONERS)}")


def _lower(exported, partitioner: str, deployment_target: str | None = None):
    from executorch.devtools.backend_debug import get_delegation_info
    from executorch.exir import to_edge_transform_and_lower

    edge = to_edge_transform_and_lower(exported, partitioner=[_partitioner(partitioner, deployment_target)])
    info = get_delegation_info(edge.exported_program().graph_module)
    delegation = {"delegated_subgraphs": info.num_delegated_subgraphs, "delegated_nodes": info.num_delegated_nodes,
                  "non_delegated_nodes": info.num_non_delegated_nodes,
                  "by_operator": {k: {"delegated": v.delegated, "non_delegated": v.non_delegated}
                                  for k, v in sorted(info.delegation_by_operator.items())}}
    return edge.to_executorch(), delegation


def _eval(model):
    """The module in eval mode; a module unlifted from a torch.export file (an imported .pt2) has no train/eval
    switch (it was exported in eval mode) and refuses the call."""
    try:
        return model.eval()
    except NotImplementedError:
        return model


def _write(program, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        program.write_to_file(f)
    tmp.replace(path)


def export_pte(model, input_shape: Sequence[int], path: Path, partitioner: str = "xnnpack",
               deployment_target: str | None = None) -> dict[str, Any]:
    """Export an eval-mode torch module to an fp32 `.pte` at `path`; returns facts for the artifact's meta
    (partitioner, delegation at lowering time, coverage read back from the file). `deployment_target` (e.g. iOS17)
    is the Core ML partitioner's minimum deployment target."""
    import torch

    shape = (1, *tuple(input_shape)[1:])
    with quiet(), torch.no_grad():
        exported = torch.export.export(_eval(model), (torch.zeros(shape),))
        program, delegation = _lower(exported, partitioner, deployment_target)
        _write(program, Path(path))
    return {"partitioner": partitioner, "deployment_target": deployment_target, "precision": "fp32", "input_shape": list(shape),
            "delegation": delegation, "coverage": coverage(path), "exporter": f"executorch {version()}"}


def quantize_pte(model, input_shape: Sequence[int], calibration: np.ndarray, path: Path,
                 per_channel: bool = True, float_modules: Sequence[str] = ()) -> dict[str, Any]:
    """int8 `.pte` at `path`: PT2E with the XNNPACK quantizer (int8 activations and weights, symmetric), calibrated
    on `calibration` (float32 NCHW images), lowered to XNNPACK. Returns facts for the artifact's meta."""
    import torch
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                          get_symmetric_quantization_config)
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    if len(calibration) == 0:
        raise ValueError("int8 ExecuTorch export needs calibration images; got none (set calibration_samples > 0)")
    shape = (1, *tuple(input_shape)[1:])
    example = (torch.zeros(shape),)
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=per_channel))
    if float_modules:  # float islands: nodes of these modules are not annotated, XNNPACK runs them in fp32
        floats = set(float_modules)  # (set_module_name(m, None) is refused by the XNNPACK quantizer)

        def in_float_module(node) -> bool:
            stack = node.meta.get("nn_module_stack") or {}
            paths = {str(v[0]).replace("L['self'].", "").replace("L__self___", "") for v in stack.values()}
            return bool(paths & floats)

        quantizer.set_filter_function(lambda node: not in_float_module(node))
    with quiet(), torch.no_grad():
        graph = torch.export.export(_eval(model), example).module()
        prepared = prepare_pt2e(graph, quantizer)
        for i in range(len(calibration)):
            prepared(torch.from_numpy(np.ascontiguousarray(calibration[i : i + 1], dtype=np.float32)))
        converted = convert_pt2e(prepared)
        program, delegation = _lower(torch.export.export(converted, example), "xnnpack")
        _write(program, Path(path))
    return {"partitioner": "xnnpack", "precision": "int8", "input_shape": list(shape), "delegation": delegation,
            "coverage": coverage(path), "exporter": f"executorch {version()}",
            "quantization": {"tool": "torchao PT2E + executorch XNNPACKQuantizer", "scheme": "symmetric int8",
                             "per_channel": per_channel, "calibration_samples": int(len(calibration)),
                             **({"float_modules": list(float_modules)} if float_modules else {})}}


def version() -> str:
    from importlib import metadata

    return metadata.version("executorch")


def _xnnpack_nodes(blob: bytes) -> Counter:
    """Node types of the XNNPACK graph serialized in one delegate blob (header + flatbuffer, decoded with the
    flatc that ships in the executorch wheel and the XNNPACK schema next to it; ExecuTorch has no public reader)."""
    import importlib.resources

    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader
    from executorch.exir._serialize._flatbuffer import _flatc_decompile

    head = XNNHeader.from_bytes(blob[: XNNHeader.EXPECTED_LENGTH])
    fb = blob[head.flatbuffer_offset : head.flatbuffer_offset + head.flatbuffer_size] if head.is_valid() else blob
    schema = importlib.resources.files("executorch.backends.xnnpack.serialization").joinpath("schema.fbs")
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "graph.bin").write_bytes(fb)
        _flatc_decompile(tmp, str(schema), str(Path(tmp) / "graph.bin"), ["--raw-binary"])
        text = (Path(tmp) / "graph.json").read_text()
    # flatc writes unbounded clamps (a ReLU's output_max) as bare inf/nan, which JSON has no literal for
    graph = json.loads(re.sub(r"([:\[,]\s*)(-?)(inf|nan)\b", r'\1"\2\3"', text))
    return Counter(n["xnode_union_type"].removeprefix("XNN") for n in graph.get("xnodes", []))


def coverage(path: Path | str) -> dict[str, Any]:
    """Delegate coverage of a `.pte`, read from the file: the delegates (backend id, count), the operators inside
    XNNPACK's graphs, and the operators the program runs outside any delegate with ExecuTorch's portable kernels.

    `all_delegated` is true when every instruction of the program is a delegate call."""
    from executorch.exir._serialize._program import deserialize_pte_binary
    from executorch.exir.schema import DataLocation

    try:
        program = deserialize_pte_binary(Path(path).read_bytes()).program
    except Exception as e:  # the flatbuffer reader raises several types on garbage
        raise ValueError(f"{path} is not an ExecuTorch program ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                         f"re-create it (re-run with cache.force=[STAGE])") from e
    plan = program.execution_plan[0]
    delegate_calls, portable = 0, Counter()
    for chain in plan.chains:
        for ins in chain.instructions:
            kind = type(ins.instr_args).__name__
            if kind == "DelegateCall":
                delegate_calls += 1
            elif kind == "KernelCall":
                op = plan.operators[ins.instr_args.op_index]
                portable[op.name + (f".{op.overload}" if op.overload else "")] += 1
    backends = Counter(d.id for d in plan.delegates)
    xnn: Counter = Counter()
    for d in plan.delegates:
        if d.id == "XnnpackBackend" and d.processed.location == DataLocation.INLINE:  # segments are inlined on reading
            xnn += _xnnpack_nodes(program.backend_delegate_data[d.processed.index].data)
    return {"delegates": dict(backends), "delegate_calls": delegate_calls,
            "xnnpack_operators": dict(sorted(xnn.items())), "xnnpack_operator_count": sum(xnn.values()),
            "portable_operators": dict(sorted(portable.items())), "portable_operator_count": sum(portable.values()),
            "all_delegated": delegate_calls > 0 and not portable}


def coverage_line(cov: dict[str, Any]) -> str:
    """One sentence for logs and summaries: `XNNPACK: 67 ops (XnnpackBackend x1), none left to portable kernels`."""
    left = cov["portable_operators"]
    rest = "none left to portable kernels" if not left else (
        f"{cov['portable_operator_count']} left to portable kernels ({', '.join(f'{k} x{v}' for k, v in left.items())})")
    where = ", ".join(f"{b} x{n}" for b, n in cov["delegates"].items()) or "no delegate"
    if "XnnpackBackend" in cov["delegates"]:
        return f"XNNPACK: {cov['xnnpack_operator_count']} ops ({where}), {rest}"
    return f"delegates: {where}, {rest}"


def int8_candidate(torch_path: Path, meta: dict[str, Any], calibration: np.ndarray, workdir: Path,
                   per_channel: bool = True, float_modules: Sequence[str] = ()) -> tuple[Path, dict[str, Any]]:
    """The measured choice's ExecuTorch int8 candidate: the torch model at `torch_path` (the fp32 `.pte`'s source;
    a `.pte` cannot be re-quantized) -> PT2E XNNPACK int8 `.pte` in `workdir`. Returns (path, meta)."""
    from pipeline.models import load_torch

    model, _ = load_torch(Path(torch_path))
    path = Path(workdir) / "model.int8.pte"
    facts = quantize_pte(model, meta["input_shape"], calibration, path, per_channel=per_channel,
                         float_modules=float_modules)
    return path, {**meta, "input_shape": facts["input_shape"], "executorch": facts,
                  "quantization": facts["quantization"]}


def peer_default(torch_path: Path, meta: dict[str, Any], workdir: Path) -> tuple[Path, dict[str, Any]]:
    """What a user gets from ExecuTorch with its documented defaults: fp32 lowered to XNNPACK. Returns (path, meta)."""
    from pipeline.models import load_torch

    model, _ = load_torch(Path(torch_path))
    path = Path(workdir) / "model.pte"
    facts = export_pte(model, meta["input_shape"], path, "xnnpack")
    return path, {**meta, "input_shape": facts["input_shape"], "executorch": facts}
