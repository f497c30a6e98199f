"""StoreHealth: probe results, readiness and change reports, with fake probes."""

from __future__ import annotations

import threading

from ecrs.errors import UnavailableError
from ecrs.serving.health import StoreHealth, StoreState


class SwitchableProbe:
    """A probe that fails while ``down`` is a non-empty message."""

    def __init__(self) -> None:
        self.down = ""
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1
        if self.down:
            raise UnavailableError(self.down, service="fake")


def test_ready_while_every_probe_succeeds():
    health = StoreHealth({"redis": SwitchableProbe(), "milvus": SwitchableProbe()})
    health.probe_all()
    assert health.ready()
    assert [state.up for state in health.states()] == [True, True]


def test_one_failing_probe_makes_not_ready():
    redis, milvus = SwitchableProbe(), SwitchableProbe()
    milvus.down = "Milvus at 127.0.0.1:1 is unavailable"
    health = StoreHealth({"redis": redis, "milvus": milvus})
    health.probe_all()
    assert not health.ready()
    states = {state.store: state for state in health.states()}
    assert states["redis"].up
    assert not states["milvus"].up
    assert states["milvus"].error == "Milvus at 127.0.0.1:1 is unavailable"


def test_unexpected_exception_counts_as_down():
    def broken() -> None:
        raise RuntimeError("socket closed")

    health = StoreHealth({"redis": broken})
    health.probe_all()
    assert not health.ready()
    assert "socket closed" in health.states()[0].error


def test_listener_hears_changes_only():
    probe = SwitchableProbe()
    reported: list[StoreState] = []
    health = StoreHealth({"redis": probe}, listener=reported.append)
    health.probe_all()
    assert reported == []  # up, as assumed before the first probe
    probe.down = "Redis at 127.0.0.1:1 is unavailable"
    health.probe_all()
    probe.down = "Redis at 127.0.0.1:1 timed out"  # still down: no new report
    health.probe_all()
    assert reported == [
        StoreState("redis", False, "Redis at 127.0.0.1:1 is unavailable")
    ]
    probe.down = ""
    health.probe_all()
    assert reported[-1] == StoreState("redis", True)
    assert len(reported) == 2
    assert health.ready()


def test_background_thread_follows_store():
    probe = SwitchableProbe()
    changed = threading.Event()
    health = StoreHealth(
        {"redis": probe}, listener=lambda state: changed.set(), interval_s=0.01
    )
    health.start()
    try:
        assert health.ready()
        probe.down = "Redis at 127.0.0.1:1 is unavailable"
        assert changed.wait(timeout=5)
        assert not health.ready()
    finally:
        health.stop()
    calls = probe.calls
    assert calls >= 2
    threading.Event().wait(0.05)
    assert probe.calls == calls  # stopped: no more probes


def test_down_lists_failed_stores_until_they_recover():
    redis, milvus = SwitchableProbe(), SwitchableProbe()
    health = StoreHealth({"redis": redis, "milvus": milvus})
    health.probe_all()
    assert health.down() == []
    redis.down = "Redis at 127.0.0.1:1 is unavailable"
    health.probe_all()
    assert [state.store for state in health.down()] == ["redis"]
    assert health.down()[0].error == "Redis at 127.0.0.1:1 is unavailable"
    redis.down = ""
    health.probe_all()
    assert health.down() == []
