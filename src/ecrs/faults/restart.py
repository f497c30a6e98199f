"""Stop and start the whole stack, and check that nothing loaded was lost.

A snapshot records the contents of the stores and of Triton. It counts the
user, item and interaction keys in Redis, the interactions in those keys,
and the rows of every collection in Milvus. It keeps the serving pointer,
the loaded model versions, and the recommendations of a sample of known and
new users. The restart passes when the snapshots taken before the stop and
after the start are equal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import tritonclient.grpc as grpcclient

from ecrs.client.client import RecommendClient, channel_args
from ecrs.config import StackConfig
from ecrs.serving.layout import USER_TOWER, list_versions
from ecrs.serving.versions import PointerStore
from ecrs.stores.feature_store import INTERACTIONS, ITEM, USER, FeatureStore
from ecrs.stores.vector_store import VectorStore

# Digits of the scores compared across a restart.
SCORE_DIGITS = 4
# The snapshot's count of (user, item) interactions, beside the per-kind key counts.
INTERACTION_ENTRIES = "interaction entries"


@dataclass(frozen=True)
class Snapshot:
    """The stack's contents: counts per kind, rows per collection, the
    serving version, loaded versions per model, and recommendations."""

    counts: dict[str, int]
    collections: dict[str, int]
    serving_version: int | None
    loaded: dict[str, list[str]]
    recommendations: dict[str, list[list[Any]]]

    def differences(self, other: Snapshot) -> list[str]:
        """Describe each field that differs from ``other``."""
        mine, theirs = asdict(self), asdict(other)
        return [
            f"{name}: {json.dumps(mine[name])[:300]} became {json.dumps(theirs[name])[:300]}"
            for name in mine
            if mine[name] != theirs[name]
        ]


def take_snapshot(
    config: StackConfig,
    namespace: str,
    user_ids: Sequence[str],
    profiles: Sequence[Mapping[str, Any]],
) -> Snapshot:
    """Read the stack's stores and ask for the sample users' recommendations."""
    features = FeatureStore(config.stores, namespace)
    counts = {kind: features.count(kind) for kind in (USER, ITEM, INTERACTIONS)}
    # The keys above are one per user; this counts each user's items in them.
    counts[INTERACTION_ENTRIES] = features.count_interactions()
    features.client.close()
    vectors = VectorStore(config.stores)
    try:
        collections = {}
        for version in list_versions(config.model_repository, USER_TOWER):
            name = vectors.collection(version)
            if vectors.has_collection(name):
                collections[name] = vectors.count(name)
    finally:
        vectors.close()
    pointers = PointerStore(config.stores)
    try:
        pointer = pointers.read()
    finally:
        pointers.close()
    return Snapshot(
        counts,
        collections,
        None if pointer is None else pointer.version,
        loaded_versions(config.triton_grpc_url),
        sample_recommendations(config.triton_grpc_url, user_ids, profiles),
    )


def loaded_versions(url: str) -> dict[str, list[str]]:
    """Return the READY versions of each model in Triton's repository index."""
    with grpcclient.InferenceServerClient(url, channel_args=channel_args()) as client:
        index = client.get_model_repository_index(as_json=True).get("models", [])
    loaded: dict[str, list[str]] = {}
    for entry in index:
        if entry.get("state") == "READY":
            loaded.setdefault(entry["name"], []).append(entry.get("version", ""))
    return {name: sorted(versions) for name, versions in sorted(loaded.items())}


def sample_recommendations(
    url: str, user_ids: Sequence[str], profiles: Sequence[Mapping[str, Any]]
) -> dict[str, list[list[Any]]]:
    """Return each sample user's top 10 as [item id, rounded score] pairs."""
    results = {}
    with RecommendClient(url) as client:
        for user_id in user_ids:
            items = client.recommend(user_id=user_id, top_n=10)
            results[f"user {user_id}"] = _pairs(items)
        for number, profile in enumerate(profiles):
            items = client.recommend(user_features=profile, top_n=10)
            results[f"new user {number}"] = _pairs(items)
    return results


def _pairs(items) -> list[list[Any]]:
    return [[item.item_id, round(item.score, SCORE_DIGITS)] for item in items]
