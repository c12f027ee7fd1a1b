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
from train.export import _classifier_outputs, convert, fuse, trace  # noqa: E402
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


def _traced_and_rewritten(view_count: int) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """A small classifier with `view_count` views as traced, and a copy whose pixel path the rewrite took."""
    backbone = get_backbone("mobilenet_v2", "none", (SIZE, SIZE), seed=0)
    classifier = fuse(backbone.build_extractor(), build_head(backbone.spec.feature_dim, 2), symmetry_views(view_count, (SIZE, SIZE)))
    traced = trace(classifier, (SIZE, SIZE), _classifier_outputs)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(traced)
    assert run_pixel_path_in_uint8(rewritten)
    return traced, rewritten


def test_an_eight_view_classifier_moves_uint8_pixels_and_gives_bit_identical_outputs(assets_dir: Path) -> None:
    traced, rewritten = _traced_and_rewritten(8)

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


def test_a_sixteen_view_classifier_moves_the_zoomed_views_as_uint8_too(assets_dir: Path) -> None:
    """The zoom computes in float32 and casts its whole pixel values to uint8: from there its views join the
    others' concatenation in bytes, and the outputs stay bit for bit what they were."""
    traced, rewritten = _traced_and_rewritten(16)

    types = _element_types(rewritten)
    stacked = [node for node in rewritten.graph.node if node.op_type == "Concat" and len(node.input) == 16]
    assert len(stacked) == 1 and types[stacked[0].output[0]] == onnx.TensorProto.UINT8
    paths = sorted((assets_dir / "CD").glob("*.jpg"))[:3]
    pixels = np.stack([load_for_model(path, (SIZE, SIZE)) for path in paths])
    for expected, got in zip(_outputs(traced, pixels), _outputs(rewritten, pixels)):
        np.testing.assert_array_equal(got, expected)


def test_the_bottleneck_extractor_moves_uint8_pixels_into_its_layout_change_and_computes_the_same_features() -> None:
    backbone = get_backbone("mobilenet_v2", "none", (SIZE, SIZE), seed=0)
    extractor = backbone.build_extractor()
    traced = trace(extractor, (SIZE, SIZE), lambda features: {"features": features})
    converted = convert(extractor, (SIZE, SIZE), lambda features: {"features": features})
    first = next(node for node in converted.graph.node if INPUT_NAME in node.input)
    assert first.op_type == "Transpose" and list(first.attribute[0].ints) == [0, 3, 1, 2]
    pixels = np.random.default_rng(1).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_outputs(converted, pixels)[0], _outputs(traced, pixels)[0])


def _model(nodes: list[onnx.NodeProto], outputs: tuple[str, ...] = ("out",), input_type: int = onnx.TensorProto.UINT8,
           constants: tuple[onnx.TensorProto, ...] = ()) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(INPUT_NAME, input_type, [2, 4, 4, 3])],
        [helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list("nhwc")) for name in outputs],
        [helper.make_tensor("scale", onnx.TensorProto.FLOAT, [1, 1, 1, 3], [0.5, 1.0, 2.0]),
         helper.make_tensor("offset", onnx.TensorProto.FLOAT, [3], [-1.0, 0.0, 1.0]), *constants],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _cast(source: str, target: str, to: int = onnx.TensorProto.FLOAT) -> onnx.NodeProto:
    return helper.make_node("Cast", [source], [target], to=to)


