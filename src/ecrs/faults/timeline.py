"""Turn request outcomes into per-second counts and judge each fault window."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from ecrs.faults.load import OK, Outcome

UNAVAILABLE = "UNAVAILABLE"
DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"
# Seconds past its deadline within which a client must get its response,
# allowing for gRPC's timer and thread wake-up on a busy 2-core machine.
DEADLINE_SLACK_S = 0.25
# Failed requests listed per window in the report.
SHOWN_ERRORS = 5


@dataclass(frozen=True)
class SecondBucket:
    """Requests started within one second: successes, errors by status, and
    the 99th percentile latency of the successes in milliseconds."""

    second: int
    ok: int
    errors: dict[str, int]
    p99_ms: float | None

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


def per_second(
    outcomes: Sequence[Outcome], start_s: float, end_s: float
) -> list[SecondBucket]:
    """Bucket the outcomes of requests started in [start_s, end_s) by second."""
    first, last = int(start_s), int(np.ceil(end_s))
    latencies: dict[int, list[float]] = {s: [] for s in range(first, last)}
    errors: dict[int, Counter] = {s: Counter() for s in range(first, last)}
    for outcome in outcomes:
        second = int(outcome.started_s)
        if not start_s <= outcome.started_s < end_s or second not in latencies:
            continue
        if outcome.status == OK:
            latencies[second].append(outcome.latency_s)
        else:
            errors[second][outcome.status] += 1
    return [
        SecondBucket(
            second,
            len(latencies[second]),
            dict(errors[second]),
            percentile_ms(latencies[second], 99),
        )
        for second in range(first, last)
    ]


def percentile_ms(latencies_s: Sequence[float], q: float) -> float | None:
    if not latencies_s:
        return None
    return round(float(np.percentile(latencies_s, q)) * 1000, 2)


def window(outcomes: Sequence[Outcome], start_s: float, end_s: float) -> list[Outcome]:
    """Return the outcomes of requests started in [start_s, end_s)."""
    return [o for o in outcomes if start_s <= o.started_s < end_s]


@dataclass
class DeadlineCheck:
    """Requests sent with a short client deadline while a store hangs: how
    many, their statuses and the slowest one's latency in seconds."""

    deadline_s: float
    requests: int
    statuses: dict[str, int]
    max_latency_s: float

    @property
    def passed(self) -> bool:
        return (
            self.requests > 0
            and self.max_latency_s <= self.deadline_s + DEADLINE_SLACK_S
            and set(self.statuses) <= {OK, DEADLINE_EXCEEDED, UNAVAILABLE}
        )


def check_deadline(outcomes: Sequence[Outcome], deadline_s: float) -> DeadlineCheck:
    """Summarize requests that were sent with a client deadline of ``deadline_s``."""
    return DeadlineCheck(
        deadline_s,
        len(outcomes),
        dict(Counter(o.status for o in outcomes)),
        round(max((o.latency_s for o in outcomes), default=0.0), 3),
    )


