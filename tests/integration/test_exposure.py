"""The running stack listens on loopback only, apart from Milvus's ports.

Milvus 2.3.5 standalone has no listen-address setting: its proxy and its
components' gRPC ports accept connections on every interface (see the
README's Limitations). Its embedded etcd is bound to loopback.
"""

from __future__ import annotations

import pytest

from ecrs.faults.exposure import exposed, stack_listeners
from ecrs.stack.launcher import stack_status

pytestmark = pytest.mark.integration

# The one server that may listen off loopback, because it has no setting for it.
ALLOWED = {"milvus"}


def test_stack_listens_on_loopback_only(stack, loaded):
    listeners = stack_listeners(stack.state_dir)
    labels = {listener.label for listener in listeners}
    assert {"redis", "milvus", "triton"} <= labels
    assert exposed(listeners, ALLOWED) == []


def test_milvus_exposes_only_its_recorded_ports(stack, loaded):
    """Every Milvus port off loopback is one the run file records, and its
    etcd ports are on loopback."""
    milvus = next(
        status for status in stack_status(stack.state_dir) if status.name == "milvus"
    )
    recorded = set(milvus.ports.values())
    listeners = [
        item for item in stack_listeners(stack.state_dir) if item.label == "milvus"
    ]
    unknown = [item for item in exposed(listeners) if item.port not in recorded]
    assert unknown == []
    etcd = {milvus.ports["etcd_client"], milvus.ports["etcd_peer"]}
    assert all(item.loopback for item in listeners if item.port in etcd)
