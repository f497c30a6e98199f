"""Convert the Paddle models to ONNX and check them against Paddle's output.

paddle2onnx names a graph's outputs after internal variables
(``fetch_name_0``), so each exported graph has its outputs renamed to the
tensor names the Triton configs use.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import paddle2onnx.utils as paddle2onnx_utils
import polygraphy.config
from polygraphy.logger import G_LOGGER
from paddle.static import InputSpec

from ecrs.errors import ExportError
from ecrs.paddle_runtime import paddle

logger = logging.getLogger(__name__)

OPSET_VERSION = 13
# Largest absolute difference allowed between onnxruntime's and Paddle's output.
PARITY_TOLERANCE = 1e-5


@dataclass(frozen=True)
class TensorSpec:
    """A named model input or output with its dims after the batch dimension."""

    name: str
    dtype: str
    dims: tuple[int, ...]


@dataclass(frozen=True)
class OnnxModel:
    """One model to export: the layer and its named inputs and outputs."""

    name: str
    layer: paddle.nn.Layer
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def export_onnx(model: OnnxModel, destination: Path) -> Path:
    """Write ``model`` as ONNX to ``destination`` with a dynamic batch dimension."""
    model.layer.eval()
    specs = [
        InputSpec(shape=[None, *tensor.dims], dtype=tensor.dtype, name=tensor.name)
        for tensor in model.inputs
    ]
    # paddle2onnx sets POLYGRAPHY_AUTOINSTALL_DEPS=1, which lets polygraphy
    # pip-install missing packages (and upgrade numpy) in the middle of an
    # export. Its setting is read at import, so it is switched off here.
    polygraphy.config.AUTOINSTALL_DEPS = False
    G_LOGGER.module_severity = G_LOGGER.ERROR
    # paddle2onnx logs each file it writes; failures still raise.
    paddle2onnx_utils.logging.log_level = 0
    with tempfile.TemporaryDirectory(prefix="ecrs-onnx-") as scratch:
        prefix = str(Path(scratch) / model.name)
        try:
            paddle.onnx.export(
                model.layer, prefix, input_spec=specs, opset_version=OPSET_VERSION
            )
        except Exception as exc:  # paddle2onnx raises many unrelated types
            raise ExportError(
                f"paddle2onnx failed to export {model.name}: {exc}"
            ) from exc
        graph = onnx.load(prefix + ".onnx")
    _rename_outputs(graph, [tensor.name for tensor in model.outputs], model.name)
    _check_inputs(graph, [tensor.name for tensor in model.inputs], model.name)
    destination.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(graph, str(destination))
    return destination


def _rename_outputs(graph: onnx.ModelProto, names: Sequence[str], model: str) -> None:
    outputs = list(graph.graph.output)
    if len(outputs) != len(names):
        raise ExportError(
            f"{model}: the exported graph has {len(outputs)} outputs, expected {len(names)}"
        )
    for output, name in zip(outputs, names):
        old = output.name
        if old == name:
            continue
        for node in graph.graph.node:
            node.output[:] = [name if value == old else value for value in node.output]
            node.input[:] = [name if value == old else value for value in node.input]
        output.name = name


def _check_inputs(graph: onnx.ModelProto, names: Sequence[str], model: str) -> None:
    actual = [tensor.name for tensor in graph.graph.input]
    if actual != list(names):
        raise ExportError(
            f"{model}: the exported graph's inputs are {actual}, expected {list(names)}"
        )


def check_parity(
    model: OnnxModel,
    onnx_path: Path,
    feeds: dict[str, np.ndarray],
    tolerance: float = PARITY_TOLERANCE,
) -> float:
    """Compare onnxruntime's outputs with Paddle's on ``feeds``.

    Returns the largest absolute difference and raises ``ExportError`` when it
    exceeds ``tolerance``.
    """
    options = ort.SessionOptions()
    # Errors only: paddle2onnx leaves unused initializers that onnxruntime
    # reports one warning line each.
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(onnx_path), options, providers=["CPUExecutionProvider"]
    )
    onnx_outputs = session.run([tensor.name for tensor in model.outputs], feeds)
    with paddle.no_grad():
        paddle_outputs = model.layer(
            *[paddle.to_tensor(feeds[tensor.name]) for tensor in model.inputs]
        )
    if isinstance(paddle_outputs, paddle.Tensor):
        paddle_outputs = [paddle_outputs]
    worst = 0.0
    for tensor, expected, actual in zip(model.outputs, paddle_outputs, onnx_outputs):
        expected = expected.numpy()
        if expected.shape != actual.shape:
            raise ExportError(
                f"{model.name}: output {tensor.name} has shape {actual.shape} in "
                f"onnxruntime but {expected.shape} in Paddle"
            )
        worst = max(worst, float(np.max(np.abs(expected - actual), initial=0.0)))
    if worst > tolerance:
        raise ExportError(
            f"{model.name}: onnxruntime's output differs from Paddle's by {worst:.3g}, "
            f"more than the tolerance {tolerance:g}; the export is not trustworthy"
        )
    logger.info(
        "%s: ONNX parity within %.3g (tolerance %g)", model.name, worst, tolerance
    )
    return worst
