"""onnxruntime session settings: threads, graph optimisation and an optional saved optimised model.

The defaults are the fastest settings measured on small x86 CPUs (see `python -m benchmarks` and
benchmarks/results/results.md): one intra-op thread per core, sequential execution, every graph
optimisation on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

OPTIMIZATION_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class SessionSettings:
    """How onnxruntime runs a model.

    `intra_op_threads` 0 lets onnxruntime take one thread per physical core. `optimized_model_path`, when
    set, makes onnxruntime write the graph after optimisation there; loading that file later skips the
    optimisation work (it is specific to the machine type it was made on).
    """

    intra_op_threads: int = 0
    inter_op_threads: int = 1
    optimization: str = "all"
    optimized_model_path: Path | None = None

    def __post_init__(self) -> None:
        if self.optimization not in OPTIMIZATION_LEVELS:
            raise ValueError(f"optimization must be one of {', '.join(OPTIMIZATION_LEVELS)}, not {self.optimization!r}")
        if self.intra_op_threads < 0 or self.inter_op_threads < 0:
            raise ValueError("thread counts must be >= 0 (0 = onnxruntime's choice)")

    def options(self) -> ort.SessionOptions:
        """These settings as onnxruntime `SessionOptions`."""
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = OPTIMIZATION_LEVELS[self.optimization]
        options.log_severity_level = 3
        if self.optimized_model_path is not None:
            options.optimized_model_filepath = str(self.optimized_model_path)
        return options
