"""Serving with the features in a three-node Redis Cluster.

A second tritonserver reads user and item features from the cluster, as its
ACL user, and item vectors from the session stack's Milvus. The item keys
spread over all three nodes, so every request reads across hash slots.
"""

from __future__ import annotations

import pytest
import redis

from ecrs.errors import NotFoundError
from ecrs.stores.feature_store import ITEM, USER, FeatureStore

pytestmark = pytest.mark.integration


def item_ids(dataset) -> list[str]:
    return list(dataset.items[dataset.schema.items.id])


def keys_per_node(servers, pattern: str) -> list[int]:
    counts = []
    for port in servers.ports:
        client = redis.Redis(host="127.0.0.1", port=port, password=servers.password)
        try:
            counts.append(sum(1 for _ in client.scan_iter(pattern, count=1000)))
        finally:
            client.close()
    return counts


def test_item_keys_spread_over_every_node(
    cluster_triton, redis_cluster, cluster_stores, small_dataset
):
    pattern = f"{cluster_stores.key_prefix}:{small_dataset.schema.name}:item:*"
    counts = keys_per_node(redis_cluster, pattern)
    assert len(counts) == 3
    assert all(count > 0 for count in counts), counts
    assert sum(counts) == len(small_dataset.items)


def test_feature_store_counts_across_nodes(
    cluster_triton, cluster_stores, small_dataset
):
    store = FeatureStore(cluster_stores, small_dataset.schema.name)
    assert store.count(ITEM) == len(small_dataset.items)
    assert store.count(USER) == len(small_dataset.users)


def test_feature_store_reads_items_across_slots(
    cluster_triton, cluster_stores, small_dataset
):
    store = FeatureStore(cluster_stores, small_dataset.schema.name)
    ids = item_ids(small_dataset)
    records = store.get_items([*ids, "no-such-item"])
    assert records[-1] is None
    catalogue = small_dataset.items.set_index(small_dataset.schema.items.id)
    for item_id, record in zip(ids, records):
        expected = {k: v for k, v in catalogue.loc[item_id].items() if v is not None}
        assert record == expected


def test_known_user_gets_items_with_details(cluster_client, small_dataset):
    user_id = small_dataset.users[small_dataset.schema.users.id].iloc[0]
    items = cluster_client.recommend(user_id=user_id, top_n=10)
    assert len(items) == 10
    assert len({item.item_id for item in items}) == 10
    scores = [item.score for item in items]
    assert scores == sorted(scores, reverse=True)
    catalogue = small_dataset.items.set_index(small_dataset.schema.items.id)
    for item in items:
        raw = catalogue.loc[item.item_id]
        assert item.details == {k: v for k, v in raw.items() if v is not None}


def test_new_user_gets_recommendations(cluster_client, small_dataset):
    row = small_dataset.users.iloc[1]
    features = {name: row[name] for name in small_dataset.schema.users.feature_names}
    items = cluster_client.recommend(user_features=features, top_n=5)
    assert len(items) == 5
    assert items.unknown_features == []


def test_unknown_user_is_not_found(cluster_client):
    with pytest.raises(NotFoundError, match="no-such-user"):
        cluster_client.recommend(user_id="no-such-user")
