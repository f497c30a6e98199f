"""The feature store against a real Redis that requires a password and has the
ACL user of docker-compose.yml: access works with the right credentials,
fails with a clear error otherwise, and no secret reaches a message or log."""

from __future__ import annotations

import logging

import pytest

from ecrs.config import StoreConfig
from ecrs.errors import UnavailableError
from ecrs.stores.feature_store import ITEM, USER, FeatureStore

pytestmark = pytest.mark.integration

RECORDS = [{"brand": "b1", "title": "Mug"}, {"brand": "b2", "title": "Cup"}]


def store_for(servers, **overrides) -> FeatureStore:
    settings = {"redis_url": servers.url, "redis_password": servers.password}
    settings.update(overrides)
    return FeatureStore(StoreConfig(**settings), "shop")


def test_password_grants_access(secured_redis):
    store = store_for(secured_redis)
    assert store.write(ITEM, ["i1", "i2"], RECORDS) == 2
    assert store.get_items(["i2", "i1", "missing"]) == [RECORDS[1], RECORDS[0], None]


def test_password_from_environment(secured_redis):
    config = StoreConfig.from_env(
        {
            "ECRS_REDIS_URL": secured_redis.url,
            "ECRS_REDIS_PASSWORD": secured_redis.password,
        }
    )
    store = FeatureStore(config, "shop")
    store.write(USER, ["u1"], [{"age": "25-34"}])
    assert store.get_user("u1") == {"age": "25-34"}


def test_acl_user_reads_writes_and_counts(secured_redis):
    store = store_for(secured_redis, redis_username=secured_redis.username)
    store.write(ITEM, ["a1", "a2", "a3"], [RECORDS[0]] * 3)
    assert store.get_items(["a3"]) == [RECORDS[0]]
    assert store.count(ITEM) >= 3


def test_acl_user_denied_outside_its_prefix(secured_redis):
    store = store_for(
        secured_redis, redis_username=secured_redis.username, key_prefix="other"
    )
    with pytest.raises(UnavailableError, match="denied a command") as info:
        store.get_user("u1")
    assert "other:shop:*" in str(info.value)


def test_wrong_password_is_rejected_without_echo(secured_redis):
    store = store_for(secured_redis, redis_password="not-the-password")
    with pytest.raises(UnavailableError, match="rejected the credentials") as info:
        store.get_user("u1")
    assert "not-the-password" not in str(info.value)
    assert "ECRS_REDIS_PASSWORD" in str(info.value)
    assert info.value.service == "redis"


def test_missing_password_is_rejected(secured_redis):
    store = FeatureStore(StoreConfig(redis_url=secured_redis.url), "shop")
    with pytest.raises(UnavailableError, match="rejected the credentials"):
        store.get_user("u1")


def test_password_in_url_is_masked_in_errors(secured_redis):
    port = secured_redis.ports[0]
    url = f"redis://{secured_redis.username}:wrong-pass@127.0.0.1:{port}/0"
    store = FeatureStore(StoreConfig(redis_url=url), "shop")
    with pytest.raises(UnavailableError) as info:
        store.get_user("u1")
    assert "wrong-pass" not in str(info.value)
    assert f"redis://{secured_redis.username}:***@127.0.0.1:{port}/0" in str(
        info.value
    )


def test_password_never_logged(secured_redis, caplog):
    caplog.set_level(logging.DEBUG)
    store = store_for(secured_redis, redis_username=secured_redis.username)
    store.write(ITEM, ["l1"], [RECORDS[0]])
    store.get_items(["l1"])
    with pytest.raises(UnavailableError):
        store_for(secured_redis, redis_password="bad-secret").get_user("u1")
    assert caplog.records, "expected the Redis client to log at DEBUG"
    assert secured_redis.password not in caplog.text
    assert "bad-secret" not in caplog.text
