"""The bottleneck cache: features stored on disk once per (image content, backbone fingerprint).

Layout: `WORKSPACE/bottlenecks/<backbone fingerprint>/<hash[:2]>/<sha256 of image bytes>[.<view>].npy`
(one file per symmetry view, see `train.views`; the image itself has no suffix), plus a `backbone.json`
describing the fingerprint. Writes go to a temporary file that is renamed into place,
so an interrupted run never leaves a half-written entry; an unreadable entry is deleted and recomputed.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np

from train.atomic import write_atomically
from train.backbones import Backbone


class BottleneckCache:
    """Feature vectors of one backbone, keyed by the SHA-256 of the image file's bytes and the view name."""

    def __init__(self, workspace: str | Path, backbone: Backbone) -> None:
        self.directory = Path(workspace) / "bottlenecks" / backbone.fingerprint()
        self.feature_dim = backbone.spec.feature_dim
        self.directory.mkdir(parents=True, exist_ok=True)
        description = self.directory / "backbone.json"
        if not description.exists():
            write_atomically(description, json.dumps(backbone.describe(), indent=2).encode("utf-8"))

    def path_for(self, content_hash: str, view: str = "") -> Path:
        """Where the features of one view (named as in `train.views.View.name`) of an image live."""
        suffix = f".{view}" if view else ""
        return self.directory / content_hash[:2] / f"{content_hash}{suffix}.npy"

    def get(self, content_hash: str, view: str = "") -> np.ndarray | None:
        """The cached features, or None when absent or damaged (a damaged entry is removed)."""
        path = self.path_for(content_hash, view)
        if not path.exists():
            return None
        try:
            features = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            features = None
        if features is None or features.shape != (self.feature_dim,) or not np.isfinite(features).all():
            path.unlink(missing_ok=True)
            return None
        return features.astype(np.float32, copy=False)

    def put(self, content_hash: str, features: np.ndarray, view: str = "") -> None:
        """Store features atomically (temporary file, then rename)."""
        path = self.path_for(content_hash, view)
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(features, dtype=np.float32))
        write_atomically(path, buffer.getvalue())

