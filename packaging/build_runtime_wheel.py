"""Build the runtime-only wheel, `retrain-onnx-runtime`: `python packaging/build_runtime_wheel.py [OUT_DIR]`.

The wheel holds the `runtime` package and the `classify` command, and depends only on the main project's
base dependencies (onnxruntime, numpy, pillow, typer, rich), read from its pyproject.toml so the two
never drift: no TensorFlow, no tf2onnx, no `train`. Needs pip (on Python 3.10 its vendored TOML reader
stands in for tomllib); setuptools comes from the package registry through pip's build isolation. Prints
the wheel's path.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same reader, as pip ships it (pip builds the wheel anyway)
    from pip._vendor import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
NAME = "retrain-onnx-runtime"


def pyproject(project: dict) -> str:
    """pyproject.toml of the runtime-only distribution, from the main project's table."""
    dependencies = ", ".join(f'"{requirement}"' for requirement in project["dependencies"])
    return f'''[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "{NAME}"
dynamic = ["version"]
description = "TensorFlow-free runtime of retrain-onnx: classify images with an exported ONNX model."
readme = "README.md"
requires-python = "{project["requires-python"]}"
license = "{project["license"]}"
license-files = ["LICENSE"]
dependencies = [{dependencies}]

[project.scripts]
classify = "runtime.cli:main"

[tool.setuptools]
packages = ["runtime"]

[tool.setuptools.dynamic]
version = {{ attr = "runtime.__version__" }}
'''


def build(out_dir: Path) -> Path:
    """Build the wheel into `out_dir` and return its path."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    with tempfile.TemporaryDirectory(prefix="runtime-wheel-") as scratch:
        staging = Path(scratch)
        shutil.copytree(REPO / "runtime", staging / "runtime", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copy(REPO / "LICENSE", staging / "LICENSE")
        (staging / "README.md").write_text("The TensorFlow-free runtime of retrain-onnx (`classify` and `runtime.Classifier`); see the project README, section 'Edge deployment'.\n")
        (staging / "pyproject.toml").write_text(pyproject(project))
        out_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps", "-w", str(out_dir), str(staging)],
            check=True,
        )
    return max(out_dir.glob(f"{NAME.replace('-', '_')}-*.whl"), key=lambda path: path.stat().st_mtime)


def main() -> None:
    """Build into OUT_DIR (default `dist/`), or exit with one line naming the folder that cannot take it."""
    out_dir = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "dist"
    try:
        print(build(out_dir))
    except OSError as error:
        sys.exit(f"error: {out_dir}: cannot be the wheel's folder ({error.strerror or error})")
    except subprocess.CalledProcessError as error:
        sys.exit(f"error: pip could not build the wheel into {out_dir} (exit {error.returncode}; its message is above)")


if __name__ == "__main__":
    main()
