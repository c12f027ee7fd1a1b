"""Run an ONNX model with some of its inner tensors as its outputs: how the int8 steps measure what
rounding does to a layer (bias correction's channel means, the sensitivity scan's logits)."""

from __future__ import annotations

from typing import Sequence

import onnx
import onnxruntime as ort

from runtime.session import SessionSettings


def probe_session(model: onnx.ModelProto, tensors: Sequence[str]) -> ort.InferenceSession:
    """A quiet onnxruntime CPU session of a copy of `model` whose outputs are the inner `tensors`, in that
    order (their types are left to onnxruntime to infer; nodes they do not need are pruned)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.ValueInfoProto(name=name) for name in tensors)
    return ort.InferenceSession(probe.SerializeToString(), SessionSettings().options(), providers=["CPUExecutionProvider"])
