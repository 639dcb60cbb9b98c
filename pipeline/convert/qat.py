"""Quantization-aware training with PT2E (torchao) and litert-torch's quantizer: fake quantizers in, int8 out to ONNX
(QDQ) or TFLite. Library functions for the qat stage (pipeline/stages/qat.py explains the flow)."""
from __future__ import annotations


def prepare_qat(model, input_shape, per_channel: bool):
    """Export with a dynamic batch and insert fake quantizers; returns (prepared GraphModule, quantizer)."""
    import torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e

    class FoldedQatQuantizer(PT2EQuantizer):
        STATIC_QAT_ONLY_OPS = []  # conv+bn patterns: none left after folding (see the module docstring)

        def _annotate_all_static_patterns(self, model, quantization_config, filter_fn=None):
            if quantization_config is not None:
                annotate_conv_relu6(model, quantization_config, filter_fn)
            return super()._annotate_all_static_patterns(model, quantization_config, filter_fn)

    x = torch.zeros(2, *input_shape[1:])
    batch = torch.export.Dim("batch", min=1, max=1024)
    graph = torch.export.export(model, (x,), dynamic_shapes=({0: batch},)).module()
    quantizer = FoldedQatQuantizer().set_global(
        get_symmetric_quantization_config(is_per_channel=per_channel, is_qat=True))
    prepared = prepare_qat_pt2e(graph, quantizer)
    allow_exported_model_train_eval(prepared)  # lets fit() call .train() / .eval() on the exported graph
    return prepared, quantizer


def annotate_conv_relu6(gm, config, filter_fn=None) -> None:
    """Conv followed by ReLU6 (hardtanh 0..6) as one quantized unit (pipeline.convert.tflite_int8.annotate_conv_clamp):
    litert-torch's quantizer fuses conv+ReLU but not conv+ReLU6, MobileNet's activation."""
    from pipeline.convert.tflite_int8 import annotate_conv_clamp

    annotate_conv_clamp(gm, config, filter_fn, relu6_only=True)


def to_onnx(converted, x, path, opset: int) -> None:
    """The converted int8 graph -> ONNX QDQ with uint8 activations (see activations_to_uint8)."""
    import onnx
    import torch

    batch = torch.export.Dim("batch", min=1, max=1024)
    prog = torch.onnx.export(converted, (x,), input_names=["input"], output_names=["logits"], opset_version=opset,
                             dynamic_shapes=({0: batch},), dynamo=True, verbose=False)
    prog.save(str(path))
    model = onnx.load(str(path))
    activations_to_uint8(model)
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def activations_to_uint8(model) -> int:
    """Store the activations' int8 quantization as uint8 (zero point + 128); returns the Q/DQ nodes rewritten.

    Exact: uint8 q + 128 with zero point z + 128 is the same real value as int8 q with z, and the clamp bounds shift
    alike. Why: ONNX Runtime on x86 computes convolutions as uint8 activations x int8 weights. It converts int8
    activation Q/DQ pairs to uint8 itself, but not where one quantized tensor feeds two consumers (every residual
    branch), so the torch exporter's int8 graph left those convolutions in float (10 of 52 in MobileNetV2)."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {t.name: t for t in g.initializer}
    renamed: dict[str, str] = {}
    count = 0
    for n in g.node:  # activations: every Q (weights are stored quantized), and the DQ right after a Q
        activation = n.op_type == "QuantizeLinear" or (
            n.op_type == "DequantizeLinear" and getattr(producer.get(n.input[0]), "op_type", None) == "QuantizeLinear")
        zp = inits.get(n.input[2]) if activation and len(n.input) > 2 else None
        if zp is None or zp.data_type != TensorProto.INT8:
            continue
        if zp.name not in renamed:
            u8 = (numpy_helper.to_array(zp).astype(np.int16) + 128).astype(np.uint8)
            g.initializer.append(numpy_helper.from_array(u8, f"{zp.name}_uint8"))
            renamed[zp.name] = f"{zp.name}_uint8"
        n.input[2] = renamed[zp.name]
        count += 1
    q_outputs = {n.output[0] for n in g.node if n.op_type == "QuantizeLinear"}
    for vi in g.value_info:  # the exporter's recorded types of the quantized tensors
        if vi.name in q_outputs:
            vi.type.tensor_type.elem_type = TensorProto.UINT8
    return count


def to_tflite(converted, x, path, quantizer) -> None:
    """The converted int8 graph -> full-integer .tflite through litert-torch with the same quantizer."""
    import litert_torch
    from litert_torch.quantize.quant_config import QuantConfig

    edge = litert_torch.convert(converted, (x,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
    edge.export(str(path))


def check_int8_artifact(fmt: str, path, converted, x) -> dict[str, float]:
    """Run the exported file in its runtime and compare with the int8 PyTorch graph it came from."""
    import numpy as np
    import torch

    with torch.inference_mode():
        ref = converted(torch.from_numpy(x)).numpy()
    if fmt == "onnx":
        from pipeline.runtimes import load

        got = load("onnx", path, threads=1).predict(x)
    else:
        got = run_tflite_int8(path, x)
    return {"export_max_abs_error": float(np.abs(ref - got).max()),
            "export_top1_agreement": float((ref.argmax(1) == got.argmax(1)).mean())}


def run_tflite_int8(path, x):
    """Run a TFLite model image by image, quantizing int8 inputs and dequantizing int8 outputs with their parameters."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=1)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    rows = []
    for i in range(len(x)):
        xi = x[i : i + 1].astype(np.float32)
        scale, zero = inp["quantization"]
        if inp["dtype"] != np.float32 and scale:
            info = np.iinfo(inp["dtype"])
            xi = np.clip(np.round(xi / scale) + zero, info.min, info.max).astype(inp["dtype"])
        it.set_tensor(inp["index"], xi)
        it.invoke()
        y = it.get_tensor(out["index"])
        scale, zero = out["quantization"]
        rows.append((y.astype(np.float32) - zero) * scale if out["dtype"] != np.float32 and scale else y)
    return np.concatenate(rows).astype(np.float32)
