"""The fault report's per-second failure lines."""

from __future__ import annotations

import json
from pathlib import Path

from ecrs.faults.fuzz import FuzzResult
from ecrs.faults.report import (
    failures_per_second_lines,
    format_page,
    fuzz_data,
    machine,
    pass_rules,
    verdict,
)
from ecrs.faults.run import FuzzSummary


def bucket(second: int, failed: int) -> dict:
    return {"second": second, "ok": 10, "errors": {"UNAVAILABLE": failed}, "p99_ms": 5}


def test_failures_listed_around_each_window():
    seconds = [bucket(second, 0) for second in range(30)]
    seconds[11] = bucket(11, 4)
    seconds[12] = bucket(12, 6)
    window = {
        "name": "kill -9 Redis, restart it",
        "injected_s": 10.2,
        "repaired_s": 12.5,
        "recovery_s": 0.4,
    }
    lines = failures_per_second_lines([window], seconds)
    assert lines[-1] == "- kill -9 Redis, restart it: `0 0 0 ^0 4 +6 0 0 0`"


def test_fault_that_repairs_itself_is_marked_once():
    seconds = [bucket(second, 0) for second in range(30)]
    seconds[20] = bucket(20, 3)
    window = {"name": "stub", "injected_s": 20.0, "repaired_s": 20.1, "recovery_s": 0}
    lines = failures_per_second_lines([window], seconds)
    assert lines[-1] == "- stub: `0 0 0 ^+3 0 0 0`"


def test_fuzz_figures_survive_json():
    result = FuzzResult("rank_items", cases=3)
    result.statuses = {"OK": 1, "INVALID_ARGUMENT": 2}
    data = json.loads(json.dumps(fuzz_data(FuzzSummary([result], [], []))))
    assert data["results"][0]["statuses"] == {"OK": 1, "INVALID_ARGUMENT": 2}
    assert data["passed"] is True


def test_verdict_lists_failed_checks():
    assert verdict({"passed": True, "failures": []}) == "yes"
    failed = {
        "passed": False,
        "failures": ["2 errors before the fault", "3 differences"],
    }
    assert verdict(failed) == "NO: 2 errors before the fault; 3 differences"


def test_pass_rules_state_the_bounds_in_force():
    rules = pass_rules()
    assert "5 s of quiet" in rules
    assert "fail within 5 s" in rules
    assert "within 10 s of" in rules
    assert "Request for unknown model" in rules


def test_page_names_the_cpu_and_versions():
    """The page, rendered from the published run's figures with this
    machine's description, lists the CPU, the server versions and the
    Python packages, as the benchmark's page does."""
    published = Path(__file__).parents[2] / "docs" / "faults.json"
    data = json.loads(published.read_text())
    data["machine"] = machine()
    page = format_page(data, "faults.png")
    section = page.split("## Machine and versions", 1)[1]
    assert f"- CPU: {data['machine']['cpu']}, {data['machine']['cores']} cores" in section
    assert "tritonserver 2.51.0" in section
    assert "pymilvus " in section
    assert data["machine"]["memory_gib"] > 0
