"""Encoder service: image bytes → hash code, real-valued u and class probabilities.

It fronts Triton (``--triton-url``) or, without one, runs the same exported ONNX model in-process
with ONNX Runtime (the embedded default).
"""
