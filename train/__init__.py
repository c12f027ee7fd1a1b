"""retrain-onnx training: transfer learning on cached bottleneck features, exported as one ONNX file.

Needs the `[train]` extra (TensorFlow, tf2onnx). Image decoding comes from `runtime`, so training and
deployment see the same pixels.
"""
