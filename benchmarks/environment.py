"""The machine, library versions and date that every result row carries."""

from __future__ import annotations

import os
import platform
from datetime import datetime, timezone
from importlib import metadata


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def environment() -> dict[str, object]:
    """CPU model, core count, Python and library versions, and the UTC date."""
    packages = ("retrain-onnx", "tensorflow-cpu", "tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy", "pillow")
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": {name: version for name in packages if (version := _version(name))},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
