"""Store settings: credentials from the environment, masked in every address."""

from __future__ import annotations

import pytest

from ecrs.config import StoreConfig, masked_url
from ecrs.errors import ConfigError


def test_from_env_reads_credentials():
    config = StoreConfig.from_env(
        {
            "ECRS_REDIS_URL": "redis://10.0.0.5:6379/0",
            "ECRS_REDIS_USERNAME": "ecrs",
            "ECRS_REDIS_PASSWORD": "s3cret",
            "ECRS_REDIS_CLUSTER": "1",
            "ECRS_MILVUS_URI": "https://milvus.internal:19530",
            "ECRS_MILVUS_TOKEN": "root:t0ken",
        }
    )
    assert config.redis_username == "ecrs"
    assert config.redis_password == "s3cret"
    assert config.redis_cluster is True
    assert config.milvus_token == "root:t0ken"


def test_from_env_round_trips_through_to_env():
    config = StoreConfig(
        redis_url="redis://127.0.0.1:1/0",
        redis_username="ecrs",
        redis_password="pw",
        milvus_token="root:pw",
        key_prefix="shop2",
    )
    assert StoreConfig.from_env(config.to_env()) == config


def test_defaults_have_no_credentials():
    config = StoreConfig.from_env({})
    assert config.redis_password is None
    assert config.milvus_token is None
    assert config.redis_cluster is False
    assert config.to_env()["ECRS_REDIS_PASSWORD"] == ""


def test_repr_hides_secrets():
    config = StoreConfig(
        redis_url="redis://:urlpass@127.0.0.1:1/0",
        milvus_uri="http://root:uripass@127.0.0.1:2",
        milvus_token="root:tokpass",
    )
    text = repr(config)
    assert "urlpass" not in text
    assert "uripass" not in text
    assert "tokpass" not in text
    assert "redis://:***@127.0.0.1:1/0" in text
    assert "pw2" not in repr(StoreConfig(redis_password="pw2"))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://:pw@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("redis://ecrs:pw@redis:6379/0", "redis://ecrs:***@redis:6379/0"),
        ("rediss://ecrs:pw@[::1]:6380", "rediss://ecrs:***@[::1]:6380"),
        ("http://root:Milvus@milvus:19530", "http://root:***@milvus:19530"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ],
)
def test_masked_url(url, expected):
    assert masked_url(url) == expected


def test_redis_address_is_masked():
    config = StoreConfig(redis_url="redis://ecrs:hunter2@127.0.0.1:6379/0")
    assert "hunter2" not in config.redis_address
    assert config.redis_address == "redis://ecrs:***@127.0.0.1:6379/0"


def test_invalid_redis_url_names_value_without_password():
    with pytest.raises(ConfigError, match="ECRS_REDIS_URL") as info:
        StoreConfig(redis_url="http://:pw@127.0.0.1:6379")
    assert "pw@" not in str(info.value)
    assert "http://:***@127.0.0.1:6379" in str(info.value)


def test_invalid_port_is_config_error():
    with pytest.raises(ConfigError, match="redis://:\\*\\*\\*@127.0.0.1:99999/0"):
        StoreConfig(redis_url="redis://:pw@127.0.0.1:99999/0")


def test_password_in_url_and_setting_is_rejected():
    with pytest.raises(ConfigError, match="one place only"):
        StoreConfig(redis_url="redis://:a@127.0.0.1:1/0", redis_password="b")


def test_cluster_rejects_other_database():
    with pytest.raises(ConfigError, match="database 0"):
        StoreConfig(redis_url="redis://127.0.0.1:7000/3", redis_cluster=True)


def test_invalid_cluster_flag_names_variable():
    with pytest.raises(ConfigError, match=r"ECRS_REDIS_CLUSTER='maybe'"):
        StoreConfig.from_env({"ECRS_REDIS_CLUSTER": "maybe"})
