"""Triton Python-backend model: runs the exported ``model.onnx`` beside it with ONNX Runtime.

This is the CPU configuration served by the pip-installed ``tritonserver`` (whose wheel has no
ONNX Runtime backend). GPU deployments serve the same ``model.onnx`` with Triton's
``onnxruntime`` backend instead (see deploy/triton-gpu/).
"""

from __future__ import annotations

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args: dict) -> None:
        config = json.loads(args["model_config"])
        here = os.path.join(args["model_repository"], args["model_version"])
        options = ort.SessionOptions()
        threads = int(config.get("parameters", {}).get("ort_threads", {}).get("string_value", "0") or 0)
        if threads:
            options.intra_op_num_threads = threads
        # Idle pool threads sleep instead of spinning: the CPU they would burn between requests
        # belongs to the decode and RPC work of the other processes on the same cores.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(os.path.join(here, "model.onnx"), options,
                                            providers=["CPUExecutionProvider"])
        self.input_name = config["input"][0]["name"]
        self.output_names = [o["name"] for o in config["output"]]

    def execute(self, requests: list) -> list:
        # Dynamic batching hands us several requests: run them as one batch, then split.
        arrays = [pb_utils.get_input_tensor_by_name(r, self.input_name).as_numpy() for r in requests]
        sizes = [len(a) for a in arrays]
        outputs = self.session.run(self.output_names, {self.input_name: np.concatenate(arrays)})
        responses = []
        start = 0
        for size in sizes:
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(out[start:start + size], np.float32))
                       for name, out in zip(self.output_names, outputs, strict=True)]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start += size
        return responses
