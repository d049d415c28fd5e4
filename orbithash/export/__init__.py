"""A trained network as a served model: ONNX export with its facts (``onnx_export``, needs torch),
the Triton repository layout (``repository``), the exported model run in-process with ONNX
Runtime (``runtime``, no torch), and the faster served variants (graph-optimised, static INT8) the
export measures and chooses among (``quantize``)."""
