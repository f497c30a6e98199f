"""A collection with a vector index serves from that index once it is finished.

Catalogues above ``FLAT_INDEX_MAX_ITEMS`` get an IVF index, which Milvus
builds in the background after a flush. ``VectorStore.finish`` waits for it
and loads the collection again, so the first search already uses it.
"""

from __future__ import annotations

import numpy as np
import pytest

from ecrs.stores.vector_store import Index, VectorStore

ROWS = 3000
DIM = 8
LISTS = 16


@pytest.fixture
def vectors(stack):
    store = VectorStore(stack.stores)
    yield store
    store.close()


def test_finish_waits_for_ivf_index(vectors):
    name = "ecrs_test_ivf_settle"
    rng = np.random.default_rng(7)
    rows = rng.normal(size=(ROWS, DIM)).astype(np.float32)
    ids = [f"i{n}" for n in range(ROWS)]
    index = Index("IVF_FLAT", {"nlist": LISTS}, {"nprobe": LISTS})
    vectors.create(name, DIM, index)
    try:
        vectors.write(name, ids, rows)
        assert vectors.finish(name, ROWS) == ROWS
        described = vectors.client.describe_index(
            name, index_name=vectors.client.list_indexes(name)[0]
        )
        assert described["index_type"] == "IVF_FLAT"
        assert described["pending_index_rows"] == 0
        assert described["indexed_rows"] == ROWS
        # Probing every list is exact, so the best inner product comes first.
        query = rng.normal(size=DIM).astype(np.float32)
        found, scores = vectors.search(name, query, 5, {"nprobe": LISTS})
        expected = np.argsort(-(rows @ query))[:5]
        assert found == [ids[i] for i in expected]
        np.testing.assert_allclose(scores, (rows @ query)[expected], rtol=1e-4)
    finally:
        vectors.drop(name)


def test_flat_collection_needs_no_reload(vectors):
    name = "ecrs_test_flat_settle"
    vectors.create(name, DIM, Index.for_size(10))
    try:
        vectors.write(name, ["a", "b"], np.eye(2, DIM, dtype=np.float32))
        assert vectors.index_type(name) == "FLAT"
        assert vectors.finish(name, 2) == 2
        found, _ = vectors.search(name, np.eye(1, DIM, dtype=np.float32)[0], 1)
        assert found == ["a"]
    finally:
        vectors.drop(name)
