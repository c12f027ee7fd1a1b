"""Run an exported graph's pixel path in uint8: the same values, a quarter of the memory traffic.

tf2onnx converts the Keras graph as written. The uint8 image is cast to float32 first, the symmetry views
(transposes, flips and their concatenation) then move float32 values, and the layout change to NCHW that
onnxruntime's convolutions take comes after the normalisation. With 8 views each of those passes touches
4 bytes for every value of 8 images per input image, about a fifth of the fp32 model's time at batch 32.

Moving whole pixel values is exact in uint8, so `run_pixel_path_in_uint8` rewrites the graph:

1. the tensors that hold the input's pixel values unchanged (`pixel_values`: what exact casts and the
   value-moving ops in `VALUE_MOVING_OPS` make of it) all become uint8: the casts among them go, and the
   moving ops take uint8 (onnxruntime runs them for any element type). Where such a tensor meets an op
   that computes, one cast to the type that op read before is put in front of it;
2. a layout Transpose that follows such a cast and constant per-channel normalisation steps (Mul, Add, Sub,
   Div) moves up to before the cast, with the constants permuted to match, so it moves bytes too.

Every output is bit for bit what it was (the export's parity check still compares with TensorFlow). The
rewrite works on a copy and is kept only when `onnx.checker` (with strict shape inference) accepts the
result; a graph it cannot rewrite is left as it is. The views are stacked NHWC (`train.view_layers` flips by
slicing), so the moved transpose is NHWC -> NCHW, which onnxruntime runs on its fast path. One-off, default
8-view MobileNetV2 through `Classifier` at batch 32: fp32 33.7 images/s as traced, 40.6 rewritten, 44.3
rewritten with the views stacked NHWC; `python -m benchmarks` has the current figures.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from train.onnx_graph import consumers

#: Ops that only move values: fed whole pixel values, they output whole pixel values, in any element type.
VALUE_MOVING_OPS = {"Transpose", "ReverseSequence", "Concat", "Reshape", "Slice", "Identity", "Squeeze", "Unsqueeze", "Split", "Flatten"}
#: Ops that read only their input's shape: they work on a tensor of any element type.
SHAPE_OPS = {"Shape", "Size"}
#: Types that hold every whole number from 0 to 255 exactly (a Cast from uint8 to one of them keeps pixel values).
PIXEL_EXACT_TYPES = {onnx.TensorProto.UINT8, onnx.TensorProto.INT16, onnx.TensorProto.UINT16, onnx.TensorProto.INT32,
                     onnx.TensorProto.UINT32, onnx.TensorProto.INT64, onnx.TensorProto.UINT64, onnx.TensorProto.FLOAT,
                     onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}
#: Elementwise steps that commute with a transpose when their other operand is a constant (permuted too).
ELEMENTWISE_WITH_CONSTANT = {"Mul", "Add", "Sub", "Div"}


def pixel_values(graph: onnx.GraphProto) -> dict[str, int]:
    """The tensors holding pixel values (the uint8 input, what a Cast to uint8 computes, such as a zoomed
    view, and what exact casts and value-moving ops make of them) -> their element type."""
    types = {value.name: onnx.TensorProto.UINT8 for value in graph.input if value.type.tensor_type.elem_type == onnx.TensorProto.UINT8}
    for node in graph.node:  # graph order is topological
        if node.op_type == "Cast" and helper.get_node_attr_value(node, "to") == onnx.TensorProto.UINT8:
            types[node.output[0]] = onnx.TensorProto.UINT8
            continue
        moved = [name for name in (node.input if node.op_type == "Concat" else node.input[:1]) if name]
        if not moved or not all(name in types for name in moved):
            continue
        if node.op_type == "Cast" and helper.get_node_attr_value(node, "to") in PIXEL_EXACT_TYPES:
            types[node.output[0]] = helper.get_node_attr_value(node, "to")
        elif node.op_type in VALUE_MOVING_OPS:
            types.update((name, types[moved[0]]) for name in node.output)
    return types


def run_pixel_path_in_uint8(model: onnx.ModelProto) -> bool:
    """Rewrite `model` in place (see the module docstring). False, with `model` unchanged, when its pixel
    path has no cast to remove, a pixel tensor is a graph output, or the rewritten graph fails the checker."""
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(model)
    graph = rewritten.graph
    values = pixel_values(graph)
    casts = [node for node in graph.node if node.op_type == "Cast" and node.output[0] in values and node.input[0] in values]
    if not casts or values.keys() & {value.name for value in graph.output}:
        return False
    readers = [
        (node, position, values[name])
        for node in graph.node
        if node.op_type not in SHAPE_OPS and not set(node.output) <= values.keys()
        for position, name in enumerate(node.input)
        if name in values
    ]
    for cast in casts:
        _replace_uses(graph, cast.output[0], cast.input[0])
        graph.node.remove(cast)
    del graph.value_info[:]  # tf2onnx's recorded types and shapes: some no longer hold
    cast_inputs = _cast_for_readers(graph, readers)
    ranks = _ranks(rewritten)
    for pixels in cast_inputs:
        _hoist_layout_transpose(graph, pixels, ranks.get(pixels))
    try:
        onnx.checker.check_model(rewritten, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError):
        return False
    model.CopyFrom(rewritten)
    return True


def _cast_for_readers(graph: onnx.GraphProto, readers: list[tuple[onnx.NodeProto, int, int]]) -> list[str]:
    """Give each (node, input position, element type it read) its now uint8 pixels cast back to that type,
    one Cast per tensor and type; returns the uint8 tensors cast to float32."""
    made: dict[tuple[str, int], str] = {}
    for node, position, element_type in readers:
        pixels = node.input[position]
        if element_type == onnx.TensorProto.UINT8:
            continue
        if (pixels, element_type) not in made:
            made[pixels, element_type] = _unused_name(graph, f"{pixels}/as_{onnx.TensorProto.DataType.Name(element_type).lower()}")
            cast = helper.make_node("Cast", [pixels], [made[pixels, element_type]], to=element_type, name=made[pixels, element_type])
            graph.node.insert(list(graph.node).index(node), cast)
        node.input[position] = made[pixels, element_type]
    return [pixels for pixels, element_type in made if element_type == onnx.TensorProto.FLOAT]


def _hoist_layout_transpose(graph: onnx.GraphProto, pixels: str, rank: int | None) -> None:
    """Move a Transpose that follows `pixels`' cast and constant elementwise steps up to before the cast."""
    readers = consumers(graph)
    constants = {tensor.name: tensor for tensor in graph.initializer}
    outputs = {value.name for value in graph.output}
    chain: list[onnx.NodeProto] = []
    tensor = pixels
    while len(readers.get(tensor, [])) == 1 and tensor not in outputs:
        node = readers[tensor][0]
        if node.op_type == "Transpose" and chain:
            break
        is_cast = not chain and node.op_type == "Cast"
        is_step = bool(chain) and node.op_type in ELEMENTWISE_WITH_CONSTANT and sum(name in constants for name in node.input) == 1
        if not (is_cast or is_step):
            return
        chain.append(node)
        tensor = node.output[0]
    else:
        return
    transpose = readers[tensor][0]
    perm = next((list(attribute.ints) for attribute in transpose.attribute if attribute.name == "perm"), None)
    operands = [next(name for name in step.input if name in constants) for step in chain[1:]]
    values = [numpy_helper.to_array(constants[name]) for name in operands]
    if transpose.output[0] in outputs or perm is None or rank != len(perm) or any(array.ndim > rank or len(readers[name]) > 1 for name, array in zip(operands, values)):
        return
    for name, array in zip(operands, values):
        permuted = array.reshape((1,) * (rank - array.ndim) + array.shape).transpose(perm)
        constants[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(permuted), name))
    _replace_uses(graph, transpose.output[0], tensor)
    transpose.input[0], transpose.output[0] = pixels, _unused_name(graph, f"{pixels}/transposed")
    chain[0].input[0] = transpose.output[0]
    graph.node.remove(transpose)
    graph.node.insert(list(graph.node).index(chain[0]), transpose)


def _ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Each inner tensor's rank where shape inference knows it."""
    inferred = onnx.shape_inference.infer_shapes(model)
    return {
        value.name: len(value.type.tensor_type.shape.dim)
        for value in (*inferred.graph.input, *inferred.graph.value_info)
        if value.type.tensor_type.HasField("shape")
    }


def _replace_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


def _unused_name(graph: onnx.GraphProto, wanted: str) -> str:
    taken = {value.name for value in (*graph.input, *graph.initializer)} | {name for node in graph.node for name in node.output}
    name, suffix = wanted, 1
    while name in taken:
        name, suffix = f"{wanted}_{suffix}", suffix + 1
    return name
