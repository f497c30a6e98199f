"""Online changes to the stores: catalogue items, users and interactions.

An item change reaches every exported version that has a collection: its
raw features go to Redis once, and its vector, computed by each version's
own item tower, goes to that version's collection. Each call returns only
once a query with serving's consistency level finds the change. Deleting a
user removes every key of theirs: features and interactions.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ecrs.config import StoreConfig
from ecrs.data.dataset import read_table
from ecrs.data.schema import EntityTable, InteractionTable
from ecrs.errors import DataError, StackError
from ecrs.serving.layout import USER_TOWER, list_versions
from ecrs.serving.onnx_models import OnnxModels
from ecrs.stores.feature_store import INTERACTIONS, ITEM, USER, FeatureStore
from ecrs.stores.vector_store import VectorStore

logger = logging.getLogger(__name__)

VISIBLE_TIMEOUT_S = 30.0
# Unknown ids an error message lists before it counts the rest.
MAX_IDS_SHOWN = 5


@dataclass(frozen=True)
class ItemChange:
    """The items changed and the collections their change reached."""

    items: int
    collections: list[str]
    # Ids asked for that were not stored, so nothing of theirs changed.
    missing: list[str] = field(default_factory=list)


class StoreUpdater:
    """Apply item, user and interaction changes to the stores of a served repository."""

    def __init__(self, repository: Path, stores: StoreConfig) -> None:
        self.repository = Path(repository)
        self.versions = list_versions(self.repository, USER_TOWER)
        if not self.versions:
            raise StackError(
                f"no exported version in {self.repository}; run 'ecrs export' first"
            )
        newest = OnnxModels(self.repository, self.versions[-1])
        self.schema = newest.encoder.schema
        self.features = FeatureStore(stores, self.schema.name)
        self.vectors = VectorStore(stores)

    def upsert_items(
        self, item_ids: Sequence[str], records: Sequence[Mapping[str, Any]]
    ) -> ItemChange:
        """Add or replace items: features in Redis, a vector in every live collection."""
        collections = []
        for version in self.live_versions():
            models = OnnxModels(self.repository, version)
            vectors = models.item_tower(models.encoder.encode_items(list(item_ids), list(records)))
            name = self.vectors.collection(version)
            self.vectors.write(
                name, list(item_ids), vectors, replace=True, records=list(records)
            )
            collections.append(name)
        self.features.write(ITEM, list(item_ids), list(records))
        self.features.record_item_changes(list(item_ids))
        for name in collections:
            self._wait(name, item_ids, present=True)
        logger.info("upserted %d items into %s", len(item_ids), ", ".join(collections))
        return ItemChange(len(item_ids), collections)

    def remove_items(self, item_ids: Sequence[str]) -> ItemChange:
        """Remove items from Redis and from every live collection.

        Ids with no features in Redis come back as ``missing``. Their vectors
        are deleted all the same, in case an interrupted write left one.
        """
        stored = self.features.get_items_raw(list(item_ids))
        missing = [item_id for item_id, raw in zip(item_ids, stored) if raw is None]
        keys = [self.features.key(ITEM, item_id) for item_id in item_ids]
        self.features.delete(*keys)
        self.features.record_item_changes(list(item_ids))
        self.features.bump_items_generation()
        collections = []
        for version in self.live_versions():
            name = self.vectors.collection(version)
            self.vectors.delete(name, list(item_ids))
            collections.append(name)
        for name in collections:
            self._wait(name, item_ids, present=False)
        removed = len(item_ids) - len(missing)
        logger.info("removed %d items from %s", removed, ", ".join(collections))
        return ItemChange(removed, collections, missing)

    def upsert_users(
        self, user_ids: Sequence[str], records: Sequence[Mapping[str, Any]]
    ) -> int:
        return self.features.write(USER, list(user_ids), list(records))

    def delete_user(self, user_id: str) -> bool:
        """Delete a user's features and interactions; return whether any existed."""
        removed = self.features.delete(
            self.features.key(USER, user_id), self.features.key(INTERACTIONS, user_id)
        )
        return removed > 0

    def record_interactions(
        self, user_ids: Sequence[str], item_ids: Sequence[str], timestamps: Sequence[int]
    ) -> int:
        """Append interactions to the users' histories.

        Every user and item must be stored first: an interaction of an
        unknown user would be kept where no request reads it, and one of an
        unknown item would hide nothing. Raises ``DataError`` naming the
        unknown ids, before anything is written.
        """
        for kind, ids, command in (
            (USER, user_ids, "ecrs users upsert"),
            (ITEM, item_ids, "ecrs items upsert"),
        ):
            unknown = self.features.unknown_ids(kind, ids)
            if unknown:
                shown = ", ".join(unknown[:MAX_IDS_SHOWN])
                rest = len(unknown) - MAX_IDS_SHOWN
                more = f" and {rest} more" if rest > 0 else ""
                raise DataError(
                    f"{len(unknown)} {kind} ids of the events are not stored: "
                    f"{shown}{more}; add them with '{command}' first, or drop "
                    "those events; no event was recorded"
                )
        return self.features.write_interactions(user_ids, item_ids, timestamps)

    def live_versions(self) -> list[int]:
        """Return the exported versions whose collection exists in Milvus.

        The repository is listed again on each call, so that a version that a
        rollout exported meanwhile gets the change too.
        """
        return [
            version
            for version in list_versions(self.repository, USER_TOWER)
            if self.vectors.has_collection(self.vectors.collection(version))
        ]

    def close(self) -> None:
        self.vectors.close()

    def _wait(self, name: str, item_ids: Sequence[str], *, present: bool) -> None:
        deadline = time.monotonic() + VISIBLE_TIMEOUT_S
        while time.monotonic() < deadline:
            visible = self.vectors.visible_ids(name, list(item_ids))
            if (len(visible) == len(set(item_ids))) if present else not visible:
                return
            time.sleep(0.2)
        raise StackError(
            f"the change to {len(item_ids)} items is not visible in Milvus collection "
            f"{name} after {VISIBLE_TIMEOUT_S:.0f} s; check the Milvus log"
        )


