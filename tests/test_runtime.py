"""runtime.Classifier and runtime.metadata on a real ONNX model through a real onnxruntime session."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from PIL import Image

from runtime import Classifier, ImageError, ModelError, SessionSettings
from runtime.imaging import find_images
from runtime.metadata import ModelMetadata
from runtime.model import CPU, CUDA, choose_providers
from runtime.prefetch import decode_ahead

from conftest import COLOR_LABELS, COLOR_SIZE, solid_image


def test_metadata_round_trip(color_model: Path) -> None:
    classifier = Classifier(color_model)
    metadata = classifier.metadata
    assert ModelMetadata.from_props(metadata.to_props(), "x") == metadata
    assert classifier.labels == COLOR_LABELS
    assert classifier.input_size == (COLOR_SIZE, COLOR_SIZE)
    assert classifier.provider == CPU


def test_predicts_each_source_kind(color_model: Path, color_images: dict[str, Path]) -> None:
    classifier = Classifier(color_model, providers="cpu")
    for label, path in color_images.items():
        by_path = classifier.predict(path)
        assert by_path.label == label
        assert by_path.score == pytest.approx(max(by_path.probabilities.values()))
        assert sum(by_path.probabilities.values()) == pytest.approx(1.0, abs=1e-5)
        for other in (path.read_bytes(), Image.open(path), np.asarray(Image.open(path))):
            assert classifier.predict(other).probabilities == pytest.approx(by_path.probabilities, abs=1e-6)


def test_predict_batch_matches_single_predictions(color_model: Path, color_images: dict[str, Path]) -> None:
    classifier = Classifier(color_model)
    paths = list(color_images.values()) * 3
    batch = classifier.predict_batch(paths, batch_size=4)
    assert [p.label for p in batch] == [classifier.predict(path).label for path in paths]
    assert batch[0].top_k(2)[0] == (batch[0].label, batch[0].score)


def test_predict_batch_raises_on_a_bad_image(color_model: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_text("nope")
    with pytest.raises(ImageError, match="bad.jpg"):
        Classifier(color_model).predict_batch([bad])


def test_classify_files_reports_bad_files_and_keeps_going(
    color_model: Path, color_images: dict[str, Path], tmp_path: Path
) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff")
    paths = [color_images["red"], bad, color_images["blue"]]
    results = list(Classifier(color_model).classify_files(paths, batch_size=2))
    assert [r.file for r in results] == [str(p) for p in paths]
    assert results[0].prediction.label == "red" and results[2].prediction.label == "blue"
    assert results[1].prediction is None and "broken.jpg" in str(results[1].error)


def test_threads_give_the_same_results(color_model: Path, color_images: dict[str, Path]) -> None:
    classifier = Classifier(color_model)
    paths = list(color_images.values())

    def run() -> tuple[list[dict[str, float]], list[dict[str, float]]]:
        return [classifier.predict(path).probabilities for path in paths], [
            prediction.probabilities for prediction in classifier.predict_batch(paths * 3, batch_size=4)
        ]

    sequential = run()
    start = threading.Barrier(8)

    def work(_: int) -> list[tuple[list[dict[str, float]], list[dict[str, float]]]]:
        start.wait()  # all 8 threads call into the one session at the same moment
        return [run() for _ in range(10)]

    with ThreadPoolExecutor(max_workers=8) as pool:
        rounds = [result for thread in pool.map(work, range(8)) for result in thread]
    assert len(rounds) == 80 and all(result == sequential for result in rounds)  # bit-identical probabilities
    assert [max(p, key=p.get) for p in sequential[0]] == list(color_images)


def test_missing_and_foreign_models_raise_model_error(tmp_path: Path, color_model: Path) -> None:
    with pytest.raises(ModelError, match="model file not found"):
        Classifier(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a protobuf at all")
    with pytest.raises(ModelError, match="not a loadable ONNX model"):
        Classifier(junk)
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(color_model.read_bytes()[:200])
    with pytest.raises(ModelError):
        Classifier(truncated)


def test_every_truncation_of_a_model_loads_or_raises_model_error(tmp_path: Path, color_model: Path) -> None:
    data = color_model.read_bytes()
    cut = tmp_path / "cut.onnx"
    refused = 0
    for length in range(len(data)):
        cut.write_bytes(data[:length])
        try:
            Classifier(cut, providers="cpu")
        except ModelError as error:
            refused += 1
            assert str(error).startswith(f"{cut}: ") and "\n" not in str(error)
    assert refused > len(data) // 2  # a cut between two whole protobuf fields may still load


def test_model_without_toolkit_metadata_is_refused(tmp_path: Path, color_model: Path) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(color_model)
    del model.metadata_props[:]
    foreign = tmp_path / "foreign.onnx"
    onnx.save(model, foreign)
    with pytest.raises(ModelError, match="no retrain-onnx metadata"):
        Classifier(foreign)


def test_model_whose_size_disagrees_with_metadata_is_refused(tmp_path: Path, color_model: Path) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(color_model)
    for entry in model.metadata_props:
        if entry.key == "input_height":
            entry.value = "64"
    wrong = tmp_path / "wrong.onnx"
    onnx.save(model, wrong)
    with pytest.raises(ModelError, match="disagrees with its metadata"):
        Classifier(wrong)


def test_provider_choice(color_model: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert choose_providers("cpu") == [CPU]
    assert choose_providers("auto")[-1] == CPU
    assert choose_providers("cuda")[-1] == CPU  # falls back with a warning where CUDA is absent
    cuda_built = CUDA in ort.get_available_providers()
    caplog.clear()
    assert choose_providers(f"{CUDA}, {CPU}") == ([CUDA, CPU] if cuda_built else [CPU])  # the CLI's spelling of a list
    assert cuda_built or f"warning: this onnxruntime build has no {CUDA}; using {CPU}" in caplog.text
    assert choose_providers(["TensorrtExecutionProvider"])[-1] == CPU  # nothing left of the names: the CPU
    with pytest.raises(ValueError, match="unknown onnxruntime providers"):
        choose_providers(f"{CUDA};{CPU}")
    with pytest.raises(ValueError, match="onnxruntime provider names separated by commas"):
        choose_providers("tpu")
    caplog.clear()  # CUDA asked for by name: onnxruntime is not even asked for a provider this build lacks
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # onnxruntime's own UserWarning about a provider it does not have
        classifier = Classifier(color_model, providers=[CUDA, CPU])
    assert classifier.provider == CPU or cuda_built
    if classifier.provider == CPU and cuda_built:  # a CUDA build on a machine where CUDA cannot start
        assert f"warning: {CUDA} could not be started (onnxruntime says why); using {CPU}" in caplog.text


def test_importing_runtime_never_imports_tensorflow() -> None:
    code = "import runtime, runtime.cli, sys; assert 'tensorflow' not in sys.modules and 'train' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_session_settings_tune_onnxruntime_without_changing_results(
    color_model: Path, color_images: dict[str, Path], tmp_path: Path
) -> None:
    optimized = tmp_path / "color.opt.onnx"
    settings = SessionSettings(intra_op_threads=1, optimization="basic", optimized_model_path=optimized)
    options = settings.options()
    assert options.intra_op_num_threads == 1 and options.optimized_model_filepath == str(optimized)
    tuned, default = Classifier(color_model, "cpu", settings), Classifier(color_model, "cpu")
    assert optimized.is_file()  # onnxruntime saved the optimised graph
    images = list(color_images.values())
    for a, b in zip(tuned.predict_batch(images), default.predict_batch(images)):
        assert a.label == b.label and a.probabilities == pytest.approx(b.probabilities, abs=1e-6)
    with pytest.raises(ValueError, match="optimization must be one of"):
        SessionSettings(optimization="fastest")


def test_decode_ahead_keeps_order_and_overlaps() -> None:
    started: list[int] = []

    def decode(item: int) -> int:
        started.append(item)
        return item * 10

    chunks = [[1, 2], [3], [4, 5, 6]]
    with ThreadPoolExecutor(max_workers=2) as pool:
        seen = []
        for chunk, decoded in decode_ahead(pool, chunks, decode):
            seen.append((list(chunk), decoded))
            if chunk == [1, 2]:
                time.sleep(0.05)
                assert 3 in started  # the next chunk was submitted before this one was consumed
    assert seen == [([1, 2], [10, 20]), ([3], [30]), ([4, 5, 6], [40, 50, 60])]
    assert list(decode_ahead(pool, [], decode)) == []


def test_classify_files_reads_a_stream_of_paths_lazily(color_model: Path, color_images: dict[str, Path]) -> None:
    """An endless stream (a huge --list) gives its first results without being read to the end."""
    endless = itertools.cycle([str(path) for path in color_images.values()])
    first = list(itertools.islice(Classifier(color_model).classify_files(endless, batch_size=2), 5))
    assert [result.prediction.label for result in first] == ["red", "green", "blue", "red", "green"]


def test_nonsense_batch_sizes_and_k_are_refused(color_model: Path, color_images: dict[str, Path]) -> None:
    classifier = Classifier(color_model)
    for size in (0, -1):
        with pytest.raises(ValueError, match="batch_size must be at least 1"):
            classifier.predict_batch(list(color_images.values()), batch_size=size)
        with pytest.raises(ValueError, match="batch_size must be at least 1"):
            list(classifier.classify_files(color_images.values(), batch_size=size))
    with pytest.raises(ValueError, match="k >= 1"):
        classifier.predict(color_images["red"]).top_k(0)


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [("views", "0", "views 0"), ("labels", '"CD"', "labels must be a JSON list"), ("labels", '["red", "red", "blue"]', "a label twice")],
)
def test_hand_edited_metadata_is_refused_in_one_line(tmp_path: Path, color_model: Path, key: str, value: str, problem: str) -> None:
    onnx = pytest.importorskip("onnx")
    model = onnx.load(color_model)
    next(entry for entry in model.metadata_props if entry.key == key).value = value
    edited = tmp_path / "edited.onnx"
    onnx.save(model, edited)
    with pytest.raises(ModelError, match=problem):
        Classifier(edited)


def test_non_ascii_and_spaced_file_names(color_model: Path, tmp_path: Path) -> None:
    folder = tmp_path / "Prüfung 2026"
    folder.mkdir()
    red = solid_image(folder / "Riss Brücke 1.jpg", (220, 30, 30))
    green = solid_image(folder / "ひび 2.png", (30, 200, 40))
    classifier = Classifier(color_model)
    for path, label in ((red, "red"), (green, "green")):
        for source in (path, str(path)):
            prediction = classifier.predict(source)
            assert (prediction.label, prediction.source) == (label, str(path))
    results = list(classifier.classify_files(find_images(folder)))
    assert [(result.file, result.prediction.label) for result in results] == [(str(red), "red"), (str(green), "green")]
