"""Load a data set into the stores for one exported model version.

Raw user and item features and each user's interactions go to Redis. Item
vectors, computed with the exported item tower of the version, go to that
version's Milvus collection.

Items load in batches: encode, compute vectors, write features, write
vectors, then record the number of items done in Redis. A load that stops
part-way (a crash, Ctrl-C, a store outage) resumes from that number when run
again for the same version and the same items in the same order. The batch
that was in flight is written again with upserts, which replace rows of the
same id, so no item is stored twice. A completed load removes its progress
record, so the next load of that version starts afresh.
"""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from ecrs.config import StoreConfig
from ecrs.data.dataset import Dataset
from ecrs.errors import StackError
from ecrs.serving.onnx_models import OnnxModels
from ecrs.stores.feature_store import ITEM, USER, FeatureStore
from ecrs.stores.vector_store import Index, VectorStore, filter_columns
from ecrs.training.data import entity_records

logger = logging.getLogger(__name__)

# Items per batch: the unit of progress and of the work redone after a resume.
LOAD_BATCH = 10_000


@dataclass(frozen=True)
class LoadResult:
    """Summary of one load. ``resumed_from`` is the number of items a previous,
    interrupted load had written (0 for a fresh load). The rates are items per
    second of vector computation (encoding and the item tower) and of writing
    features and vectors, over the items this run processed."""

    version: int
    collection: str
    users: int
    items: int
    interactions: int
    index_type: str
    seconds: float
    resumed_from: int = 0
    vector_rate: float = 0.0
    write_rate: float = 0.0


class LoadProgress:
    """The number of items written by a load, kept in Redis so that it
    survives the loading process.

    The record also stores a fingerprint of the item ids and their order, and
    a resume only continues a load of the same items.
    """

    def __init__(self, features: FeatureStore, version: int) -> None:
        self.features = features
        self.key = f"{features.prefix}:load:v{version}"

    def resume_point(self, fingerprint: str) -> int | None:
        """Return the items done by an interrupted load of these items, if any."""
        record = self.features.read_hash(self.key)
        if not record or record.get(b"fingerprint", b"").decode() != fingerprint:
            return None
        return int(record[b"done"])

    def save(self, fingerprint: str, done: int) -> None:
        self.features.write_hash(self.key, {"fingerprint": fingerprint, "done": done})

    def clear(self) -> None:
        self.features.delete(self.key)


def fingerprint(version: int, item_ids: list[str]) -> str:
    """Hash the version and the item ids in order."""
    digest = hashlib.sha256(f"v{version}\n".encode())
    for item_id in item_ids:
        digest.update(item_id.encode())
        digest.update(b"\n")
    return digest.hexdigest()


def load_stores(
    dataset: Dataset,
    repository: Path,
    stores: StoreConfig,
    *,
    version: int | None = None,
    batch_size: int = LOAD_BATCH,
    show_progress: bool = False,
) -> LoadResult:
    """Write features to Redis and item vectors to Milvus; return when searchable.

    Resumes an interrupted load of the same version and items (see the module
    docstring). ``show_progress`` draws a progress bar on standard error.
    """
    started = time.perf_counter()
    models = OnnxModels(repository, version)
    models.encoder.check_matches(dataset.schema)
    schema = dataset.schema
    features = FeatureStore(stores, schema.name)
    user_ids, user_records = entity_records(dataset.users, schema.users.id)
    features.write(USER, user_ids, user_records)
    spec = schema.interactions
    interactions = dataset.interactions
    features.write_interactions(
        interactions[spec.user_id].astype(str).tolist(),
        interactions[spec.item_id].astype(str).tolist(),
        interactions[spec.timestamp].tolist(),
    )
    logger.info(
        "wrote %d users and %d interactions to Redis",
        len(user_ids),
        len(interactions),
    )

    loader = ItemLoader(models, features, VectorStore(stores), dataset)
    try:
        resumed_from = loader.prepare()
        loader.run(resumed_from, batch_size, show_progress)
        loader.finish()
    finally:
        loader.vectors.close()
    return LoadResult(
        models.version,
        loader.collection,
        len(user_ids),
        loader.total,
        len(interactions),
        loader.index.index_type,
        time.perf_counter() - started,
        resumed_from=resumed_from,
        vector_rate=loader.rate(loader.vector_seconds),
        write_rate=loader.rate(loader.write_seconds),
    )