def read_entity_file(path: Path, table: EntityTable, kind: str) -> tuple[list[str], list[dict]]:
    """Read a users or items CSV or Parquet file of the served schema's columns."""
    frame = read_table(Path(path))
    if table.id not in frame.columns:
        raise DataError(
            f"{path} has no {table.id!r} column (its columns are {list(frame.columns)}); "
            f"a {kind} file needs the id column and any of {table.stored_columns}"
        )
    unknown = sorted(set(frame.columns) - {table.id, *table.stored_columns})
    if unknown:
        raise DataError(
            f"{path} has columns {unknown} that the served {kind} schema does not have; "
            f"use {table.id!r} and any of {table.stored_columns}"
        )
    frame = frame.astype(object).where(frame.notna(), None)
    ids = [str(value).strip() for value in frame[table.id]]
    empty = [row + 2 for row, value in enumerate(ids) if not value]
    if empty:
        raise DataError(f"{path} has an empty {table.id!r} on lines {empty[:10]}; fill it in")
    return ids, frame.drop(columns=[table.id]).to_dict(orient="records")


def read_events_file(
    path: Path, spec: InteractionTable
) -> tuple[list[str], list[str], list[int]]:
    """Read interactions (user id, item id, integer timestamp) from a file."""
    frame = read_table(Path(path))
    needed = [spec.user_id, spec.item_id, spec.timestamp]
    missing = [column for column in needed if column not in frame.columns]
    if missing:
        raise DataError(
            f"{path} lacks the columns {missing}; an events file needs {needed}"
        )
    timestamps = pd.to_numeric(frame[spec.timestamp], errors="coerce")
    bad = frame.index[timestamps.isna() | (timestamps % 1 != 0)].tolist()
    if bad:
        raise DataError(
            f"{path} has timestamps that are not integer seconds on lines "
            f"{[row + 2 for row in bad[:10]]}; write seconds since the epoch"
        )
    return (
        frame[spec.user_id].astype(str).tolist(),
        frame[spec.item_id].astype(str).tolist(),
        timestamps.astype("int64").tolist(),
    )
