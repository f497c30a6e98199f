"""One real stack per test session: Redis, Milvus and tritonserver on free
loopback ports, serving the small test models with the stores loaded.

Nothing here skips: when a server cannot start, the session fails and the
tail of its log is in the error.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from ecrs.client.client import RecommendClient
from ecrs.export.repository import export_checkpoint

from ecrs.config import StackConfig
from ecrs.data.dataset import Dataset
from ecrs.stack.launcher import start_stack, stop_stack
from ecrs.stack.ports import pick_free_ports
from ecrs.stores.loader import LoadResult, load_stores
from ecrs.training.checkpoint import Checkpoint


@pytest.fixture(scope="session")
def stack(
    small_dataset: Dataset,
    small_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[StackConfig]:
    config = StackConfig(
        state_dir=tmp_path_factory.mktemp("stack"), ports=pick_free_ports()
    )
    export_checkpoint(Checkpoint.load(small_checkpoint), config.model_repository)
    start_stack(config)
    try:
        yield config
    finally:
        stop_stack(config.state_dir)


@pytest.fixture(scope="session")
def loaded(stack: StackConfig, small_dataset: Dataset) -> LoadResult:
    return load_stores(small_dataset, stack.model_repository, stack.stores)


@pytest.fixture()
def client(stack: StackConfig, loaded: LoadResult) -> Iterator[RecommendClient]:
    with RecommendClient(stack.triton_grpc_url) as recommend_client:
        yield recommend_client