@dataclass
class FaultWindow:
    """The outcomes of the requests around one fault.

    ``settled_s`` is when the quiet time before the fault began. Each error
    of a request that started after ``settled_s`` and ended before
    ``injected_s`` counts as ``errors_before_fault``. ``injected_s`` is when the fault began and
    ``repaired_s`` when the dependency was started again (or, for a fault
    that repairs itself, when it was injected). ``recovery_s`` runs from
    ``repaired_s`` to the end of the last failed request. Errors of requests
    started after ``repaired_s`` plus ``recovery_bound_s`` count as
    ``errors_after_recovery``. With ``error_latency_bound_s``, every failed
    request must end within that many seconds of its start.
    """

    name: str
    dependency: str
    injected_s: float
    repaired_s: float
    end_s: float
    recovery_bound_s: float
    settled_s: float | None = None
    error_latency_bound_s: float | None = None
    requests: int = 0
    errors_by_status: dict[str, int] = field(default_factory=dict)
    unexpected_errors: list[str] = field(default_factory=list)
    unexpected_count: int = 0
    recovery_s: float = 0.0
    errors_after_recovery: int = 0
    errors_before_fault: int = 0
    max_error_latency_s: float = 0.0
    restarted: list[str] = field(default_factory=list)
    # Processes that the fault replaced, as "label: pids [...] became [...]".
    replaced: list[str] = field(default_factory=list)
    # Requests with a short client deadline sent during the fault, if any.
    deadline: DeadlineCheck | None = None

    @property
    def errors(self) -> int:
        return sum(self.errors_by_status.values())

    @property
    def took_effect(self) -> bool:
        """Whether the fault showed: requests failed or a process was replaced."""
        return self.errors > 0 or bool(self.replaced)

    @property
    def failures(self) -> list[str]:
        """Say which of the window's checks failed, each in a few words."""
        checks = [
            (self.took_effect, "the fault caused no error and replaced no process"),
            (self.errors_before_fault == 0,
             f"{self.errors_before_fault} errors before the fault"),
            (self.unexpected_count == 0,
             f"{self.unexpected_count} errors of an unexpected kind"),
            (self.errors_after_recovery == 0,
             f"{self.errors_after_recovery} errors after the recovery bound"),
            (self.recovery_s <= self.recovery_bound_s,
             (f"recovered in {self.recovery_s} s, over the bound of "
              f"{self.recovery_bound_s:.0f} s")),
            (self.error_latency_bound_s is None
             or self.max_error_latency_s <= self.error_latency_bound_s,
             (f"slowest error took {self.max_error_latency_s} s, over "
              f"{self.error_latency_bound_s} s")),
            (not self.restarted, f"restarted {', '.join(self.restarted)}"),
            (self.deadline is None or self.deadline.passed,
             "requests with a short deadline ended late or wrongly"),
        ]  # fmt: skip
        return [reason for ok, reason in checks if not ok]

    @property
    def passed(self) -> bool:
        return not self.failures


def judge_window(
    fault: FaultWindow,
    outcomes: Sequence[Outcome],
    expected: Callable[[Outcome], bool] | None = None,
) -> FaultWindow:
    """Fill in a fault window's counts from the outcomes.

    An error is expected when ``expected`` returns True for it; by default,
    when it is UNAVAILABLE and its message names the fault's dependency.
    """
    if expected is None:
        expected = partial(names_dependency, fault.dependency)
    # Requests in flight when the fault began count too: they are the first
    # to meet it.
    seen = [
        o
        for o in outcomes
        if o.started_s + o.latency_s >= fault.injected_s and o.started_s < fault.end_s
    ]
    failed = [o for o in seen if o.status != OK]
    if fault.settled_s is not None:
        fault.errors_before_fault = sum(
            1
            for o in outcomes
            if o.status != OK
            and o.started_s >= fault.settled_s
            and o.started_s + o.latency_s < fault.injected_s
        )
    fault.requests = len(seen)
    fault.errors_by_status = dict(Counter(o.status for o in failed))
    unexpected = [o for o in failed if not expected(o)]
    fault.unexpected_count = len(unexpected)
    fault.unexpected_errors = [
        f"{o.status}: {o.message}" for o in unexpected[:SHOWN_ERRORS]
    ]
    last_end = max(
        (o.started_s + o.latency_s for o in failed), default=fault.repaired_s
    )
    fault.recovery_s = round(max(0.0, last_end - fault.repaired_s), 2)
    bound = fault.repaired_s + fault.recovery_bound_s
    fault.errors_after_recovery = sum(1 for o in failed if o.started_s >= bound)
    fault.max_error_latency_s = round(
        max((o.latency_s for o in failed), default=0.0), 2
    )
    return fault


def names_dependency(dependency: str, outcome: Outcome) -> bool:
    """Return whether a failed request is UNAVAILABLE naming ``dependency``."""
    return outcome.status == UNAVAILABLE and dependency in outcome.message
