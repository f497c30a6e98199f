"""Hostile requests to every served model: no crash, every rejection INVALID_ARG.

Hypothesis draws each request's tensors (see ``ecrs.faults.fuzz``). The
models run on the session's stack; afterwards every model must still be
READY with the same stub processes, so no case crashed a stub.
"""

from __future__ import annotations

import time

import pytest
import tritonclient.grpc as grpcclient

from ecrs.faults.fuzz import fuzz_model
from ecrs.faults.memory import stack_processes
from ecrs.faults.run import FUZZED_MODELS

pytestmark = pytest.mark.integration

# Cases per model in CI; `ecrs faults` sends thousands.
CASES = 150


def stub_pids(stack) -> set[int]:
    return {
        pid
        for pid, label in stack_processes(stack.state_dir).items()
        if label.startswith("stub:")
    }


def settled_stub_pids(stack) -> set[int]:
    """Return the stub pids once they stayed the same for 2 s, so that the
    old instances of a model reloaded by an earlier test have exited."""
    deadline = time.monotonic() + 60
    pids = stub_pids(stack)
    while time.monotonic() < deadline:
        time.sleep(2)
        current = stub_pids(stack)
        if current == pids:
            return pids
        pids = current
    return pids


@pytest.mark.parametrize("model", FUZZED_MODELS)
def test_hostile_requests_are_rejected_cleanly(stack, loaded, model):
    before = settled_stub_pids(stack)
    result = fuzz_model(stack.triton_grpc_url, model, CASES, random_seed=len(model))
    assert result.cases == CASES
    assert result.unexpected == [], (
        f"{result.unexpected_count} unexpected: {result.statuses}"
    )
    assert stub_pids(stack) == before, "a stub process died or restarted"
    with grpcclient.InferenceServerClient(stack.triton_grpc_url) as client:
        assert client.is_model_ready(model)
