"""Load a data set into the stores for one exported model version.

Raw user and item features and each user's interactions go to Redis; item
vectors, computed with the exported item tower of the version, go to that
version's Milvus collection.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ecrs.config import StoreConfig
from ecrs.data.dataset import Dataset
from ecrs.serving.onnx_models import OnnxModels
from ecrs.stores.feature_store import ITEM, USER, FeatureStore
from ecrs.stores.vector_store import Index, VectorStore
from ecrs.training.data import entity_records

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadResult:
    version: int
    collection: str
    users: int
    items: int
    interactions: int
    index_type: str
    seconds: float


def load_stores(
    dataset: Dataset,
    repository: Path,
    stores: StoreConfig,
    *,
    version: int | None = None,
) -> LoadResult:
    """Write features to Redis and item vectors to Milvus; return when searchable."""
    started = time.perf_counter()
    models = OnnxModels(repository, version)
    models.encoder.check_matches(dataset.schema)
    schema = dataset.schema
    features = FeatureStore(stores, schema.name)
    user_ids, user_records = entity_records(dataset.users, schema.users.id)
    item_ids, item_records = entity_records(dataset.items, schema.items.id)
    features.write(USER, user_ids, user_records)
    features.write(ITEM, item_ids, item_records)
    spec = schema.interactions
    interactions = dataset.interactions
    features.write_interactions(
        interactions[spec.user_id].astype(str).tolist(),
        interactions[spec.item_id].astype(str).tolist(),
        interactions[spec.timestamp].tolist(),
    )
    logger.info(
        "wrote %d users, %d items and %d interactions to Redis",
        len(user_ids),
        len(item_ids),
        len(interactions),
    )

    vectors = models.item_tower(models.encoder.encode_items(item_ids, item_records))
    store = VectorStore(stores)
    collection = store.collection(models.version)
    index = Index.for_size(len(item_ids))
    store.create(collection, models.dim, index)
    store.insert(collection, item_ids, vectors)
    store.close()
    logger.info(
        "wrote %d item vectors to Milvus collection %s (%s index)",
        len(item_ids),
        collection,
        index.index_type,
    )
    return LoadResult(
        models.version,
        collection,
        len(user_ids),
        len(item_ids),
        len(interactions),
        index.index_type,
        time.perf_counter() - started,
    )
