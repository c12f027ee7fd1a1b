"""The metadata an exported model carries in its ONNX `metadata_props`, and its (de)serialisation.

Every value is a string so any ONNX client can read it; lists and dicts are JSON. `train` writes it,
`runtime` reads it: this module is the schema both sides share.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from runtime.errors import ModelError

#: Marks a model as exported by this toolkit; bumped when the schema changes incompatibly.
FORMAT_KEY = "retrain_onnx_format"
FORMAT_VERSION = "1"

INPUT_NAME = "image"
PROBABILITIES_OUTPUT = "probabilities"
LABEL_INDEX_OUTPUT = "label_index"


@dataclass(frozen=True)
class DecisionThreshold:
    """A two-class model's operating point: `positive` is predicted when its probability >= `threshold`."""

    positive: str
    threshold: float
    #: How it was chosen, e.g. "maximum balanced accuracy on the validation split".
    rule: str = ""
    #: Recall, specificity and balanced accuracy it gave on the validation split.
    validation: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> str:
        """The threshold as a JSON object string (the metadata value)."""
        return json.dumps({"positive": self.positive, "threshold": self.threshold, "rule": self.rule, "validation": self.validation})

    @classmethod
    def from_json(cls, text: str) -> "DecisionThreshold | None":
        """Parse `to_json`'s output; "" or "null" means no threshold."""
        value = json.loads(text) if text else None
        if value is None:
            return None
        threshold = float(value["threshold"])
        if not 0.0 <= threshold <= 1.0:  # also refuses NaN
            raise ValueError(f"decision threshold {threshold} is not a probability")
        return cls(str(value["positive"]), threshold, value.get("rule", ""), value.get("validation", {}))


@dataclass(frozen=True)
class ModelMetadata:
    """What the runtime needs to use a model, read from and written to the ONNX file itself."""

    labels: list[str]
    input_height: int
    input_width: int
    resize_method: str
    backbone: str
    weights: str
    preprocessing: str
    toolkit_version: str
    trained_at: str
    test_metrics: dict[str, Any] = field(default_factory=dict)
    #: Symmetry views the model averages over inside its graph (the graph does it; the runtime only cuts
    #: its batches to bound the backbone images per run).
    views: int = 1
    #: Number format of the weights and arithmetic: "fp32", "int8" or "fp16" (inputs are uint8 in all).
    precision: str = "fp32"
    #: How the training data was split (proportions, seed, label source, group pattern), so tools that
    #: evaluate the model later (`quantize-model`) can rebuild the same test split.
    split: dict[str, Any] = field(default_factory=dict)
    #: For an int8 or fp16 model: how it was made from the fp32 model and what that cost on the test split.
    conversion: dict[str, Any] = field(default_factory=dict)
    #: Two classes only: the operating threshold the runtime applies (None: the most probable class wins).
    decision_threshold: DecisionThreshold | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the images the model takes."""
        return self.input_height, self.input_width

    def to_props(self) -> dict[str, str]:
        """The metadata as ONNX `metadata_props` key/value strings."""
        return {
            FORMAT_KEY: FORMAT_VERSION,
            "labels": json.dumps(self.labels),
            "input_height": str(self.input_height),
            "input_width": str(self.input_width),
            "input_name": INPUT_NAME,
            "input_format": "uint8 NHWC RGB",
            "outputs": json.dumps([PROBABILITIES_OUTPUT, LABEL_INDEX_OUTPUT]),
            "resize_method": self.resize_method,
            "backbone": self.backbone,
            "weights": self.weights,
            "preprocessing": self.preprocessing,
            "views": str(self.views),
            "precision": self.precision,
            "split": json.dumps(self.split),
            "conversion": json.dumps(self.conversion),
            "decision_threshold": self.decision_threshold.to_json() if self.decision_threshold else "null",
            "toolkit_version": self.toolkit_version,
            "trained_at": self.trained_at,
            "test_metrics": json.dumps(self.test_metrics),
        }

    @classmethod
    def from_props(cls, props: dict[str, str], path: str) -> "ModelMetadata":
        """Parse `metadata_props`; raise `ModelError` naming `path` when they are not this toolkit's."""
        if props.get(FORMAT_KEY) is None:
            raise ModelError(path, "ONNX model has no retrain-onnx metadata; export it with train-model")
        if props[FORMAT_KEY] != FORMAT_VERSION:
            raise ModelError(path, f"metadata format {props[FORMAT_KEY]!r} is not supported (expected {FORMAT_VERSION})")
        try:
            labels = json.loads(props["labels"])
            if not isinstance(labels, list):
                raise ValueError(f"labels must be a JSON list, not {type(labels).__name__}")
            metadata = cls(
                labels=[str(label) for label in labels],
                input_height=int(props["input_height"]),
                input_width=int(props["input_width"]),
                resize_method=props["resize_method"],
                backbone=props["backbone"],
                weights=props["weights"],
                preprocessing=props["preprocessing"],
                toolkit_version=props["toolkit_version"],
                trained_at=props["trained_at"],
                test_metrics=json.loads(props.get("test_metrics", "{}")),
                views=int(props.get("views", "1")),
                precision=props.get("precision", "fp32"),
                split=json.loads(props.get("split", "{}")),
                conversion=json.loads(props.get("conversion", "{}")),
                decision_threshold=DecisionThreshold.from_json(props.get("decision_threshold", "")),
            )
        except KeyError as error:
            raise ModelError(path, f"model metadata lacks the key {error.args[0]!r}") from error
        except (ValueError, TypeError) as error:
            raise ModelError(path, f"model metadata is malformed ({error})") from error
        if not metadata.labels:
            raise ModelError(path, "model metadata lists no labels")
        if len(set(metadata.labels)) != len(metadata.labels):
            raise ModelError(path, f"model metadata lists a label twice ({', '.join(metadata.labels)})")
        if metadata.views < 1 or min(metadata.input_size) < 1:
            raise ModelError(path, f"model metadata is malformed (views {metadata.views}, input size {metadata.input_size})")
        threshold = metadata.decision_threshold
        if threshold is not None and (len(metadata.labels) != 2 or threshold.positive not in metadata.labels):
            raise ModelError(path, f"decision threshold for {threshold.positive!r} needs a two-class model with that label")
        return metadata
