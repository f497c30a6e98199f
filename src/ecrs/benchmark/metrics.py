"""Read the stage histograms and model timings from Triton's metrics endpoint.

A benchmark run scrapes the endpoint before and after each measurement and
works on the difference, so earlier traffic (warm-up, other concurrencies)
does not count. Stage percentiles come from the histogram buckets of
``ecrs_stage_duration_seconds``, interpolated linearly within the bucket,
and are as exact as the buckets are fine (see ``HISTOGRAM_BUCKETS_S``).
Means come from the histograms' sums and counts, which are exact.
"""

from __future__ import annotations

import math
import re
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass

from ecrs.serving.stages import METRIC_FAMILY, TOTAL

PROBE_TIMEOUT_S = 5.0
# One sample line: name, optional {labels}, value (the exposition format).
SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)")
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')
# Triton's cumulative per-model counters used for the models' compute time.
COMPUTE_INFER_US = "nv_inference_compute_infer_duration_us"
QUEUE_US = "nv_inference_queue_duration_us"
REQUEST_SUCCESS = "nv_inference_request_success"

Labels = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, Labels], float]


def scrape(url: str) -> Samples:
    """Fetch and parse the metrics at ``url`` (a loopback address)."""
    # No proxy handlers, so no http_proxy setting can send this off the machine.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=PROBE_TIMEOUT_S) as response:
        return parse_metrics(response.read().decode("utf-8"))


def parse_metrics(text: str) -> Samples:
    """Parse Prometheus text exposition into ``{(name, labels): value}``."""
    samples: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        if match is None:
            continue
        name, labels, value = match.groups()
        key = tuple(sorted(LABEL.findall(labels or "")))
        samples[(name, key)] = float(value)
    return samples


def difference(after: Samples, before: Samples) -> Samples:
    """Return ``after - before`` per sample; samples new in ``after`` count whole."""
    return {key: value - before.get(key, 0.0) for key, value in after.items()}


@dataclass(frozen=True)
class StageFigures:
    """One stage's figures from a histogram: count, mean and p50 in ms."""

    count: int
    mean_ms: float
    p50_ms: float


def stage_figures(samples: Samples, model: str) -> dict[str, StageFigures]:
    """Return the figures of every stage of ``model`` that has observations."""
    buckets: dict[str, dict[float, float]] = {}
    sums: dict[str, float] = {}
    counts: dict[str, float] = {}
    # Each model instance and version has its own series; add them up.
    for (name, labels), value in samples.items():
        label = dict(labels)
        if label.get("model") != model or "stage" not in label:
            continue
        stage = label["stage"]
        if name == f"{METRIC_FAMILY}_bucket":
            stage_buckets = buckets.setdefault(stage, {})
            bound = float(label["le"])
            stage_buckets[bound] = stage_buckets.get(bound, 0.0) + value
        elif name == f"{METRIC_FAMILY}_sum":
            sums[stage] = sums.get(stage, 0.0) + value
        elif name == f"{METRIC_FAMILY}_count":
            counts[stage] = counts.get(stage, 0.0) + value
    figures = {}
    for stage, count in counts.items():
        if count <= 0:
            continue
        figures[stage] = StageFigures(
            count=int(count),
            mean_ms=sums.get(stage, 0.0) / count * 1000.0,
            p50_ms=histogram_quantile(0.5, list(buckets.get(stage, {}).items()))
            * 1000.0,
        )
    return figures


def histogram_quantile(quantile: float, buckets: list[tuple[float, float]]) -> float:
    """Estimate a quantile from cumulative ``(upper bound, count)`` buckets.

    The value is interpolated linearly inside the bucket that contains the
    quantile, as Prometheus's ``histogram_quantile`` does. A quantile in the
    ``+Inf`` bucket returns the largest finite bound.
    """
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return math.nan
    rank = quantile * ordered[-1][1]
    lower, below = 0.0, 0.0
    for bound, cumulative in ordered:
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative - below
            fraction = (rank - below) / inside if inside > 0 else 0.0
            return lower + (bound - lower) * fraction
        lower, below = bound, cumulative
    return lower


def model_compute_ms(samples: Samples, model: str) -> dict[str, float]:
    """Return a model's mean queue and compute milliseconds per successful request."""
    values = {
        name: sum(
            value
            for (sample, labels), value in samples.items()
            if sample == name and dict(labels).get("model") == model
        )
        for name in (COMPUTE_INFER_US, QUEUE_US, REQUEST_SUCCESS)
    }
    requests = values[REQUEST_SUCCESS]
    if requests <= 0:
        return {"requests": 0.0, "queue_ms": 0.0, "compute_ms": 0.0}
    return {
        "requests": requests,
        "queue_ms": values[QUEUE_US] / requests / 1000.0,
        "compute_ms": values[COMPUTE_INFER_US] / requests / 1000.0,
    }


def stage_shares(figures: Mapping[str, StageFigures]) -> dict[str, float]:
    """Return each stage's mean over the mean of ``total``."""
    total = figures.get(TOTAL)
    if total is None or total.mean_ms <= 0:
        return {}
    return {stage: figure.mean_ms / total.mean_ms for stage, figure in figures.items()}
