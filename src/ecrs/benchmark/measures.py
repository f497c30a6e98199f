"""Latency and throughput figures shared by the Triton and reference runs.

Latencies are in milliseconds and throughput in requests per second, as in
the report. Percentiles of raw samples use numpy's default (linear)
interpolation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

PERCENTILES = (50, 90, 99)


@dataclass(frozen=True)
class LatencySummary:
    """Throughput and latency percentiles of one run at one concurrency."""

    requests: int
    throughput: float
    p50_ms: float
    p90_ms: float
    p99_ms: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def summarize_latencies(latencies_s: Sequence[float], wall_s: float) -> LatencySummary:
    """Summarize request latencies (seconds) measured over ``wall_s`` seconds."""
    if not latencies_s or wall_s <= 0:
        raise ValueError(
            f"no requests completed in {wall_s:.1f} s; measure for longer"
        )
    p50, p90, p99 = np.percentile(np.asarray(latencies_s) * 1000.0, PERCENTILES)
    return LatencySummary(
        requests=len(latencies_s),
        throughput=len(latencies_s) / wall_s,
        p50_ms=float(p50),
        p90_ms=float(p90),
        p99_ms=float(p99),
    )


def stage_summary(stages: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    """Return each stage's p50 and mean in milliseconds and its share of ``total``.

    The share is the stage's mean over the mean of ``total``, so the shares of
    the stages and of the rest (``total`` minus the stages) add up to 1.
    """
    total_mean = float(np.mean(stages["total"])) if stages.get("total") else 0.0
    summary = {}
    for stage, values in stages.items():
        if not values:
            continue
        mean_s = float(np.mean(values))
        summary[stage] = {
            "p50_ms": float(np.percentile(values, 50)) * 1000.0,
            "mean_ms": mean_s * 1000.0,
            "share": mean_s / total_mean if total_mean > 0 else 0.0,
        }
    return summary
