"""Tiny ONNX models for the detection tests: an image input and constant outputs in a chosen layout.

Each output is a Constant node, so a "detector" emits exactly the tensors a test wrote; decoding
them end to end through onnxruntime checks adapters, preparation and box mapping without weights.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


def constant_model(
    path: Path, outputs: Mapping[str, np.ndarray], input_shape: Sequence[int | str] = (1, 3, 416, 416), input_type: str = "float"
) -> Path:
    """Write a model with input ``images`` of ``input_shape`` and element type ``input_type``
    (``float`` | ``float16``) whose outputs are ``outputs`` (in order)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, infos = [], []
    for name, value in outputs.items():
        arr = np.asarray(value)
        nodes.append(helper.make_node("Constant", [], [name], value=numpy_helper.from_array(arr, name=f"{name}_value")))
        elem = {"float32": TensorProto.FLOAT, "float16": TensorProto.FLOAT16, "int64": TensorProto.INT64}[str(arr.dtype)]
        infos.append(helper.make_tensor_value_info(name, elem, list(arr.shape)))
    elem_in = {"float": TensorProto.FLOAT, "float16": TensorProto.FLOAT16}[input_type]
    image = helper.make_tensor_value_info("images", elem_in, list(input_shape))
    graph = helper.make_graph(nodes, "constant_detector", [image], infos)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
