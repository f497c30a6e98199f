"""The short fault suite (``ecrs faults --short``) against a stack of its own.

The suite keeps requests flowing at concurrency 8 through a 3-minute soak
with catalogue changes. Then it kills Redis and Milvus with kill -9 and
restarts each, kills deepfm_rank's stub, pauses Redis and restarts the
whole stack. The bounds it must meet are the product's reliability contract.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ecrs.export.repository import export_checkpoint
from ecrs.faults.report import write_report
from ecrs.faults.run import SHORT_PLAN, SuiteResult, run_suite
from ecrs.faults.stack import start_loaded_stack
from ecrs.stack.launcher import stop_stack
from ecrs.training.checkpoint import Checkpoint

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def suite(small_dataset, small_checkpoint, tmp_path_factory) -> SuiteResult:
    folder = tmp_path_factory.mktemp("faults")
    export_checkpoint(Checkpoint.load(small_checkpoint), folder / "model_repository")
    config = start_loaded_stack(folder, small_dataset)
    try:
        result = run_suite(config, small_dataset, SHORT_PLAN)
    finally:
        stop_stack(folder)
    write_report(result, folder / "report" / "faults.md")
    return result


def test_soak_has_no_errors(suite):
    assert suite.soak.requests > 1000
    assert suite.soak.errors_by_status == {}
    assert suite.churn.errors == []
    assert suite.churn.items_removed > 0


def test_soak_memory_levels_off(suite):
    soak = suite.soak
    assert soak.rss_growth_mib, "no memory samples in the soak's second half"
    grown = {
        label: growth
        for label, growth in soak.rss_growth_mib.items()
        if growth > soak.rss_bound_mib[label]
    }
    assert grown == {}
    assert soak.memory_levels_off, f"/dev/shm grew by {soak.shm_growth_mib} MiB"


@pytest.mark.parametrize("index", range(4))
def test_fault_errors_are_unavailable_and_recover(suite, index):
    fault = suite.faults[index]
    assert fault.unexpected_errors == []
    assert fault.errors_before_fault == 0
    assert fault.errors_after_recovery == 0, f"recovered after {fault.recovery_s} s"
    assert fault.recovery_s <= fault.recovery_bound_s
    assert fault.restarted == []
    # The command's verdict on the window agrees.
    assert fault.failures == []


def test_faults_were_injected(suite):
    """A killed server comes back as a new process, a killed stub is replaced
    by the watchdog's reload, and a paused Redis fails requests."""
    redis, milvus, stub, paused = suite.faults
    assert redis.errors > 0
    assert milvus.errors > 0
    assert any(line.startswith("stub:deepfm_rank:") for line in stub.replaced), (
        stub.replaced
    )
    assert paused.errors > 0


def test_paused_redis_errors_are_timely(suite):
    """Requests fail within twice the 2 s store timeout (plus 1 s of
    scheduling on a loaded 2-core machine) while Redis is paused for 8 s:
    a request waits for at most the one ahead of it, not for the whole queue."""
    paused = next(fault for fault in suite.faults if "pause" in fault.name)
    assert paused.error_latency_bound_s == 5.0
    assert paused.max_error_latency_s <= paused.error_latency_bound_s


def test_client_deadlines_are_honoured(suite):
    """Requests with a 0.5 s client deadline, shorter than the store timeout,
    end by their deadline while Redis hangs."""
    paused = next(fault for fault in suite.faults if "pause" in fault.name)
    check = paused.deadline
    assert check is not None and check.requests > 0
    assert check.max_latency_s <= check.deadline_s + 0.25, check
    assert set(check.statuses) <= {"OK", "DEADLINE_EXCEEDED", "UNAVAILABLE"}


def test_full_restart_keeps_everything(suite):
    restart = suite.restart
    assert restart.differences == []
    assert restart.before.counts["user"] > 0
    # Users have several interactions each, so the entries outnumber the keys.
    assert (
        restart.before.counts["interaction entries"]
        > restart.before.counts["interactions"]
    )
    assert restart.before.recommendations
    assert restart.window.unexpected_errors == []
    assert restart.window.errors_after_recovery == 0
    assert restart.failures == []


def test_report_is_written(suite, tmp_path):
    paths = write_report(suite, tmp_path / "faults.md")
    assert [path.name for path in paths] == ["faults.md", "faults.json", "faults.png"]
    assert Path(paths[2]).stat().st_size > 10_000
    assert "## Faults" in paths[0].read_text()
