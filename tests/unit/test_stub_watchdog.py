"""StubWatchdog: which models it reloads, with fake stub counts and a fake Triton."""

from __future__ import annotations

import json
from collections import Counter

from ecrs.serving.stub_watchdog import (
    MISSING_CHECKS,
    RELOAD_PARAMETER,
    StubWatchdog,
    stub_model,
)


class FakeTriton:
    """The repository index, model configs and load calls of a Triton client."""

    def __init__(self, models: dict[str, int]) -> None:
        self.models = models  # model name -> instance count
        self.loads: list[tuple[str, dict]] = []

    def get_model_repository_index(self, as_json: bool = False) -> dict:
        entries = [
            {"name": name, "version": "1", "state": "READY"} for name in self.models
        ]
        return {"models": entries}

    def get_model_config(self, name: str, as_json: bool = False) -> dict:
        config = {
            "name": name,
            "backend": "python",
            "instance_group": [{"count": self.models[name], "kind": "KIND_CPU"}],
        }
        return {"config": config}

    def load_model(self, name: str, config: str = "") -> None:
        self.loads.append((name, json.loads(config)))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def watchdog(live: Counter, clock: Clock | None = None) -> StubWatchdog:
    return StubWatchdog(
        1, "127.0.0.1:1", count_stubs=lambda pid: live, clock=clock or Clock()
    )


def test_stub_model_reads_model_folder():
    assert stub_model("/repo/deepfm_rank/1/model.onnx") == "deepfm_rank"
    assert stub_model("/repo/recommend_ensemble/12/model.py") == "recommend_ensemble"


def test_no_reload_while_every_stub_lives():
    triton = FakeTriton({"deepfm_rank": 1, "recommend_ensemble": 2})
    dog = watchdog(Counter({"deepfm_rank": 1, "recommend_ensemble": 2}))
    for _ in range(MISSING_CHECKS + 1):
        assert dog.check(triton) == []
    assert triton.loads == []


def test_dead_stub_reloads_its_model_with_its_config():
    """A model missing a stub for MISSING_CHECKS checks reloads, and the load
    carries its configuration so that Triton does not skip it as unchanged."""
    triton = FakeTriton({"deepfm_rank": 1, "recommend_ensemble": 2})
    dog = watchdog(Counter({"deepfm_rank": 1, "recommend_ensemble": 1}))
    for _ in range(MISSING_CHECKS - 1):
        assert dog.check(triton) == []
    assert dog.check(triton) == ["recommend_ensemble"]
    name, config = triton.loads[0]
    assert name == "recommend_ensemble"
    assert config["instance_group"][0]["count"] == 2


def test_stub_back_before_second_check_is_no_crash():
    live = Counter({"deepfm_rank": 0})
    triton = FakeTriton({"deepfm_rank": 1})
    dog = watchdog(live)
    dog.check(triton)
    live["deepfm_rank"] = 1
    dog.check(triton)
    live["deepfm_rank"] = 0
    dog.check(triton)
    assert triton.loads == []


def test_reload_waits_for_cooldown():
    clock = Clock()
    triton = FakeTriton({"deepfm_rank": 1})
    dog = watchdog(Counter(), clock)
    for _ in range(MISSING_CHECKS):
        dog.check(triton)
    assert len(triton.loads) == 1
    for _ in range(MISSING_CHECKS):
        dog.check(triton)
    assert len(triton.loads) == 1
    clock.now += 60
    for _ in range(MISSING_CHECKS):
        dog.check(triton)
    assert len(triton.loads) == 2
    # Each reload's configuration differs, or Triton would skip it as unchanged.
    marks = [config["parameters"][RELOAD_PARAMETER] for _, config in triton.loads]
    assert marks[0] != marks[1]
