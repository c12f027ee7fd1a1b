"""`python -m benchmarks [--quick | --scale] [--out DIR]`: speed of the toolkit against plain TensorFlow, side by side.

Writes DIR/results.json (every figure, a `targets` list, the machine and versions on every row),
DIR/results.md (tables) and DIR/latency_vs_batch.png. `--quick` measures fewer backbones for less time
(under 5 minutes on 2 cores) and writes to benchmarks/results/quick/ unless --out says otherwise.
`--scale` measures only the scale-out engines (worker processes, Ray; see benchmarks/scale.py) and writes
DIR/scale.{json,md}. Accuracy has its own command: `python -m benchmarks.accuracy`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks.report import write_results  # noqa: E402
from benchmarks.suite import FULL, QUICK, REPO, run_suite  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer backbones, shorter timings (< 5 minutes)")
    parser.add_argument("--scale", action="store_true", help="only the scale-out engines: processes and Ray (about 10 minutes)")
    parser.add_argument("--out", type=Path, help="folder for the result files (default benchmarks/results, or its quick/ folder)")
    args = parser.parse_args(argv)
    out = args.out or REPO / "benchmarks" / "results" / ("quick" if args.quick else "")
    command = " ".join(["python -m benchmarks", *(sys.argv[1:] if argv is None else argv)])
    if args.scale:
        from benchmarks.scale import run_scale, write_scale

        result = {**run_scale(_log), "command": command}
        written = write_scale(result, out)
    else:
        result = {**run_suite(QUICK if args.quick else FULL, log=_log), "command": command}
        written = write_results(result, out)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)


def _log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
