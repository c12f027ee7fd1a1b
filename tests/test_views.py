"""train.views: symmetry views in numpy (bottleneck phase) and in the exported graph agree, and make the model invariant."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

pytest.importorskip("tensorflow")

import keras  # noqa: E402

from runtime import Classifier  # noqa: E402
from runtime.imaging import load_for_model  # noqa: E402
from runtime.metadata import ModelMetadata  # noqa: E402
from train.backbones import get_backbone  # noqa: E402
from train.bottleneck import compute_bottlenecks  # noqa: E402
from train.cache import BottleneckCache  # noqa: E402
from train.engines import WorkerSpec  # noqa: E402
from train.export import export_onnx, fuse  # noqa: E402
from train.fp16 import convert_fp16  # noqa: E402
from train.head import build_head  # noqa: E402
from train.view_layers import StackViews  # noqa: E402
from train.views import ViewError, symmetry_views  # noqa: E402

SIZE = 48


def crack_pixels(assets_dir: Path, count: int = 4) -> np.ndarray:
    paths = sorted((assets_dir / "CD").glob("*.jpg"))[:count]
    return np.stack([load_for_model(path, (SIZE, SIZE)) for path in paths])


def test_the_eight_views_are_the_dihedral_group(assets_dir: Path) -> None:
    image = crack_pixels(assets_dir, 1)[0]
    views = symmetry_views(8, (SIZE, SIZE))
    transformed = [view.apply(image) for view in views]
    expected = [np.rot90(image, k) for k in range(4)] + [np.rot90(image[:, ::-1], k) for k in range(4)]
    assert views[0].name == "" and np.array_equal(transformed[0], image)
    assert len({view.name for view in views}) == 8
    for candidate in expected:  # every rotation and mirrored rotation is exactly one of the views
        assert sum(np.array_equal(candidate, view) for view in transformed) == 1


def test_view_counts_are_checked() -> None:
    assert [view.name for view in symmetry_views(4, (30, 40))] == ["", "h", "v", "hv"]
    with pytest.raises(ViewError, match="square"):
        symmetry_views(8, (30, 40))
    with pytest.raises(ViewError, match="1, 2, 4, 8"):
        symmetry_views(3, (30, 30))


def test_sixteen_views_add_the_eight_of_the_zoomed_centre(assets_dir: Path) -> None:
    """The zoom is the image's central 87.5% resized back, as Pillow would do it (to within one level)."""
    image = load_for_model(sorted((assets_dir / "CD").glob("*.jpg"))[0], (224, 224))
    views = symmetry_views(16, (224, 224))
    assert [view.name for view in views[8:]] == [f"z875{view.name}" for view in views[:8]]
    zoomed = views[8].apply(image)
    by_pillow = np.asarray(Image.fromarray(image).crop((14, 14, 210, 210)).resize((224, 224), Image.BILINEAR))
    assert zoomed.dtype == np.uint8 and np.abs(zoomed.astype(int) - by_pillow).max() <= 1
    np.testing.assert_array_equal(views[9].apply(image), zoomed[:, ::-1])  # then the symmetry, as in views[1]
    with pytest.raises(ViewError, match="square"):
        symmetry_views(16, (30, 40))


@pytest.mark.parametrize("count", [8, 16])
def test_graph_views_equal_numpy_views(assets_dir: Path, count: int) -> None:
    pixels = crack_pixels(assets_dir)
    views = symmetry_views(count, (SIZE, SIZE))
    stacked = np.asarray(StackViews(views)(pixels))
    np.testing.assert_array_equal(stacked, np.concatenate([view.apply(pixels) for view in views]).astype(np.float32))


