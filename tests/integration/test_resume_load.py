"""A 20,000-item load killed part-way and run again: it resumes from the
recorded progress and ends with every item exactly once in Redis and Milvus.

The load runs as the ``ecrs load`` command against the session stack's Redis
and Milvus, under its own key prefix so the stack's data stays untouched.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecrs.config import StoreConfig
from ecrs.data.dataset import Dataset
from ecrs.data.generate import generate_shop_dataset
from ecrs.stores.feature_store import ITEM, FeatureStore
from ecrs.stores.loader import fingerprint, load_stores
from ecrs.stores.vector_store import VectorStore

pytestmark = pytest.mark.integration

ECRS_SCRIPT = str(Path(sys.executable).parent / "ecrs")
ITEMS = 20_000
BATCH = 1_000
KILL_AFTER = 5_000
PREFIX = "ecrs_resume"


@pytest.fixture(scope="module")
def large_dataset(tmp_path_factory) -> Path:
    """Shop data of the small models' schema with 20,000 items."""
    dataset = generate_shop_dataset(
        num_users=300, num_items=ITEMS, num_interactions=2000, seed=7
    )
    return dataset.save(tmp_path_factory.mktemp("data") / "shop")


@pytest.fixture(scope="module")
def stores(stack) -> StoreConfig:
    return StoreConfig(
        redis_url=stack.stores.redis_url,
        milvus_uri=stack.stores.milvus_uri,
        key_prefix=PREFIX,
    )


def load_command(dataset: Path, repository: Path) -> list[str]:
    return [
        ECRS_SCRIPT, "load", "--data", str(dataset), "--repository",
        str(repository), "--batch-size", str(BATCH),
    ]  # fmt: skip


def items_done(features: FeatureStore) -> int:
    record = features.read_hash(f"{PREFIX}:shop:load:v1")
    return int(record.get(b"done", b"0"))


def start_and_kill(command, env, features: FeatureStore, timeout_s=300.0) -> int:
    """Run the load until it records KILL_AFTER items, SIGKILL it, and return
    the items it had recorded as done."""
    process = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + timeout_s
    try:
        while items_done(features) < KILL_AFTER:
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "the load made no progress"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait(timeout=30)
        process.stdout.close()
    assert process.returncode == -signal.SIGKILL
    return items_done(features)


def test_killed_load_resumes_without_duplicates(
    stack, stores, large_dataset, tmp_path
):
    env = {**os.environ, **stores.to_env()}
    features = FeatureStore(stores, "shop")
    command = load_command(large_dataset, stack.model_repository)

    done = start_and_kill(command, env, features)
    assert KILL_AFTER <= done < ITEMS
    assert done % BATCH == 0

    finished = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=600
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert f"resumed after {done} items" in finished.stdout
    assert f"{ITEMS}/{ITEMS}" in finished.stderr  # the progress bar's last state
    assert "items/s" in finished.stdout

    assert features.count(ITEM) == ITEMS
    vectors = VectorStore(stores)
    try:
        assert vectors.count(vectors.collection(1)) == ITEMS
    finally:
        vectors.close()
    assert features.read_hash(f"{PREFIX}:shop:load:v1") == {}


def test_completed_load_starts_afresh(stack, stores, large_dataset):
    result = load_stores(
        Dataset.load(large_dataset), stack.model_repository, stores, batch_size=5000
    )
    assert result.resumed_from == 0
    assert result.items == ITEMS
    assert result.vector_rate > 0
    assert result.write_rate > 0
    vectors = VectorStore(stores)
    try:
        assert vectors.count(result.collection) == ITEMS
    finally:
        vectors.close()


def test_resume_rewrites_batch_already_in_milvus(stack, stores, large_dataset):
    """A load killed after writing a batch's vectors but before recording
    it: the resumed load writes that batch again without duplicating it."""
    dataset = Dataset.load(large_dataset)
    load_stores(dataset, stack.model_repository, stores, batch_size=5000)
    features = FeatureStore(stores, "shop")
    first = fingerprint(
        1, [str(item_id) for item_id in dataset.items["item_id"]]
    )
    # Recorded progress 0, while the whole catalogue is in Milvus already.
    features.write_hash(f"{PREFIX}:shop:load:v1", {"fingerprint": first, "done": 0})

    result = load_stores(dataset, stack.model_repository, stores, batch_size=ITEMS)

    assert result.resumed_from == 0
    vectors = VectorStore(stores)
    try:
        assert vectors.count(result.collection) == ITEMS
    finally:
        vectors.close()
