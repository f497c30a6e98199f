"""Check and batch the requests of a Triton ONNX model without Triton.

The Python ONNX Runtime backend in ``backends/onnxruntime/model.py`` is a thin
adapter around this module, so the checks and the batching run in unit tests
without ``triton_python_backend_utils``.

Tensor shapes follow Triton's model configuration: when ``max_batch_size`` is
above 0, ``dims`` leave out the batch dimension and every request carries one
as its first axis. A dimension of -1 accepts any size.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ecrs.errors import ConfigError, InvalidInputError

# Triton model configuration data types and their numpy equivalents.
TRITON_TO_NUMPY: dict[str, np.dtype] = {
    "TYPE_BOOL": np.dtype(np.bool_),
    "TYPE_UINT8": np.dtype(np.uint8),
    "TYPE_UINT16": np.dtype(np.uint16),
    "TYPE_UINT32": np.dtype(np.uint32),
    "TYPE_UINT64": np.dtype(np.uint64),
    "TYPE_INT8": np.dtype(np.int8),
    "TYPE_INT16": np.dtype(np.int16),
    "TYPE_INT32": np.dtype(np.int32),
    "TYPE_INT64": np.dtype(np.int64),
    "TYPE_FP16": np.dtype(np.float16),
    "TYPE_FP32": np.dtype(np.float32),
    "TYPE_FP64": np.dtype(np.float64),
    "TYPE_STRING": np.dtype(np.object_),
}

# ONNX Runtime type strings (``NodeArg.type``) and their numpy equivalents.
ONNX_TO_NUMPY: dict[str, np.dtype] = {
    "tensor(bool)": np.dtype(np.bool_),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(uint16)": np.dtype(np.uint16),
    "tensor(uint32)": np.dtype(np.uint32),
    "tensor(uint64)": np.dtype(np.uint64),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(string)": np.dtype(np.object_),
}

ANY_SIZE = -1
DEFAULT_MODEL_FILENAME = "model.onnx"
# config.pbtxt parameters, named as for Triton's native ONNX Runtime backend.
INTRA_OP_THREADS_PARAMETER = "intra_op_thread_count"
INTER_OP_THREADS_PARAMETER = "inter_op_thread_count"
DEFAULT_INTRA_OP_THREADS = 1


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor: its numpy dtype and its dims without the batch dimension."""

    name: str
    dtype: np.dtype
    dims: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.dtype.name}{list(self.dims)}"


# The function that runs the model: a feed of named arrays in, one array per
# output out, in the order of the runner's output specs.
RunModel = Callable[[Mapping[str, np.ndarray]], Sequence[np.ndarray]]


def specs_from_config(
    model_config: Mapping[str, Any], section: str
) -> list[TensorSpec]:
    """Read the ``input`` or ``output`` section of a Triton model configuration.

    ``model_config`` is the parsed JSON that Triton passes to ``initialize``.
    """
    model_name = model_config.get("name", "?")
    specs = []
    for tensor in model_config.get(section, []):
        name = tensor["name"]
        data_type = tensor["data_type"]
        if data_type not in TRITON_TO_NUMPY:
            raise ConfigError(
                f"model {model_name!r}: {section} {name!r} has data_type "
                f"{data_type!r}, which the Python ONNX backend does not support; "
                f"use one of {', '.join(TRITON_TO_NUMPY)}"
            )
        if tensor.get("reshape", {}).get("shape"):
            raise ConfigError(
                f"model {model_name!r}: {section} {name!r} sets reshape, which the "
                "Python ONNX backend does not support; give the ONNX shape in dims"
            )
        dims = tuple(int(dim) for dim in tensor.get("dims", []))
        specs.append(TensorSpec(name, TRITON_TO_NUMPY[data_type], dims))
    return specs


def spec_from_onnx(
    name: str, onnx_type: str, shape: Sequence[int | str | None], *, batched: bool
) -> TensorSpec:
    """Describe an ONNX Runtime ``NodeArg`` (its name, type and shape) as a spec.

    Symbolic and unknown dimensions become -1. When ``batched``, the first
    dimension is the batch dimension and is left out of ``dims``.
    """
    if onnx_type not in ONNX_TO_NUMPY:
        raise ConfigError(
            f"ONNX tensor {name!r} has type {onnx_type!r}, which the Python ONNX "
            f"backend does not support; supported: {', '.join(ONNX_TO_NUMPY)}"
        )
    dims = tuple(
        dim if isinstance(dim, int) and dim >= 0 else ANY_SIZE for dim in shape
    )
    if batched:
        dims = dims[1:]
    return TensorSpec(name, ONNX_TO_NUMPY[onnx_type], dims)


