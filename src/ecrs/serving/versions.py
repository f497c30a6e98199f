"""The serving pointer: which exported version serves each request.

One Redis hash ``<prefix>:serving`` names the serving version, an optional
canary version with the share of traffic it gets, and the version served
before (for rollback). Each request reads the pointer once and runs every
stage (encoder, user tower, collection, ranker) with the version it picks,
so a switch is one write and no request mixes two versions.

A canary gets the requests whose routing key (the user id, or a new user's
features as canonical JSON) hashes below its share, so a user stays on one
version while the share is unchanged.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ecrs.config import StoreConfig
from ecrs.errors import ConfigError
from ecrs.stores.feature_store import FeatureStore

# An optional request input that pins a version, for warm-up and checks.
MODEL_VERSION_INPUT = "MODEL_VERSION"
# Outputs that name the version and collection that produced a response.
MODEL_VERSION_OUTPUT = "MODEL_VERSION"
COLLECTION_OUTPUT = "COLLECTION"


@dataclass(frozen=True)
class ServingPointer:
    """The serving version, an optional canary, and the version before."""

    version: int
    canary_version: int | None = None
    canary_share: float = 0.0
    previous: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.canary_share <= 1.0:
            raise ConfigError(
                f"canary share {self.canary_share} is invalid; use a fraction "
                "from 0 to 1, such as 0.1"
            )

    @property
    def live(self) -> list[int]:
        """Return the versions that requests may use now."""
        versions = {self.version}
        if self.canary_version is not None:
            versions.add(self.canary_version)
        return sorted(versions)

    def route(self, routing_key: str) -> int:
        """Return the version for a request with ``routing_key``."""
        if self.canary_version is None or self.canary_share <= 0.0:
            return self.version
        if routing_fraction(routing_key) < self.canary_share:
            return self.canary_version
        return self.version

    def to_fields(self) -> dict[str, str]:
        return {
            "version": str(self.version),
            "canary_version": ""
            if self.canary_version is None
            else str(self.canary_version),
            "canary_share": repr(self.canary_share),
            "previous": "" if self.previous is None else str(self.previous),
        }

    @classmethod
    def from_fields(cls, fields: Mapping[bytes | str, bytes | str]) -> ServingPointer:
        text = {_text(key): _text(value) for key, value in fields.items()}
        return cls(
            version=int(text["version"]),
            canary_version=_optional_int(text.get("canary_version", "")),
            canary_share=float(text.get("canary_share") or 0.0),
            previous=_optional_int(text.get("previous", "")),
        )


def routing_fraction(routing_key: str) -> float:
    """Map a routing key to a fraction in [0, 1), the same on every process."""
    digest = hashlib.blake2b(routing_key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def routing_key(user_id: str | None, user_features: Mapping[str, Any] | None) -> str:
    """Return the key a canary routes by: the user id, else the features."""
    if user_id is not None:
        return f"id:{user_id}"
    return "features:" + json.dumps(
        user_features or {}, sort_keys=True, ensure_ascii=False
    )


class PointerStore:
    """Read and write the serving pointer in Redis."""

    def __init__(
        self, stores: StoreConfig, features: FeatureStore | None = None
    ) -> None:
        self.key = f"{stores.key_prefix}:serving"
        # Any namespace works: the pointer key does not depend on it.
        self._store = features or FeatureStore(stores, "pointer")

    def read(self) -> ServingPointer | None:
        """Return the pointer, or None before any version was loaded."""
        fields = self._store.read_hash(self.key)
        return ServingPointer.from_fields(fields) if fields else None

    def write(self, pointer: ServingPointer) -> None:
        self._store.write_hash(self.key, pointer.to_fields())

    def ping(self) -> None:
        self._store.ping()

    def close(self) -> None:
        self._store.client.close()


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def _optional_int(text: str) -> int | None:
    return int(text) if text else None
