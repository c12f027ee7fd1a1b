"""Writing a benchmark run: results.json, a Markdown table (results.md) and a latency plot (PNG)."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PLOT_FILE = "latency_vs_batch.png"


def write_results(result: dict[str, object], folder: Path) -> list[Path]:
    """Write the three files into `folder`; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "results.json", folder / "results.md", folder / PLOT_FILE]
    paths[0].write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    paths[1].write_text(markdown(result), encoding="utf-8")
    plot_latency(result["inference"], paths[2])
    return paths


def plot_latency(rows: list[dict[str, object]], path: Path) -> None:
    """Milliseconds per image against batch size, one line per (backbone, engine)."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for index, backbone in enumerate(dict.fromkeys(row["backbone"] for row in rows)):
        for engine, style in (("onnxruntime", "-o"), ("tensorflow", "--s")):
            points = sorted((row["batch"], row["ms_per_image"]) for row in rows if (row["backbone"], row["engine"]) == (backbone, engine))
            axes.plot(*zip(*points), style, color=f"C{index}", label=f"{backbone} / {engine}")
    axes.set(xscale="log", yscale="log", xlabel="batch size", ylabel="ms per image", title="Latency per image vs batch size (CPU)")
    axes.set_xticks(sorted({row["batch"] for row in rows}), labels=[str(b) for b in sorted({row["batch"] for row in rows})])
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def table(header: list[str], rows: list[list[object]]) -> list[str]:
    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    return ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)] + ["| " + " | ".join(map(cell, row)) + " |" for row in rows]


def markdown(result: dict[str, object]) -> str:
    """The run as Markdown tables, targets first."""
    env = result["environment"]
    lines = [
        "# Benchmark results", "",
        f"Command: `{result.get('command', 'python -m benchmarks')}`  ",
        f"Machine: {env['cpu']}, {env['cores']} cores; Python {env['python']}; date {env['date']}  ",
        "Versions: " + ", ".join(f"{name} {version}" for name, version in env["versions"].items()), "",
        "## Targets", "",
    ]
    lines += table(["target", "measured", "goal", "met"], [
        [t["name"], t["measured"], f"{t['comparison']} {t['goal']}", "yes" if t["met"] else "**no**"] for t in result["targets"]
    ])
    peak = result["matmul_peak"]
    lines += ["", "## Inference: onnxruntime (runtime) vs TensorFlow (`model(x, training=False)` in a tf.function)", "",
              f"Matmul peak of this CPU ({peak['size']}x{peak['size']} fp32, measured before and after the inference runs: "
              f"{peak['peak_gflops_before']:.1f} and {peak['peak_gflops_after']:.1f} GFLOP/s; best: numpy {peak['numpy_gflops']:.1f}, "
              f"onnxruntime {peak['onnxruntime_gflops']:.1f}). % of peak uses the best figure.", ""]
    lines += table(["backbone", "weights", "engine", "batch", "images/s", "ms/image", "GFLOP/image", "% of peak", "p50 ms", "p95 ms", "p99 ms"], [
        [r["backbone"], r["weights"], r["engine"], r["batch"], r["images_per_s"], r["ms_per_image"], r["gflops_per_image"],
         r["pct_of_matmul_peak"], r.get("p50_ms", ""), r.get("p95_ms", ""), r.get("p99_ms", "")]
        for r in result["inference"]
    ])
    lines += ["", "Speed-up, onnxruntime / TensorFlow (same run):", ""]
    lines += table(["backbone", "batch", "ratio"], [[s["backbone"], s["batch"], s["onnxruntime_over_tensorflow"]] for s in result["speedups"]])
    lines += ["", f"![latency per image vs batch size]({PLOT_FILE})", "", "## Edge variants of the default model (int8, fp16) vs fp32", "",
              "Each split seed trains its own model; fp32 and its variants share that seed's test split; throughput through `Classifier.predict_pixels` at batch 32 on this CPU "
              "(fp16 runs on a CPU by casting back to fp32: its row shows size and accuracy, its speed is not the point). "
              "`gate passed` = within 1 point of fp32 (the benchmark writes refused variants with --force to measure them). "
              "Split seeds are added per data set until enough test images are pooled (`EdgeTraining.min_test_images`): a small test split flips 1.3 to 2 points per image.", ""]
    lines += table(["data", "seed", "precision", "views", "test images", "MB", "size / fp32", "accuracy", "balanced acc.", "agreement", "loss (points)", "images/s", "speed / fp32", "gate passed"], [
        [e["data"], e["seed"], e["precision"], e["views"], e["test_images"], e["bytes"] / 1e6, e["size_vs_fp32"], e["accuracy"], e["balanced_accuracy"], e["agreement"],
         e["loss_points"], e["images_per_s_batch32"], e["speed_vs_fp32"], "yes" if e["gate_passed"] else "**no**"]
        for e in result["edge"]
    ])
    lines += ["", "## Bottleneck phase", ""]
    b = result["bottleneck"]
    lines += table(["backbone", "images", "naive TF images/s", "onnxruntime + cache images/s", "speed-up", "warm re-run s", "cold s", "warm / cold", "one-time ONNX conversion s"], [
        [b["backbone"], b["images"], b["tensorflow_naive_images_per_s"], b["onnxruntime_cached_images_per_s"], b["speedup"],
         b["warm_seconds"], b["cold_seconds"], b["warm_over_cold"], b["onnx_conversion_seconds_once"]]
    ])
    t = result["training_rerun"]
    lines += ["", f"`train-model {t['data']}` with default settings ({t['views']} views), run twice on one fresh cache:", ""]
    lines += table(["run", "whole run s", "bottleneck phase s", "features computed"], [
        ["cold", t["cold_seconds"], t["cold_bottleneck_seconds"], "all"],
        ["warm", t["warm_seconds"], t["warm_bottleneck_seconds"], t["warm_computed"]],
        ["warm / cold", t["whole_run_warm_over_cold"], t["bottleneck_warm_over_cold"], ""],
    ])
    lines += ["", "## classify on a folder (decode + preprocess + inference)", ""]
    lines += table(["views", "images", "images/s", "wall s", "decode s (1 thread)", "inference s", "decode share"], [
        [c["views"], c["images"], c["images_per_s"], c["wall_seconds"], c["decode_seconds_one_thread"], c["inference_seconds"], c["decode_share"]]
        for c in result["classify_folder"]
    ])
    c = result["cold_start"]
    lines += ["", f"## Cold start ({c['model']}; median of {c['repeats']} fresh processes)", ""]
    lines += table(["process", "seconds to first prediction", "peak RSS MiB", "model size MiB"], [
        ["classify (onnxruntime)", c["classify_one_image"]["seconds"], c["classify_one_image"]["peak_rss_mib"], c["onnx_file_mib"]],
        ["TensorFlow SavedModel", c["tensorflow_one_image"]["seconds"], c["tensorflow_one_image"]["peak_rss_mib"], c["saved_model_mib"]],
    ])
    lines += ["", f"`import runtime`: {c['import_runtime_seconds']:.3f} s", "", "## onnxruntime session settings (first backbone)", ""]
    lines += table(["intra-op threads", "optimisation", "default", "batch-1 p50 ms", "batch-32 images/s"], [
        [s["intra_op_threads"], s["optimization"], "yes" if s["default"] else "", s["batch1_p50_ms"], s["batch32_images_per_s"]]
        for s in result["session_settings"]
    ])
    return "\n".join(lines) + "\n"