def check_batch_dimension(
    model_name: str, name: str, shape: Sequence[int | str | None]
) -> None:
    """Raise unless an ONNX tensor has a first dimension that takes any batch size."""
    if not shape:
        raise ConfigError(
            f"model {model_name!r}: ONNX tensor {name!r} is a scalar, but "
            "max_batch_size > 0 needs a batch dimension; set max_batch_size: 0"
        )
    first = shape[0]
    if isinstance(first, int) and first >= 0:
        raise ConfigError(
            f"model {model_name!r}: ONNX tensor {name!r} has a fixed batch "
            f"dimension of {first}, but max_batch_size > 0 needs a dynamic one; "
            "export the model with a dynamic first axis or set max_batch_size: 0"
        )


def match_specs(
    model_name: str,
    section: str,
    config_specs: Sequence[TensorSpec],
    onnx_specs: Sequence[TensorSpec],
    *,
    require_all: bool,
) -> list[TensorSpec]:
    """Check the configuration's tensors against the ONNX model's tensors.

    Every configured tensor must exist in the ONNX model with the same dtype and
    rank and compatible dims. With ``require_all`` (inputs), every ONNX tensor
    must also be configured. Returns the configured specs, with each -1
    replaced by the ONNX model's fixed size where it has one.
    """
    onnx_by_name = {spec.name: spec for spec in onnx_specs}
    config_names = [spec.name for spec in config_specs]
    missing = [name for name in config_names if name not in onnx_by_name]
    unconfigured = [name for name in onnx_by_name if name not in config_names]
    if missing or (require_all and unconfigured):
        raise ConfigError(
            f"model {model_name!r}: {section} names in config.pbtxt are "
            f"{sorted(config_names)}, but the ONNX model has {sorted(onnx_by_name)}; "
            "make config.pbtxt name the ONNX model's tensors"
        )
    return [
        _merge_spec(model_name, section, spec, onnx_by_name[spec.name])
        for spec in config_specs
    ]


def _merge_spec(
    model_name: str, section: str, config: TensorSpec, onnx: TensorSpec
) -> TensorSpec:
    where = f"model {model_name!r}: {section} {config.name!r}"
    if config.dtype != onnx.dtype:
        raise ConfigError(
            f"{where} has dtype {config.dtype.name} in config.pbtxt, but "
            f"{onnx.dtype.name} in the ONNX model; fix data_type in config.pbtxt"
        )
    if len(config.dims) != len(onnx.dims):
        raise ConfigError(
            f"{where} has dims {list(config.dims)} in config.pbtxt, but the ONNX "
            f"model expects {list(onnx.dims)} (without the batch dimension); "
            "fix dims in config.pbtxt"
        )
    merged = []
    for config_dim, onnx_dim in zip(config.dims, onnx.dims, strict=True):
        if ANY_SIZE not in (config_dim, onnx_dim) and config_dim != onnx_dim:
            raise ConfigError(
                f"{where} has dims {list(config.dims)} in config.pbtxt, but the "
                f"ONNX model expects {list(onnx.dims)}; fix dims in config.pbtxt"
            )
        merged.append(onnx_dim if config_dim == ANY_SIZE else config_dim)
    return TensorSpec(config.name, config.dtype, tuple(merged))


def check_request_inputs(
    inputs: Mapping[str, np.ndarray | None],
    specs: Sequence[TensorSpec],
    max_batch_size: int,
) -> int:
    """Check one request's inputs against the specs and return its batch size.

    Raises ``InvalidInputError`` naming the first tensor that is missing or has
    the wrong dtype, rank, size or batch size. Without batching
    (``max_batch_size`` 0) the batch size returned is 1.
    """
    batch_sizes = set()
    for spec in specs:
        array = inputs.get(spec.name)
        if array is None:
            raise InvalidInputError(
                f"input {spec.name!r} is missing; send it as {spec.describe()}",
                input_name=spec.name,
            )
        _check_dtype(spec, array)
        expected_dims = spec.dims if max_batch_size == 0 else (ANY_SIZE, *spec.dims)
        _check_shape(spec, array, expected_dims)
        if max_batch_size > 0:
            _check_batch_size(spec, array, max_batch_size)
            batch_sizes.add(array.shape[0])
    if len(batch_sizes) > 1:
        raise InvalidInputError(
            f"inputs have different batch sizes {sorted(batch_sizes)}; "
            "send the same number of rows in every input",
            input_name=specs[0].name,
        )
    return batch_sizes.pop() if batch_sizes else 1


