"""Raw user and item features in Redis.

Each user and item is one Redis string ``<prefix>:<namespace>:user:<id>`` or
``<prefix>:<namespace>:item:<id>`` holding a JSON object of its raw feature and attribute
values (missing values are left out). One ``MGET`` then reads all candidates
of a request, and the stored JSON is already the item details a response
returns. The namespace is the data set's name from its schema, so two data
sets loaded into one Redis keep apart.

Each user's interactions are a sorted set ``<prefix>:<namespace>:interactions:<id>``
of item ids scored by timestamp. It gives both the user's recent items (the
highest scores; equal times go by item id, as in the offline split) and the
items to leave out of their recommendations.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import redis

from ecrs.config import StoreConfig
from ecrs.errors import UnavailableError
from ecrs.stores.redis_client import RedisClient, connect, get_many

logger = logging.getLogger(__name__)

USER = "user"
ITEM = "item"
INTERACTIONS = "interactions"
ITEM_CHANGES = "item_changes"
MAX_CHANGE_ENTRIES = 100_000
# The counter of item changes (see ``FeatureStore.items_generation``).
ITEMS_GENERATION = "items:generation"
WRITE_BATCH = 1000
# Reading all of a user's interactions (to leave them out) stops here.
MAX_INTERACTIONS_READ = 10_000


class FeatureStore:
    """Read and write raw user and item features in Redis."""

    def __init__(
        self, config: StoreConfig, namespace: str, client: RedisClient | None = None
    ) -> None:
        self.prefix = f"{config.key_prefix}:{namespace}"
        # The address in messages: the URL without its password.
        self.address = config.redis_address
        self.client = client or connect(config)

    def key(self, kind: str, entity_id: str) -> str:
        return f"{self.prefix}:{kind}:{entity_id}"

    def write(
        self,
        kind: str,
        ids: Sequence[str],
        records: Sequence[Mapping[str, Any]],
        *,
        batch_size: int = WRITE_BATCH,
    ) -> int:
        """Write raw feature records in pipelined batches; return the count."""
        with self._errors("write features"):
            for start in range(0, len(ids), batch_size):
                pipeline = self.client.pipeline(transaction=False)
                for entity_id, record in zip(
                    ids[start : start + batch_size], records[start : start + batch_size]
                ):
                    pipeline.set(self.key(kind, entity_id), encode_record(record))
                if kind == ITEM:
                    pipeline.incr(self.generation_key)
                pipeline.execute()
        return len(ids)

    @property
    def generation_key(self) -> str:
        return f"{self.prefix}:{ITEMS_GENERATION}"

    def items_generation(self) -> int:
        """Return the item generation, a counter that every item write and
        removal increments, so that item caches know when to empty."""
        with self._errors("read the item generation"):
            raw = self.client.get(self.generation_key)
        return int(raw or 0)

    def bump_items_generation(self) -> None:
        with self._errors("increment the item generation"):
            self.client.incr(self.generation_key)

    def write_interactions(
        self,
        user_ids: Sequence[str],
        item_ids: Sequence[str],
        timestamps: Sequence[int],
        *,
        batch_size: int = WRITE_BATCH,
    ) -> int:
        """Add interactions to the users' sorted sets; return the count.

        An item a user interacted with before keeps its latest timestamp.
        """
        with self._errors("write interactions"):
            for start in range(0, len(user_ids), batch_size):
                window = slice(start, start + batch_size)
                pipeline = self.client.pipeline(transaction=False)
                for user_id, item_id, timestamp in zip(
                    user_ids[window], item_ids[window], timestamps[window]
                ):
                    pipeline.zadd(
                        self.key(INTERACTIONS, user_id), {item_id: int(timestamp)}, gt=True
                    )
                pipeline.execute()
        return len(user_ids)

    def get_user_with_items(
        self, user_id: str, recent: int, *, all_items: bool = False
    ) -> tuple[dict[str, str] | None, list[str]]:
        """Return a user's raw features and interacted item ids, most recent first.

        The list contains the ``recent`` latest items, or with ``all_items`` up to
        ``MAX_INTERACTIONS_READ`` of them. Features are ``None`` for an unknown id.
        One round trip reads both.
        """
        stop = MAX_INTERACTIONS_READ if all_items else recent
        with self._errors(f"read user {user_id!r}"):
            pipeline = self.client.pipeline(transaction=False)
            pipeline.get(self.key(USER, user_id))
            if stop > 0:
                pipeline.zrevrange(self.key(INTERACTIONS, user_id), 0, stop - 1)
            replies = pipeline.execute()
        raw = replies[0]
        items = [item.decode("utf-8") for item in replies[1]] if stop > 0 else []
        return (None if raw is None else json.loads(raw)), items

    def get_user(self, user_id: str) -> dict[str, str] | None:
        """Return a user's raw features, or ``None`` when the id is unknown."""
        with self._errors(f"read user {user_id!r}"):
            raw = self.client.get(self.key(USER, user_id))
        return None if raw is None else json.loads(raw)

    def get_items_raw(self, item_ids: Sequence[str]) -> list[bytes | None]:
        """Return each item's stored JSON, ``None`` where the id is unknown."""
        if not item_ids:
            return []
        with self._errors(f"read {len(item_ids)} items"):
            return get_many(
                self.client, [self.key(ITEM, item_id) for item_id in item_ids]
            )

    def unknown_ids(self, kind: str, ids: Sequence[str]) -> list[str]:
        """Return the ids among ``ids`` with no stored ``kind`` record, in order."""
        unique = list(dict.fromkeys(ids))
        unknown = []
        with self._errors(f"look up {len(unique)} {kind}s"):
            for start in range(0, len(unique), WRITE_BATCH):
                batch = unique[start : start + WRITE_BATCH]
                keys = [self.key(kind, entity_id) for entity_id in batch]
                stored = get_many(self.client, keys)
                unknown += [i for i, raw in zip(batch, stored) if raw is None]
        return unknown

    def get_items(self, item_ids: Sequence[str]) -> list[dict[str, str] | None]:
        return [
            None if raw is None else json.loads(raw)
            for raw in self.get_items_raw(item_ids)
        ]

    def record_item_changes(self, item_ids: Sequence[str]) -> None:
        """Append changed item ids to the change stream that a rollout replays.

        The stream keeps about its newest ``MAX_CHANGE_ENTRIES`` entries.
        """
        with self._errors(f"record {len(item_ids)} item changes"):
            self.client.xadd(
                self.key(ITEM_CHANGES, "stream"),
                {"ids": json.dumps(list(item_ids))},
                maxlen=MAX_CHANGE_ENTRIES,
                approximate=True,
            )

    def last_item_change(self) -> str:
        """Return the id of the newest change stream entry ("0-0" when empty)."""
        with self._errors("read the item change stream"):
            entries = self.client.xrevrange(self.key(ITEM_CHANGES, "stream"), count=1)
        return _text(entries[0][0]) if entries else "0-0"

    def item_changes_since(self, after: str) -> tuple[list[str], str]:
        """Return the item ids changed after stream entry ``after``, and the
        newest entry id read."""
        with self._errors("read the item change stream"):
            entries = self.client.xrange(
                self.key(ITEM_CHANGES, "stream"), min=f"({after}", max="+"
            )
        ids: dict[str, None] = {}
        for entry_id, fields in entries:
            after = _text(entry_id)
            for item_id in json.loads(fields[b"ids"]):
                ids[item_id] = None
        return list(ids), after

    def ids(self, kind: str) -> Iterator[str]:
        """Yield every stored user or item id (every primary node's, in a cluster)."""
        start = len(self.key(kind, ""))
        with self._errors(f"list the {kind}s"):
            for key in self.client.scan_iter(self.key(kind, "*"), count=1000):
                yield _text(key)[start:]

    def count(self, kind: str) -> int:
        """Count stored users or items by scanning their keys (every primary
        node's keys in a cluster)."""
        with self._errors(f"count {kind}s"):
            return sum(
                1 for _ in self.client.scan_iter(self.key(kind, "*"), count=1000)
            )

    def count_interactions(self) -> int:
        """Count the stored interactions, one per user and item: the members
        of every user's interaction set."""
        with self._errors("count interactions"):
            keys = list(self.client.scan_iter(self.key(INTERACTIONS, "*"), count=1000))
            total = 0
            for start in range(0, len(keys), WRITE_BATCH):
                pipeline = self.client.pipeline(transaction=False)
                for key in keys[start : start + WRITE_BATCH]:
                    pipeline.zcard(key)
                total += sum(pipeline.execute())
        return total

    def read_hash(self, key: str) -> dict[bytes, bytes]:
        """Return the fields of the Redis hash ``key`` (empty when missing)."""
        with self._errors(f"read {key}"):
            return self.client.hgetall(key)

    def write_hash(self, key: str, fields: Mapping[str, str | int]) -> None:
        with self._errors(f"write {key}"):
            self.client.hset(key, mapping=dict(fields))

    def delete(self, *keys: str) -> int:
        """Delete keys; return how many existed."""
        with self._errors(f"delete {len(keys)} keys"):
            return int(self.client.delete(*keys))

    def ping(self) -> None:
        with self._errors("ping"):
            self.client.ping()

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except redis.AuthenticationError as exc:
            raise UnavailableError(
                f"Redis at {self.address} rejected the credentials ({action}): "
                f"{exc}; check ECRS_REDIS_USERNAME and ECRS_REDIS_PASSWORD",
                service="redis",
            ) from exc
        except redis.exceptions.NoPermissionError as exc:
            raise UnavailableError(
                f"Redis at {self.address} denied a command ({action}): {exc}; "
                f"grant the ACL user the commands GET, MGET, SET and SCAN on keys "
                f"{self.prefix}:*",
                service="redis",
            ) from exc
        except (
            redis.ConnectionError,
            redis.TimeoutError,
            redis.exceptions.ClusterError,
            redis.exceptions.RedisClusterException,
        ) as exc:
            raise UnavailableError(
                f"Redis at {self.address} is unavailable ({action}): {exc}; "
                "check that redis-server is running ('ecrs stack status')",
                service="redis",
            ) from exc


def encode_record(record: Mapping[str, Any]) -> str:
    """Serialize raw values as a JSON object, leaving out missing ones."""
    return json.dumps(
        {key: str(value) for key, value in record.items() if _present(value)},
        ensure_ascii=False,
        separators=(",", ":"),
    )


def _present(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, float) and math.isnan(value):  # pandas' missing value
        return False
    return str(value).strip() != ""


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value
