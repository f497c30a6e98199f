"""Read ECRS's counters and gauges from Triton's Prometheus metrics endpoint."""

from __future__ import annotations

import urllib.request


def metric_value(metrics_url: str, name: str, **labels: str) -> float | None:
    """Return the sample of ``name`` whose labels include ``labels``, or None.

    ``metrics_url`` is the endpoint's address, such as
    ``http://127.0.0.1:8002/metrics``.
    """
    with urllib.request.urlopen(metrics_url, timeout=5) as response:
        text = response.read().decode("utf-8")
    expected_labels = [f'{key}="{value}"' for key, value in labels.items()]
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        label_text = line[len(name) + 1 : line.rindex("}")]
        if all(label in label_text.split(",") for label in expected_labels):
            return float(line.rsplit(" ", 1)[1])
    return None