def _check_dtype(spec: TensorSpec, array: np.ndarray) -> None:
    if array.dtype == spec.dtype:
        return
    # Triton hands BYTES tensors over as object arrays, and clients may send
    # numpy bytes or str arrays for them.
    is_text = array.dtype.kind in ("O", "S", "U")
    if spec.dtype == np.object_ and is_text:
        return
    raise InvalidInputError(
        f"input {spec.name!r} has dtype {array.dtype.name}, expected {spec.dtype.name}",
        input_name=spec.name,
    )


def _check_shape(
    spec: TensorSpec, array: np.ndarray, expected_dims: tuple[int, ...]
) -> None:
    matches = len(array.shape) == len(expected_dims) and all(
        expected in (ANY_SIZE, actual)
        for expected, actual in zip(expected_dims, array.shape, strict=True)
    )
    if not matches:
        raise InvalidInputError(
            f"input {spec.name!r} has shape {list(array.shape)}, expected "
            f"{list(expected_dims)} (-1 is any size)",
            input_name=spec.name,
        )


def _check_batch_size(spec: TensorSpec, array: np.ndarray, max_batch_size: int) -> None:
    batch_size = array.shape[0]
    if not 1 <= batch_size <= max_batch_size:
        raise InvalidInputError(
            f"input {spec.name!r} has a batch of {batch_size} rows; send 1 to "
            f"{max_batch_size} rows",
            input_name=spec.name,
        )


