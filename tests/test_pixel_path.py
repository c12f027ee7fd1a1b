"""train.pixel_path: the exported graph's views and layout change run in uint8 and compute exactly the same values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402
from onnx import helper  # noqa: E402

from runtime.imaging import load_for_model  # noqa: E402
from runtime.metadata import INPUT_NAME  # noqa: E402
from train.backbones import get_backbone  # noqa: E402
from train.export import _classifier_outputs, fuse, trace  # noqa: E402
from train.head import build_head  # noqa: E402
from train.pixel_path import VALUE_MOVING_OPS, run_pixel_path_in_uint8  # noqa: E402
from train.views import symmetry_views  # noqa: E402

SIZE = 48


def _outputs(model: onnx.ModelProto, pixels: np.ndarray) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: pixels})


def _element_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    values = (*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output)
    return {value.name: value.type.tensor_type.elem_type for value in values}


def test_an_eight_view_classifier_moves_uint8_pixels_and_gives_bit_identical_outputs(assets_dir: Path) -> None:
    backbone = get_backbone("mobilenet_v2", "none", (SIZE, SIZE), seed=0)
    classifier = fuse(backbone.build_extractor(), build_head(backbone.spec.feature_dim, 2), symmetry_views(8, (SIZE, SIZE)))
    traced = trace(classifier, (SIZE, SIZE), _classifier_outputs)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(traced)

    assert run_pixel_path_in_uint8(rewritten)

    onnx.checker.check_model(rewritten, full_check=True)
    casts = [node for node in rewritten.graph.node if node.op_type == "Cast"]
    assert len(casts) == 1 < len([node for node in traced.graph.node if node.op_type == "Cast"])
    cast_index = list(rewritten.graph.node).index(casts[0])
    types = _element_types(rewritten)
    before_cast = rewritten.graph.node[:cast_index]
    moved = [node for node in before_cast if node.op_type in VALUE_MOVING_OPS]
    assert len(moved) > 8 and all(types[node.output[0]] == onnx.TensorProto.UINT8 for node in moved)
    layout = next(node for node in before_cast if node.output[0] == casts[0].input[0])
    assert layout.op_type == "Transpose"  # in bytes, before normalising
    assert list(layout.attribute[0].ints) == [0, 3, 1, 2]  # the views stacked NHWC: onnxruntime's fast NHWC -> NCHW
    after_cast = rewritten.graph.node[cast_index + 1]
    assert after_cast.op_type == "Mul" and after_cast.input[0] == casts[0].output[0]

    paths = sorted((assets_dir / "CD").glob("*.jpg"))[:3] + sorted((assets_dir / "UD").glob("*.jpg"))[:3]
    pixels = np.stack([load_for_model(path, (SIZE, SIZE)) for path in paths])
    pixels[0, 0, 0] = (0, 128, 255)
    for expected, got in zip(_outputs(traced, pixels), _outputs(rewritten, pixels)):
        np.testing.assert_array_equal(got, expected)


def _graph(first_consumers: list[onnx.NodeProto], input_type: int = onnx.TensorProto.UINT8) -> onnx.ModelProto:
    graph = helper.make_graph(
        first_consumers + [helper.make_node("Mul", ["pixels", "scale"], ["out"])],
        "g",
        [helper.make_tensor_value_info(INPUT_NAME, input_type, [1, 2, 2, 3])],
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, [1, 2, 2, 3])],
        [helper.make_tensor("scale", onnx.TensorProto.FLOAT, [3], [0.5, 1.0, 2.0])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize(
    "graph",
    [
        _graph([helper.make_node("Cast", [INPUT_NAME], ["pixels"], to=onnx.TensorProto.FLOAT)], onnx.TensorProto.FLOAT),
        _graph([helper.make_node("Cast", [INPUT_NAME], ["pixels"], to=onnx.TensorProto.FLOAT),
                helper.make_node("Identity", [INPUT_NAME], ["unused"])]),
        _graph([helper.make_node("Cast", [INPUT_NAME], ["pixels"], to=onnx.TensorProto.INT8)]),
    ],
    ids=["float input", "input used twice", "inexact cast"],
)
def test_a_graph_of_another_shape_is_left_as_it_is(graph: onnx.ModelProto) -> None:
    before = graph.SerializeToString()
    assert not run_pixel_path_in_uint8(graph)
    assert graph.SerializeToString() == before
