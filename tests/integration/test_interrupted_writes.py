"""Writes killed halfway leave the stores and data sets consistent, and a
rerun completes them without duplicates.

Serving returns an item only when Redis has its features, so the order of
writes keeps every item that Redis has also in Milvus: a catalogue update
and a load write the vector first, a removal deletes the features first. A
kill between the two writes leaves at most vectors without features, which
no response contains, and the rerun replaces them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecrs.data.dataset import Dataset
from ecrs.data.generate import generate_shop_dataset
from ecrs.stores.feature_store import ITEM, FeatureStore
from ecrs.stores.updates import StoreUpdater
from ecrs.stores.vector_store import ID_FIELD, VectorStore

pytestmark = pytest.mark.integration

ECRS = str(Path(sys.executable).parent / "ecrs")
PREFIX = "cut-"
# Eight Milvus write batches of 5000 rows and 40 Redis pipelines of 1000, so
# that a kill can land between and within the two stores' writes.
NEW_ITEMS = 40_000
ID_BATCH = 5000


def items_file(dataset: Dataset, folder: Path) -> Path:
    """Write NEW_ITEMS new items, copies of catalogue items under new ids."""
    spec = dataset.schema.items
    copies = dataset.items.sample(NEW_ITEMS, replace=True, random_state=3)
    copies = copies.reset_index(drop=True)
    copies[spec.id] = [f"{PREFIX}{number:06d}" for number in range(NEW_ITEMS)]
    path = folder / "new-items.csv"
    copies.to_csv(path, index=False)
    return path


def redis_ids(stack, dataset: Dataset) -> set[str]:
    features = FeatureStore(stack.stores, dataset.schema.name)
    try:
        return {item for item in features.ids(ITEM) if item.startswith(PREFIX)}
    finally:
        features.client.close()


def milvus_rows(vectors: VectorStore) -> int:
    """Count the new items' rows in version 1's collection (Strong consistency)."""
    rows = vectors.client.query(
        vectors.collection(1),
        filter=f'{ID_FIELD} like "{PREFIX}%"',
        output_fields=["count(*)"],
        consistency_level="Strong",
    )
    return int(rows[0]["count(*)"])


def milvus_has(vectors: VectorStore, ids: list[str]) -> set[str]:
    """Return which of ``ids`` version 1's collection has (Strong consistency)."""
    found = set()
    for start in range(0, len(ids), ID_BATCH):
        rows = vectors.client.query(
            vectors.collection(1),
            ids=ids[start : start + ID_BATCH],
            output_fields=[ID_FIELD],
            consistency_level="Strong",
        )
        found |= {row[ID_FIELD] for row in rows}
    return found


def upsert_command(stack, path: Path) -> list[str]:
    return [
        ECRS,
        "--state-dir",
        str(stack.state_dir),
        "items",
        "upsert",
        "--file",
        str(path),
    ]


def kill_when_milvus_grows(vectors: VectorStore, process: subprocess.Popen) -> None:
    """Kill the upsert with SIGKILL once Milvus has some of the new vectors."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if milvus_rows(vectors) > 0:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            return
        time.sleep(0.02)
    pytest.fail(f"the upsert ended (code {process.poll()}) before it could be killed")


def test_killed_item_upsert_is_consistent_and_reruns(
    stack, loaded, small_dataset, tmp_path
):
    path = items_file(small_dataset, tmp_path)
    all_ids = [f"{PREFIX}{number:06d}" for number in range(NEW_ITEMS)]
    vectors = VectorStore(stack.stores)
    try:
        process = subprocess.Popen(
            upsert_command(stack, path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        kill_when_milvus_grows(vectors, process)
        in_redis = redis_ids(stack, small_dataset)
        missing_vectors = in_redis - milvus_has(vectors, sorted(in_redis))
        assert missing_vectors == set(), "items with features but no vector"
        assert len(in_redis) < NEW_ITEMS, "the kill came after every write"
        rerun = subprocess.run(
            upsert_command(stack, path),
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )
        assert rerun.returncode == 0, rerun.stderr
        assert redis_ids(stack, small_dataset) == set(all_ids)
        assert milvus_has(vectors, all_ids) == set(all_ids)
        assert milvus_rows(vectors) == NEW_ITEMS, "an item is stored twice in Milvus"
    finally:
        vectors.close()
        updater = StoreUpdater(stack.model_repository, stack.stores)
        try:
            updater.remove_items(all_ids)
        finally:
            updater.close()


def dataset_signature(folder: Path) -> tuple[int, int, int, str]:
    dataset = Dataset.load(folder)
    return (
        len(dataset.users),
        len(dataset.items),
        len(dataset.interactions),
        str(dataset.items[dataset.schema.items.id].iloc[-1]),
    )


@pytest.fixture(scope="module")
def import_sources(tmp_path_factory) -> tuple[Path, Path]:
    """A small data set and a larger one, as folders to import."""
    folder = tmp_path_factory.mktemp("import-sources")
    old = generate_shop_dataset(
        num_users=200, num_items=100, num_interactions=2000, seed=1
    )
    new = generate_shop_dataset(
        num_users=6000, num_items=3000, num_interactions=300_000, seed=2
    )
    return old.save(folder / "old"), new.save(folder / "new")


def import_data(source: Path, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [ECRS, "data", "import", "--source", str(source), "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def listing(folder: Path) -> set[tuple[str, int, int]]:
    """Return each entry of ``folder`` with its modification time and size."""
    entries = set()
    for path in folder.iterdir():
        try:
            status = path.stat()
        except FileNotFoundError:
            continue  # renamed meanwhile
        entries.add((path.name, status.st_mtime_ns, status.st_size))
    return entries


def kill_at_first_write(process: subprocess.Popen, folder: Path) -> None:
    """Kill ``process`` with SIGKILL as soon as anything in ``folder`` changes."""
    before = listing(folder)
    while process.poll() is None:
        if listing(folder) != before:
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=30)


def test_killed_import_leaves_a_whole_data_set(import_sources, tmp_path):
    """An import killed at its first write into the folder leaves the
    previous import whole and loadable, and the rerun writes the new one.
    Before the fix, a kill there left a truncated users.parquet that
    Dataset.load could not read."""
    old_source, new_source = import_sources
    out = tmp_path / "clean"
    assert import_data(old_source, out).wait(timeout=600) == 0
    old = dataset_signature(out)
    new = dataset_signature(new_source)
    for _ in range(3):
        process = import_data(new_source, out)
        kill_at_first_write(process, out)
        assert process.returncode == -signal.SIGKILL
        assert dataset_signature(out) in (old, new)
    assert import_data(new_source, out).wait(timeout=600) == 0
    assert dataset_signature(out) == new
    assert [path.name for path in out.iterdir() if path.name.startswith(".")] == []
