"""Inference backends behind one small interface (ONNX Runtime, TensorRT)."""
