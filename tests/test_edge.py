"""Edge variants: int8 and fp16 models made from a small real model, loaded by the runtime, and the gate."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
onnx = pytest.importorskip("onnx")

from conftest import unboxed  # noqa: E402
from runtime import Classifier  # noqa: E402
from runtime.imaging import load_for_model  # noqa: E402
from train.data import LabeledImage, load_dataset  # noqa: E402
from train.edge import calibration_sample  # noqa: E402
from train.int8 import shorten_names  # noqa: E402

BIN = Path(sys.executable).parent
#: A tolerance no variant of the small model meets: with its distilled head the int8 model beats fp32 by
#: 1.5 points on the test images (0.8000 against 0.7846), so the issue's -1 lets it through (the -1 test refuses fp16, which decides as fp32).
REFUSING_TOLERANCE = -5


def _run(tool: str, *args: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / tool), *map(str, args)], capture_output=True, text=True)


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory, assets_dir: Path) -> Path:
    """Bundled MobileNetV2 at 96 px, one view, trained on assets/ with --quantize int8 --half.

    Tolerance 2 points: at this size one flipped test image (1.5 points of 65) is luck of the calibration.
    """
    folder = tmp_path_factory.mktemp("edge")
    result = _run("train-model", assets_dir, "--views", 1, "--image-size", 96, "--workspace", folder / "cache",
                  "--export", folder / "model.onnx", "--quantize", "int8", "--half", "--tolerance", 2)
    assert result.returncode == 0, result.stderr[-2000:]
    return folder / "model.onnx"


@pytest.fixture(scope="module")
def prepared_model(small_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small fp32 model after onnxruntime's `quant_pre_process` (batch norms folded), as int8 starts."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = tmp_path_factory.mktemp("prepared") / "prepared.onnx"
    quant_pre_process(str(small_model), str(prepared), skip_symbolic_shape=True)
    return prepared


def _test_split(assets_dir: Path) -> list[Path]:
    return [image.path for image in load_dataset(assets_dir).split("test")]


def test_int8_model_loads_in_the_runtime_and_agrees_with_fp32(small_model: Path, assets_dir: Path) -> None:
    int8_path = small_model.with_name("model.int8.onnx")
    fp32, int8 = Classifier(small_model, providers="cpu"), Classifier(int8_path, providers="cpu")
    assert int8.metadata.precision == "int8" and int8.labels == fp32.labels
    assert int8_path.stat().st_size <= 0.30 * small_model.stat().st_size
    assert int8.metadata.conversion["bytes"] == int8_path.stat().st_size  # its own size, metadata included
    test_images = _test_split(assets_dir)
    fp32_labels = [p.label for p in fp32.predict_batch(test_images)]
    int8_labels = [p.label for p in int8.predict_batch(test_images)]
    agreement = np.mean([a == b for a, b in zip(fp32_labels, int8_labels)])
    assert agreement >= 0.95
    conversion = int8.metadata.conversion
    assert conversion["agreement"] == pytest.approx(agreement)
    assert conversion["test_images"] == len(test_images) and conversion["calibration_images"] >= 96
    report = json.loads(small_model.with_name("model.int8.report.json").read_text())
    assert report["agreement"] == pytest.approx(agreement) and report["test"]["images"] == len(test_images)
    assert report["bytes"] == int8_path.stat().st_size
    assert int8.metadata.test_metrics["accuracy"] == report["test"]["accuracy"]  # its own, not the fp32 model's
    assert conversion["model"] == "model.int8.onnx"  # no build machine's path inside the shipped file
    assert set(conversion["float32_nodes"]) <= {node.name for node in onnx.load(small_model).graph.node}  # named as in fp32
    assert [variant["precision"] for variant in json.loads(small_model.with_name("model.report.json").read_text())["edge_variants"]] == ["int8", "fp16"]


def test_fp16_model_keeps_uint8_input_and_float32_output(small_model: Path, assets_dir: Path) -> None:
    half = Classifier(small_model.with_name("model.fp16.onnx"), providers="cpu")
    assert half.metadata.precision == "fp16"
    prediction = half.predict(assets_dir / "CD" / "7001-115.jpg")
    assert isinstance(prediction.score, float) and abs(sum(prediction.probabilities.values()) - 1) < 1e-3
    assert half.metadata.conversion["agreement"] >= 0.95


def test_gate_refuses_below_a_negative_tolerance_and_writes_nothing(small_model: Path, assets_dir: Path, tmp_path: Path) -> None:
    model = shutil.copy(small_model, tmp_path / "model.onnx")
    result = _run("quantize-model", model, "--calibrate", assets_dir, "--tolerance", REFUSING_TOLERANCE)
    assert result.returncode == 2
    message = result.stderr.strip().splitlines()
    assert len(message) == 1 and "model.int8.onnx" in message[0] and "not written" in message[0]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx"]


def test_gate_refuses_at_the_issues_tolerance_of_minus_one(small_model: Path, assets_dir: Path, tmp_path: Path) -> None:
    """-1 asks a variant to beat fp32 by a point: the fp16 variant, deciding as fp32, is refused. (The small
    model's int8 beats its fp32 by 1.5 points, so at -1 it passes: `REFUSING_TOLERANCE` refuses it.)"""
    model = shutil.copy(small_model, tmp_path / "model.onnx")
    result = _run("quantize-model", model, "--calibrate", assets_dir, "--no-int8", "--half", "--tolerance", -1)
    assert result.returncode == 2, result.stderr
    message = result.stderr.strip().splitlines()
    assert len(message) == 1 and "model.fp16.onnx: fp16 loses" in message[0] and "the tolerance of -1; not written" in message[0]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx"]


def test_force_writes_a_refused_model_and_says_so(small_model: Path, assets_dir: Path, tmp_path: Path) -> None:
    model = shutil.copy(small_model, tmp_path / "model.onnx")
    result = _run("quantize-model", model, "--calibrate", assets_dir, "--tolerance", REFUSING_TOLERANCE, "--force")
    assert result.returncode == 0, result.stderr
    assert "written because of --force" in result.stdout
    assert Classifier(tmp_path / "model.int8.onnx", providers="cpu").metadata.conversion["forced"] is True


def test_unreadable_calibration_images_are_skipped_and_listed(small_model: Path, assets_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(assets_dir, data, ignore=shutil.ignore_patterns("*.md"))
    jpeg = (assets_dir / "CD" / "7001-115.jpg").read_bytes()
    for index in range(6):  # the split is by file name, so some of these land in the training split
        (data / "CD" / f"zbad{index}.jpg").write_bytes(jpeg[:300])
        (data / "UD" / f"zempty{index}.jpg").write_bytes(b"")
    model = shutil.copy(small_model, tmp_path / "model.onnx")
    result = _run("quantize-model", model, "--calibrate", data, "--calibration-images", 400, "--tolerance", 100)
    assert result.returncode == 0, result.stderr[-2000:]
    conversion = Classifier(tmp_path / "model.int8.onnx", providers="cpu").metadata.conversion
    skipped = conversion["training_skipped"]
    assert skipped and all(("zbad" in line or "zempty" in line) for line in skipped)
    assert conversion["calibration_images"] >= 200
    assert all(f"skipped {line}" in " ".join(result.stdout.split()) for line in skipped)
    bad_in_test = sorted(str(image.path) for image in load_dataset(data).split("test") if image.path.name.startswith("z"))
    assert bad_in_test and sorted(line.split(": ")[0] for line in conversion["test_skipped"]) == bad_in_test  # listed, not dropped silently
    assert all(f"skipped {line}" in " ".join(result.stdout.split()) for line in conversion["test_skipped"])


def test_quantize_model_refuses_a_model_that_is_already_a_variant(small_model: Path, assets_dir: Path) -> None:
    for precision in ("int8", "fp16"):
        result = _run("quantize-model", small_model.with_name(f"model.{precision}.onnx"), "--calibrate", assets_dir)
        assert result.returncode == 2
        assert result.stderr.strip() == f"error: {small_model.with_name(f'model.{precision}.onnx')}: already an {precision} model; quantize model.onnx instead"


def test_quantize_model_rejects_a_folder_with_other_classes(small_model: Path, assets_dir: Path, tmp_path: Path) -> None:
    for label, source in (("cat", "CD"), ("dog", "UD")):
        shutil.copytree(assets_dir / source, tmp_path / "data" / label)
    result = _run("quantize-model", small_model, "--calibrate", tmp_path / "data")
    assert result.returncode == 2 and "differ from the model's labels" in result.stderr


def test_calibration_sample_is_stratified_and_reproducible() -> None:
    images = [LabeledImage(Path(f"{label}{i}.jpg"), f"{label}{i}.jpg", label, "train") for label, count in (("a", 300), ("b", 100)) for i in range(count)]
    sample = calibration_sample(images, 100, seed=0)
    assert sum(image.label == "a" for image in sample) == 75 and sum(image.label == "b" for image in sample) == 25
    assert sample == calibration_sample(images, 100, seed=0) != calibration_sample(images, 100, seed=1)


def test_shorten_names_keeps_inputs_and_outputs(small_model: Path) -> None:
    proto = onnx.load(small_model.with_name("model.int8.onnx"))
    shorten_names(proto.graph)
    assert [value.name for value in proto.graph.input] == ["image"]
    assert {value.name for value in proto.graph.output} == {"probabilities", "label_index"}
    onnx.checker.check_model(proto)


def test_bias_correction_leaves_no_significant_shift_in_any_convolution(prepared_model: Path, assets_dir: Path) -> None:
    from train.bias_correction import SIGNIFICANCE, channel_means, correct_biases
    from train.int8 import static_qdq, usable_calibration

    float_model = onnx.load(prepared_model)
    train = load_dataset(assets_dir).split("train")[::12]
    pixels = usable_calibration([load_for_model(image.path, (96, 96)) for image in train])
    quantized = static_qdq(prepared_model, pixels, [])
    convs = [node for node in float_model.graph.node if node.op_type == "Conv"]
    float_means = channel_means(float_model, [node.output[0] for node in convs], pixels)
    conv_outputs = {node.name: node.output[0] for node in quantized.graph.node if node.op_type == "Conv"}

    def significant_shifts() -> int:
        """Channels, over all convolutions, whose mean shift from float is over SIGNIFICANCE standard errors."""
        count = 0
        for node, target in zip(convs, float_means):
            differences = target - channel_means(quantized, [conv_outputs[node.name]], pixels)[0]
            standard_error = differences.std(axis=0, ddof=1) / np.sqrt(len(pixels))
            count += int((np.abs(differences.mean(axis=0)) > SIGNIFICANCE * standard_error + 1e-3).sum())  # + bias rounding
        return count

    assert significant_shifts() > 100
    assert correct_biases(float_model, quantized, pixels) > 0
    assert significant_shifts() == 0


def test_sensitivity_scan_reads_logits_so_saturated_probabilities_cannot_hide_a_layer(prepared_model: Path, assets_dir: Path) -> None:
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from train.int8 import conv_sensitivity, keep_in_float

    model = onnx.load(prepared_model)
    confident = onnx.load(prepared_model)  # the same network with its logits times 1000: probabilities all 0 or 1
    softmax = next(node for node in confident.graph.node if node.op_type == "Softmax")
    confident.graph.initializer.append(numpy_helper.from_array(np.array(1000, np.float32), "thousand"))
    confident.graph.node.insert(list(confident.graph.node).index(softmax), helper.make_node("Mul", [softmax.input[0], "thousand"], ["sharpened"]))
    softmax.input[0] = "sharpened"
    pixels = np.stack([load_for_model(path, (96, 96)) for path in _test_split(assets_dir)[:4]])
    saturated = ort.InferenceSession(confident.SerializeToString(), providers=["CPUExecutionProvider"]).run(["probabilities"], {"image": pixels})[0]
    assert (np.minimum(saturated, 1 - saturated) < 1e-6).all()
    plain, sharp = conv_sensitivity(model, pixels), conv_sensitivity(confident, pixels)
    assert plain.keys() == sharp.keys() and len(plain) == 12
    for name in plain:
        assert sharp[name] == pytest.approx(plain[name], rel=1e-3)  # a share of the logits' size: scale-free
    assert keep_in_float(confident, pixels) == keep_in_float(model, pixels)


def test_the_first_convolution_stays_float_whatever_the_scan_finds(prepared_model: Path, assets_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Quantizing it would add a float normalisation and a quantize pass over the full-size input (slower)."""
    import train.int8 as int8

    model = onnx.load(prepared_model)
    pixels = np.stack([load_for_model(path, (96, 96)) for path in _test_split(assets_dir)[:4]])
    first = next(node for node in model.graph.node if node.op_type == "Conv")
    monkeypatch.setattr(int8, "sensitive_convs", lambda scores: [])  # a scan that finds nothing
    kept = int8.keep_in_float(model, pixels)
    activation = next(node for node in model.graph.node if first.output[0] in node.input)
    assert first.name in kept and (activation.op_type not in int8.ACTIVATIONS or activation.name in kept)
    assert [node.name for node in model.graph.node if node.op_type == "Conv" and node.name in kept] == [first.name]


def test_only_a_convolution_far_above_the_median_and_moving_a_real_share_of_the_margin_stays_float() -> None:
    from train.int8 import MIN_MARGIN_SHARE, SENSITIVITY_FACTOR, sensitive_convs

    quiet = {f"conv{index}": 0.002 for index in range(10)}
    outlier_but_harmless = SENSITIVITY_FACTOR * 0.002 * 2  # 10x the median, under the margin share
    assert outlier_but_harmless < MIN_MARGIN_SHARE
    assert sensitive_convs({**quiet, "first": outlier_but_harmless}) == []
    assert sensitive_convs({**quiet, "first": 0.3, "second": 0.011}) == ["first"]
    loud = {f"conv{index}": 0.1 for index in range(10)}  # every layer matters as much: none is singled out
    assert sensitive_convs({**loud, "first": 0.3}) == []
    assert sensitive_convs({}) == []


def test_the_sensitivity_scan_refuses_a_model_without_a_softmax_in_one_line(color_model: Path) -> None:
    from runtime.errors import ModelError
    from train.int8 import conv_sensitivity

    model = onnx.load(color_model)
    model.graph.node[3].op_type = "Identity"  # the colour model's Softmax
    del model.graph.node[3].attribute[:]
    with pytest.raises(ModelError, match="no Softmax leads to the 'probabilities' output"):
        conv_sensitivity(model, np.zeros((1, 8, 8, 3), np.uint8))


def test_pixel_tensors_are_quantized_with_scale_one_so_every_pixel_value_stays_exact(tmp_path: Path, assets_dir: Path) -> None:
    """A graph whose views move float32 pixels into the first convolution, as models exported before the pixel
    path ran in uint8 do (`quantize-model` takes those too): its views are quantized like activations."""
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from train.int8 import pixel_tensors, static_qdq, usable_calibration
    from train.onnx_probe import probe_session

    kernel = np.random.default_rng(1).normal(size=(4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
            helper.make_node("Transpose", ["pixels"], ["turned"], perm=[0, 2, 1, 3]),
            helper.make_node("Concat", ["pixels", "turned"], ["views"], axis=0),
            helper.make_node("Transpose", ["views"], ["channels_first"], perm=[0, 3, 1, 2]),
            helper.make_node("Conv", ["channels_first", "kernel"], ["edges"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["edges"], ["active"]),
            helper.make_node("GlobalMaxPool", ["active"], ["probabilities"]),
        ],
        "float_views",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 16, 16, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(kernel, "kernel")],
    )
    source, prepared = tmp_path / "float_views.onnx", tmp_path / "prepared.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), source)
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
    train = load_dataset(assets_dir).split("train")[::24]
    dimmed = [load_for_model(image.path, (16, 16)) // 2 for image in train]  # brightest calibration pixel: 127
    quantized = static_qdq(prepared, usable_calibration(dimmed), [])
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in quantized.graph.initializer}
    pixels = pixel_tensors(onnx.load(prepared))
    pixel_quantizers = [node for node in quantized.graph.node if node.op_type == "QuantizeLinear" and node.input[0] in pixels]
    assert {node.input[0] for node in pixel_quantizers} == set(pixels) == {"pixels", "turned", "views", "channels_first"}
    assert all(initializers[node.input[1]] == 1 and initializers[node.input[2]] == 0 for node in pixel_quantizers)
    dequantized = [node.output[0] for node in quantized.graph.node if node.op_type == "DequantizeLinear" and node.input[0] == pixel_quantizers[0].output[0]]
    image = np.random.default_rng(0).integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    image[0, 0, 0] = 255  # brighter than any calibration pixel
    seen = probe_session(quantized, dequantized[:1]).run(None, {"image": image})[0]
    assert np.array_equal(np.sort(seen.ravel()), np.sort(np.tile(image.ravel(), seen.size // image.size).astype(np.float32)))


def test_pixel_tensors_follow_only_exact_casts_and_value_moving_ops() -> None:
    from onnx import TensorProto, helper

    from train.int8 import pixel_tensors

    nodes = [
        helper.make_node("Cast", ["image"], ["pixels"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["pixels"], ["turned"], perm=[0, 2, 1, 3]),
        helper.make_node("Concat", ["pixels", "turned"], ["views"], axis=0),
        helper.make_node("Sub", ["views", "mean"], ["centred"]),
        helper.make_node("Concat", ["views", "centred"], ["mixed"], axis=0),
        helper.make_node("Cast", ["image"], ["wrapped"], to=TensorProto.INT8),  # 200 becomes -56
        helper.make_node("Cast", ["wrapped"], ["wrapped_float"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["image"], ["wide"], to=TensorProto.INT32),
        helper.make_node("Cast", ["wide"], ["wide_float"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes, "pixels", [helper.make_tensor_value_info("image", TensorProto.UINT8, [1, 4, 4, 3])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("mixed", "wrapped_float", "wide_float")],
        initializer=[helper.make_tensor("mean", TensorProto.FLOAT, [], [128.0])],
    )
    assert pixel_tensors(helper.make_model(graph)) == ["pixels", "turned", "views", "wide_float"]


def test_gate_refuses_each_variant_checks_the_next_and_a_nan_tolerance_is_a_usage_error(small_model: Path, assets_dir: Path, tmp_path: Path) -> None:
    model = shutil.copy(small_model, tmp_path / "model.onnx")
    result = _run("quantize-model", model, "--calibrate", assets_dir, "--tolerance", REFUSING_TOLERANCE, "--half")
    assert result.returncode == 2
    (message,) = result.stderr.strip().splitlines()
    assert "model.int8.onnx: int8 loses" in message and " | " in message and "model.fp16.onnx: fp16 loses" in message
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model.onnx"]
    nan = _run("quantize-model", model, "--calibrate", assets_dir, "--tolerance", "nan")
    assert nan.returncode == 2 and "'--tolerance': must be a finite number of points, not nan" in unboxed(nan.stderr)
    overflow = _run("quantize-model", model, "--calibrate", assets_dir, "--tolerance", "1e400")
    assert overflow.returncode == 2 and "not inf (a number beyond 1.8e308 reads as inf)" in unboxed(overflow.stderr)
    idle = _run("quantize-model", tmp_path / "never-read.onnx", "--calibrate", assets_dir, "--no-int8")
    assert idle.returncode == 2 and "nothing to do: --no-int8 without --half" in idle.stderr


def test_quantize_model_leaves_out_test_images_the_model_was_trained_on(small_model: Path, assets_dir: Path, tmp_path: Path) -> None:
    """Renamed files move between splits (the split hashes the names): without the model's fingerprints of
    its training images, the check would run partly on images the model was trained on."""
    data = tmp_path / "renamed"
    for image in load_dataset(assets_dir).images:
        (data / image.label).mkdir(parents=True, exist_ok=True)
        shutil.copy(image.path, data / image.label / f"img_{image.path.name}")
    original = load_dataset(assets_dir)
    seen_bytes = {image.path.read_bytes() for name in ("train", "validation") for image in original.split(name)}
    rebuilt = load_dataset(data).split("test")
    held_out = [image for image in rebuilt if image.path.read_bytes() not in seen_bytes]
    assert 0 < len(held_out) < len(rebuilt)
    model = shutil.copy(small_model, tmp_path / "model.onnx")
    result = _run("quantize-model", model, "--calibrate", data, "--no-int8", "--half", "--tolerance", 100)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"{len(rebuilt) - len(held_out)} of the {len(rebuilt)} test images have the same bytes as images the model was trained or validated on" in " ".join(result.stdout.split())
    conversion = Classifier(tmp_path / "model.fp16.onnx", providers="cpu").metadata.conversion
    assert conversion["test_images"] == len(held_out) and conversion["test_left_out_as_seen"] == len(rebuilt) - len(held_out)


def test_optimised_files_are_refused_and_variants_of_another_model_are_named(small_model: Path, assets_dir: Path, tmp_path: Path) -> None:
    optimised = tmp_path / "model.opt.onnx"
    assert _run("classify", small_model, "--save-optimized", optimised, assets_dir / "CD" / "7001-115.jpg").returncode == 0
    refused = _run("quantize-model", optimised, "--calibrate", assets_dir, "--half")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert refused.stderr.startswith(f"error: {optimised}: an onnxruntime-optimised file (ops com.microsoft.nchwc:")
    model = tmp_path / "model.onnx"  # another model than the one the variants beside it were made from
    retrained = onnx.load(small_model)
    retrained.doc_string = "exported again"
    onnx.save(retrained, model)
    shutil.copy(small_model.with_name("model.fp16.onnx"), tmp_path)
    shutil.copy(small_model.with_name("model.fp16.report.json"), tmp_path)
    (tmp_path / "model.int8.onnx").write_bytes(b"not a model")
    before = (tmp_path / "model.fp16.onnx").read_bytes()
    result = _run("quantize-model", model, "--calibrate", assets_dir, "--no-int8", "--half", "--tolerance", -1)
    assert result.returncode == 2 and "model.fp16.onnx: fp16 loses" in result.stderr
    said = " ".join(result.stdout.split())
    assert (
        f"warning: {tmp_path / 'model.fp16.onnx'} was made from another model than {model} as it is now; left as it was "
        f"(delete {tmp_path / 'model.fp16.onnx'} and its report {tmp_path / 'model.fp16.report.json'}, or make it again"
    ) in said
    assert f"warning: {tmp_path / 'model.int8.onnx'} is not a variant whose metadata says it was made from {model}" in said
    assert f"(delete {tmp_path / 'model.int8.onnx'}, or make it again" in said
    assert (tmp_path / "model.fp16.onnx").read_bytes() == before


def test_a_test_split_without_one_readable_image_stops_in_one_line(small_model: Path, assets_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(assets_dir, data, ignore=shutil.ignore_patterns("*.md"))
    test = load_dataset(data).split("test")
    for image in test:
        image.path.write_bytes(b"not a jpeg")
    (tmp_path / "model.int8.onnx").write_bytes(b"left by another run")
    result = _run("quantize-model", shutil.copy(small_model, tmp_path / "model.onnx"), "--calibrate", data, "--no-int8", "--half")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'model.onnx'}: none of the {len(test)} held-out test images could be read; cannot check edge variants"
    ]
    assert f"warning: {tmp_path / 'model.int8.onnx'} is not a variant" in " ".join(result.stdout.split())  # named even so


def _training_pixels(assets_dir: Path, size: tuple[int, int]) -> np.ndarray:
    return np.stack([load_for_model(image.path, size) for image in load_dataset(assets_dir).split("train")])


def test_the_int8_head_is_distilled_only_when_cross_validation_says_it_agrees_better(small_model: Path, assets_dir: Path, tmp_path: Path) -> None:
    from train.int8_head import Dense, _dense, _standardised, distil, distil_int8_head, head_of

    fp32_model, int8_path = onnx.load(small_model), small_model.with_name("model.int8.onnx")
    conversion = Classifier(int8_path, providers="cpu").metadata.conversion
    head = conversion["head"]
    verdict = head["cross_validated_agreement"]
    assert head["images"] == len(load_dataset(assets_dir).split("train")) and head["distilled"] == (verdict["distilled"] > verdict["fp32_head"])
    fp32_head = head_of(fp32_model, small_model)
    int8_model = onnx.load(int8_path)
    kernels = [onnx.numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == name))
               for model, name in ((fp32_model, fp32_head.kernel), (int8_model, head_of(int8_model, int8_path).kernel))]
    assert np.array_equal(kernels[0], kernels[1]) != head["distilled"]  # written exactly when kept

    # On the model's real training features: fed fp32 features as "int8" ones, the teacher is already the optimum...
    pixels = _training_pixels(assets_dir, Classifier(small_model, providers="cpu").input_size)
    standardised, teacher = _standardised(fp32_model, fp32_head, pixels), _dense(fp32_model, fp32_head)
    unchanged = distil(teacher, standardised, standardised)
    assert np.abs(unchanged.kernel - teacher.kernel).max() < 1e-3 and np.abs(unchanged.bias - teacher.bias).max() < 1e-3
    # ...and on the int8 model's features the distilled head decides as fp32 on more training images than the fp32 head.
    int8_rows = _standardised(int8_model, head_of(int8_model, int8_path), pixels)
    reference = teacher.probabilities(standardised).argmax(axis=1)
    agreement = [np.mean(dense.probabilities(int8_rows).argmax(axis=1) == reference) for dense in (teacher, distil(teacher, standardised, int8_rows))]
    assert agreement[1] > agreement[0]

    # A dense layer written into the file gives, through onnxruntime, the probabilities the fit computes.
    import onnxruntime as ort
    from runtime.metadata import INPUT_NAME, PROBABILITIES_OUTPUT
    from train.int8_head import _write_dense

    shifted = Dense(teacher.kernel * 0.5, teacher.bias + np.array([0.75, -0.75]))
    _write_dense(fp32_model, fp32_head, shifted)
    session = ort.InferenceSession(fp32_model.SerializeToString(), providers=["CPUExecutionProvider"])
    written = session.run([PROBABILITIES_OUTPUT], {INPUT_NAME: pixels[:16]})[0]
    assert np.abs(written - shifted.probabilities(standardised[:16])).max() < 1e-4
    assert np.abs(written - teacher.probabilities(standardised[:16])).max() > 0.01  # the shift is visible

    # Too few images to cross-validate: the head is left as it is, and the report says why.
    copy = Path(shutil.copy(int8_path, tmp_path / "few.int8.onnx"))
    summary = distil_int8_head(small_model, copy, pixels[:3], None, ["CD", "UD"])
    assert summary["distilled"] is False and "fewer than" in summary["why"] and copy.read_bytes() == int8_path.read_bytes()


def _head_graph(kernel_readers: int = 1, gemm_alpha: float | None = None) -> onnx.ModelProto:
    """features -> Mul(scale) -> Add(offset) -> MatMul(kernel) -> Add(bias) (or one Gemm) -> Softmax, and
    `kernel_readers - 1` other MatMuls reading the kernel."""
    from onnx import TensorProto, helper, numpy_helper

    constants = {"scale": np.ones(4), "offset": np.zeros(4), "kernel": np.ones((4, 2)), "bias": np.zeros(2)}
    nodes = [helper.make_node("Mul", ["features", "scale"], ["scaled"]), helper.make_node("Add", ["scaled", "offset"], ["standardised"])]
    if gemm_alpha is None:
        nodes += [helper.make_node("MatMul", ["standardised", "kernel"], ["product"]), helper.make_node("Add", ["product", "bias"], ["logits"])]
    else:
        nodes += [helper.make_node("Gemm", ["standardised", "kernel", "bias"], ["logits"], alpha=gemm_alpha)]
    nodes += [helper.make_node("MatMul", ["features", "kernel"], [f"elsewhere{i}"]) for i in range(kernel_readers - 1)]
    nodes += [helper.make_node("Softmax", ["logits"], ["probabilities"])]
    graph = helper.make_graph(
        nodes, "head", [helper.make_tensor_value_info("features", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2])],
        [numpy_helper.from_array(value.astype(np.float32), name) for name, value in constants.items()],
    )
    return helper.make_model(graph)


def test_the_int8_head_is_found_only_where_rewriting_it_changes_the_head_alone() -> None:
    from runtime.errors import ModelError
    from train.int8_head import HeadTensors, head_of

    assert head_of(_head_graph(), Path("m.onnx")) == HeadTensors("features", "scale", "offset", "kernel", "bias", False)
    assert head_of(_head_graph(gemm_alpha=1.0), Path("m.onnx")).kernel == "kernel"
    with pytest.raises(ModelError, match="m.onnx.*'kernel' is read by 2 nodes"):
        head_of(_head_graph(kernel_readers=2), Path("m.onnx"))
    with pytest.raises(ModelError, match="m.onnx.*Gemm is not features @ kernel \\+ bias"):
        head_of(_head_graph(gemm_alpha=2.0), Path("m.onnx"))
