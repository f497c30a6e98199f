"""Judging fault windows and the soak from request outcomes."""

from __future__ import annotations

from ecrs.faults.churn import ChurnCounts
from ecrs.faults.load import Outcome
from ecrs.faults.memory import MemorySample
from ecrs.faults.restart import Snapshot
from ecrs.faults.run import (
    RestartResult,
    SuitePlan,
    observe_s,
    replaced_processes,
    stopped_triton_error,
)
from ecrs.faults.soak import summarize_soak
from ecrs.faults.timeline import (
    FaultWindow,
    check_deadline,
    judge_window,
    per_second,
)


def window(**changes) -> FaultWindow:
    values = {
        "name": "kill -9 Redis",
        "dependency": "Redis",
        "injected_s": 10.0,
        "repaired_s": 20.0,
        "end_s": 40.0,
        "recovery_bound_s": 5.0,
    }
    return FaultWindow(**{**values, **changes})


def test_request_in_flight_at_injection_counts():
    """A request started before the fault and failed by it belongs to the
    window: a killed stub fails the requests it was serving."""
    outcomes = [
        Outcome(9.5, 1.0, "UNAVAILABLE", "model deepfm_rank failed"),
        Outcome(9.0, 0.1, "UNAVAILABLE", "ended before the fault"),
    ]
    judged = judge_window(window(dependency="deepfm_rank"), outcomes)
    assert judged.errors == 1
    assert judged.unexpected_count == 0


def test_errors_must_be_unavailable_naming_the_dependency():
    outcomes = [
        Outcome(
            11.0, 0.1, "UNAVAILABLE", "Redis at redis://127.0.0.1:1/0 is unavailable"
        ),
        Outcome(
            12.0, 0.1, "UNAVAILABLE", "Milvus at http://127.0.0.1:2 is unavailable"
        ),
        Outcome(13.0, 0.1, "INTERNAL", "Redis at redis://127.0.0.1:1/0: boom"),
    ]
    judged = judge_window(window(), outcomes)
    assert judged.errors_by_status == {"UNAVAILABLE": 2, "INTERNAL": 1}
    assert judged.unexpected_count == 2
    assert not judged.passed


def test_recovery_and_errors_after_the_bound():
    outcomes = [
        Outcome(21.0, 2.0, "UNAVAILABLE", "Redis down"),
        Outcome(26.0, 0.5, "UNAVAILABLE", "Redis down"),
        Outcome(27.0, 0.1, "OK"),
    ]
    judged = judge_window(window(), outcomes)
    assert judged.recovery_s == 6.5
    assert judged.errors_after_recovery == 1
    assert not judged.passed


def test_deadline_check_fails_a_late_or_wrong_answer():
    on_time = [
        Outcome(1.0, 0.51, "DEADLINE_EXCEEDED", "Deadline Exceeded"),
        Outcome(1.6, 0.02, "UNAVAILABLE", "Redis down"),
    ]
    assert check_deadline(on_time, 0.5).passed
    late = check_deadline([*on_time, Outcome(2.0, 1.9, "DEADLINE_EXCEEDED")], 0.5)
    assert late.max_latency_s == 1.9
    assert not late.passed
    wrong = check_deadline([Outcome(2.0, 0.1, "INTERNAL", "boom")], 0.5)
    assert wrong.statuses == {"INTERNAL": 1}
    assert not wrong.passed
    assert not check_deadline([], 0.5).passed
    assert window(deadline=late).failures[-1] == (
        "requests with a short deadline ended late or wrongly"
    )


def test_per_second_buckets_count_by_start():
    outcomes = [
        Outcome(0.2, 0.05, "OK"),
        Outcome(0.7, 0.1, "OK"),
        Outcome(1.1, 3.0, "UNAVAILABLE"),
    ]
    buckets = per_second(outcomes, 0.0, 2.0)
    assert [bucket.ok for bucket in buckets] == [2, 0]
    assert buckets[1].errors == {"UNAVAILABLE": 1}


