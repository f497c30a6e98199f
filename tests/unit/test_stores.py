import json

import pytest
import redis
from pymilvus import MilvusException
from pymilvus.exceptions import ParamError

from ecrs.config import StoreConfig
from ecrs.errors import UnavailableError, internal_error_message
from ecrs.stores.feature_store import FeatureStore, encode_record
from ecrs.stores.loader import fingerprint
from ecrs.stores.vector_store import (
    Index,
    VectorStore,
    collection_name,
    default_search_params,
)


class DownRedis:
    """A Redis client whose every call fails as if the server were gone."""

    def get(self, key):
        raise redis.ConnectionError("Connection refused")

    def mget(self, keys):
        raise redis.TimeoutError("Timeout reading from socket")


def test_encode_record_drops_missing_values():
    encoded = json.loads(
        encode_record({"a": "x", "b": None, "c": float("nan"), "d": " ", "e": 3})
    )
    assert encoded == {"a": "x", "e": "3"}


def test_keys_are_namespaced_by_data_set():
    store = FeatureStore(
        StoreConfig(key_prefix="shop1"), "movielens", client=DownRedis()
    )
    assert store.key("user", "42") == "shop1:movielens:user:42"


@pytest.mark.parametrize(
    "call", [lambda s: s.get_user("u1"), lambda s: s.get_items_raw(["i1"])]
)
def test_redis_failure_is_unavailable_naming_address(call):
    store = FeatureStore(
        StoreConfig(redis_url="redis://127.0.0.1:9/0"), "shop", client=DownRedis()
    )
    with pytest.raises(
        UnavailableError, match="Redis at redis://127.0.0.1:9/0"
    ) as info:
        call(store)
    assert info.value.service == "redis"


def test_get_items_raw_of_nothing_skips_redis():
    store = FeatureStore(StoreConfig(), "shop", client=DownRedis())
    assert store.get_items_raw([]) == []


def milvus_error(store, message, code=100):
    with store._errors("search ecrs_items_v1"):
        raise MilvusException(code=code, message=message)


def test_missing_collection_is_unavailable_with_fix():
    store = VectorStore(StoreConfig())
    with pytest.raises(UnavailableError, match="ecrs load") as info:
        milvus_error(
            store, "collection not found[database=default][collection=ecrs_items_v1]"
        )
    assert info.value.service == "milvus"


def test_milvus_connection_error_is_unavailable():
    store = VectorStore(StoreConfig(milvus_uri="http://127.0.0.1:9"))
    with pytest.raises(UnavailableError, match="Milvus at http://127.0.0.1:9"):
        milvus_error(store, "Fail connecting to server on 127.0.0.1:9")


def test_milvus_error_without_message_is_unavailable():
    # pymilvus raises one for a call on a channel a lost connection closed.
    store = VectorStore(StoreConfig())
    with pytest.raises(UnavailableError, match="Milvus at"):
        milvus_error(store, "")


def test_collection_not_loaded_is_unavailable():
    """Milvus 2.3.5 answers searches with "collection not loaded" for a few
    seconds after a restart; that is a passing outage, not an internal error."""
    store = VectorStore(StoreConfig())
    with pytest.raises(UnavailableError, match="Milvus at .* has not loaded") as info:
        milvus_error(
            store, "failed to search: collection not loaded[collection=4709215651]"
        )
    assert info.value.service == "milvus"


def test_milvus_parameter_errors_propagate():
    """A parameter error means ECRS built a wrong request: a defect, not an
    outage."""
    store = VectorStore(StoreConfig())
    with pytest.raises(MilvusException):
        milvus_error(store, "invalid parameter[expr=bad]", code=1100)
    with pytest.raises(MilvusException):
        milvus_error(store, "missing parameter[field=vector]", code=1101)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (5, "service internal error: tsafe not ready"),
        (65535, "unexpected error: search failed"),
        (0, "legacy status of a shard leader"),
        (3, "memory quota exceeded[limit=4GB]"),
    ],
)
def test_milvus_failing_a_valid_request_is_unavailable(code, message):
    """Any other code from Milvus is Milvus failing, so the caller gets
    UNAVAILABLE naming Milvus, its code and message, without the promise
    that a few seconds fix it."""
    store = VectorStore(StoreConfig())
    with pytest.raises(UnavailableError, match=f"error code {code}\\)") as info:
        milvus_error(store, message, code=code)
    assert message in str(info.value)
    assert "few seconds" not in str(info.value)
    assert info.value.service == "milvus"


