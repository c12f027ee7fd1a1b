"""The bottleneck cache: features stored on disk once per (image content, backbone fingerprint).

Layout: `WORKSPACE/bottlenecks/<backbone fingerprint>/<hash[:2]>/<sha256 of image bytes>[.<view>].features`
(one file per symmetry view, see `train.views`; the image itself has no suffix), plus a `backbone.json`
describing the fingerprint. Each entry is the `.npy` bytes of the feature vector followed by the SHA-256
of those bytes, so a damaged entry (a flipped bit, a truncated copy) is detected, deleted and recomputed.
Writes go to a temporary file that is renamed into place, so an interrupted run never leaves a
half-written entry and several processes can share one cache; a temporary file that a killed run left
behind is removed when the cache next opens (once it is an hour old). A file that could not be decoded
gets a `<hash>.unreadable` note with the problem and the Pillow version, so the next run skips it
without trying again (and tries again after a Pillow upgrade, which may read it).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import time
from pathlib import Path

import numpy as np
import PIL

from train.atomic import write_atomically
from train.backbones import Backbone

#: Length of the SHA-256 digest that ends every entry.
CHECKSUM_BYTES = 32
#: Age after which a temporary file in the cache is taken as left behind by a killed run.
STALE_TEMPORARY_SECONDS = 3600


class BottleneckCache:
    """Feature vectors of one backbone, keyed by the SHA-256 of the image file's bytes and the view name."""

    def __init__(self, workspace: str | Path, backbone: Backbone) -> None:
        self.directory = Path(workspace) / "bottlenecks" / backbone.fingerprint()
        self.feature_dim = backbone.spec.feature_dim
        self.directory.mkdir(parents=True, exist_ok=True)
        description = self.directory / "backbone.json"
        if not description.exists():
            write_atomically(description, json.dumps(backbone.describe(), indent=2).encode("utf-8"))
        self._remove_stale_temporaries()

    def _remove_stale_temporaries(self) -> None:
        """Delete temporary files that a killed run left behind (`train.atomic` names them `.<entry>.*.tmp`).
        Only old ones: a run sharing the cache right now may be writing a fresh one."""
        cutoff = time.time() - STALE_TEMPORARY_SECONDS
        for temporary in [*self.directory.glob(".*.tmp"), *self.directory.glob("*/.*.tmp")]:
            with contextlib.suppress(OSError):
                if temporary.stat().st_mtime < cutoff:
                    temporary.unlink()

    def path_for(self, content_hash: str, view: str = "") -> Path:
        """Where the features of one view (named as in `train.views.View.name`) of an image live."""
        suffix = f".{view}" if view else ""
        return self.directory / content_hash[:2] / f"{content_hash}{suffix}.features"

    def get(self, content_hash: str, view: str = "") -> np.ndarray | None:
        """The cached features, or None when absent or damaged (a damaged entry is removed)."""
        path = self.path_for(content_hash, view)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        features = _verified_features(data)
        if features is None or features.shape != (self.feature_dim,) or not np.isfinite(features).all():
            path.unlink(missing_ok=True)
            return None
        return features

    def unreadable(self, content_hash: str) -> str | None:
        """Why an earlier run could not decode the image with these bytes, or None (not noted, or noted
        under another Pillow version)."""
        try:
            note = json.loads(self._unreadable_path(content_hash).read_bytes())
        except (OSError, ValueError):
            return None
        return note.get("problem") if isinstance(note, dict) and note.get("pillow") == PIL.__version__ else None

    def note_unreadable(self, content_hash: str, problem: str) -> None:
        """Remember that the image with these bytes cannot be decoded, and why."""
        write_atomically(self._unreadable_path(content_hash), json.dumps({"problem": problem, "pillow": PIL.__version__}).encode("utf-8"))

    def _unreadable_path(self, content_hash: str) -> Path:
        return self.directory / content_hash[:2] / f"{content_hash}.unreadable"

    def put(self, content_hash: str, features: np.ndarray, view: str = "") -> None:
        """Store features with their checksum, atomically (temporary file, then rename)."""
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(features, dtype=np.float32))
        payload = buffer.getvalue()
        write_atomically(self.path_for(content_hash, view), payload + hashlib.sha256(payload).digest())


def _verified_features(data: bytes) -> np.ndarray | None:
    """The float32 vector in an entry's bytes, or None when the checksum or the format is wrong."""
    payload, checksum = data[:-CHECKSUM_BYTES], data[-CHECKSUM_BYTES:]
    if len(data) <= CHECKSUM_BYTES or hashlib.sha256(payload).digest() != checksum:
        return None
    try:
        features = np.load(io.BytesIO(payload), allow_pickle=False)
    except (OSError, ValueError, EOFError):
        return None
    return features.astype(np.float32, copy=False) if features.dtype == np.float32 else None
