"""The symmetry views of `train.views` as Keras layers, so the exported graph stacks and averages them itself."""

from __future__ import annotations

import keras

from train.views import View, zoom_matrix


class StackViews(keras.layers.Layer):
    """(N, H, W, C) -> (V * N, H, W, C): every view of every image, view-major (all of view 0 first)."""

    def __init__(self, views: list[View], **kwargs) -> None:
        super().__init__(**kwargs)
        self.views = views

    def call(self, images):
        images = keras.ops.cast(images, "float32")  # TensorFlow's oneDNN kernels lack uint8 transposes here
        # Flips are slices with step -1, not keras.ops.flip: tf2onnx turns a flip into ReverseSequence between
        # transposes, which left the views stacked in an (H, N, W, C) layout that onnxruntime turns into NCHW
        # 25x slower than NHWC (measured in uint8 at 256 x 224 x 224 x 3: 81 against 3 ms).
        copies, zoomed = [], {}
        for view in self.views:
            copy = images
            if view.zoom != 1:
                if view.zoom not in zoomed:
                    zoomed[view.zoom] = _zoom(images, view.zoom)
                copy = zoomed[view.zoom]
            if view.transpose:
                copy = keras.ops.transpose(copy, (0, 2, 1, 3))
            if view.flip_left_right:
                copy = copy[:, :, ::-1, :]
            if view.flip_up_down:
                copy = copy[:, ::-1, :, :]
            copies.append(copy)
        return keras.ops.concatenate(copies, axis=0) if len(copies) > 1 else images


def _zoom(images, fraction: float):
    """`train.views.zoom_pixels` on a float32 (N, H, W, C) batch: two matrix products, then whole pixel values.

    Reshapes rather than transposes bring each axis in place: tf2onnx's optimiser spent minutes moving the
    transposes of the other form around the graph.
    """
    height, width, channels = images.shape[1:]
    rows = keras.ops.matmul(zoom_matrix(height, fraction), keras.ops.reshape(images, (-1, height, width * channels)))
    both = keras.ops.matmul(zoom_matrix(width, fraction), keras.ops.reshape(rows, (-1, width, channels)))
    # No clip: each output is a convex combination of pixels, so already within 0..255 (a Min/Max pair here
    # also broke onnxruntime's fp16 converter, which put its casts around them out of order).
    pixels = keras.ops.cast(keras.ops.round(both), "uint8")  # whole values: moved as bytes in ONNX
    return keras.ops.reshape(keras.ops.cast(pixels, "float32"), (-1, height, width, channels))


class MeanOverViews(keras.layers.Layer):
    """(V * N, K) view-major -> (N, K): the mean over the V views of each image."""

    def __init__(self, view_count: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.view_count = view_count

    def call(self, values):
        if self.view_count == 1:
            return values
        per_view = keras.ops.reshape(values, (self.view_count, -1, values.shape[-1]))
        return keras.ops.mean(per_view, axis=0)
