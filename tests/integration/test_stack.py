"""Tests of the local stack against real Redis, Milvus and tritonserver processes.

The module starts one stack on free loopback ports, serving a tiny ONNX model
(y = 2 * x) through the Python ONNX Runtime backend. The last test stops and
restarts it; the fixture stops it at the end whatever happens.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnx
import pytest
import redis
import tritonclient.grpc as triton_grpc
from onnx import TensorProto, helper
from pymilvus import DataType, MilvusClient
from tritonclient.utils import InferenceServerException

from ecrs.config import StackConfig
from ecrs.errors import StackError
from ecrs.stack.launcher import stack_status, start_stack, stop_stack
from ecrs.stack.ports import pick_free_ports, port_is_free
from ecrs.stack.processes import is_running
from ecrs.stack.runfile import run_file

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[2]
MODEL = "double"
# Dims -1 accept any row length in Triton, so a wrong length reaches the
# backend, which reads from the ONNX model that rows have 3 values.
DOUBLE_CONFIG = """\
name: "double"
backend: "onnxruntime"
max_batch_size: 8
input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ 3 ] } ]
dynamic_batching { max_queue_delay_microseconds: 50000 }
instance_group [ { count: 1 kind: KIND_CPU } ]
parameters { key: "intra_op_thread_count" value: { string_value: "1" } }
"""


def write_double_model(repository: Path, config_text: str = DOUBLE_CONFIG) -> None:
    """Write an ONNX model y = 2 * x with a dynamic batch dimension, and its config."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    node = helper.make_node("Mul", ["x", "two"], ["y"])
    graph = helper.make_graph([node], MODEL, [x], [y], [two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    version_dir = repository / MODEL / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    onnx.save(model, version_dir / "model.onnx")
    (repository / MODEL / "config.pbtxt").write_text(config_text)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackConfig]:
    config = StackConfig(
        state_dir=tmp_path_factory.mktemp("stack"), ports=pick_free_ports()
    )
    write_double_model(config.model_repository)
    start_stack(config, python_paths=[REPO_ROOT])
    try:
        yield config
    finally:
        stop_stack(config.state_dir)


@pytest.fixture(scope="module")
def triton(stack: StackConfig) -> Iterator[triton_grpc.InferenceServerClient]:
    client = triton_grpc.InferenceServerClient(stack.triton_grpc_url)
    try:
        yield client
    finally:
        client.close()


def redis_client(config: StackConfig) -> redis.Redis:
    return redis.Redis(host=config.host, port=config.ports.redis, socket_timeout=5)


def milvus_client(config: StackConfig) -> MilvusClient:
    return MilvusClient(uri=config.stores.milvus_uri, timeout=30)


def infer(client: triton_grpc.InferenceServerClient, x: np.ndarray) -> np.ndarray:
    tensor = triton_grpc.InferInput("x", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x)
    return client.infer(MODEL, [tensor]).as_numpy("y")


def infer_or_error(
    client: triton_grpc.InferenceServerClient, x: np.ndarray
) -> np.ndarray | InferenceServerException:
    try:
        return infer(client, x)
    except InferenceServerException as error:
        return error


def model_counts(client: triton_grpc.InferenceServerClient) -> tuple[int, int]:
    """Return the model's inference count (rows) and execution count (batches)."""
    stats = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def test_all_servers_ready(stack, triton):
    statuses = {status.name: status for status in stack_status(stack.state_dir)}
    assert sorted(statuses) == ["milvus", "redis", "triton"]
    assert all(status.running for status in statuses.values())
    assert redis_client(stack).ping()
    milvus = milvus_client(stack)
    assert milvus.list_collections() == []
    milvus.close()
    assert triton.is_server_ready()
    assert triton.is_model_ready(MODEL)


def test_inference_doubles_input(triton):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(infer(triton, x), x * 2)


def settled_counts(client: triton_grpc.InferenceServerClient) -> tuple[int, int]:
    """Return the model's counts once they stop changing.

    Triton updates its statistics just after sending a response, so counts
    read at once can lag behind the responses received.
    """
    deadline = time.monotonic() + 10
    counts = model_counts(client)
    while time.monotonic() < deadline:
        time.sleep(0.3)
        latest = model_counts(client)
        if latest == counts:
            break
        counts = latest
    return counts


def test_concurrent_requests_are_batched(triton):
    inferences_before, executions_before = settled_counts(triton)
    inputs = [np.full((1, 3), value, dtype=np.float32) for value in range(16)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        outputs = list(pool.map(lambda x: infer(triton, x), inputs))
    for x, y in zip(inputs, outputs, strict=True):
        np.testing.assert_array_equal(y, x * 2)
    inferences_after, executions_after = settled_counts(triton)
    assert inferences_after - inferences_before == 16
    # Fewer model executions than requests: Triton merged some into one batch.
    assert executions_after - executions_before < 16


def test_invalid_request_fails_alone(triton):
    good = [np.full((1, 3), value, dtype=np.float32) for value in range(7)]
    bad = np.ones((1, 5), dtype=np.float32)
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda x: infer_or_error(triton, x), [*good, bad]))
    error = results[-1]
    assert isinstance(error, InferenceServerException)
    assert error.status() == "StatusCode.INVALID_ARGUMENT"
    assert "input 'x' has shape [1, 5]" in error.message()
    for x, y in zip(good, results[:-1], strict=True):
        np.testing.assert_array_equal(y, x * 2)


