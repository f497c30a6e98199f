"""Fill a new version's collection from the catalogue as Redis stores it.

Items change while the vectors are computed, so the copy then replays the
item change stream until it is empty. An item changed since the copy began
is written again from its current record, or deleted when Redis no longer
has it.
"""

from __future__ import annotations

import json
import logging

from ecrs.serving.onnx_models import OnnxModels
from ecrs.stores.feature_store import ITEM, FeatureStore
from ecrs.stores.vector_store import Index, VectorStore, filter_columns

logger = logging.getLogger(__name__)

BATCH = 5000
# Replay rounds before giving up on a catalogue that never stops changing.
MAX_REPLAY_ROUNDS = 20


def build_collection(
    models: OnnxModels, features: FeatureStore, vectors: VectorStore
) -> tuple[str, int]:
    """Create version ``models.version``'s collection with a vector for every
    stored item; return its name and row count once searchable."""
    name = vectors.collection(models.version)
    start = features.last_item_change()
    item_ids = sorted(features.ids(ITEM))
    vectors.create(
        name,
        models.dim,
        Index.for_size(len(item_ids)),
        filter_columns(models.encoder.schema.items),
    )
    stored = set()
    for offset in range(0, len(item_ids), BATCH):
        batch = item_ids[offset : offset + BATCH]
        stored.update(write_items(models, features, vectors, name, batch))
    replay_changes(models, features, vectors, name, start, stored)
    count = vectors.finish(name, len(stored))
    logger.info("filled %s with %d item vectors", name, count)
    return name, count


def replay_changes(
    models: OnnxModels,
    features: FeatureStore,
    vectors: VectorStore,
    name: str,
    after: str,
    stored: set[str],
) -> str:
    """Apply the item changes recorded after stream entry ``after`` to ``name``
    until none are left, keeping ``stored`` (the ids in ``name``) current;
    return the last entry applied."""
    for _ in range(MAX_REPLAY_ROUNDS):
        changed, after = features.item_changes_since(after)
        if not changed:
            return after
        written = write_items(models, features, vectors, name, changed)
        stored.difference_update(changed)
        stored.update(written)
        logger.info("replayed %d item changes into %s", len(changed), name)
    return after


def write_items(
    models: OnnxModels,
    features: FeatureStore,
    vectors: VectorStore,
    name: str,
    item_ids: list[str],
) -> list[str]:
    """Write the vectors of the items Redis has, delete the others, and
    return the ids written."""
    raw_records = features.get_items_raw(item_ids)
    present = [(item_id, raw) for item_id, raw in zip(item_ids, raw_records) if raw]
    absent = [item_id for item_id, raw in zip(item_ids, raw_records) if not raw]
    ids = [item_id for item_id, _ in present]
    if present:
        records = [json.loads(raw) for _, raw in present]
        rows = models.encoder.encode_items(ids, records)
        vectors.write(name, ids, models.item_tower(rows), replace=True, records=records)
    if absent:
        vectors.delete(name, absent)
    return ids
