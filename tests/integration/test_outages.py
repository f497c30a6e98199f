"""A store that goes down gives UNAVAILABLE naming it, and serving recovers
by itself once the store is back, with no restart of Triton."""

from __future__ import annotations

import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ecrs.errors import UnavailableError
from ecrs.stack.launcher import stack_status, start_stack
from ecrs.stack.processes import stop_process

pytestmark = pytest.mark.integration


def stop_redis(stack) -> None:
    redis = next(
        status for status in stack_status(stack.state_dir) if status.name == "redis"
    )
    assert stop_process("redis", redis.pid, None, timeout_s=30)


def test_redis_outage_is_unavailable_then_recovers(
    stack, loaded, client, small_dataset
):
    user_id = small_dataset.users[small_dataset.schema.users.id].iloc[0]
    before = [item.item_id for item in client.recommend(user_id=user_id, top_n=5)]
    stop_redis(stack)
    try:
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
    deadline = time.monotonic() + 30
    while True:
        try:
            after = [
                item.item_id for item in client.recommend(user_id=user_id, top_n=5)
            ]
            break
        except UnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    # The append-only file kept every user and item across the restart.
    assert after == before
