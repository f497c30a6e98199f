"""Read ECRS's counters and gauges from Triton's Prometheus metrics endpoint."""

from __future__ import annotations

import urllib.request


def metric_values(metrics_url: str, name: str, **labels: str) -> list[float]:
    """Return every sample of ``name`` whose labels include ``labels``.

    A served model has one sample per instance, so a gauge such as
    ``ecrs_store_up`` can differ between the instances of one model.
    ``metrics_url`` is the endpoint's address, such as
    ``http://127.0.0.1:8002/metrics``.
    """
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode("utf-8")
    expected_labels = [f'{key}="{value}"' for key, value in labels.items()]
    values = []
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        label_text = line[len(name) + 1 : line.rindex("}")]
        if all(label in label_text.split(",") for label in expected_labels):
            values.append(float(line.rsplit(" ", 1)[1]))
    return values


def metric_value(metrics_url: str, name: str, **labels: str) -> float | None:
    """Return the first sample of ``name`` whose labels include ``labels``, or None."""
    values = metric_values(metrics_url, name, **labels)
    return values[0] if values else None
