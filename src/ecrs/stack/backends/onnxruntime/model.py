"""Triton Python-based backend that serves ONNX models with the onnxruntime package.

Triton loads this file as the backend named ``onnxruntime`` when the backend
directory has ``onnxruntime/model.py`` and no ``libtriton_onnxruntime.so``, as
in the tritonserver of the nvidia-pytriton wheel. A model's config.pbtxt then
sets ``backend: "onnxruntime"`` both here and on the NGC image, where Triton's
native ONNX Runtime backend serves it instead.

Each model version opens ``<model>/<version>/model.onnx`` (or the file named
by ``default_model_filename``) on the CPU. The config.pbtxt parameters
``intra_op_thread_count`` and ``inter_op_thread_count`` set onnxruntime's
thread counts, as they do for the native backend. The checks and the batching
live in ``ecrs.stack.onnx_batching``; this file only converts between Triton
tensors and numpy arrays. It imports only inside a Triton Python backend stub.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime
import triton_python_backend_utils as pb_utils
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

from ecrs.errors import InvalidInputError
from ecrs.stack.onnx_batching import (
    DEFAULT_MODEL_FILENAME,
    build_runner,
    find_model_file,
    thread_counts,
)


class TritonPythonModel:
    """One instance of an ONNX model, run by onnxruntime on the CPU."""

    def initialize(self, args: dict[str, str]) -> None:
        config = json.loads(args["model_config"])
        self.model_name = args["model_name"]
        filename = config.get("default_model_filename") or DEFAULT_MODEL_FILENAME
        path = find_model_file(
            args["model_repository"], self.model_name, args["model_version"], filename
        )
        intra_threads, inter_threads = thread_counts(config)
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = intra_threads
        options.inter_op_num_threads = inter_threads
        self.session = onnxruntime.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.runner = build_runner(
            self.model_name, config, self.session, input_errors=(InvalidArgument,)
        )
        self.input_names = [spec.name for spec in self.runner.inputs]
        pb_utils.Logger.log_info(
            f"model {self.model_name!r} version {args['model_version']}: loaded "
            f"{path} with onnxruntime {onnxruntime.__version__} on CPU, "
            f"{intra_threads} intra-op threads, "
            f"max_batch_size {self.runner.max_batch_size}"
        )

    def execute(self, requests: list) -> list:
        batch = [self._read_inputs(request) for request in requests]
        return [self._to_response(result) for result in self.runner.run_requests(batch)]

    def finalize(self) -> None:
        self.session = None

    def _read_inputs(self, request) -> dict[str, np.ndarray | None]:
        arrays: dict[str, np.ndarray | None] = {}
        for name in self.input_names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            arrays[name] = None if tensor is None else tensor.as_numpy()
        return arrays

    def _to_response(self, result):
        if isinstance(result, InvalidInputError):
            error = pb_utils.TritonError(
                f"model {self.model_name!r}: {result}", pb_utils.TritonError.INVALID_ARG
            )
            return pb_utils.InferenceResponse(output_tensors=[], error=error)
        if isinstance(result, Exception):
            message = f"model {self.model_name!r}: onnxruntime failed: {result}"
            pb_utils.Logger.log_error(message)
            error = pb_utils.TritonError(message, pb_utils.TritonError.INTERNAL)
            return pb_utils.InferenceResponse(output_tensors=[], error=error)
        tensors = [pb_utils.Tensor(name, array) for name, array in result.items()]
        return pb_utils.InferenceResponse(output_tensors=tensors)