VIEWS_AND_ROUND_TRIP = [
    _cast(INPUT_NAME, "pixels"),
    helper.make_node("Transpose", ["pixels"], ["turned"], perm=[0, 2, 1, 3]),
    helper.make_node("Concat", ["pixels", "turned"], ["views"], axis=0),
    _cast("views", "bytes", onnx.TensorProto.UINT8),
    _cast("bytes", "floats"),
]
HAND_BUILT = {
    "views, round trip, normalise, layout": _model(VIEWS_AND_ROUND_TRIP + [
        helper.make_node("Mul", ["floats", "scale"], ["scaled"]),
        helper.make_node("Sub", ["offset", "scaled"], ["centred"]),  # the constant first
        helper.make_node("Transpose", ["centred"], ["channels_first"], perm=[0, 3, 1, 2]),
        helper.make_node("Relu", ["channels_first"], ["out"]),
    ]),
    "constant shared with another node": _model(VIEWS_AND_ROUND_TRIP + [
        helper.make_node("Mul", ["floats", "scale"], ["scaled"]),
        helper.make_node("Transpose", ["scaled"], ["channels_first"], perm=[0, 3, 1, 2]),
        helper.make_node("Relu", ["channels_first"], ["out"]),
        helper.make_node("Mul", ["scale", "scale"], ["other"]),
    ], ("out", "other")),
    "rank raised by the constant": _model([
        _cast(INPUT_NAME, "pixels"),
        helper.make_node("Slice", ["pixels", "zero", "one", "zero"], ["first"]),
        helper.make_node("Squeeze", ["first", "zero"], ["image3d"]),
        helper.make_node("Mul", ["image3d", "scale"], ["scaled"]),
        helper.make_node("Transpose", ["scaled"], ["out"], perm=[0, 3, 1, 2]),
    ], constants=(helper.make_tensor("zero", onnx.TensorProto.INT64, [1], [0]), helper.make_tensor("one", onnx.TensorProto.INT64, [1], [1]))),
    "transpose without perm": _model(VIEWS_AND_ROUND_TRIP + [
        helper.make_node("Mul", ["floats", "scale"], ["scaled"]),
        helper.make_node("Transpose", ["scaled"], ["out"]),
    ]),
    "uint8 views concatenated with a uint8 constant": _model([
        _cast(INPUT_NAME, "pixels"),
        _cast("pixels", "bytes", onnx.TensorProto.UINT8),
        helper.make_node("Transpose", ["bytes"], ["turned"], perm=[0, 2, 1, 3]),
        helper.make_node("Concat", ["turned", "border"], ["framed"], axis=0),
        _cast("framed", "floats"),
        helper.make_node("Mul", ["floats", "scale"], ["out"]),
    ], constants=(helper.make_tensor("border", onnx.TensorProto.UINT8, [1, 4, 4, 3], [7] * 48),)),
}


@pytest.mark.parametrize("name", HAND_BUILT)
def test_every_hand_built_pixel_path_is_rewritten_to_bit_identical_outputs(name: str) -> None:
    traced = HAND_BUILT[name]
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(traced)

    assert run_pixel_path_in_uint8(rewritten)

    onnx.checker.check_model(rewritten, full_check=True)
    pixels = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 3), dtype=np.uint8)
    pixels[0, 0, 0] = (0, 128, 255)
    for expected, got in zip(_outputs(traced, pixels), _outputs(rewritten, pixels)):
        np.testing.assert_array_equal(got, expected)
    casts = [node for node in rewritten.graph.node if node.op_type == "Cast"]
    assert len(casts) == 1 and casts[0].attribute[0].i == onnx.TensorProto.FLOAT
    producer = next((node for node in rewritten.graph.node if casts[0].input[0] in node.output), None)
    hoisted = producer is not None and producer.op_type == "Transpose" and list(producer.attribute[0].ints) == [0, 3, 1, 2]
    assert hoisted == (name == "views, round trip, normalise, layout")  # the others keep their layout step in place


@pytest.mark.parametrize(
    "graph",
    [
        _model([_cast(INPUT_NAME, "pixels"), helper.make_node("Mul", ["pixels", "scale"], ["out"])], input_type=onnx.TensorProto.FLOAT),
        _model([_cast(INPUT_NAME, "wrapped", onnx.TensorProto.INT8), _cast("wrapped", "pixels"),
                helper.make_node("Mul", ["pixels", "scale"], ["out"])]),
        _model(VIEWS_AND_ROUND_TRIP + [helper.make_node("Mul", ["floats", "scale"], ["out"])], ("out", "views")),
    ],
    ids=["float input", "inexact cast", "pixels as a graph output"],
)
def test_a_graph_without_an_exact_pixel_cast_or_with_pixels_as_an_output_is_left_as_it_is(graph: onnx.ModelProto) -> None:
    before = graph.SerializeToString()
    assert not run_pixel_path_in_uint8(graph)
    assert graph.SerializeToString() == before
