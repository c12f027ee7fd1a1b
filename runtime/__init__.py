"""retrain-onnx runtime: classify images with an exported ONNX model, using onnxruntime, numpy and Pillow only.

    from runtime import Classifier
    classifier = Classifier("model.onnx")
    print(classifier.predict("crack.jpg").label)
"""

from runtime.classifier import Classifier, FileResult, Prediction
from runtime.errors import ImageError, ModelError, OutputError, RetrainOnnxError
from runtime.session import SessionSettings

__version__ = "0.1.0"

__all__ = ["Classifier", "FileResult", "ImageError", "ModelError", "OutputError", "Prediction", "RetrainOnnxError", "SessionSettings", "__version__"]
