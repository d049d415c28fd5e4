"""Files exported into a Triton model repository beside ``model.onnx`` (not imported here)."""
