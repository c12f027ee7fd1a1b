"""Architecture variants that the bundled ImageNet weights need (see models/README.md).

Both functions build the stock ``keras.applications`` model with
``weights=None``, edit its functional config and rebuild it with
``keras.Model.from_config``.  No Keras source is copied and no weights are
loaded here: call ``model.load_weights(path)`` afterwards.

* ``torch_style_mobilenet_v2``: torchvision MobileNetV2 numerics, i.e.
  symmetric padding (1 px on every side) before every 3x3 stride-2 conv
  (Keras uses "same" / ((0, 1), (0, 1)) for even sizes) and batch-norm
  epsilon 1e-5 (Keras: 1e-3).
* ``fid_inception_v3``: the Inception-v3 trunk of the TF FID network, i.e. the
  pooling branch of the last block (mixed10) is a 3x3/1 "same" MAX-pool
  instead of an average pool.

Weight files are loaded by layer order and class (Keras 3 ``.weights.h5``
addresses layers as ``layers/<class>_<k>``, not by layer name), so layers
that carry no variables (padding, pooling) can be inserted or changed freely.
"""

import copy
import re

import keras

__all__ = ["torch_style_mobilenet_v2", "fid_inception_v3"]


def _history_names(layer_cfg):
    """Names of the layers feeding ``layer_cfg`` (first call site only)."""
    names = []

    def walk(obj):
        if isinstance(obj, dict):
            if obj.get("class_name") == "__keras_tensor__":
                names.append(obj["config"]["keras_history"][0])
            else:
                for v in obj.values():
                    walk(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                walk(v)

    walk(layer_cfg.get("inbound_nodes", []))
    return names


def _snake(class_name):
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", class_name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _rename(cfg, mapping):
    """Rename layers in a functional config, rewiring every reference.

    (get_config() output mixes lists and tuples; keras_history and
    input_layers/output_layers entries are lists.)"""
    if not mapping:
        return

    def fix(obj):
        if isinstance(obj, dict):
            if obj.get("class_name") == "__keras_tensor__":
                hist = obj["config"]["keras_history"]
                hist[0] = mapping.get(hist[0], hist[0])
            else:
                for v in obj.values():
                    fix(v)
        elif isinstance(obj, (list, tuple)):
            if (isinstance(obj, list) and len(obj) == 3
                    and isinstance(obj[0], str) and isinstance(obj[1], int)):
                obj[0] = mapping.get(obj[0], obj[0])  # input_layers/output_layers
            else:
                for v in obj:
                    fix(v)

    for layer in cfg["layers"]:
        new = mapping.get(layer["name"])
        if new is not None:
            layer["name"] = new
            layer["config"]["name"] = new
        fix(layer.get("inbound_nodes", []))
    fix(cfg["input_layers"])
    fix(cfg["output_layers"])


def _canonical_auto_names(cfg):
    """Give auto-named layers ("conv2d_94", "input_layer_11", ...) the names a
    fresh Keras session would give them, so names do not depend on how many
    models were built before in the process.  Keras' name counters grow in
    creation order, so sorting by the numeric suffix keeps creation order
    (which differs from the topological order of ``model.layers``)."""
    groups = {}
    for layer in cfg["layers"]:
        base = _snake(layer["class_name"])
        m = re.fullmatch(re.escape(base) + r"(?:_(\d+))?", layer["name"])
        if m:
            groups.setdefault(base, []).append((int(m.group(1)) if m.group(1) else -1,
                                                layer["name"]))
    mapping = {}
    for base, items in groups.items():
        for k, (_, name) in enumerate(sorted(items)):
            mapping[name] = base if k == 0 else f"{base}_{k}"
    _rename(cfg, {a: b for a, b in mapping.items() if a != b})


def _check_square(input_shape):
    if len(input_shape) != 3 or input_shape[0] != input_shape[1] or input_shape[2] != 3:
        raise ValueError(f"expected a square RGB input shape (S, S, 3), got {input_shape!r}")


def torch_style_mobilenet_v2(input_shape=(224, 224, 3), include_top=False, pooling="avg"):
    """Keras MobileNetV2 (alpha=1.0) with torchvision padding and BN epsilon.

    include_top=True gives the 1000-class softmax head ("predictions");
    include_top=False ends with ``pooling`` (None, "avg" or "max").
    Layer order/classes of the no-top model are those of the full model
    minus the head, so the same weights file fills both with a plain
    ``model.load_weights(path)`` (the unused head group is ignored).
    """
    input_shape = tuple(int(s) for s in input_shape)
    _check_square(input_shape)
    base = keras.applications.MobileNetV2(
        input_shape=input_shape, alpha=1.0, include_top=include_top,
        weights=None, pooling=None if include_top else pooling, classes=1000)
    cfg = copy.deepcopy(base.get_config())
    del base
    layers = cfg["layers"]

    for layer in layers:
        c = layer["config"]
        if layer["class_name"] == "BatchNormalization":
            c["epsilon"] = 1e-5
        elif layer["class_name"] == "ZeroPadding2D":
            # only used in front of the stride-2 depthwise convs
            c["padding"] = [[1, 1], [1, 1]]
            layer.pop("build_config", None)

    # The stem conv "Conv1" is a stride-2 conv with padding="same"
    # (asymmetric for even sizes): make it "valid" behind an explicit
    # symmetric ZeroPadding2D layer.
    idx = next(i for i, l in enumerate(layers) if l["name"] == "Conv1")
    conv = layers[idx]
    if conv["config"]["padding"] != "same" or list(conv["config"]["strides"]) != [2, 2]:
        raise RuntimeError("unexpected Keras MobileNetV2 stem; refusing to edit")
    src = conv["inbound_nodes"][0]["args"][0]
    h, w = input_shape[0] + 2, input_shape[1] + 2
    pad = {
        "module": "keras.layers",
        "class_name": "ZeroPadding2D",
        "config": {"name": "Conv1_pad", "trainable": True,
                   "dtype": copy.deepcopy(conv["config"]["dtype"]),
                   "padding": [[1, 1], [1, 1]], "data_format": "channels_last"},
        "registered_name": None,
        "name": "Conv1_pad",
        "inbound_nodes": [{"args": [copy.deepcopy(src)], "kwargs": {}}],
    }
    conv["config"]["padding"] = "valid"
    conv.pop("build_config", None)
    conv["inbound_nodes"] = [{"args": [{
        "class_name": "__keras_tensor__",
        "config": {"shape": [None, h, w, 3], "dtype": src["config"]["dtype"],
                   "keras_history": ["Conv1_pad", 0, 0]}}], "kwargs": {}}]
    layers.insert(idx, pad)
    _canonical_auto_names(cfg)
    cfg["name"] = "mobilenetv2_torch_style"
    return keras.Model.from_config(cfg)


def fid_inception_v3(input_shape=(299, 299, 3), pooling="avg"):
    """Keras InceptionV3 trunk (include_top=False) as used by the FID network.

    Only change: mixed10's pooling branch is MaxPooling2D(3, strides=1,
    padding="same") instead of AveragePooling2D.  With pooling="avg" the
    output is the 2048-d pool_3 feature.
    """
    input_shape = tuple(int(s) for s in input_shape)
    _check_square(input_shape)
    base = keras.applications.InceptionV3(
        input_shape=input_shape, include_top=False, weights=None, pooling=pooling)
    cfg = copy.deepcopy(base.get_config())
    del base
    # mixed10 = the second 8x8 block; its input is the output of "mixed9".
    hits = [l for l in cfg["layers"]
            if l["class_name"] == "AveragePooling2D" and _history_names(l) == ["mixed9"]]
    if len(hits) != 1:
        raise RuntimeError(f"expected one AveragePooling2D fed by mixed9, found {len(hits)}")
    pool = hits[0]
    c = pool["config"]
    assert list(c["pool_size"]) == [3, 3] and list(c["strides"]) == [1, 1] and c["padding"] == "same"
    pool["class_name"] = "MaxPooling2D"
    _rename(cfg, {pool["name"]: "mixed10_branch_pool"})
    _canonical_auto_names(cfg)
    cfg["name"] = "inception_v3_fid"
    return keras.Model.from_config(cfg)
