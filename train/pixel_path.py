"""Run an exported graph's pixel path in uint8: the same values, a quarter of the memory traffic.

tf2onnx converts the Keras graph as written. The uint8 image is cast to float32 first, the symmetry views
(transposes, flips and their concatenation) then move float32 values, and the layout change to NCHW that
onnxruntime's convolutions take comes after the normalisation. With 8 views each of those passes touches
4 bytes for every value of 8 images per input image, about a fifth of the fp32 model's time at batch 32.

Moving whole pixel values is exact in uint8, so `run_pixel_path_in_uint8` rewrites the graph:

1. the value-moving ops after the input's cast to float32 (`VALUE_MOVING_OPS`) take the uint8 input itself
   (onnxruntime runs them for any element type); where the moved pixels first meet an op that computes,
   one cast to float32 is put before it, and a cast back to uint8 there (the extractor's input) goes away;
2. a layout Transpose that follows that cast and constant per-channel normalisation steps (Mul, Add, Sub,
   Div) moves up to before the cast, with the constants permuted to match, so it moves bytes too.

Every output is bit for bit what it was (the export's parity check still compares with TensorFlow). A graph
of another shape is left as it is. The views are stacked NHWC (`train.view_layers` flips by slicing), so the
moved transpose is NHWC -> NCHW, which onnxruntime runs on its fast path. One-off, default 8-view MobileNetV2
through `Classifier` at batch 32: fp32 33.7 images/s as traced, 40.6 rewritten, 44.3 rewritten with the views
stacked NHWC; `python -m benchmarks` has the current figures.
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


def run_pixel_path_in_uint8(model: onnx.ModelProto) -> bool:
    """Rewrite `model` in place (see the module docstring); False, and nothing changed, when the graph does
    not start with a uint8 input whose only consumer is a cast to float32."""
    graph = model.graph
    image = next((value.name for value in graph.input if value.type.tensor_type.elem_type == onnx.TensorProto.UINT8), None)
    first_casts = consumers(graph).get(image, [])
    if len(first_casts) != 1 or not _is_cast(first_casts[0], onnx.TensorProto.FLOAT):
        return False
    first_cast = first_casts[0]
    _replace_uses(graph, first_cast.output[0], image)
    graph.node.remove(first_cast)
    for pixels in _cast_where_pixels_meet_arithmetic(graph, image):
        _hoist_layout_transpose(graph, pixels)
    _forget_value_info(graph)
    return True


def _cast_where_pixels_meet_arithmetic(graph: onnx.GraphProto, image: str) -> list[str]:
    """Give every consumer of the uint8 pixel tensors that is neither value-moving nor shape-reading its
    pixels as float32 (a cast to uint8 is dropped, an exact cast kept); returns the uint8 tensors cast."""
    pixel = {image}
    for node in graph.node:  # graph order is topological
        moved = [name for name in (node.input if node.op_type == "Concat" else node.input[:1]) if name]
        if node.op_type in VALUE_MOVING_OPS and moved and all(name in pixel for name in moved):
            pixel.update(node.output)
    cast_sources = []
    for node in list(graph.node):
        if node.op_type in SHAPE_OPS or (node.op_type in VALUE_MOVING_OPS and set(node.output) <= pixel):
            continue
        for position, name in enumerate(node.input):
            if name not in pixel:
                continue
            if _is_cast(node, onnx.TensorProto.UINT8):
                _replace_uses(graph, node.output[0], name)
                graph.node.remove(node)
            elif node.op_type == "Cast" and _cast_target(node) in PIXEL_EXACT_TYPES:
                cast_sources.append(name)
            else:
                as_float = f"{name}/float"
                if as_float not in {output for other in graph.node for output in other.output}:
                    cast = helper.make_node("Cast", [name], [as_float], to=onnx.TensorProto.FLOAT, name=f"{name}/cast_to_float")
                    graph.node.insert(list(graph.node).index(node), cast)
                    cast_sources.append(name)
                node.input[position] = as_float
    return list(dict.fromkeys(cast_sources))


def _hoist_layout_transpose(graph: onnx.GraphProto, pixels: str) -> None:
    """Move a Transpose that follows `pixels`' cast and constant elementwise steps up to before the cast."""
    readers = consumers(graph)
    constants = {tensor.name: tensor for tensor in graph.initializer}
    chain = []
    tensor = pixels
    while len(readers.get(tensor, [])) == 1 and tensor not in {value.name for value in graph.output}:
        node = readers[tensor][0]
        if node.op_type == "Transpose":
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
    perm = list(next(attribute.ints for attribute in transpose.attribute if attribute.name == "perm"))
    if not chain or not perm:
        return
    operands = [next(name for name in step.input if name in constants) for step in chain[1:]]
    values = [numpy_helper.to_array(constants[name]) for name in operands]
    if any(array.ndim > len(perm) or len(readers[name]) > 1 for name, array in zip(operands, values)):
        return
    for name, array in zip(operands, values):
        permuted = array.reshape((1,) * (len(perm) - array.ndim) + array.shape).transpose(perm)
        constants[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(permuted), name))
    _replace_uses(graph, transpose.output[0], tensor)
    moved = f"{pixels}/transposed"
    transpose.input[0], transpose.output[0] = pixels, moved
    chain[0].input[0] = moved
    graph.node.remove(transpose)
    graph.node.insert(list(graph.node).index(chain[0]), transpose)


def _replace_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]


def _is_cast(node: onnx.NodeProto, target: int) -> bool:
    return node.op_type == "Cast" and _cast_target(node) == target


def _cast_target(node: onnx.NodeProto) -> int:
    return next(attribute.i for attribute in node.attribute if attribute.name == "to")


def _forget_value_info(graph: onnx.GraphProto) -> None:
    """Drop tf2onnx's recorded inner shapes and types: some no longer hold (uint8 views, NCHW steps), and
    onnxruntime and the quantizer infer them again."""
    del graph.value_info[:]