def test_start_again_leaves_servers_running(stack):
    pids_before = {status.name: status.pid for status in stack_status(stack.state_dir)}
    start_stack(stack, python_paths=[REPO_ROOT])
    pids_after = {status.name: status.pid for status in stack_status(stack.state_dir)}
    assert pids_after == pids_before


def test_start_on_used_ports_raises(stack, tmp_path):
    other = StackConfig(state_dir=tmp_path / "other", ports=stack.ports)
    with pytest.raises(StackError) as raised:
        start_stack(other)
    message = str(raised.value)
    assert f"port {stack.ports.redis} on 127.0.0.1 is already in use" in message
    assert "redis needs it" in message
    assert stack_status(other.state_dir) == []


def test_start_with_other_ports_while_running_raises(stack):
    moved = StackConfig(state_dir=stack.state_dir, ports=pick_free_ports())
    with pytest.raises(
        StackError, match="redis already runs from .* not on the requested"
    ):
        start_stack(moved)


def test_failed_model_load_raises_with_log(tmp_path):
    config = StackConfig(state_dir=tmp_path / "broken", ports=pick_free_ports())
    write_double_model(
        config.model_repository, DOUBLE_CONFIG.replace('name: "x"', 'name: "features"')
    )
    with pytest.raises(StackError) as raised:
        start_stack(config, services=["triton"], python_paths=[REPO_ROOT])
    message = str(raised.value)
    assert "triton exited with code 1 during start" in message
    assert "model 'double': input names in config.pbtxt are ['features']" in message
    assert stack_status(config.state_dir) == []


def test_stop_and_restart_keeps_data(stack):
    key = f"{stack.stores.key_prefix}:test:restart"
    redis_client(stack).set(key, "kept")
    milvus = milvus_client(stack)
    schema = milvus.create_schema(auto_id=False)
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=4)
    milvus.create_collection("kept", schema=schema)
    milvus.insert("kept", [{"id": i, "vector": [float(i)] * 4} for i in range(10)])
    milvus.flush("kept")
    milvus.close()
    records = {status.name: status for status in stack_status(stack.state_dir)}

    stopped = stop_stack(stack.state_dir)

    assert sorted(stopped) == ["milvus", "redis", "triton"]
    for status in records.values():
        assert not is_running(status.pid, None), f"{status.name} still runs"
    assert not run_file(stack.state_dir).exists()
    for port in (stack.ports.redis, stack.ports.milvus, stack.ports.triton_grpc):
        assert port_is_free(stack.host, port)

    start_stack(stack, python_paths=[REPO_ROOT])

    assert redis_client(stack).get(key) == b"kept"
    milvus = milvus_client(stack)
    assert milvus.list_collections() == ["kept"]
    stats = milvus.get_collection_stats("kept")
    milvus.close()
    assert int(stats["row_count"]) == 10
