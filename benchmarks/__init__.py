"""Measurements of retrain-onnx, written to `benchmarks/results/`."""