class BatchRunner:
    """Run a list of Triton requests through one model call.

    Each request is a mapping of input names to arrays. Requests that fail the
    checks get an ``InvalidInputError`` as their result and stay out of the
    batch. With ``max_batch_size`` above 0, the remaining requests are
    concatenated along the batch dimension into one ``run`` call and the
    outputs are split back by row counts. If that call raises, every request is
    run alone, so that one bad request (for example an id out of an embedding
    table's range) fails only itself.
    """

    def __init__(
        self,
        *,
        inputs: Sequence[TensorSpec],
        outputs: Sequence[TensorSpec],
        max_batch_size: int,
        run: RunModel,
    ) -> None:
        if max_batch_size < 0:
            raise ConfigError(
                f"max_batch_size is {max_batch_size}; use 0 (no batching) or more"
            )
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.max_batch_size = max_batch_size
        self._run = run

    def run_requests(
        self, requests: Sequence[Mapping[str, np.ndarray | None]]
    ) -> list[dict[str, np.ndarray] | Exception]:
        """Return one result per request, in the order of ``requests``."""
        results: list[dict[str, np.ndarray] | Exception | None] = [None] * len(requests)
        valid: list[int] = []
        row_counts: list[int] = []
        for index, request in enumerate(requests):
            try:
                row_counts.append(
                    check_request_inputs(request, self.inputs, self.max_batch_size)
                )
                valid.append(index)
            except InvalidInputError as error:
                results[index] = error
        if self.max_batch_size > 0 and len(valid) > 1:
            self._run_merged(requests, valid, row_counts, results)
        else:
            for index in valid:
                results[index] = self._run_one(requests[index])
        return results  # type: ignore[return-value]

    def _run_merged(
        self,
        requests: Sequence[Mapping[str, np.ndarray | None]],
        valid: list[int],
        row_counts: list[int],
        results: list[dict[str, np.ndarray] | Exception | None],
    ) -> None:
        feed = {
            spec.name: np.concatenate([requests[i][spec.name] for i in valid], axis=0)
            for spec in self.inputs
        }
        total_rows = sum(row_counts)
        try:
            merged = self._named_outputs(self._run(feed))
        except Exception:  # noqa: BLE001 - retried per request below
            merged = None
        if merged is None or not _all_have_rows(merged.values(), total_rows):
            # The merged call failed, or an output's first axis is not the batch.
            for index in valid:
                results[index] = self._run_one(requests[index])
            return
        start = 0
        for index, rows in zip(valid, row_counts, strict=True):
            results[index] = {
                name: array[start : start + rows] for name, array in merged.items()
            }
            start += rows

    def _run_one(
        self, request: Mapping[str, np.ndarray | None]
    ) -> dict[str, np.ndarray] | Exception:
        feed = {spec.name: request[spec.name] for spec in self.inputs}
        try:
            return self._named_outputs(self._run(feed))
        except Exception as error:  # noqa: BLE001 - becomes this request's error
            return error

    def _named_outputs(self, arrays: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
        return {
            spec.name: np.asarray(array)
            for spec, array in zip(self.outputs, arrays, strict=True)
        }


def _all_have_rows(arrays: Iterable[np.ndarray], rows: int) -> bool:
    return all(array.ndim > 0 and array.shape[0] == rows for array in arrays)


def find_model_file(
    model_repository: str | Path, model_name: str, version: str | int, filename: str
) -> Path:
    """Return the path of a model version's ONNX file.

    Triton's Python backend passes the model's own folder
    (``<repository>/<model_name>``) as ``model_repository``. The repository
    root is accepted too, in case a Triton release passes that instead.
    """
    root = Path(model_repository)
    candidates = [
        root / str(version) / filename,
        root / model_name / str(version) / filename,
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise ConfigError(
        f"model {model_name!r} version {version}: no ONNX file at "
        f"{' or '.join(str(path) for path in candidates)}; put the exported model "
        "there or set default_model_filename in config.pbtxt"
    )


def thread_counts(model_config: Mapping[str, Any]) -> tuple[int, int]:
    """Return the intra-op and inter-op thread counts from the config parameters.

    The parameter names are those of Triton's native ONNX Runtime backend, so one
    config.pbtxt sets both. Intra-op defaults to 1 thread, because several model
    instances share the CPU. Inter-op 0 lets onnxruntime choose.
    """
    parameters = model_config.get("parameters", {})
    intra = _int_parameter(model_config, parameters, INTRA_OP_THREADS_PARAMETER)
    inter = _int_parameter(model_config, parameters, INTER_OP_THREADS_PARAMETER)
    return (DEFAULT_INTRA_OP_THREADS if intra is None else intra, inter or 0)


def _int_parameter(
    model_config: Mapping[str, Any], parameters: Mapping[str, Any], key: str
) -> int | None:
    if key not in parameters:
        return None
    text = parameters[key].get("string_value", "")
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(
            f"model {model_config.get('name', '?')!r}: parameter {key!r} is "
            f"{text!r}; set a whole number of threads, 0 or more"
        )
    return value


def build_runner(
    model_name: str,
    model_config: Mapping[str, Any],
    session: Any,
    *,
    input_errors: tuple[type[Exception], ...] = (),
) -> BatchRunner:
    """Check a model configuration against an ONNX Runtime session and wrap it.

    ``session`` is an ``onnxruntime.InferenceSession``. Raises ``ConfigError``
    naming the model, the tensor, the expected and the actual value when the
    configuration and the ONNX model disagree. A run that raises one of
    ``input_errors`` (onnxruntime's ``InvalidArgument``, raised for an id
    outside an embedding table) fails its request with ``InvalidInputError``.
    """
    max_batch_size = int(model_config.get("max_batch_size", 0))
    batched = max_batch_size > 0
    onnx_inputs = session.get_inputs()
    onnx_outputs = session.get_outputs()
    if batched:
        for node in [*onnx_inputs, *onnx_outputs]:
            check_batch_dimension(model_name, node.name, node.shape)
    inputs = match_specs(
        model_name,
        "input",
        specs_from_config(model_config, "input"),
        [spec_from_onnx(n.name, n.type, n.shape, batched=batched) for n in onnx_inputs],
        require_all=True,
    )
    outputs = match_specs(
        model_name,
        "output",
        specs_from_config(model_config, "output"),
        [
            spec_from_onnx(n.name, n.type, n.shape, batched=batched)
            for n in onnx_outputs
        ],
        require_all=False,
    )
    output_names = [spec.name for spec in outputs]

    def run(feed: Mapping[str, np.ndarray]) -> Sequence[np.ndarray]:
        try:
            return session.run(output_names, dict(feed))
        except input_errors as error:
            raise InvalidInputError(
                f"the model rejected the input values: {error}; send feature ids "
                "that the model's encoder produced",
                input_name=", ".join(spec.name for spec in inputs),
            ) from error

    return BatchRunner(
        inputs=inputs, outputs=outputs, max_batch_size=max_batch_size, run=run
    )
