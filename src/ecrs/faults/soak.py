"""Judge the soak: errors, latency over time, and whether memory levels off.

Memory levels off when no process label's resident memory, and not the
stack's shared memory, grows over the soak's second half by more than the
bounds below. Each level is the median of the samples in the first and the
last ``LEVEL_SHARE`` of that half, so one sample taken during a garbage
collection or a batch does not decide.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

from ecrs.faults.churn import ChurnCounts
from ecrs.faults.load import OK, Outcome
from ecrs.faults.memory import MemorySample
from ecrs.faults.timeline import percentile_ms, window

# A process may grow by this share of its level at mid-soak, or by
# RSS_GROWTH_MIN_MIB, whichever is larger.
RSS_GROWTH_SHARE = 0.10
RSS_GROWTH_MIN_MIB = 32.0
SHM_GROWTH_MAX_MIB = 16.0
LEVEL_SHARE = 0.2
# Seconds per latency point of the report's p99 curve.
P99_STEP_S = 10


@dataclass
class SoakSummary:
    """The soak's requests and errors, p99 per step, and memory growth per label."""

    start_s: float
    end_s: float
    requests: int
    errors_by_status: dict[str, int]
    p50_ms: float | None
    p99_ms: float | None
    p99_over_time: list[tuple[float, float | None]]
    rss_growth_mib: dict[str, float] = field(default_factory=dict)
    rss_bound_mib: dict[str, float] = field(default_factory=dict)
    rss_mid_mib: dict[str, float] = field(default_factory=dict)
    rss_end_mib: dict[str, float] = field(default_factory=dict)
    shm_growth_mib: float = 0.0
    churn_errors: int = 0

    @property
    def errors(self) -> int:
        return sum(self.errors_by_status.values())

    @property
    def memory_levels_off(self) -> bool:
        """Whether memory was measured and no process or /dev/shm grew past
        its bound; without samples there is nothing to show it levels off."""
        if not self.rss_growth_mib:
            return False
        within = all(
            growth <= self.rss_bound_mib[label]
            for label, growth in self.rss_growth_mib.items()
        )
        return within and self.shm_growth_mib <= SHM_GROWTH_MAX_MIB

    @property
    def passed(self) -> bool:
        return self.errors == 0 and self.churn_errors == 0 and self.memory_levels_off


def summarize_soak(
    outcomes: Sequence[Outcome],
    samples: Sequence[MemorySample],
    churn: ChurnCounts,
    start_s: float,
    end_s: float,
) -> SoakSummary:
    seen = window(outcomes, start_s, end_s)
    latencies = [o.latency_s for o in seen if o.status == OK]
    errors: dict[str, int] = {}
    for outcome in seen:
        if outcome.status != OK:
            errors[outcome.status] = errors.get(outcome.status, 0) + 1
    summary = SoakSummary(
        start_s,
        end_s,
        len(seen),
        errors,
        percentile_ms(latencies, 50),
        percentile_ms(latencies, 99),
        p99_steps(seen, start_s, end_s),
        churn_errors=len(churn.errors),
    )
    add_memory_growth(summary, [s for s in samples if start_s <= s.at_s <= end_s])
    return summary


def p99_steps(
    outcomes: Sequence[Outcome], start_s: float, end_s: float
) -> list[tuple[float, float | None]]:
    steps = []
    step_start = start_s
    while step_start < end_s:
        step = window(outcomes, step_start, step_start + P99_STEP_S)
        latencies = [o.latency_s for o in step if o.status == OK]
        steps.append((round(step_start, 1), percentile_ms(latencies, 99)))
        step_start += P99_STEP_S
    return steps


def add_memory_growth(summary: SoakSummary, samples: Sequence[MemorySample]) -> None:
    """Fill in each label's level at mid-soak and at the end, and the bound."""
    if len(samples) < 4:
        return
    half = samples[len(samples) // 2 :]
    width = max(1, int(len(half) * LEVEL_SHARE))
    early, late = half[:width], half[-width:]
    labels = set().union(*(sample.rss_mib for sample in half))
    for label in sorted(labels):
        mid = _level(early, label)
        end = _level(late, label)
        if mid is None or end is None:
            continue
        summary.rss_mid_mib[label] = round(mid, 1)
        summary.rss_end_mib[label] = round(end, 1)
        summary.rss_growth_mib[label] = round(end - mid, 1)
        summary.rss_bound_mib[label] = round(
            max(RSS_GROWTH_MIN_MIB, mid * RSS_GROWTH_SHARE), 1
        )
    shm_mid = statistics.median(sample.shm_mib for sample in early)
    shm_end = statistics.median(sample.shm_mib for sample in late)
    summary.shm_growth_mib = round(shm_end - shm_mid, 1)


def _level(samples: Sequence[MemorySample], label: str) -> float | None:
    values = [sample.rss_mib[label] for sample in samples if label in sample.rss_mib]
    return statistics.median(values) if values else None