def test_soak_memory_growth_over_the_second_half():
    samples = [
        MemorySample(float(t), {"triton": 100.0 + t / 10}, 9.0)
        for t in range(0, 100, 5)
    ]
    summary = summarize_soak(
        [Outcome(1.0, 0.1, "OK")], samples, ChurnCounts(), 0.0, 100.0
    )
    assert summary.rss_growth_mib["triton"] > 0
    assert summary.rss_bound_mib["triton"] == 32.0
    assert summary.memory_levels_off
    grown = [
        MemorySample(float(t), {"triton": 100.0 + 10 * t}, 9.0)
        for t in range(0, 100, 5)
    ]
    summary = summarize_soak(
        [Outcome(1.0, 0.1, "OK")], grown, ChurnCounts(), 0.0, 100.0
    )
    assert not summary.memory_levels_off


def test_soak_without_memory_samples_does_not_level_off():
    summary = summarize_soak([Outcome(1.0, 0.1, "OK")], [], ChurnCounts(), 0.0, 100.0)
    assert not summary.memory_levels_off
    assert not summary.passed


def test_quiet_time_errors_fail_fault():
    outcomes = [
        Outcome(6.0, 0.1, "UNAVAILABLE", "Redis down"),
        Outcome(4.0, 0.1, "UNAVAILABLE", "Redis down before the quiet time"),
    ]
    judged = judge_window(window(settled_s=5.0), outcomes)
    assert judged.errors_before_fault == 1
    assert judged.failures == [
        "the fault caused no error and replaced no process",
        "1 errors before the fault",
    ]


def test_fault_without_effect_fails():
    judged = judge_window(window(), [Outcome(11.0, 0.1, "OK")])
    assert not judged.took_effect
    assert not judged.passed
    judged.replaced = ["stub:deepfm_rank: pids [1] became [2]"]
    assert judged.passed


def test_slow_errors_and_late_recovery_fail_a_window():
    outcomes = [Outcome(20.5, 4.9, "UNAVAILABLE", "Redis paused")]
    judged = judge_window(window(error_latency_bound_s=4.0), outcomes)
    assert judged.recovery_s == 5.4
    assert judged.failures == [
        "recovered in 5.4 s, over the bound of 5 s",
        "slowest error took 4.9 s, over 4.0 s",
    ]


def test_custom_expectation_replaces_the_default():
    outcomes = [Outcome(11.0, 0.1, "NOT_FOUND", "unknown model")]
    assert judge_window(window(), outcomes).unexpected_count == 1
    judged = judge_window(window(), outcomes, expected=lambda o: "model" in o.message)
    assert judged.unexpected_count == 0


def test_restart_accepts_only_errors_of_a_stopped_triton():
    outcomes = [
        Outcome(11.0, 0.1, "UNAVAILABLE", "failed to connect to all addresses"),
        Outcome(
            12.0, 0.1, "NOT_FOUND",
            "Request for unknown model: 'recommend_ensemble' has no available versions",
        ),
        Outcome(13.0, 0.1, "NOT_FOUND", "user u1 is not in the stores"),
    ]  # fmt: skip
    judged = judge_window(window(), outcomes, expected=stopped_triton_error)
    assert judged.unexpected_errors == ["NOT_FOUND: user u1 is not in the stores"]


def test_observation_outlasts_the_recovery_bound():
    plan = SuitePlan(soak_s=10.0, observe_s=20.0)
    assert observe_s(plan, 30.0) == 35.0
    assert observe_s(plan, 5.0) == 20.0


def test_only_a_new_pid_counts_as_replaced():
    before = {"stub:deepfm_rank": [10], "redis": [20]}
    after = {"stub:deepfm_rank": [], "redis": [21]}
    assert replaced_processes(before, after) == ["redis: pids [20] became [21]"]


def snapshot(users: int) -> Snapshot:
    return Snapshot({"user": users}, {}, 1, {}, {})


def test_restart_fails_on_differences_and_on_window_checks():
    judged = judge_window(window(), [Outcome(11.0, 0.1, "UNAVAILABLE", "Redis")])
    passed = RestartResult(judged, 1.0, 1.0, snapshot(5), snapshot(5))
    assert passed.failures == []
    lost = RestartResult(
        judged, 1.0, 1.0, snapshot(5), snapshot(4), ["user: 5 became 4"]
    )
    assert lost.failures == ["1 differences"]
    late = judge_window(window(), [Outcome(30.0, 0.1, "UNAVAILABLE", "Redis")])
    assert RestartResult(late, 1.0, 1.0, snapshot(5), snapshot(5)).failures == [
        "1 errors after the recovery bound",
        "recovered in 10.1 s, over the bound of 5 s",
    ]
