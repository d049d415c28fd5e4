"""A trained network as a served model: ONNX export with its facts (``onnx_export``, needs torch),
the Triton repository layout (``repository``), and the exported model run in-process with ONNX
Runtime (``runtime``, no torch)."""
