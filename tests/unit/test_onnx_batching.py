"""Tests for the checks and batching of the Python ONNX Runtime backend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

from ecrs.errors import ConfigError, InvalidInputError
from ecrs.stack.onnx_batching import (
    BatchRunner,
    TensorSpec,
    build_runner,
    check_request_inputs,
    find_model_file,
    match_specs,
    spec_from_onnx,
    specs_from_config,
    thread_counts,
)

FP32 = np.dtype(np.float32)


def double_config(**changes) -> dict:
    """A Triton model configuration, as parsed JSON, for y = 2 * x over 3 floats."""
    config = {
        "name": "double",
        "max_batch_size": 8,
        "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": ["3"]}],
        "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": ["3"]}],
    }
    config.update(changes)
    return config


def save_double_model(path: Path, batch_dim: str | int = "batch") -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch_dim, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch_dim, 3])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    node = helper.make_node("Mul", ["x", "two"], ["y"])
    graph = helper.make_graph([node], "double", [x], [y], [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, path)
    return path


def open_session(path: Path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


class RecordingModel:
    """A fake model, y = 2 * x, that records the batch of every call."""

    def __init__(self, fail_when=None) -> None:
        self.calls: list[np.ndarray] = []
        self.fail_when = fail_when

    def __call__(self, feed):
        x = feed["x"]
        self.calls.append(x)
        if self.fail_when is not None and self.fail_when(x):
            raise RuntimeError("indices element out of data bounds")
        return [x * 2]


def double_runner(model: RecordingModel, max_batch_size: int = 8) -> BatchRunner:
    return BatchRunner(
        inputs=[TensorSpec("x", FP32, (3,))],
        outputs=[TensorSpec("y", FP32, (3,))],
        max_batch_size=max_batch_size,
        run=model,
    )


def rows(count: int, value: float) -> np.ndarray:
    return np.full((count, 3), value, dtype=np.float32)


def test_specs_from_config_reads_dims():
    specs = specs_from_config(double_config(), "input")
    assert specs == [TensorSpec("x", FP32, (3,))]


def test_specs_from_config_rejects_unknown_type():
    config = double_config(input=[{"name": "x", "data_type": "TYPE_BF16", "dims": [3]}])
    with pytest.raises(ConfigError, match="'x' has data_type 'TYPE_BF16'"):
        specs_from_config(config, "input")


def test_spec_from_onnx_drops_batch_dimension():
    spec = spec_from_onnx("x", "tensor(int64)", ["batch", 5, None], batched=True)
    assert spec == TensorSpec("x", np.dtype(np.int64), (5, -1))


def test_match_specs_fills_any_size_from_onnx():
    config = [TensorSpec("x", FP32, (-1,))]
    onnx_specs = [TensorSpec("x", FP32, (3,))]
    merged = match_specs("double", "input", config, onnx_specs, require_all=True)
    assert merged == [TensorSpec("x", FP32, (3,))]


def test_match_specs_rejects_wrong_name():
    config = [TensorSpec("features", FP32, (3,))]
    onnx_specs = [TensorSpec("x", FP32, (3,))]
    with pytest.raises(ConfigError) as raised:
        match_specs("double", "input", config, onnx_specs, require_all=True)
    message = str(raised.value)
    assert "model 'double'" in message
    assert "['features']" in message
    assert "['x']" in message


def test_match_specs_rejects_wrong_dtype():
    config = [TensorSpec("x", np.dtype(np.float64), (3,))]
    onnx_specs = [TensorSpec("x", FP32, (3,))]
    with pytest.raises(ConfigError, match="'x' has dtype float64 .* but float32"):
        match_specs("double", "input", config, onnx_specs, require_all=True)


def test_match_specs_rejects_wrong_dims():
    config = [TensorSpec("x", FP32, (4,))]
    onnx_specs = [TensorSpec("x", FP32, (3,))]
    with pytest.raises(ConfigError, match=r"dims \[4\] .* expects \[3\]"):
        match_specs("double", "input", config, onnx_specs, require_all=True)


def test_match_specs_allows_output_subset():
    onnx_specs = [TensorSpec("y", FP32, (3,)), TensorSpec("logits", FP32, (3,))]
    config = [TensorSpec("y", FP32, (3,))]
    merged = match_specs("double", "output", config, onnx_specs, require_all=False)
    assert [spec.name for spec in merged] == ["y"]


def test_check_request_inputs_returns_batch_size():
    specs = [TensorSpec("x", FP32, (3,))]
    assert check_request_inputs({"x": rows(4, 1.0)}, specs, max_batch_size=8) == 4


@pytest.mark.parametrize(
    ("array", "expected_message"),
    [
        (None, "input 'x' is missing"),
        (np.ones((1, 3), np.float64), "input 'x' has dtype float64, expected float32"),
        (
            np.ones((1, 5), np.float32),
            r"input 'x' has shape \[1, 5\], expected \[-1, 3\]",
        ),
        (np.ones(3, np.float32), r"input 'x' has shape \[3\]"),
        (np.ones((9, 3), np.float32), "a batch of 9 rows; send 1 to 8 rows"),
        (np.ones((0, 3), np.float32), "a batch of 0 rows"),
    ],
)
def test_check_request_inputs_rejects(array, expected_message):
    specs = [TensorSpec("x", FP32, (3,))]
    with pytest.raises(InvalidInputError, match=expected_message) as raised:
        check_request_inputs({"x": array}, specs, max_batch_size=8)
    assert raised.value.input_name == "x"


def test_check_request_inputs_rejects_uneven_batches():
    specs = [TensorSpec("a", FP32, (3,)), TensorSpec("b", FP32, (3,))]
    inputs = {"a": rows(2, 1.0), "b": rows(3, 1.0)}
    with pytest.raises(InvalidInputError, match=r"different batch sizes \[2, 3\]"):
        check_request_inputs(inputs, specs, max_batch_size=8)


def test_check_request_inputs_accepts_text_for_string():
    specs = [TensorSpec("query", np.dtype(np.object_), (1,))]
    inputs = {"query": np.array([[b"shoes"]], dtype=np.object_)}
    assert check_request_inputs(inputs, specs, max_batch_size=8) == 1


def test_runner_merges_requests_into_one_call():
    model = RecordingModel()
    results = double_runner(model).run_requests(
        [{"x": rows(1, 1.0)}, {"x": rows(2, 3.0)}]
    )
    assert len(model.calls) == 1
    assert model.calls[0].shape == (3, 3)
    np.testing.assert_array_equal(results[0]["y"], rows(1, 2.0))
    np.testing.assert_array_equal(results[1]["y"], rows(2, 6.0))


def test_runner_isolates_invalid_request():
    model = RecordingModel()
    requests = [
        {"x": rows(1, 1.0)},
        {"x": np.ones((1, 5), np.float32)},
        {"x": rows(1, 2.0)},
    ]
    results = double_runner(model).run_requests(requests)
    assert isinstance(results[1], InvalidInputError)
    assert results[1].input_name == "x"
    np.testing.assert_array_equal(results[0]["y"], rows(1, 2.0))
    np.testing.assert_array_equal(results[2]["y"], rows(1, 4.0))
    assert len(model.calls) == 1


def test_runner_retries_alone_after_failed_batch():
    model = RecordingModel(fail_when=lambda x: bool((x < 0).any()))
    requests = [{"x": rows(1, 1.0)}, {"x": rows(1, -1.0)}, {"x": rows(1, 2.0)}]
    results = double_runner(model).run_requests(requests)
    assert isinstance(results[1], RuntimeError)
    np.testing.assert_array_equal(results[0]["y"], rows(1, 2.0))
    np.testing.assert_array_equal(results[2]["y"], rows(1, 4.0))
    assert len(model.calls) == 4


def test_runner_without_batching_runs_each_request():
    model = RecordingModel()
    runner = BatchRunner(
        inputs=[TensorSpec("x", FP32, (2, 3))],
        outputs=[TensorSpec("y", FP32, (2, 3))],
        max_batch_size=0,
        run=model,
    )
    results = runner.run_requests([{"x": np.ones((2, 3), np.float32)}] * 2)
    assert len(model.calls) == 2
    np.testing.assert_array_equal(results[1]["y"], np.full((2, 3), 2.0, np.float32))


def test_runner_rejects_negative_max_batch_size():
    with pytest.raises(ConfigError, match="max_batch_size is -1"):
        double_runner(RecordingModel(), max_batch_size=-1)


def test_build_runner_runs_onnx_model(tmp_path):
    session = open_session(save_double_model(tmp_path / "model.onnx"))
    runner = build_runner("double", double_config(), session)
    results = runner.run_requests([{"x": rows(1, 1.5)}, {"x": rows(2, -1.0)}])
    np.testing.assert_array_equal(results[0]["y"], rows(1, 3.0))
    np.testing.assert_array_equal(results[1]["y"], rows(2, -2.0))


def save_lookup_model(path: Path) -> Path:
    """Save an embedding lookup over a table of 3 rows: ids 0 to 2 are valid."""
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 1])
    vectors = helper.make_tensor_value_info(
        "vectors", TensorProto.FLOAT, ["batch", 1, 2]
    )
    table = helper.make_tensor("table", TensorProto.FLOAT, [3, 2], [0.5] * 6)
    node = helper.make_node("Gather", ["table", "ids"], ["vectors"])
    graph = helper.make_graph([node], "lookup", [ids], [vectors], [table])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_build_runner_rejects_out_of_range_id(tmp_path):
    """An id outside the embedding table fails its own request as invalid
    input, not as an internal error, and the valid request in the same
    batch still gets its vectors."""
    config = {
        "name": "lookup",
        "max_batch_size": 8,
        "input": [{"name": "ids", "data_type": "TYPE_INT64", "dims": ["1"]}],
        "output": [{"name": "vectors", "data_type": "TYPE_FP32", "dims": ["1", "2"]}],
    }
    session = open_session(save_lookup_model(tmp_path / "model.onnx"))
    invalid_argument = onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument
    runner = build_runner("lookup", config, session, input_errors=(invalid_argument,))
    good = {"ids": np.array([[2]], dtype=np.int64)}
    bad = {"ids": np.array([[3]], dtype=np.int64)}
    results = runner.run_requests([good, bad])
    assert results[0]["vectors"].shape == (1, 1, 2)
    assert isinstance(results[1], InvalidInputError)
    assert "out of data bounds" in str(results[1])


def test_build_runner_rejects_fixed_batch_dimension(tmp_path):
    session = open_session(save_double_model(tmp_path / "model.onnx", batch_dim=1))
    with pytest.raises(ConfigError, match="'x' has a fixed batch dimension of 1"):
        build_runner("double", double_config(), session)


def test_build_runner_rejects_config_input_name(tmp_path):
    session = open_session(save_double_model(tmp_path / "model.onnx"))
    config = double_config(
        input=[{"name": "features", "data_type": "TYPE_FP32", "dims": ["3"]}]
    )
    with pytest.raises(ConfigError, match="model 'double': input names"):
        build_runner("double", config, session)


def test_find_model_file_in_model_folder(tmp_path):
    path = save_double_model(tmp_path / "double" / "1" / "model.onnx")
    assert find_model_file(tmp_path / "double", "double", "1", "model.onnx") == path


def test_find_model_file_in_repository_root(tmp_path):
    path = save_double_model(tmp_path / "double" / "2" / "model.onnx")
    assert find_model_file(tmp_path, "double", 2, "model.onnx") == path


def test_find_model_file_missing(tmp_path):
    with pytest.raises(ConfigError, match="model 'double' version 1: no ONNX file"):
        find_model_file(tmp_path, "double", "1", "model.onnx")


def test_thread_counts_default():
    assert thread_counts(double_config()) == (1, 0)


def test_thread_counts_from_parameters():
    parameters = {
        "intra_op_thread_count": {"string_value": "2"},
        "inter_op_thread_count": {"string_value": "1"},
    }
    assert thread_counts(double_config(parameters=parameters)) == (2, 1)


def test_thread_counts_rejects_text():
    parameters = {"intra_op_thread_count": {"string_value": "two"}}
    with pytest.raises(ConfigError, match="'intra_op_thread_count' is 'two'"):
        thread_counts(double_config(parameters=parameters))