class ItemLoader:
    """Write a data set's items in resumable batches to Redis and Milvus."""

    def __init__(
        self,
        models: OnnxModels,
        features: FeatureStore,
        vectors: VectorStore,
        dataset: Dataset,
    ) -> None:
        self.models = models
        self.features = features
        self.vectors = vectors
        self.items = dataset.items
        self.id_column = dataset.schema.items.id
        item_ids = [str(item_id) for item_id in self.items[self.id_column]]
        self.total = len(item_ids)
        self.fingerprint = fingerprint(models.version, item_ids)
        self.collection = vectors.collection(models.version)
        self.index = Index.for_size(self.total)
        self.progress = LoadProgress(features, models.version)
        self.processed = 0
        # Whether this load continues an interrupted one, even one that had
        # recorded 0 items: its next batch may then be in Milvus already.
        self.resuming = False
        self.vector_seconds = 0.0
        self.write_seconds = 0.0

    def prepare(self) -> int:
        """Return where to start: the resume point of an interrupted load, or 0
        after (re-)creating the version's empty collection."""
        done = self.progress.resume_point(self.fingerprint)
        if done is not None and self.vectors.has_collection(self.collection):
            logger.info(
                "resuming the load of %s after %d of %d items",
                self.collection,
                done,
                self.total,
            )
            self.resuming = True
            return done
        self.vectors.create(
            self.collection,
            self.models.dim,
            self.index,
            filter_columns(self.models.encoder.schema.items),
        )
        self.progress.save(self.fingerprint, 0)
        return 0

    def run(self, start: int, batch_size: int, show_progress: bool) -> None:
        bar = tqdm(
            total=self.total,
            initial=start,
            unit="item",
            desc=f"loading {self.collection}",
            disable=not show_progress,
            file=sys.stderr,
            smoothing=0.1,
        )
        with bar:
            for batch_start in range(start, self.total, batch_size):
                batch = self.items.iloc[batch_start : batch_start + batch_size]
                # The first batch of a resume may be partly in Milvus already.
                self.write_batch(batch, replace=self.resuming and batch_start == start)
                self.progress.save(self.fingerprint, batch_start + len(batch))
                bar.update(len(batch))

    def write_batch(self, batch: pd.DataFrame, *, replace: bool) -> None:
        compute_started = time.perf_counter()
        ids, records = entity_records(batch, self.id_column)
        ids = [str(item_id) for item_id in ids]
        vectors = self.models.item_tower(
            self.models.encoder.encode_items(ids, records)
        )
        write_started = time.perf_counter()
        # Vectors first: an item whose features are in Redis is one that
        # serving may return, so a load killed between the two writes leaves
        # no such item without its vector.
        self.vectors.write(
            self.collection, ids, vectors, replace=replace, records=records
        )
        self.features.write(ITEM, ids, records)
        self.vector_seconds += write_started - compute_started
        self.write_seconds += time.perf_counter() - write_started
        self.processed += len(ids)

    def finish(self) -> None:
        """Wait until every vector is searchable, check the count, and drop the
        progress record."""
        count = self.vectors.finish(self.collection, self.total)
        if count != self.total:
            # A fresh load is the fix, so the next one must not resume.
            self.progress.clear()
            raise StackError(
                f"Milvus collection {self.collection} has {count} rows for "
                f"{self.total} items; load again to rebuild it"
            )
        self.progress.clear()
        logger.info(
            "wrote %d items to Redis and Milvus collection %s (%s index)",
            self.total,
            self.collection,
            self.index.index_type,
        )

    def rate(self, seconds: float) -> float:
        return self.processed / seconds if seconds > 0 else 0.0
