"""Writing the toolkit's metadata into an ONNX model (reading it is `runtime.metadata`'s job)."""

from __future__ import annotations

import onnx

from runtime.metadata import ModelMetadata


def write_metadata(proto: onnx.ModelProto, metadata: ModelMetadata) -> None:
    """Replace `proto`'s `metadata_props` with `metadata`."""
    del proto.metadata_props[:]
    for key, value in metadata.to_props().items():
        proto.metadata_props.append(onnx.StringStringEntryProto(key=key, value=value))
