"""The vector store against a real Milvus with user authentication on: the
token grants access, a wrong or missing one fails with a clear error that
never shows the token."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from ecrs.config import StackConfig, StoreConfig
from ecrs.errors import UnavailableError
from ecrs.stack.launcher import start_stack, stop_stack
from ecrs.stack.ports import pick_free_ports
from ecrs.stores.vector_store import Index, VectorStore

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def secured_milvus(tmp_path_factory) -> Iterator[StoreConfig]:
    """Milvus standalone with authentication on; yields the stores with its
    built-in user's token."""
    config = StackConfig(
        state_dir=tmp_path_factory.mktemp("milvus-auth"),
        ports=pick_free_ports(),
        milvus_auth=True,
    )
    start_stack(config, services=("milvus",))
    try:
        yield config.stores
    finally:
        stop_stack(config.state_dir)


def test_token_grants_access(secured_milvus):
    assert secured_milvus.milvus_token
    store = VectorStore(secured_milvus)
    try:
        store.create("auth_items", 4, Index.for_size(3))
        vectors = np.eye(3, 4, dtype=np.float32)
        store.insert("auth_items", ["a", "b", "c"], vectors)
        ids, _ = store.search("auth_items", vectors[1], limit=1)
    finally:
        store.close()
    assert ids == ["b"]


@pytest.mark.parametrize("token", ["root:not-the-password", None])
def test_bad_token_is_rejected_without_echo(secured_milvus, token):
    store = VectorStore(replace(secured_milvus, milvus_token=token))
    try:
        with pytest.raises(UnavailableError, match="ECRS_MILVUS_TOKEN") as info:
            store.has_collection("auth_items")
    finally:
        store.close()
    assert "not-the-password" not in str(info.value)
    assert info.value.service == "milvus"
