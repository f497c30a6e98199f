"""Connect to a single Redis or to a Redis Cluster, as configured.

Both clients take the same credentials: an ACL user and password (Redis 6 and
newer) or the ``requirepass`` password alone. In cluster mode the URL names any
one node; the client discovers the others and routes each key to the node
that owns its hash slot.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis
from redis.cluster import RedisCluster

from ecrs.config import StoreConfig

# Seconds between the PINGs that check an idle connection before reuse.
HEALTH_CHECK_INTERVAL_S = 30

RedisClient = redis.Redis | RedisCluster


def connect(config: StoreConfig) -> RedisClient:
    """Return a client for ``config``; it connects on its first command."""
    options = {
        "socket_timeout": config.timeout_s,
        "socket_connect_timeout": config.timeout_s,
        "health_check_interval": HEALTH_CHECK_INTERVAL_S,
    }
    if config.redis_username:
        options["username"] = config.redis_username
    if config.redis_password:
        options["password"] = config.redis_password
    if config.redis_cluster:
        return RedisCluster.from_url(config.redis_url, **options)
    return redis.Redis.from_url(config.redis_url, **options)


def get_many(client: RedisClient, keys: Sequence[str]) -> list[bytes | None]:
    """Read ``keys`` in their order, ``None`` for a missing key.

    A cluster spreads the keys over hash slots, and one MGET may only touch
    one slot, so the cluster client sends one MGET per slot in a pipeline.
    """
    if isinstance(client, RedisCluster):
        return client.mget_nonatomic(keys)
    return client.mget(keys)
