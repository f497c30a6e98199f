"""A store that goes down gives UNAVAILABLE naming it, and serving recovers
by itself once the store is back, with no restart of Triton."""

from __future__ import annotations

import time

import numpy as np
import pytest
import redis
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ecrs.client.metrics import metric_values
from ecrs.errors import UnavailableError
from ecrs.serving.health import STORE_UP_METRIC
from ecrs.stack.launcher import stack_status, start_stack
from ecrs.stack.ports import LOOPBACK
from ecrs.stack.processes import stop_process

pytestmark = pytest.mark.integration


def stop_server(stack, name: str, timeout_s: float) -> None:
    server = next(
        status for status in stack_status(stack.state_dir) if status.name == name
    )
    assert stop_process(name, server.pid, None, timeout_s=timeout_s)


def store_up(stack, model: str, store: str) -> set[float]:
    """Read the ecrs_store_up gauge of every instance of one model for one store."""
    url = f"http://{LOOPBACK}:{stack.ports.triton_metrics}/metrics"
    values = metric_values(url, STORE_UP_METRIC, model=model, store=store)
    assert values, f"no {STORE_UP_METRIC} sample for {model}/{store} at {url}"
    return set(values)


def wait_for_store_up(stack, model: str, store: str, value: float) -> None:
    """Poll the gauge until every instance shows ``value``.

    Each instance probes on its own thread every second, so for up to a
    round after one instance sees a store come back, another may still
    reject requests with UNAVAILABLE.
    """
    deadline = time.monotonic() + 30
    while (seen := store_up(stack, model, store)) != {value}:
        assert time.monotonic() < deadline, (
            f"{STORE_UP_METRIC} of {model}/{store} did not become {value} on "
            f"every instance in 30 s: {sorted(seen)}"
        )
        time.sleep(0.5)


def recommend_once_back(client, user_id: str, timeout_s: float) -> list[str]:
    """Retry through UNAVAILABLE until a recommendation succeeds; return its ids."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return [item.item_id for item in client.recommend(user_id=user_id, top_n=5)]
        except UnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_redis_outage_is_unavailable_then_recovers(
    stack, loaded, client, small_dataset
):
    user_id = small_dataset.users[small_dataset.schema.users.id].iloc[0]
    before = [item.item_id for item in client.recommend(user_id=user_id, top_n=5)]
    assert store_up(stack, "recommend_ensemble", "redis") == {1.0}
    stop_server(stack, "redis", timeout_s=30)
    try:
        # Every model that reads Redis reports it down, lookups included.
        for model in ("recommend_ensemble", "user_lookup", "rank_items"):
            wait_for_store_up(stack, model, "redis", 0.0)
        assert store_up(stack, "recommend_ensemble", "milvus") == {1.0}
        with pytest.raises(UnavailableError, match="Redis at"):
            client.recommend(user_id=user_id, top_n=5)
        with grpcclient.InferenceServerClient(stack.triton_grpc_url) as raw:
            tensor = grpcclient.InferInput("USER_ID", [1], "BYTES")
            tensor.set_data_from_numpy(np.array([user_id.encode()], dtype=np.object_))
            with pytest.raises(InferenceServerException) as info:
                raw.infer("recommend_ensemble", [tensor])
        assert "UNAVAILABLE" in str(info.value.status())
    finally:
        start_stack(stack, services=("redis",))
    after = recommend_once_back(client, user_id, timeout_s=30)
    for model in ("recommend_ensemble", "user_lookup", "rank_items"):
        wait_for_store_up(stack, model, "redis", 1.0)
    # The append-only file kept every user and item across the restart.
    assert after == before


def test_failing_chain_model_is_unavailable(
    stack, loaded, client, small_dataset
):
    """With deepfm_rank unloaded, recommend_ensemble fails with UNAVAILABLE
    naming deepfm_rank, not a generic internal error, and recovers on reload."""
    user_id = small_dataset.users[small_dataset.schema.users.id].iloc[0]
    with grpcclient.InferenceServerClient(stack.triton_grpc_url) as raw:
        raw.unload_model("deepfm_rank")
        try:
            with pytest.raises(UnavailableError) as info:
                client.recommend(user_id=user_id, top_n=5)
            assert "deepfm_rank" in str(info.value)
            assert "not ready" in str(info.value)
        finally:
            raw.load_model("deepfm_rank")
    assert len(client.recommend(user_id=user_id, top_n=5)) == 5


def test_milvus_outage_is_unavailable_then_recovers(
    stack, loaded, client, small_dataset
):
    user_id = small_dataset.users[small_dataset.schema.users.id].iloc[1]
    before = [item.item_id for item in client.recommend(user_id=user_id, top_n=5)]
    stop_server(stack, "milvus", timeout_s=60)
    try:
        with pytest.raises(UnavailableError, match="Milvus at"):
            client.recommend(user_id=user_id, top_n=5)
        wait_for_store_up(stack, "recommend_ensemble", "milvus", 0.0)
        wait_for_store_up(stack, "recall_candidates", "milvus", 0.0)
        # A lookup needs no Milvus, so it keeps serving.
        assert client.user(user_id).features
    finally:
        start_stack(stack, services=("milvus",))
    assert recommend_once_back(client, user_id, timeout_s=120) == before
    for model in ("recommend_ensemble", "recall_candidates"):
        wait_for_store_up(stack, model, "milvus", 1.0)


def test_slow_redis_is_unavailable_then_recovers(stack, loaded, client, small_dataset):
    """Redis paused longer than the 2 s store timeout gives UNAVAILABLE."""
    user_id = small_dataset.users[small_dataset.schema.users.id].iloc[2]
    admin = redis.Redis.from_url(stack.stores.redis_url)
    admin.execute_command("CLIENT", "PAUSE", 6000, "ALL")
    with pytest.raises(UnavailableError, match="Redis at"):
        client.recommend(user_id=user_id, top_n=5)
    assert len(recommend_once_back(client, user_id, timeout_s=30)) == 5
    admin.close()
    for model in ("recommend_ensemble", "user_lookup", "rank_items"):
        wait_for_store_up(stack, model, "redis", 1.0)


def test_store_gauge_survives_a_model_reload(stack, loaded, client, small_dataset):
    """Reloading a model at the same version starts its new instance before
    the old one finalizes; the new instance's gauge must stay."""
    with grpcclient.InferenceServerClient(stack.triton_grpc_url) as raw:
        raw.load_model("user_lookup")
    assert store_up(stack, "user_lookup", "redis") == {1.0}
    user_id = small_dataset.users[small_dataset.schema.users.id].iloc[3]
    assert client.user(user_id).features
