"""Export the request path's stage times at Triton's metrics endpoint.

The histogram family ``ecrs_stage_duration_seconds`` has the labels
``model``, ``instance``, ``version`` and ``stage`` (see
``ecrs.serving.stages``). It is created through the Python backend's custom
metrics API, ``pb_utils.MetricFamily``, whose tritonserver 2.51 stub supports
histograms. Triton serves it beside its own metrics, for example on
``http://127.0.0.1:8002/metrics``. Sum the series of every instance for a
model's figures.

Only a Triton Python-backend stub can import this module, because it imports
``triton_python_backend_utils``.
"""

from __future__ import annotations

from collections.abc import Mapping

import triton_python_backend_utils as pb_utils

from ecrs.serving.stages import HISTOGRAM_BUCKETS_S, METRIC_FAMILY

FAMILY_DESCRIPTION = (
    "Seconds each stage of a request to an ECRS Python model took, per model, "
    "instance, version and stage (total is the whole request handler)"
)


class StageMetrics:
    """The stage histograms of one model instance; each series is created on
    first use."""

    def __init__(self, labels: Mapping[str, str]) -> None:
        self.labels = dict(labels)
        self._family = pb_utils.MetricFamily(
            name=METRIC_FAMILY,
            description=FAMILY_DESCRIPTION,
            kind=pb_utils.MetricFamily.HISTOGRAM,
        )
        self._metrics: dict[tuple[str, str], object] = {}

    def observe(self, version: int | None, seconds: Mapping[str, float]) -> None:
        """Add one request's stage seconds to the histograms of ``version``."""
        label = "none" if version is None else str(version)
        for stage, value in seconds.items():
            self._metric(label, stage).observe(value)

    def close(self) -> None:
        # Triton requires each Metric to go before its MetricFamily.
        self._metrics.clear()
        self._family = None

    def _metric(self, version: str, stage: str):
        key = (version, stage)
        metric = self._metrics.get(key)
        if metric is None:
            metric = self._family.Metric(
                labels={**self.labels, "version": version, "stage": stage},
                buckets=list(HISTOGRAM_BUCKETS_S),
            )
            self._metrics[key] = metric
        return metric