def test_internal_error_keeps_milvus_code():
    """repr() of a pymilvus exception is "MilvusException()", so the
    request's internal error message must contain its code and message."""
    exc = MilvusException(code=1, message="Unexpected error, message=<boom>")
    message = internal_error_message(exc, "r-17")
    assert "MilvusException" in message
    assert "code=1" in message
    assert "Unexpected error, message=<boom>" in message
    assert "r-17" in message


def test_milvus_retries_run_out_is_unavailable():
    """pymilvus's retry decorator gives up on gRPC errors with gRPC's code
    method as the code."""
    store = VectorStore(StoreConfig())
    for message in (
        "[search] Retry timeout: 4s, message=busy",
        "[search] Retry run out of 3 retry times, message=busy",
    ):
        with pytest.raises(UnavailableError, match="Milvus at") as info:
            milvus_error(store, message, code=print)
        assert info.value.service == "milvus"


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (503, "channel not available[channel=by-dev-rootcoord-dml_0]"),
        (65537, "service not ready[Proxy]"),
        (65639, "collection not fully loaded"),
        (901, "node not found[node=3]"),
        (602, "segment lacks[segment=447]"),
    ],
)
def test_milvus_busy_recovering_is_unavailable(code, message):
    """A Milvus restarting under load fails searches with codes of a state that
    passes, which must reach the caller as UNAVAILABLE with the code."""
    store = VectorStore(StoreConfig())
    with pytest.raises(UnavailableError, match=f"error code {code}") as info:
        milvus_error(store, message, code=code)
    assert "retry" in str(info.value)
    assert info.value.service == "milvus"


def test_pymilvus_argument_error_is_not_transient():
    """pymilvus's own exceptions carry code 1 without the retriable flag, so
    they stay errors."""
    store = VectorStore(StoreConfig())
    with pytest.raises(ParamError), store._errors("search ecrs_items_v1"):
        raise ParamError(message="wrong type of limit")
    with pytest.raises(MilvusException):
        milvus_error(store, "Unexpected error, message=<list index out of range>", 1)


def test_search_on_a_closed_channel_is_unavailable():
    """Measured with six threads searching while Milvus was killed on a busy
    machine: the direct stub call raised gRPC's ValueError for a channel
    another thread had closed."""
    store = VectorStore(StoreConfig())
    with (
        pytest.raises(UnavailableError, match="closed channel") as info,
        store._errors("search ecrs_items_v1"),
    ):
        raise ValueError("Cannot invoke RPC on closed channel!")
    assert info.value.service == "milvus"
    with pytest.raises(ValueError, match="other"), store._errors("search x"):
        raise ValueError("some other value error")


def test_index_choice_by_catalogue_size():
    assert Index.for_size(3000).index_type == "FLAT"
    large = Index.for_size(1_000_000)
    assert large.index_type == "IVF_FLAT"
    assert large.build_params == {"nlist": 4000}
    assert large.search_params == {"nprobe": 128}
    # A small IVF index is probed whole.
    assert default_search_params({"index_type": "IVF_FLAT", "nlist": 64}, 200) == {
        "nprobe": 64
    }


def test_collection_name_carries_version():
    assert collection_name("ecrs", 7) == "ecrs_items_v7"


def test_load_fingerprint_covers_version_and_order():
    base = fingerprint(1, ["a", "b", "c"])
    assert fingerprint(1, ["a", "b", "c"]) == base
    assert fingerprint(2, ["a", "b", "c"]) != base
    assert fingerprint(1, ["b", "a", "c"]) != base
    assert fingerprint(1, ["ab", "c"]) != base


def test_milvus_token_reaches_client_not_messages(monkeypatch):
    opened = {}

    class RecordingClient:
        def __init__(self, **kwargs):
            opened.update(kwargs)

    monkeypatch.setattr("ecrs.stores.vector_store.MilvusClient", RecordingClient)
    store = VectorStore(
        StoreConfig(milvus_uri="http://root:uripass@127.0.0.1:9", milvus_token="t0k")
    )
    assert isinstance(store.client, RecordingClient)
    assert opened["token"] == "t0k"
    assert opened["uri"] == "http://root:uripass@127.0.0.1:9"
    with pytest.raises(UnavailableError) as info:
        milvus_error(store, "Fail connecting to server on 127.0.0.1:9")
    assert "uripass" not in str(info.value)
    assert "t0k" not in str(info.value)
    assert "http://root:***@127.0.0.1:9" in str(info.value)


def test_milvus_auth_error_names_token_variable():
    store = VectorStore(StoreConfig(milvus_token="root:wrong"))
    with pytest.raises(UnavailableError, match="ECRS_MILVUS_TOKEN") as info:
        milvus_error(store, "auth check failure, please check username and password")
    assert "root:wrong" not in str(info.value)
