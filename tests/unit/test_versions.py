"""The serving pointer: canary routing, its Redis fields, and the served
configs' version lists."""

from __future__ import annotations

import pytest

from ecrs.errors import ConfigError
from ecrs.serving.layout import ONNX_MODELS
from ecrs.serving.model_configs import live_versions, read_config, set_live_versions
from ecrs.serving.versions import ServingPointer, routing_fraction, routing_key


def test_pointer_without_canary_routes_everyone_to_serving():
    pointer = ServingPointer(3)
    assert {pointer.route(f"id:u{n}") for n in range(100)} == {3}
    assert pointer.live == [3]


def test_canary_share_is_close_to_requested():
    pointer = ServingPointer(1, canary_version=2, canary_share=0.1)
    routed = [pointer.route(f"id:u{n}") for n in range(20_000)]
    share = routed.count(2) / len(routed)
    assert 0.09 < share < 0.11
    assert pointer.live == [1, 2]


def test_routing_is_stable_per_user():
    pointer = ServingPointer(1, canary_version=2, canary_share=0.5)
    assert [pointer.route("id:u42") for _ in range(5)] == [pointer.route("id:u42")] * 5
    assert routing_fraction("id:u42") == routing_fraction("id:u42")


def test_feature_routing_ignores_key_order():
    first = routing_key(None, {"age": "25-34", "sex": "F"})
    second = routing_key(None, {"sex": "F", "age": "25-34"})
    assert first == second
    assert routing_key("u1", None) == "id:u1"


def test_pointer_fields_round_trip():
    pointer = ServingPointer(4, canary_version=5, canary_share=0.25, previous=3)
    encoded = {
        key.encode(): value.encode() for key, value in pointer.to_fields().items()
    }
    assert ServingPointer.from_fields(encoded) == pointer
    plain = ServingPointer(2)
    assert ServingPointer.from_fields(plain.to_fields()) == plain


@pytest.mark.parametrize("share", [-0.1, 1.5])
def test_canary_share_outside_zero_to_one_is_rejected(share):
    with pytest.raises(ConfigError, match="canary share"):
        ServingPointer(1, canary_version=2, canary_share=share)


def test_live_versions_follow_the_served_configs(exported):
    repository = exported.repository
    assert live_versions(repository) == [exported.version]
    set_live_versions(repository, [exported.version, 7, 7])
    try:
        assert live_versions(repository) == [exported.version, 7]
        for name in ONNX_MODELS:
            config = read_config(repository / name / "config.pbtxt")
            assert list(config.version_policy.specific.versions) == [
                exported.version,
                7,
            ]
    finally:
        set_live_versions(repository, [exported.version])
