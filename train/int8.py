"""Static int8 quantization of an exported classifier with onnxruntime's quantization tools.

Steps: `quant_pre_process` (folds batch norms into convolutions, infers shapes), a sensitivity scan that
keeps in float32 the few convolutions whose int8 weights alone move the logits far more than the others
and by a real share of the decision margin (with their input chain, so no int8 rounding reaches them), then `quantize_static` in QDQ format with
per-channel int8 weights (7-bit: `reduce_range`, see below) and uint8 activations calibrated (min/max) on real training images (except
float32 pixel tensors before the first layer, in models exported before the pixel path ran in uint8, which
get scale 1 so every pixel value stays exact), then
empirical bias correction (`train.bias_correction`) against the float model. The head
(standardisation and the dense layer) and constant normalisation steps stay float32: they are a tiny
share of the work and the most sensitive to rounding. Tensor and node names are shortened at the end,
which saves about 5% of the file and changes nothing else.

Why 7-bit weights: on x86 CPUs without VNNI (AVX2 only, as on some of the machines this runs on)
onnxruntime's uint8 x int8 kernels add pairs of products in 16 bits and saturate, so the same int8 file
decides differently from machine to machine. onnxruntime's `reduce_range` keeps every pair within 16 bits.
One-off, on an AVX2-only machine, the 96 px one-view test model: agreement with fp32 on the 65 `assets/`
test images 92.3% through the kernels against 95.4% with the int8 arithmetic simulated in float32 (no
saturation); with 7-bit weights, 98.5%.

Why the scan: MobileNetV2's first depthwise convolution (torchvision weights) computes small
differences of large weights; int8 rounding of that one layer alone drops the agreement with float32
from 100% to about 80% on `assets/`, while every other layer moves the output ten times less.

The first convolution stays float32 whatever the scan finds. With the pixel path in uint8
(`train.pixel_path`), quantizing it takes a float32 normalisation and a QuantizeLinear pass over the
full-resolution input, which cost more than its int8 arithmetic saves: one-off, Özgenel seed-0 model at
batch 32, int8 ran 75.9 images/s with it float against 66.5 with it quantized (fp32 44.4), with the same
predictions on all 306 test images.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from runtime.errors import ModelError
from runtime.metadata import INPUT_NAME, PROBABILITIES_OUTPUT
from train.bias_correction import correct_biases
from train.onnx_graph import consumers as consumers_of, producers as producers_of
from train.onnx_probe import probe_session
from train.pixel_path import pixel_values

#: Images (of the calibration set) the sensitivity scan runs per trial.
SENSITIVITY_IMAGES = 4
#: Convolutions the scan tries, from the input on: rounding errors made early pass through the most
#: layers, and one trial costs a whole forward pass, so deep backbones are not scanned to the end.
SCANNED_CONVS = 12
#: A convolution stays float32 when its int8 weights alone move the logits this many times more than the
#: median convolution's...
SENSITIVITY_FACTOR = 5.0
#: ...and by at least this share of the decision margin (top logit minus the second). A layer that moves
#: them less cannot flip confident decisions, and keeping the first layers float costs about 30% of the
#: int8 throughput. On `assets/` MobileNetV2's first depthwise convolution moves them by 10 to 40% of the
#: margin (kept); on Özgenel, whose classes are far apart, by 1.5 to 2.5% (quantized: 100% agreement).
MIN_MARGIN_SHARE = 0.05
#: Calibration images per onnxruntime run while collecting activation ranges (bounds memory).
CALIBRATION_STRIDE = 4
#: Ops the quantizer may turn into int8; everything else (views, head, softmax) stays float32.
QUANTIZED_OPS = ["Conv", "Clip", "Relu", "Add", "Concat", "MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool"]
#: Activations that follow a convolution and are kept together with it.
ACTIVATIONS = {"Clip", "Relu"}
#: Element types the quantizer treats as activations (of the pixel tensors, the ones it may quantize).
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16}


class _Calibration(CalibrationDataReader):
    """Feeds calibration images one at a time; `set_range` lets onnxruntime collect ranges in strides."""

    def __init__(self, pixels: Sequence[np.ndarray]) -> None:
        self._pixels = list(pixels)
        self.set_range(0, len(self._pixels))

    def __len__(self) -> int:
        return len(self._pixels)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._feed = iter([{INPUT_NAME: image[None]} for image in self._pixels[start_index:end_index]])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feed, None)


def quantize_int8(source: Path, target: Path, calibration: Sequence[np.ndarray]) -> list[str]:
    """Write the int8 version of the ONNX classifier `source` to `target` (metadata not copied).

    `calibration` holds resized uint8 (H, W, 3) training images. Returns the names of the nodes kept
    in float32 by the sensitivity scan, as `source` names them (the written graph's nodes are unnamed).
    """
    usable = usable_calibration(calibration)
    with tempfile.TemporaryDirectory(prefix="retrain-int8-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        model = onnx.load(prepared)
        float_nodes = keep_in_float(model, np.stack(usable[:SENSITIVITY_IMAGES]))
        quantized = static_qdq(prepared, usable, float_nodes + _constant_adds(model))
        correct_biases(model, quantized, usable)
    shorten_names(quantized.graph)
    onnx.save(quantized, target)
    return float_nodes


def usable_calibration(calibration: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The calibration images, cut to a multiple of the calibration stride (a few fewer calibrate as well)."""
    return list(calibration)[: max(CALIBRATION_STRIDE, len(calibration) - len(calibration) % CALIBRATION_STRIDE)]


def static_qdq(prepared: Path, calibration: Sequence[np.ndarray], exclude: Sequence[str]) -> onnx.ModelProto:
    """onnxruntime's static QDQ quantization of the pre-processed model `prepared`: per-channel int8 weights,
    uint8 activations with min/max ranges from `calibration` (a `usable_calibration` list); the nodes in
    `exclude` and every op outside `QUANTIZED_OPS` stay float32. Pixel tensors (`pixel_tensors`) get the
    range 0 to 255 rather than their calibrated one: scale 1, so they stay exact. Min/max would give the
    brightest calibration pixel (245 on `assets/`) as the top, clip brighter pixels and round the others.
    Models exported since the pixel path runs in uint8 (`train.pixel_path`) quantize no pixel tensor; older
    ones, and graphs the rewrite leaves as they are, quantize their float32 views."""
    pixel_ranges = {name: [{"rmin": np.float32(0), "rmax": np.float32(255)}] for name in pixel_tensors(onnx.load(prepared))}
    with tempfile.TemporaryDirectory(prefix="retrain-qdq-") as scratch:
        target = Path(scratch) / "qdq.onnx"
        quantize_static(
            str(prepared),
            str(target),
            _Calibration(calibration),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=QUANTIZED_OPS,
            per_channel=True,
            reduce_range=True,  # 7-bit weights: no int16 saturation in x86 u8s8 kernels without VNNI (module docstring)
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=list(exclude),
            extra_options={"CalibStridedMinMax": min(CALIBRATION_STRIDE, len(calibration)), "TensorQuantOverrides": pixel_ranges},
        )
        return onnx.load(target)


def pixel_tensors(model: onnx.ModelProto) -> list[str]:
    """The float tensors holding the uint8 input's pixel values unchanged (`train.pixel_path.pixel_values`):
    what exact casts, transposes, flips and concatenations make of the input before the first layer that
    computes."""
    return sorted(name for name, kind in pixel_values(model.graph).items() if kind in _FLOAT_TYPES)


def keep_in_float(model: onnx.ModelProto, pixels: np.ndarray) -> list[str]:
    """Nodes to leave in float32: the first convolution (see the module docstring) and each over-sensitive
    one, with its activation and input chain."""
    first = [node.name for node in _convolutions(model)[:1]]
    sensitive = list(dict.fromkeys(first + sensitive_convs(conv_sensitivity(model, pixels))))
    producers, consumers = producers_of(model.graph), consumers_of(model.graph)
    by_name = {node.name: node for node in model.graph.node}
    keep: list[str] = []
    for name in sensitive:
        node = by_name[name]
        keep.append(name)
        keep += [after.name for after in consumers.get(node.output[0], []) if after.op_type in ACTIVATIONS]
        keep += _input_chain(node, producers)
    return list(dict.fromkeys(keep))


def sensitive_convs(scores: dict[str, float]) -> list[str]:
    """The convolutions (of `conv_sensitivity` scores) to keep in float32: far above the median convolution
    and moving the logits by a real share of the decision margin."""
    bar = max(SENSITIVITY_FACTOR * float(np.median(list(scores.values()))), MIN_MARGIN_SHARE) if scores else np.inf
    return [name for name, score in scores.items() if score > bar]


def conv_sensitivity(model: onnx.ModelProto, pixels: np.ndarray) -> dict[str, float]:
    """Mean absolute change of the logits when only one convolution's weights are int8-rounded, as a share
    of the mean decision margin (top logit minus the second), for the first `SCANNED_CONVS` convolutions.

    Logits, not probabilities: on an easy data set the probabilities sit at 0 and 1 to float32 precision,
    so their changes are rounding noise, while the logits still show how far each layer moves the margin.
    """
    logits = _logits_tensor(model)
    reference = _logits(model, logits, pixels)
    top_two = np.sort(reference, axis=-1)[..., -2:]
    margin = float((top_two[..., 1] - top_two[..., 0]).mean()) + 1e-6  # never 0, even for identical logits
    weights = {tensor.name: tensor for tensor in model.graph.initializer}
    scores = {}
    for node in _convolutions(model)[:SCANNED_CONVS]:
        original = weights[node.input[1]]
        rounded = numpy_helper.from_array(_int8_rounded(numpy_helper.to_array(original)), original.name)
        trial = onnx.ModelProto()
        trial.CopyFrom(model)
        next(tensor for tensor in trial.graph.initializer if tensor.name == original.name).CopyFrom(rounded)
        scores[node.name] = float(np.abs(_logits(trial, logits, pixels) - reference).mean() / margin)
    return scores


def shorten_names(graph: onnx.GraphProto) -> None:
    """Rename inner tensors to short ids and drop node names; graph inputs and outputs keep their names."""
    keep = {value.name for value in (*graph.input, *graph.output)}
    short: dict[str, str] = {}

    def rename(name: str) -> str:
        return name if not name or name in keep else short.setdefault(name, f"t{len(short)}")

    for tensor in graph.initializer:
        tensor.name = rename(tensor.name)
    for node in graph.node:
        node.name = ""
        node.input[:] = [rename(name) for name in node.input]
        node.output[:] = [rename(name) for name in node.output]
    for value in graph.value_info:
        value.name = rename(value.name)


def _int8_rounded(weights: np.ndarray) -> np.ndarray:
    """Symmetric per-output-channel int8 rounding, as the quantizer does it, back in float32."""
    scale = np.abs(weights).reshape(len(weights), -1).max(axis=1) / 127
    scale[scale == 0] = 1
    shape = (-1,) + (1,) * (weights.ndim - 1)
    return (np.clip(np.round(weights / scale.reshape(shape)), -127, 127) * scale.reshape(shape)).astype(np.float32)


def _convolutions(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """The convolutions with constant weights, in graph order."""
    weights = {tensor.name for tensor in model.graph.initializer}
    return [node for node in model.graph.node if node.op_type == "Conv" and node.input[1] in weights]


def _logits_tensor(model: onnx.ModelProto) -> str:
    """The logits of every view: the input of the Softmax that the `probabilities` output comes from."""
    producers = producers_of(model.graph)
    pending, seen = [PROBABILITIES_OUTPUT], set()
    while pending:
        tensor = pending.pop(0)
        node = producers.get(tensor)
        if node is None or tensor in seen:
            continue
        if node.op_type == "Softmax":
            return node.input[0]
        seen.add(tensor)
        pending += list(node.input)
    problem = f"no Softmax leads to the '{PROBABILITIES_OUTPUT}' output; not a classifier exported by train-model"
    raise ModelError(f"graph {model.graph.name or '(unnamed)'}", problem)


def _logits(model: onnx.ModelProto, tensor: str, pixels: np.ndarray) -> np.ndarray:
    """`model`'s logits (`tensor`) for `pixels`, centred per row (softmax ignores a common shift)."""
    logits = probe_session(model, [tensor]).run(None, {INPUT_NAME: pixels})[0].astype(np.float32)
    return logits - logits.mean(axis=-1, keepdims=True)


def _input_chain(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto]) -> list[str]:
    """The nodes that feed `node`'s data input, back to and including the previous convolution."""
    chain = []
    current = producers.get(node.input[0])
    while current is not None:
        chain.append(current.name)
        if current.op_type == "Conv":
            break
        current = producers.get(current.input[0]) if current.input else None
    return chain


def _constant_adds(model: onnx.ModelProto) -> list[str]:
    """Add nodes with a constant operand (normalisation, standardisation): kept float32."""
    constants = {tensor.name for tensor in model.graph.initializer}
    return [node.name for node in model.graph.node if node.op_type == "Add" and any(name in constants for name in node.input)]
