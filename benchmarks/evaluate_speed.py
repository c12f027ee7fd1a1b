"""`python -m benchmarks.evaluate_speed`: `evaluate-model` against plain `classify` on the same folder.

Trains the default model on the folder (`assets/` by default; features come from the workspace cache
when present), then runs `classify MODEL DIR --csv` and `evaluate-model MODEL DIR` as a user would, one
after the other, each as its own process, on every image of the folder. Writes
DIR/evaluate_speed.{json,md} with a `targets` list (evaluate-model under 2x classify's time).
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from benchmarks.environment import environment
from benchmarks.report import table
from benchmarks.suite import REPO, _target
from runtime.imaging import find_images
from train.pipeline import TrainConfig, run

#: evaluate-model may take at most this many times classify's wall time.
GOAL_RATIO = 2.0


def timed(command: list[str]) -> float:
    """Wall seconds of one command, which must succeed."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} failed: {done.stderr[-2000:]}")
    return time.perf_counter() - started


def measure(folder: Path, workspace: Path) -> dict[str, object]:
    """Seconds of classify and evaluate-model on `folder` with the default model trained on it."""
    with tempfile.TemporaryDirectory() as scratch:
        model = Path(scratch) / "model.onnx"
        run(TrainConfig(data_dir=folder, export=model, workspace=workspace), Console(file=io.StringIO()))
        bin_dir = Path(sys.executable).parent
        classify = timed([str(bin_dir / "classify"), str(model), str(folder), "--csv", str(Path(scratch) / "out.csv")])
        evaluate = timed([str(bin_dir / "evaluate-model"), str(model), str(folder)])
    images = len(find_images(folder))
    return {"folder": str(folder), "images": images, "classify_seconds": classify, "evaluate_model_seconds": evaluate, "ratio": evaluate / classify}


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=REPO / "assets")
    parser.add_argument("--workspace", type=Path, default=REPO / ".retrain-cache")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = parser.parse_args(argv)
    row = measure(args.folder, args.workspace)
    target = _target("evaluate-model / classify wall time on the same folder", row["ratio"], GOAL_RATIO, higher_is_better=False)
    result = {"command": " ".join(["python -m benchmarks.evaluate_speed", *(sys.argv[1:] if argv is None else argv)]),
              "environment": environment(), "measurement": row, "targets": [target]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "evaluate_speed.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lines = [
        "# evaluate-model vs classify", "", f"Command: `{result['command']}`  ", f"Date: {result['environment']['date']}", "",
        *table(["folder", "images", "classify s", "evaluate-model s", "ratio", "goal", "met"], [[
            row["folder"], row["images"], row["classify_seconds"], row["evaluate_model_seconds"], row["ratio"],
            f"< {GOAL_RATIO}", "yes" if target["met"] else "**no**",
        ]]), "",
    ]
    (args.out / "evaluate_speed.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.out / 'evaluate_speed.json'} and {args.out / 'evaluate_speed.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