@pytest.mark.parametrize("count", [8, 16])
def test_exported_model_averages_views_and_is_rotation_invariant(assets_dir: Path, tmp_path: Path, count: int) -> None:
    backbone = get_backbone("mobilenet_v2", "none", (SIZE, SIZE), seed=1)
    extractor = backbone.build_extractor()
    keras.utils.set_random_seed(1)
    head = build_head(backbone.spec.feature_dim, 2)
    views = symmetry_views(count, (SIZE, SIZE))
    metadata = ModelMetadata(
        labels=["CD", "UD"], input_height=SIZE, input_width=SIZE, resize_method="pillow-bilinear",
        backbone="mobilenet_v2", weights=backbone.weights_identity, preprocessing=backbone.preprocessing.name,
        toolkit_version="test", trained_at="2026-01-01T00:00:00+00:00", views=len(views),
    )
    pixels = crack_pixels(assets_dir)
    exported = export_onnx(fuse(extractor, head, views), metadata, tmp_path / "views.onnx", pixels)
    classifier = Classifier(exported.path)
    assert classifier.metadata.views == count

    def probabilities(batch: np.ndarray) -> np.ndarray:
        return np.array([[p.probabilities[label] for label in classifier.labels] for p in classifier.predict_pixels(batch)])

    per_view = np.stack([np.asarray(head(extractor(view.apply(pixels)))) for view in views])
    np.testing.assert_allclose(probabilities(pixels), per_view.mean(axis=0), atol=1e-5)
    rotated = np.ascontiguousarray(np.rot90(pixels, 1, axes=(1, 2)))
    np.testing.assert_allclose(probabilities(rotated), probabilities(pixels), atol=1e-5)
    convert_fp16(exported.path, tmp_path / "views.fp16.onnx")  # the zoom once broke onnxruntime's fp16 converter
    half = Classifier(tmp_path / "views.fp16.onnx")
    np.testing.assert_allclose([[p.probabilities[label] for label in half.labels] for p in half.predict_pixels(pixels)], probabilities(pixels), atol=1e-2)


def test_every_view_is_cached_once_and_only_missing_views_are_computed(small_dataset: Path, tmp_path: Path) -> None:
    backbone = get_backbone("mobilenet_v2", "none", (SIZE, SIZE), seed=0)
    extractor = backbone.build_extractor()
    rows: list[int] = []  # images in each backbone batch: what was computed

    def extract(pixels: np.ndarray) -> np.ndarray:
        rows.append(len(pixels))
        return extractor.predict_on_batch(pixels)

    def run(view_count: int):
        spec = WorkerSpec(None, (SIZE, SIZE), tuple(symmetry_views(view_count, (SIZE, SIZE))))
        rows.clear()
        console = Console(file=io.StringIO(), width=200)
        return compute_bottlenecks(paths, spec, cache, extract, batch_size=8, console=console), console.file.getvalue()

    cache = BottleneckCache(tmp_path, backbone)
    paths = sorted(small_dataset.glob("*/*.jpg"))[:5]
    views = symmetry_views(8, (SIZE, SIZE))
    first, _ = run(4)
    assert first.computed == 5 and first.features[paths[0]].shape == (4, backbone.spec.feature_dim) and sum(rows) == 20
    assert len(list(cache.directory.glob("*/*.features"))) == 20
    direct = np.asarray(extractor(views[2].apply(load_for_model(paths[0], (SIZE, SIZE)))[None]))[0]
    np.testing.assert_allclose(first.features[paths[0]][2], direct, rtol=1e-4, atol=1e-4)
    cache.path_for(hashlib.sha256(paths[1].read_bytes()).hexdigest(), "v").unlink()  # one lost view: only it is recomputed
    again, said = run(4)
    assert (again.computed, again.views_computed, again.reused, sum(rows)) == (1, 1, 4, 1)
    assert "1 to compute: 1 with 1 of 4 views; the other views are cached" in said
    np.testing.assert_allclose(again.features[paths[1]], first.features[paths[1]], atol=1e-5)
    paths.append(sorted(small_dataset.glob("*/*.jpg"))[5])  # and one new image: two groups in one run
    more, said = run(8)  # from 4 views to 8: the 4 new views of each image, not all 8
    assert (more.computed, more.views_computed, sum(rows)) == (6, 28, 28)
    assert "6 to compute: 1 with all 8 views, 5 with 4 of 8 views; the other views are cached" in said
    np.testing.assert_array_equal(more.features[paths[0]][:4], first.features[paths[0]])
    direct = np.asarray(extractor(views[6].apply(load_for_model(paths[0], (SIZE, SIZE)))[None]))[0]
    np.testing.assert_allclose(more.features[paths[0]][6], direct, rtol=1e-4, atol=1e-4)
