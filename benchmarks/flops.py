"""The machine's limit and each model's work: measured matmul GFLOP/s and FLOPs per image from the ONNX graph."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, shape_inference

from runtime.session import SessionSettings


def model_flops_per_image(path: Path) -> float:
    """Floating-point operations (2 per multiply-add) of one image through the Conv, MatMul and Gemm nodes."""
    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # batch of one: shapes become static
    del model.graph.value_info[:]
    model = shape_inference.infer_shapes(model)
    shapes = {initializer.name: list(initializer.dims) for initializer in model.graph.initializer}
    for info in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        shapes[info.name] = [dim.dim_value for dim in info.type.tensor_type.shape.dim]
    total = 0.0
    for node in model.graph.node:
        output = shapes.get(node.output[0])
        if not output or 0 in output:
            continue
        if node.op_type == "Conv":
            kernel = shapes[node.input[1]]  # (out channels, in channels / groups, kh, kw)
            total += 2.0 * np.prod(output) * np.prod(kernel[1:])
        elif node.op_type in ("MatMul", "Gemm"):
            left = shapes.get(node.input[0])
            transposed = node.op_type == "Gemm" and any(a.name == "transA" and a.i for a in node.attribute)
            if left:
                total += 2.0 * np.prod(output) * (left[-2] if transposed else left[-1])
    return float(total)


def matmul_peak_gflops(size: int, seconds: float) -> dict[str, float]:
    """fp32 matrix-multiply GFLOP/s of (size x size) @ (size x size) with numpy (BLAS) and onnxruntime."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    flops = 2.0 * size**3

    def rate(call) -> float:
        call()
        runs, started = 0, time.perf_counter()
        while runs < 3 or time.perf_counter() - started < seconds:
            call()
            runs += 1
        return flops * runs / (time.perf_counter() - started) / 1e9

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])], "matmul",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [size, size]) for name in ("a", "b")],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    session = ort.InferenceSession(model.SerializeToString(), SessionSettings().options(), providers=["CPUExecutionProvider"])
    measured = {
        "numpy_gflops": rate(lambda: a @ b),
        "onnxruntime_gflops": rate(lambda: session.run(None, {"a": a, "b": b})),
        "size": size,
    }
    measured["peak_gflops"] = max(measured["numpy_gflops"], measured["onnxruntime_gflops"])
    return measured
